"""mixup: inputs mixed across different source domains with the matching label weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dg_support import assert_ok_record, make_batch, setup_method, tiny_info, tiny_job
from xbench.harness.runner import run_job
from xbench.methods.base import Batch
from xbench.registry import get_method


def test_runs_as_a_job():
    assert_ok_record(run_job(tiny_job("mixup")), {"loss", "mix_weight"})
    assert get_method("mixup").protocols == ("dg",)
    assert "beta_concentration" in get_method("mixup").search_space
    assert "alpha" not in get_method("mixup").default_hparams()


def constant_domains(info) -> Batch:
    """Domain i: every pixel equals i + 1, every label equals i."""
    n = info.batch_size
    return Batch(source=[(torch.full((n, *info.input_shape), float(i + 1)),
                          torch.full((n,), i, dtype=torch.long))
                         for i in range(info.num_source_domains)])


def test_mixes_each_domain_with_a_different_domain():
    info = tiny_info(n_source=3, batch_size=4)
    method = setup_method("mixup", info, beta_concentration=1.0)
    torch.manual_seed(0)
    for _ in range(5):
        x, y_a, y_b, lam = method.mix(constant_domains(info))
        assert x.shape == (12, 1, 8, 8) and len(y_a) == len(y_b) == len(lam) == 12
        assert (y_a != y_b).all()                       # inter-domain pairs
        assert sorted(y_a.unique().tolist()) == [0, 1, 2]  # every domain mixed once as a...
        assert sorted(y_b.unique().tolist()) == [0, 1, 2]  # ...and once as b
        want = lam * (y_a + 1).float() + (1 - lam) * (y_b + 1).float()
        torch.testing.assert_close(x[:, 0, 0, 0], want)
        assert ((lam > 0) & (lam < 1)).all()


def test_single_source_domain_mixes_within_the_domain():
    info = tiny_info(n_source=1, batch_size=6)
    method = setup_method("mixup", info)
    batch = make_batch(info)
    x, y_a, y_b, lam = method.mix(batch)
    torch.testing.assert_close(y_a, batch.source[0][1])
    assert sorted(y_b.tolist()) == sorted(y_a.tolist())  # a shuffled copy of the same batch
    assert x.shape == batch.source[0][0].shape


def test_identical_domains_reduce_to_plain_cross_entropy():
    """x_i = x_j and y_i = y_j: the mixed input is the input and the loss is plain CE."""
    info = tiny_info(n_source=2)
    method = setup_method("mixup", info)
    batch = make_batch(info, identical=True)
    with torch.no_grad():
        x, y = batch.pooled()
        want = F.cross_entropy(copy.deepcopy(method.network)(x), y).item()
    assert method.update(batch)["loss"] == pytest.approx(want, rel=1e-5)
