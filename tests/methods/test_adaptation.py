"""Unsupervised domain adaptation methods, the oracle row, and their loss helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xbench.errors import ProtocolError
from xbench.harness.plan import Job
from xbench.harness.runner import run_job
from xbench.harness.sampling import training_sampler
from xbench.losses import (align_distribution, class_confusion, prediction_entropy,
                           pseudo_labels)
from xbench.methods.base import Batch
from xbench.registry import create_method, get_method
from xbench.tasks.base import Split, TaskInfo

UDA = ["mcc", "self_training", "entropy_min"]
INFO = TaskInfo(name="tiny", kind="cross_domain", protocol="uda", input_shape=(1, 8, 8),
                num_classes=3, source_domains=("a", "b"), target_domains=("c",), steps=10,
                batch_size=8)


def tiny_batch(seed: int, target_seed: int | None = None, step: int = 0) -> Batch:
    """Two labeled source domains and one unlabeled (shifted) target batch, 8 each."""
    g = torch.Generator().manual_seed(seed)
    source = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(3, (8,), generator=g))
              for _ in range(2)]
    gt = torch.Generator().manual_seed(seed if target_seed is None else target_seed)
    target = torch.randn(8, 1, 8, 8, generator=gt) * 2.0 + 1.0
    return Batch(source=source, target=target, step=step)


def built(name: str, seed: int = 0, **hparams):
    torch.manual_seed(seed)
    method = create_method(name, **hparams)
    method.setup(INFO, torch.device("cpu"))
    method.train(True)
    return method


def params_of(method) -> list[torch.Tensor]:
    return [p.detach().clone() for p in method.network.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# --- loss helpers: golden values from the definitions -------------------------------------

def test_prediction_entropy_golden():
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    got = prediction_entropy(probs.log())
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2.0)]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)
    # temperature divides the logits before the softmax
    assert torch.allclose(prediction_entropy(2.0 * probs.log(), temperature=2.0), got, atol=1e-6)


def _class_confusion_reference(logits: np.ndarray, temperature: float) -> float:
    """Jin et al. (2020), eqs. 1-6, written out with loops."""
    n, c = logits.shape
    z = logits / temperature
    y = np.exp(z - z.max(axis=1, keepdims=True))
    y /= y.sum(axis=1, keepdims=True)
    h = np.array([-sum(y[i, j] * math.log(y[i, j]) for j in range(c)) for i in range(n)])
    w = n * (1 + np.exp(-h)) / (1 + np.exp(-h)).sum()
    m = np.zeros((c, c))
    for j in range(c):
        for k in range(c):
            m[j, k] = sum(y[i, j] * w[i] * y[i, k] for i in range(n))
    m_norm = m / m.sum(axis=1, keepdims=True)
    return sum(m_norm[j, k] for j in range(c) for k in range(c) if j != k) / c


def test_class_confusion_golden():
    # Uniform predictions: every normalised entry is 1/C, so the loss is (C-1)/C.
    assert class_confusion(torch.zeros(5, 4)).item() == pytest.approx(3 / 4, abs=1e-6)
    # Near one-hot predictions on distinct classes: no confusion.
    assert class_confusion(torch.eye(3) * 200.0, temperature=1.0).item() == pytest.approx(0.0,
                                                                                          abs=1e-6)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-1.0, 3.0, 0.0], [1.0, 1.0, -2.0]])
    for temperature in (1.0, 2.5):
        expected = _class_confusion_reference(logits.double().numpy(), temperature)
        got = class_confusion(logits, temperature).item()
        assert got == pytest.approx(expected, rel=1e-5)


def test_pseudo_labels_threshold():
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9]])
    labels, mask = pseudo_labels(probs, threshold=0.9)
    assert labels.tolist() == [0, 0, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0]


def test_align_distribution_golden():
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]])  # batch mean (0.7, 0.3)
    prior = torch.tensor([0.5, 0.5])
    # row 1: (0.8 * 0.5/0.7, 0.2 * 0.5/0.3) renormalised, by hand
    a, b = 0.8 / 0.7, 0.2 / 0.3
    c, d = 0.6 / 0.7, 0.4 / 0.3
    expected = torch.tensor([[a / (a + b), b / (a + b)], [c / (c + d), d / (c + d)]])
    assert torch.allclose(align_distribution(probs, prior), expected, atol=1e-6)
    # a batch whose mean already equals the prior is left as it is
    assert torch.allclose(align_distribution(probs, torch.tensor([0.7, 0.3])), probs, atol=1e-6)


# --- methods ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", UDA + ["erm_oracle"])
def test_runs_a_few_steps_with_finite_logs(name):
    method = built(name, pretrain_frac=0.2) if name == "self_training" else built(name)
    for step in range(4):
        batch = tiny_batch(step, step=step)
        if name == "erm_oracle":
            batch = Batch(source=batch.source, target_labeled=batch.source[0], step=step)
        logs = method.update(batch)
        assert logs and all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    assert method.predict(torch.randn(5, 1, 8, 8)).shape == (5, 3)


@pytest.mark.parametrize("name", UDA)
def test_declares_uda_and_unlabeled_target(name):
    cls = get_method(name)
    assert cls.protocols == ("uda",) and cls.needs == frozenset({"target_unlabeled"})
    with pytest.raises(ProtocolError, match="uda"):
        built(name).update(Batch(source=tiny_batch(0).source))


# Hyper-parameters under which each method's target loss is active from step 0, and the
# same method with that loss switched off.
ACTIVE = {"mcc": {}, "entropy_min": {}, "self_training": {"confidence": 0.0, "pretrain_frac": 0.0}}
OFF = {"mcc": {"confusion_weight": 0.0}, "entropy_min": {"entropy_weight": 0.0},
       "self_training": {"confidence": 0.0, "pretrain_frac": 0.0, "pseudo_weight": 0.0}}


@pytest.mark.parametrize("name", UDA)
def test_update_depends_on_the_target_batch(name):
    a, b = built(name, **ACTIVE[name]), built(name, **ACTIVE[name])
    assert same(params_of(a), params_of(b))
    a.update(tiny_batch(0, target_seed=1))
    b.update(tiny_batch(0, target_seed=2))
    assert not same(params_of(a), params_of(b))


@pytest.mark.parametrize("name", UDA)
def test_target_loss_contributes_gradient(name):
    """Not only batch-norm statistics: the target loss term itself moves the parameters."""
    on, off = built(name, **ACTIVE[name]), built(name, **OFF[name])
    batch = tiny_batch(3)
    on.update(batch)
    off.update(batch)
    assert not same(params_of(on), params_of(off))


def test_self_training_no_pseudo_labels_before_warmup_or_below_threshold():
    # Before warm-up (half of INFO's 10 steps): no pseudo-label term even with a threshold
    # every sample passes.
    warm, control = (built("self_training", confidence=0.0, pretrain_frac=0.5, pseudo_weight=w)
                     for w in (1.0, 0.0))
    batch = tiny_batch(0, step=4)
    logs = warm.update(batch)
    control.update(batch)
    assert logs["pseudo_fraction"] == 0.0 and logs["loss_pseudo"] == 0.0
    assert same(params_of(warm), params_of(control))
    # After warm-up, a threshold no prediction reaches: the relative threshold is
    # confidence x mean source top probability >= 3 x 1/3 = 1 (3 classes). None used.
    strict, control = (built("self_training", confidence=3.0, pretrain_frac=0.0,
                             pseudo_weight=w) for w in (1.0, 0.0))
    batch = tiny_batch(1, step=10)
    logs = strict.update(batch)
    control.update(batch)
    assert logs["pseudo_fraction"] == 0.0 and logs["loss_pseudo"] == 0.0
    assert same(params_of(strict), params_of(control))
    # After warm-up with a threshold every sample passes: all of them are used.
    loose = built("self_training", confidence=0.0, pretrain_frac=0.0)
    assert loose.update(tiny_batch(1, step=10))["pseudo_fraction"] == 1.0


def test_self_training_threshold_is_relative_to_source_confidence():
    """Used iff its top (aligned) probability >= confidence x mean top source probability."""
    method = built("self_training", confidence=0.9, pretrain_frac=0.0)
    batch = tiny_batch(2, step=0)
    with torch.no_grad():
        x, _ = batch.pooled()
        logits = method.network(torch.cat([x, batch.target]))  # train mode: same forward
    source = F.softmax(logits[:len(x)], dim=1)
    target = align_distribution(F.softmax(logits[len(x):], dim=1), source.mean(dim=0))
    threshold = 0.9 * source.max(dim=1).values.mean().item()
    expected = (target.max(dim=1).values >= threshold).float().mean().item()
    assert 0.0 < expected < 1.0  # a non-trivial split of this batch
    assert method.update(batch)["pseudo_fraction"] == pytest.approx(expected)


def test_erm_oracle_trains_on_target_labels_only():
    cls = get_method("erm_oracle")
    assert "oracle" in cls.tags and cls.needs == frozenset({"target_labeled"})
    assert cls.protocols == ("uda",)
    a, b = built("erm_oracle"), built("erm_oracle")
    batch = tiny_batch(0)
    labeled = (batch.target, torch.randint(3, (8,), generator=torch.Generator().manual_seed(0)))
    a.update(Batch(source=batch.source, target_labeled=labeled))
    b.update(Batch(source=tiny_batch(9).source, target_labeled=labeled))  # other sources
    assert same(params_of(a), params_of(b))
    # the loss is the target cross-entropy
    c = built("erm_oracle")
    with torch.no_grad():
        expected = F.cross_entropy(c.network(labeled[0]), labeled[1]).item()
    assert c.update(Batch(source=batch.source, target_labeled=labeled))["loss"] == \
        pytest.approx(expected, rel=1e-6)


def test_sampler_hands_uda_methods_target_inputs_and_the_oracle_target_labels():
    x = torch.zeros(10, 1, 8, 8)
    data = {d: {"train": Split(x + i, torch.full((10,), i))} for i, d in enumerate("abc")}
    batch = training_sampler(get_method("mcc"), INFO, data, seed=0).sample(0)
    assert batch.target is not None and batch.target_labeled is None
    assert torch.all(batch.target == 2.0)
    batch = training_sampler(get_method("erm_oracle"), INFO, data, seed=0).sample(0)
    assert batch.target is None and torch.all(batch.target_labeled[1] == 2)


def test_erm_oracle_record_is_marked_oracle():
    job = Job(suite="test", task="digits_rotated", task_version="1",
              task_options={"resolution": 8}, target=("75",), protocol="uda",
              method="erm_oracle", hparams={}, seed=0,
              budget={"steps": 6, "batch_size": 8, "eval_every": 3, "eval_batch_size": 256})
    record = run_job(job)
    assert record["status"] == "ok", record.get("error")
    assert record["oracle"] is True and record["transductive"] is False
    assert 0.0 <= record["metrics"]["acc_target"] <= 1.0


def test_self_training_warm_up_is_a_fraction_of_the_job_steps():
    import dataclasses

    for steps, expected in ((10, 5), (300, 150)):
        torch.manual_seed(0)
        method = create_method("self_training", pretrain_frac=0.5)
        method.setup(dataclasses.replace(INFO, steps=steps), torch.device("cpu"))
        assert method.pretrain_steps == expected
