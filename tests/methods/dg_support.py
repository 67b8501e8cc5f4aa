"""Shared helpers for the domain-generalisation method tests: tiny tasks, batches and jobs."""

from __future__ import annotations

import math

import torch

from xbench.harness.plan import Job
from xbench.methods.base import Batch
from xbench.registry import create_method
from xbench.tasks.base import TaskInfo

#: A small rotated-digits task: three 8x8 domains.
TINY_TASK_OPTIONS = {"data_seed": 0, "resolution": 8, "angles": [0, 30, 60]}


def tiny_info(protocol: str = "dg", n_source: int = 3, num_classes: int = 4,
              steps: int = 20, batch_size: int = 8) -> TaskInfo:
    """A hand-made ``TaskInfo`` for (1, 8, 8) inputs."""
    return TaskInfo(name="synthetic", kind="cross_domain", protocol=protocol,
                    input_shape=(1, 8, 8), num_classes=num_classes,
                    source_domains=tuple(f"d{i}" for i in range(n_source)),
                    target_domains=("t",), steps=steps, batch_size=batch_size)


def make_batch(info: TaskInfo, seed: int = 0, *, identical: bool = False,
               shift: float = 0.0, target: bool = False, step: int = 0) -> Batch:
    """Random per-domain (x, y); ``identical`` repeats domain 0's data in every domain;
    ``shift`` adds ``shift * i`` to domain i's inputs; ``target`` adds an unlabeled batch."""
    g = torch.Generator().manual_seed(seed)
    n = info.batch_size
    source = []
    for i in range(info.num_source_domains):
        x = torch.rand(n, *info.input_shape, generator=g) + shift * i
        y = torch.randint(info.num_classes, (n,), generator=g)
        source.append((x, y))
    if identical:
        source = [(source[0][0].clone(), source[0][1].clone()) for _ in source]
    x_target = torch.rand(n, *info.input_shape, generator=g) + 1.5 if target else None
    return Batch(source=source, target=x_target, step=step)


def setup_method(name: str, info: TaskInfo, seed: int = 0, **hparams):
    """``create_method(name, **hparams)`` set up on the CPU after seeding torch."""
    method = create_method(name, **hparams)
    torch.manual_seed(seed)
    method.setup(info, torch.device("cpu"))
    method.train(True)
    return method


def tiny_job(method: str, protocol: str = "dg", seed: int = 0, steps: int = 6,
             **hparams) -> Job:
    """A few-step job on the tiny rotated-digits task, target domain '60'."""
    return Job(suite="test", task="digits_rotated", task_version="1",
               task_options=dict(TINY_TASK_OPTIONS), target=("60",), protocol=protocol,
               method=method, hparams=create_method(method, **hparams).get_params(),
               seed=seed, budget={"steps": steps, "batch_size": 8, "eval_every": 3,
                                  "eval_batch_size": 256})


def assert_ok_record(record: dict, log_keys: set[str]) -> None:
    """The job finished, its logs hold ``log_keys`` as finite floats, accuracies are sane."""
    assert record["status"] == "ok", record.get("traceback") or record["error"]
    history = record["metrics"]["history"]
    assert history, "no evaluation point"
    for point in history:
        assert log_keys <= set(point["logs"]), point["logs"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in point["logs"].values())
    assert 0.0 <= record["metrics"]["acc_target"] <= 1.0
