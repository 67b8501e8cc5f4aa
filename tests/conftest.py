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
