"""dann, dann_cond and cdan: gradient reversal, who sees target data, conditional losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dg_support import assert_ok_record, make_batch, setup_method, tiny_info, tiny_job
from xbench.errors import ProtocolError
from xbench.harness.runner import run_job
from xbench.harness.sampling import training_sampler
from xbench.registry import get_method
from xbench.tasks.base import Split

LOG_KEYS = {"loss", "ce", "disc_loss", "grl_scale"}


@pytest.mark.parametrize("name,protocol", [("dann", "dg"), ("dann", "uda"), ("dann_cond", "dg"),
                                           ("cdan", "uda")])
def test_runs_as_a_job(name, protocol):
    assert_ok_record(run_job(tiny_job(name, protocol=protocol)), LOG_KEYS)


def test_declared_protocols_and_needs():
    assert get_method("dann").protocols == ("dg", "uda")
    assert get_method("dann").needs == {"target_unlabeled"}
    assert get_method("dann_cond").protocols == ("dg",) and not get_method("dann_cond").needs
    assert get_method("cdan").protocols == ("uda",)
    assert get_method("cdan").needs == {"target_unlabeled"}
    with pytest.raises(ProtocolError, match="does not support protocol 'dg'"):
        run_job(tiny_job("cdan", protocol="dg"))


def _grads(loss, params):
    return [None if g is None else g.clone()
            for g in torch.autograd.grad(loss, params, allow_unused=True)]


def test_gradient_reversal_flips_the_discriminator_gradient_into_the_featurizer():
    info = tiny_info(n_source=3)
    method = setup_method("dann", info)
    batch = make_batch(info, shift=0.5)
    x, y = batch.pooled()
    domains = torch.arange(3).repeat_interleave(info.batch_size)
    feat_params = list(method.featurizer.parameters())
    disc_params = list(method.discriminator.parameters())
    params = feat_params + disc_params

    z = method.featurizer(x)
    reversed_loss = method.domain_loss(z, method.classifier(z), y, domains, scale=0.5)
    g_rev = _grads(reversed_loss, params)
    z = method.featurizer(x)  # the plain discriminator loss, no reversal (equal-size domains)
    plain_loss = F.cross_entropy(method.discriminator(z), domains)
    g_plain = _grads(plain_loss, params)

    assert reversed_loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    n = len(feat_params)
    for a, b in zip(g_rev[:n], g_plain[:n]):      # featurizer: sign flipped, scaled
        torch.testing.assert_close(a, -0.5 * b, rtol=1e-4, atol=1e-7)
    for a, b in zip(g_rev[n:], g_plain[n:]):      # discriminator: untouched
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in g_plain[:n])


def test_grl_schedule_ramps_from_zero_to_one():
    info = tiny_info(steps=100)
    method = setup_method("dann", info)
    assert method.grl_scale() == 0.0
    method.update_count = 10  # p = 0.1 -> 2 / (1 + e^-1) - 1
    assert method.grl_scale() == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    method.update_count = 100
    assert method.grl_scale() == pytest.approx(1.0, abs=1e-4)
    assert setup_method("dann", info, grl_schedule=False).grl_scale() == 1.0


def test_dann_under_uda_learns_from_the_target_batch():
    info = tiny_info(protocol="uda", n_source=2)
    method = setup_method("dann", info, grl_schedule=False)
    batch = make_batch(info, target=True)
    batch.target.requires_grad_(True)
    logs = method.update(batch)
    assert batch.target.grad is not None and batch.target.grad.abs().sum() > 0
    assert method.discriminator[-1].out_features == 2  # source vs target
    with pytest.raises(ProtocolError, match="needs unlabeled target"):
        method.update(make_batch(info))
    assert math.isfinite(logs["disc_loss"])


def test_dann_under_dg_tells_source_domains_apart_and_refuses_target_data():
    info = tiny_info(protocol="dg", n_source=3)
    method = setup_method("dann", info)
    assert method.discriminator[-1].out_features == 3
    with pytest.raises(ProtocolError, match="received target data"):
        method.update(make_batch(info, target=True))


def test_runner_gives_dann_target_data_only_under_uda():
    cls = get_method("dann")
    data = {d: {"train": Split(torch.rand(10, 1, 8, 8), torch.randint(4, (10,)))}
            for d in ("d0", "d1", "d2", "t")}
    dg = training_sampler(cls, tiny_info(protocol="dg"), data, seed=0).sample(0)
    uda = training_sampler(cls, tiny_info(protocol="uda"), data, seed=0).sample(0)
    assert dg.target is None
    assert uda.target is not None and uda.target.shape == (8, 1, 8, 8)
    # and the whole dg job runs (the method raises if it ever receives target data under dg)
    assert run_job(tiny_job("dann", protocol="dg"))["status"] == "ok"


def test_dann_cond_domain_loss_is_class_balanced_and_label_conditional():
    info = tiny_info(n_source=2, num_classes=3)
    method = setup_method("dann_cond", info)
    batch = make_batch(info, seed=3)
    x, y = batch.pooled()
    domains = torch.arange(2).repeat_interleave(info.batch_size)
    with torch.no_grad():
        z = method.featurizer(x)
        got = method.domain_loss(z, None, y, domains, scale=1.0).item()
        ce = F.cross_entropy(method.discriminator(z + method.class_embedding(y)), domains,
                             reduction="none")
        want = sum(ce[y == c].mean().item() for c in y.unique()) / len(y.unique())
        shuffled = method.domain_loss(z, None, y.roll(1), domains, scale=1.0).item()
    assert got == pytest.approx(want, rel=1e-5)
    assert shuffled != pytest.approx(got, rel=1e-6)  # the labels condition the discriminator
    assert method.class_embedding.weight.shape == (3, method.featurizer.n_outputs)
    assert any(p is method.class_embedding.weight
               for group in method.optimizer.param_groups for p in group["params"])


@pytest.mark.parametrize("entropy_conditioning", [True, False])
def test_cdan_discriminates_the_multilinear_map_with_entropy_weights(entropy_conditioning):
    info = tiny_info(protocol="uda", n_source=2, num_classes=3)
    method = setup_method("cdan", info, entropy_conditioning=entropy_conditioning)
    batch = make_batch(info, seed=4, target=True)
    x, _ = batch.pooled()
    inputs = torch.cat([x, batch.target])
    domains = torch.cat([torch.zeros(len(x)), torch.ones(len(batch.target))]).long()
    d = method.featurizer.n_outputs
    assert method.discriminator[0].in_features == d * 3
    with torch.no_grad():
        z = method.featurizer(inputs)
        logits = method.classifier(z)
        got = method.domain_loss(z, logits, None, domains, scale=1.0).item()
        p = logits.softmax(1)
        h = torch.einsum("nc,nd->ncd", p, z).reshape(len(z), -1)  # h[n, c*d + j] = p_c z_j
        ce = F.cross_entropy(method.discriminator(h), domains, reduction="none")
        if entropy_conditioning:
            w = 1 + torch.exp((p * p.log()).sum(1))  # 1 + e^{-H(p)}
        else:
            w = torch.ones(len(z))
        want = 0.5 * sum((w[domains == s] * ce[domains == s]).sum() / w[domains == s].sum()
                         for s in (0, 1))
    assert got == pytest.approx(want.item(), rel=1e-5)


def test_cdan_conditions_on_detached_predictions_and_learns_from_the_target_batch():
    info = tiny_info(protocol="uda", n_source=2)
    method = setup_method("cdan", info, grl_schedule=False)
    batch = make_batch(info, target=True)
    x = torch.cat([batch.pooled()[0], batch.target])
    domains = torch.arange(2).repeat_interleave(len(x) // 2)
    z = method.featurizer(x)
    loss = method.domain_loss(z, method.classifier(z), None, domains, scale=1.0)
    head = _grads(loss, list(method.classifier.parameters()))
    assert all(g is None for g in head)  # predictions enter the map detached (authors' code)

    batch.target.requires_grad_(True)
    logs = method.update(batch)
    assert batch.target.grad is not None and batch.target.grad.abs().sum() > 0
    assert LOG_KEYS <= set(logs) and all(math.isfinite(v) for v in logs.values())


@pytest.mark.parametrize("name", ["dann", "dann_cond"])
def test_single_source_domain_has_nothing_to_discriminate(name):
    info = tiny_info(n_source=1)
    logs = setup_method(name, info).update(make_batch(info))
    assert logs["disc_loss"] == 0.0 and math.isfinite(logs["loss"])
