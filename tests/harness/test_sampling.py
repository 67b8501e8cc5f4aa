"""The leak guard: a method gets exactly the training data it declared, and no more."""

from __future__ import annotations

import pytest
import torch

from xbench.errors import ProtocolError
from xbench.harness.sampling import training_sampler
from xbench.methods.erm import ERM
from xbench.registry import load_task
from xbench.tasks.base import Budget


def _setup(protocol: str):
    task = load_task("tiny_blobs")
    info = task.info(("c",), protocol, Budget(batch_size=8))
    return info, task.build()


class NeedsTarget(ERM):
    needs = frozenset({"target_unlabeled"})
    registered_name = "needs_target"


class WantsLabels(ERM):
    needs = frozenset({"target_labeled"})
    registered_name = "wants_labels"


class Oracle(WantsLabels):
    tags = frozenset({"oracle"})


def test_dg_job_never_receives_target_data_even_if_it_asks():
    info, data = _setup("dg")
    batch = training_sampler(NeedsTarget, info, data, seed=0).sample(0)
    assert batch.target is None and batch.target_labeled is None
    assert len(batch.source) == 2  # domains a and b, never c


def test_uda_job_gets_unlabeled_target_only_when_declared():
    info, data = _setup("uda")
    assert training_sampler(ERM, info, data, seed=0).sample(0).target is None
    batch = training_sampler(NeedsTarget, info, data, seed=0).sample(0)
    assert batch.target is not None and batch.target_labeled is None
    # every target row comes from the target *train* split
    train_rows = {tuple(r.tolist()) for r in data["c"]["train"].x}
    assert all(tuple(r.tolist()) in train_rows for r in batch.target)


def test_source_batches_come_from_source_train_splits_only():
    info, data = _setup("dg")
    batch = training_sampler(ERM, info, data, seed=0).sample(0)
    for (x, _), domain in zip(batch.source, ("a", "b")):
        train_rows = {tuple(r.tolist()) for r in data[domain]["train"].x}
        assert all(tuple(r.tolist()) in train_rows for r in x)


def test_target_labels_only_for_oracle_rows():
    info, data = _setup("uda")
    with pytest.raises(ProtocolError, match="not tagged 'oracle'"):
        training_sampler(WantsLabels, info, data, seed=0)
    batch = training_sampler(Oracle, info, data, seed=0).sample(0)
    x, y = batch.target_labeled
    assert len(x) == len(y) == 8


def test_same_seed_same_batches():
    info, data = _setup("dg")
    a = training_sampler(ERM, info, data, seed=5).sample(0)
    b = training_sampler(ERM, info, data, seed=5).sample(0)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a.source, b.source))
