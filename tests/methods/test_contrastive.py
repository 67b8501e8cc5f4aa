"""Contrastive family: seeded augmentations, SimCLR's staged probe, paired cross-modal transfer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from families_support import tiny_job
from xbench.harness.runner import run_job
from xbench.methods.contrastive import augment
from xbench.registry import create_method, load_task
from xbench.tasks.base import Budget

SHAPES = [(6, 1, 16, 16), (6, 3, 8, 8), (6, 8, 16), (6, 10)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_augment_keeps_shape_and_is_seeded(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    c = augment(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b)  # same seed, same views
    assert not torch.equal(a, c) and not torch.equal(a, x)


def test_augment_draws_differ_from_view_to_view():
    x = torch.rand(4, 1, 16, 16)
    generator = torch.Generator().manual_seed(0)
    assert not torch.equal(augment(x, generator), augment(x, generator))


def test_simclr_pretrains_then_probes_with_a_frozen_encoder():
    job = tiny_job("tiny_blobs", "contrastive_simclr", "uda", ("c",), steps=20, batch=16)
    record = run_job(dataclasses.replace(job, task_options={"data_seed": 0, "n_per_domain": 60}))
    assert record["status"] == "ok", record["error"]
    assert list(record["cost"]["stages"]) == ["pretrain", "probe"]
    assert record["metrics"]["acc_target"] > 1 / 3  # chance: 3 classes


def test_contrastive_paired_transfers_labels_to_the_other_modality():
    record = run_job(tiny_job("tiny_paired", "contrastive_paired", "paired", ("narrow",),
                              steps=60, batch=8))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["domains"]["narrow"]["test"] > 0.6  # chance is 1/3
    assert record["metrics"]["acc_target"] == record["metrics"]["domains"]["narrow"]["test"]


def test_contrastive_paired_routes_inputs_by_shape():
    task = load_task("tiny_paired")
    info = task.info(("narrow",), "paired", Budget(batch_size=8))
    torch.manual_seed(0)
    method = create_method("contrastive_paired")
    method.setup(info, torch.device("cpu"))
    method.train(False)
    wide, narrow = torch.randn(5, 8), torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(method.predict(narrow),
                           method.head(F.normalize(method.psi(narrow), dim=1)))
        assert torch.equal(method.predict(wide), method.head(F.normalize(method.phi(wide), dim=1)))
        with pytest.raises(ValueError, match="no modality has input shape"):
            method.predict(torch.randn(5, 3))
