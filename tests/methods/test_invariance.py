"""irm, vrex and groupdro: penalties from their formulas, annealing, and group weights."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dg_support import assert_ok_record, make_batch, setup_method, tiny_info, tiny_job
from xbench.harness.runner import run_job
from xbench.registry import get_method


@pytest.mark.parametrize("name,keys", [("irm", {"loss", "ce", "penalty", "penalty_weight"}),
                                       ("vrex", {"loss", "ce", "penalty", "penalty_weight"}),
                                       ("groupdro", {"loss", "ce", "q_0", "q_30"})])
def test_runs_as_a_job(name, keys):
    hparams = {"warmup_frac": 0.1} if name != "groupdro" else {}
    assert_ok_record(run_job(tiny_job(name, **hparams)), keys)


@pytest.mark.parametrize("name", ["irm", "vrex", "groupdro"])
def test_declares_dg_only(name):
    cls = get_method(name)
    assert cls.protocols == ("dg",) and {"dg", "invariance"} <= cls.tags
    assert set(cls.search_space) <= set(cls.default_hparams())


def per_domain_risks(method, batch) -> np.ndarray:
    """CE of each source domain, from a copy of the network on the pooled batch (train mode)."""
    net = copy.deepcopy(method.network)
    with torch.no_grad():
        logits = net(batch.pooled()[0]).split([len(y) for _, y in batch.source])
        return np.array([F.cross_entropy(lg, y).item()
                         for lg, (_, y) in zip(logits, batch.source)], dtype=np.float64)


@pytest.mark.parametrize("name", ["irm", "vrex"])
def test_penalty_inactive_before_anneal_steps_then_switched_on_with_fresh_optimizer(name):
    info = tiny_info(steps=20)
    anneal = 3
    method = setup_method(name, info, seed=0, warmup_frac=0.15, penalty_weight=50.0)
    assert method.anneal_steps == anneal  # 0.15 of 20 steps
    erm = setup_method("erm", info, seed=0)  # same seed, same architecture: same init
    batches = [make_batch(info, seed=s, shift=0.3) for s in range(anneal + 1)]
    first_optimizer = method.optimizer
    for step, batch in enumerate(batches[:anneal]):
        logs = method.update(batch)
        erm.update(batch)
        assert logs["penalty_weight"] == 0.0 and logs["penalty"] != 0, step  # computed, unused
        assert logs["loss"] == pytest.approx(logs["ce"], rel=1e-6)
        assert method.optimizer is first_optimizer
    for p, q in zip(method.network.parameters(), erm.network.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)  # warm-up is plain ERM

    logs = method.update(batches[anneal])
    erm.update(batches[anneal])
    assert logs["penalty_weight"] == 50.0
    assert method.optimizer is not first_optimizer
    assert all(s["step"].item() == 1 for s in method.optimizer.state.values())  # reset Adam
    diff = max((p - q).abs().max().item()
               for p, q in zip(method.network.parameters(), erm.network.parameters()))
    assert diff > 1e-4  # the penalty now changes the update


def test_vrex_penalty_is_population_variance_of_domain_risks():
    info = tiny_info(n_source=3)
    method = setup_method("vrex", info, warmup_frac=0.0)
    batch = make_batch(info, seed=5, shift=0.4)
    risks = per_domain_risks(method, batch)
    logs = method.update(batch)
    assert logs["ce"] == pytest.approx(risks.mean(), rel=1e-5)
    assert logs["penalty"] == pytest.approx(((risks - risks.mean()) ** 2).mean(), rel=1e-4)
    identical = setup_method("vrex", info).update(make_batch(info, identical=True))
    assert identical["penalty"] == pytest.approx(0.0, abs=1e-10)


def test_irm_penalty_is_mean_of_split_batch_gradient_products():
    # d/dw CE(w z, y) at w = 1 = mean_i sum_c (softmax(z_i)_c - [c = y_i]) z_ic, per half batch
    info = tiny_info(n_source=2)
    method = setup_method("irm", info, warmup_frac=0.0)
    batch = make_batch(info, seed=6)
    with torch.no_grad():
        logits = copy.deepcopy(method.network)(batch.pooled()[0]).double()
    want = []
    for lg, (_, y) in zip(logits.split(info.batch_size), batch.source):
        onehot = F.one_hot(y, info.num_classes).double()
        dw = ((lg.softmax(1) - onehot) * lg).sum(1)
        want.append(dw[0::2].mean().item() * dw[1::2].mean().item())
    logs = method.update(batch)
    assert logs["penalty"] == pytest.approx(np.mean(want), rel=1e-4, abs=1e-9)


def test_groupdro_exponentiated_gradient_step_towards_the_worst_domain():
    info = tiny_info(n_source=3)
    method = setup_method("groupdro", info, group_lr=0.5)
    q = np.full(3, 1 / 3)
    np.testing.assert_allclose(method.group_weights.numpy(), q, rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        batch = make_batch(info, seed=step)
        # domain 2's inputs are pure noise with a large scale: its risk is the highest
        x2, y2 = batch.source[2]
        batch.source[2] = (x2 * 0 + 5 * torch.randn(x2.shape, generator=g), y2)
        risks = per_domain_risks(method, batch)
        q = q * np.exp(0.5 * risks)
        q = q / q.sum()
        logs = method.update(batch)
        np.testing.assert_allclose(method.group_weights.numpy(), q, rtol=1e-5)
        assert [logs[f"q_d{i}"] for i in range(3)] == pytest.approx(q.tolist(), rel=1e-5)
        assert logs["loss"] == pytest.approx(float(q @ risks), rel=1e-4)
    assert int(np.argmax(q)) == 2 and q[2] > 1 / 3
    assert math.isclose(method.group_weights.sum().item(), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("name", ["irm", "vrex", "groupdro"])
def test_single_source_domain(name):
    info = tiny_info(n_source=1)
    hparams = {"warmup_frac": 0.0} if name != "groupdro" else {}
    logs = setup_method(name, info, **hparams).update(make_batch(info))
    assert all(math.isfinite(v) for v in logs.values())
    if name == "vrex":
        assert logs["penalty"] == 0.0  # the variance of one risk
    if name == "groupdro":
        assert logs["q_d0"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["irm", "vrex"])
def test_warm_up_is_a_fraction_of_the_job_steps(name):
    for steps in (20, 120, 600):
        method = setup_method(name, tiny_info(steps=steps), warmup_frac=0.5)
        assert method.anneal_steps == steps // 2
