"""Shared fixtures: a tiny in-memory task and misbehaving methods for harness tests."""

from __future__ import annotations

import math

import pytest
import torch

from xbench.harness.plan import Job
from xbench.methods.erm import ERM
from xbench.registry import METHODS, TASKS
from xbench.tasks.base import Budget, Split, Task


class TinyBlobs(Task):
    """Three domains of Gaussian blobs in 8-D, each shifted further (test task)."""

    version = "1"
    protocols = ("dg", "uda")
    num_classes = 3
    budget = Budget(steps=20, batch_size=16, eval_every=10, eval_batch_size=64)

    def __init__(self, *, data_seed: int = 0, n_per_domain: int = 60):
        super().__init__(data_seed=data_seed)
        self.n_per_domain = n_per_domain

    domains = ("a", "b", "c")
    default_target = ("c",)
    input_shape = (8,)

    def build(self):
        g = torch.Generator().manual_seed(self.data_seed)
        centers = torch.randn(self.num_classes, 8, generator=g) * 3
        data = {}
        for i, domain in enumerate(self.domains):
            y = torch.arange(self.n_per_domain) % self.num_classes
            x = centers[y] + torch.randn(self.n_per_domain, 8, generator=g) + i
            n = self.n_per_domain // 3
            data[domain] = {"train": Split(x[:n], y[:n]), "val": Split(x[n:2 * n], y[n:2 * n]),
                            "test": Split(x[2 * n:], y[2 * n:])}
        return data


class Exploding(ERM):
    """Test method whose loss becomes NaN at step 3."""

    def update(self, batch):
        logs = super().update(batch)
        return {"loss": math.nan if batch.step >= 3 else logs["loss"]}


class Raising(ERM):
    """Test method that raises inside update."""

    def update(self, batch):
        raise RuntimeError("boom")


@pytest.fixture(scope="session", autouse=True)
def test_registrations():
    """Register the test task and methods for the whole session."""
    TASKS.register("tiny_blobs", TinyBlobs, origin="tests")
    METHODS.register("test_exploding", Exploding, origin="tests")
    METHODS.register("test_raising", Raising, origin="tests")
    yield
    for name in ("test_exploding", "test_raising"):
        METHODS.unregister(name)
    TASKS.unregister("tiny_blobs")


def make_job(method: str = "erm", seed: int = 0, hparams: dict | None = None,
             protocol: str = "dg", steps: int = 20) -> Job:
    """A job on ``tiny_blobs`` with a small budget."""
    from xbench.registry import create_method

    resolved = create_method(method, **(hparams or {})).get_params()
    budget = {"steps": steps, "batch_size": 16, "eval_every": 10, "eval_batch_size": 64}
    return Job(suite="test", task="tiny_blobs", task_version="1",
               task_options={"data_seed": 0, "n_per_domain": 60}, target=("c",),
               protocol=protocol, method=method, hparams=resolved, seed=seed, budget=budget)


TINY_SUITE = """
name = "tiny"
seeds = [0, 1]
methods = ["erm"]
[budget]
steps = 20
batch_size = 16
eval_every = 10
eval_batch_size = 64
[[tasks]]
name = "tiny_blobs"
"""


@pytest.fixture
def tiny_suite(tmp_path):
    """Path to a two-seed ERM suite on ``tiny_blobs``."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    return path


class TinyFewShot(Task):
    """Base classes 0-3 and novel classes 4-7 of 8-D Gaussian blobs (test task)."""

    version = "1"
    kind = "cross_task"
    protocols = ("fewshot",)
    num_classes = 4
    budget = Budget(steps=10, batch_size=16, eval_every=5, eval_batch_size=64)
    domains = ("base", "novel")
    default_target = ("novel",)
    input_shape = (8,)
    domain_classes = {"base": ("c0", "c1", "c2", "c3"), "novel": ("c4", "c5", "c6", "c7")}

    def build(self):
        g = torch.Generator().manual_seed(self.data_seed)
        centers = torch.randn(8, 8, generator=g) * 1.2
        data = {}
        for domain, offset in (("base", 0), ("novel", 4)):
            parts = {}
            for split in ("train", "val", "test"):
                y = torch.arange(4).repeat_interleave(20)
                x = centers[y + offset] + torch.randn(len(y), 8, generator=g)
                parts[split] = Split(x, y)
            data[domain] = parts
        return data


class TinyPaired(Task):
    """Two index-aligned views of the same instances: 8-D vectors and their 4-D halves summed."""

    version = "1"
    kind = "cross_modality"
    protocols = ("paired",)
    paired = True
    num_classes = 3
    budget = Budget(steps=10, batch_size=8, eval_every=5, eval_batch_size=64)
    domains = ("wide", "narrow")
    default_target = ("narrow",)
    input_shape = (8,)

    @property
    def input_shapes(self):
        return {"wide": (8,), "narrow": (4,)}

    def build(self):
        g = torch.Generator().manual_seed(self.data_seed)
        y = torch.arange(90) % 3
        wide = torch.randn(3, 8, generator=g)[y] * 3 + torch.randn(90, 8, generator=g)
        narrow = wide[:, :4] + wide[:, 4:]
        cut = {"train": slice(0, 30), "val": slice(30, 60), "test": slice(60, 90)}
        return {"wide": {k: Split(wide[s], y[s]) for k, s in cut.items()},
                "narrow": {k: Split(narrow[s], y[s]) for k, s in cut.items()}}


@pytest.fixture(scope="session", autouse=True)
def protocol_test_tasks():
    """Register the few-shot and paired test tasks."""
    TASKS.register("tiny_fewshot", TinyFewShot, origin="tests")
    TASKS.register("tiny_paired", TinyPaired, origin="tests")
    yield
    TASKS.unregister("tiny_fewshot")
    TASKS.unregister("tiny_paired")
