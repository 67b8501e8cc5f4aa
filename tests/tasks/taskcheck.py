"""Shared checks for task tests: determinism, split shapes, a data digest, and a small ERM job."""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from xbench.harness.plan import Job
from xbench.harness.runner import run_job
from xbench.registry import create_method, load_task


def data_digest(data: dict) -> str:
    """SHA-256 over every domain's splits (dtype, shape, input and label bytes): an old task
    version must keep building data with the same digest."""
    h = hashlib.sha256()
    for domain in data:
        for split in ("train", "val", "test"):
            part = data[domain][split]
            h.update(f"{domain}/{split}/{part.x.dtype}/{tuple(part.x.shape)}".encode())
            h.update(part.x.numpy().tobytes())
            h.update(part.y.numpy().tobytes())
    return h.hexdigest()


def assert_same(a: dict, b: dict) -> None:
    """Two builds hold identical tensors (same domains, splits, values, dtypes)."""
    assert a.keys() == b.keys()
    for domain in a:
        assert a[domain].keys() == b[domain].keys() == {"train", "val", "test"}
        for split in a[domain]:
            assert a[domain][split].x.dtype == b[domain][split].x.dtype
            assert torch.equal(a[domain][split].x, b[domain][split].x), (domain, split)
            assert torch.equal(a[domain][split].y, b[domain][split].y), (domain, split)


def differs(a: dict, b: dict) -> bool:
    """True when some domain's training inputs differ between two builds."""
    return any(a[d]["train"].x.shape != b[d]["train"].x.shape
               or not torch.equal(a[d]["train"].x, b[d]["train"].x) for d in a)


def check_determinism(name: str, **options) -> dict:
    """Same version + data_seed -> identical tensors; another data_seed -> different ones."""
    first = load_task(name, data_seed=0, **options).build()
    assert_same(first, load_task(name, data_seed=0, **options).build())
    assert differs(first, load_task(name, data_seed=1, **options).build())
    return first


def check_splits(task, data: dict) -> None:
    """Every domain has train/val/test, inputs of the declared shape, labels in range."""
    assert tuple(data) == task.domains
    for domain, parts in data.items():
        shape = task.input_shapes[domain]
        for split, part in parts.items():
            assert len(part.x) == len(part.y) > 0, (domain, split)
            assert tuple(part.x.shape[1:]) == tuple(shape), (domain, split)
            assert part.y.dtype == torch.long
            assert 0 <= int(part.y.min()) and int(part.y.max()) < task.num_classes


def erm_record(name: str, target: tuple[str, ...], steps: int, batch_size: int = 32,
               seed: int = 0, **options) -> dict:
    """Run ERM on ``name`` through the real runner with a small budget; return the record."""
    task = load_task(name, **options)
    budget = task.budget.replace(steps=steps, batch_size=batch_size, eval_every=steps)
    job = Job(suite="test", task=name, task_version=task.version, task_options=task.options(),
              target=target, protocol="dg", method="erm",
              hparams=create_method("erm").get_params(), seed=seed,
              budget=dataclasses.asdict(budget))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small CNN trains faster on one thread than on two busy ones
    try:
        record = run_job(job, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "ok", record.get("error")
    return record
