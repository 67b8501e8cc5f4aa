"""Run a suite into a results folder: plan, skip finished jobs, execute, store."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xbench.harness.environment import resolve_device
from xbench.harness.executors import EXECUTORS
from xbench.harness.plan import Plan, build_plan
from xbench.harness.suite import load_suite
from xbench.store import RecordStore


@dataclasses.dataclass
class RunSummary:
    """What a run did: jobs planned, skipped as finished, run, and failed."""

    out: Path
    planned: int
    skipped: int
    ran: int
    failed: list[dict[str, Any]]
    plan: Plan
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.failed


def run(suite: str, *, out: str | Path | None = None, methods: list[str] | None = None,
        tasks: list[str] | None = None, seeds: list[int] | None = None, device: str = "cpu",
        overrides: dict[str, dict[str, Any]] | None = None, executor: str = "local",
        progress: bool = True) -> RunSummary:
    """Run ``suite`` (a shipped name or a TOML path) and append records under ``out``.

    Jobs whose ``job_id`` already has an ``ok`` record in ``out`` are skipped,
    so re-running the same command resumes where it stopped.
    """
    parsed = load_suite(suite)
    plan = build_plan(parsed, methods=methods, tasks=tasks, seeds=seeds, overrides=overrides)
    torch_device = resolve_device(device)
    out = Path(out) if out is not None else Path("xbench-runs") / parsed.name
    store = RecordStore(out)
    existing = store.read()
    finished = {r["job_id"] for r in existing.records if r.get("status") == "ok"}
    todo = [job for job in plan.jobs if job.job_id not in finished]
    failed: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc=f"xbench {parsed.name}", unit="job", disable=not progress,
               dynamic_ncols=True)
    try:
        for record in EXECUTORS.get(executor)().map(todo, torch_device):
            store.append(record)
            if record["status"] != "ok":
                failed.append(record)
            bar.update(1)
            rate = record["cost"].get("train_samples_per_s")
            bar.set_postfix(failed=len(failed), last=record["method"],
                            samples_s=f"{rate:.0f}" if rate else "-")
    finally:
        bar.close()
    return RunSummary(out=out, planned=len(plan.jobs), skipped=len(plan.jobs) - len(todo),
                      ran=len(todo), failed=failed, plan=plan, problems=existing.problems)
