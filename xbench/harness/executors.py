"""Executors run planned jobs and hand records back to the driver, which alone writes them."""

from __future__ import annotations

from typing import Any, Iterator

import torch

from xbench.harness.plan import Job
from xbench.harness.runner import run_job
from xbench.registry import Registry

EXECUTORS: Registry = Registry("executor")


@EXECUTORS.register("local")
class LocalExecutor:
    """Runs jobs one after another in this process (the default; best for debugging)."""

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Yield one record per job, in order, as each finishes."""
        for job in jobs:
            yield run_job(job, device)
