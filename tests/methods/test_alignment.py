"""coral and mmd: the feature-alignment penalty is zero for identical domains, positive
otherwise, averaged over domain pairs, and training with it aligns the domains."""

from __future__ import annotations

import itertools

import pytest
import torch

from dg_support import assert_ok_record, make_batch, setup_method, tiny_info, tiny_job
from xbench import losses
from xbench.harness.runner import run_job
from xbench.registry import get_method

METHODS = ["coral", "mmd"]
DISTANCE = {"coral": losses.coral_loss, "mmd": losses.mmd_loss}


@pytest.mark.parametrize("name", METHODS)
def test_runs_as_a_job(name):
    assert_ok_record(run_job(tiny_job(name)), {"loss", "ce", "penalty"})


@pytest.mark.parametrize("name", METHODS)
def test_declares_dg_only_and_family_tags(name):
    cls = get_method(name)
    assert cls.protocols == ("dg",)
    assert {"dg", "alignment"} <= cls.tags
    assert "penalty_weight" in cls.default_hparams() and "penalty_weight" in cls.search_space


@pytest.mark.parametrize("name", METHODS)
def test_penalty_zero_when_domains_identical(name):
    method = setup_method(name, tiny_info())
    logs = method.update(make_batch(tiny_info(), identical=True))
    assert logs["penalty"] == pytest.approx(0.0, abs=1e-7)
    assert logs["loss"] == pytest.approx(logs["ce"], abs=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_penalty_is_mean_distance_over_domain_pairs(name):
    info = tiny_info(n_source=3)
    method = setup_method(name, info)
    batch = make_batch(info, shift=0.5)
    with torch.no_grad():
        z = method.featurizer(batch.pooled()[0])  # same train-mode batch statistics
        parts = z.split(info.batch_size)
        want = sum(DISTANCE[name](a, b) for a, b in itertools.combinations(parts, 2)) / 3
    logs = method.update(batch)
    assert logs["penalty"] > 0
    assert logs["penalty"] == pytest.approx(want.item(), rel=1e-5)
    assert logs["loss"] == pytest.approx(logs["ce"] + method.penalty_weight * logs["penalty"],
                                         rel=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_single_source_domain_has_zero_penalty(name):
    info = tiny_info(n_source=1)
    logs = setup_method(name, info).update(make_batch(info))
    assert logs["penalty"] == 0.0


@pytest.mark.parametrize("name", METHODS)
def test_training_with_the_penalty_aligns_domains(name):
    """Same data, same init: with a large penalty weight the domains' features end up closer."""
    info = tiny_info(n_source=2, batch_size=16)
    batches = [make_batch(info, seed=s, shift=0.6) for s in range(25)]
    probe = make_batch(info, seed=999, shift=0.6)

    def final_penalty(weight: float) -> float:
        method = setup_method(name, info, seed=1, penalty_weight=weight)
        for b in batches:
            method.update(b)
        with torch.no_grad():
            return method.penalty(list(method.featurizer(probe.pooled()[0]).split(16))).item()

    assert final_penalty(10.0) < 0.5 * final_penalty(0.0)
