"""Test-time adaptation methods: AdaBN and TENT, alone and through the runner."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from xbench.harness import runner
from xbench.harness.evaluation import evaluation_mode, predict_all
from xbench.harness.plan import Job
from xbench.losses import prediction_entropy
from xbench.methods.base import Batch
from xbench.methods.test_time import norm_layers
from xbench.registry import create_method, get_method
from xbench.tasks.base import TaskInfo

INFO = TaskInfo(name="tiny", kind="cross_domain", protocol="dg", input_shape=(1, 8, 8),
                num_classes=3, source_domains=("a", "b"), target_domains=("c",), steps=10,
                batch_size=8)


def source_batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(source=[(torch.randn(8, 1, 8, 8, generator=g),
                          torch.randint(3, (8,), generator=g)) for _ in range(2)], step=seed)


def shifted(n: int = 16) -> torch.Tensor:
    """A target batch from another distribution than the sources (scaled and offset)."""
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(99)) * 3.0 + 2.0


def trained(name: str, steps: int = 3, **hparams):
    """``name`` trained ``steps`` steps from seed 0 and put in evaluation mode."""
    torch.manual_seed(0)
    method = create_method(name, **hparams)
    method.setup(INFO, torch.device("cpu"))
    method.train(True)
    for step in range(steps):
        logs = method.update(source_batch(step))
        assert all(math.isfinite(v) for v in logs.values())
    return method.train(False)


def state(method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.network.state_dict().items()}


@pytest.mark.parametrize("name", ["adabn", "tent"])
def test_declares_test_time_and_trains_like_erm(name):
    cls = get_method(name)
    # only under their own protocol: never ranked against methods that see no target data
    assert cls.protocols == ("tta",) and cls.needs == frozenset({"test_time"})
    assert "tta" in cls.tags and "dg" not in cls.tags
    method, erm = trained(name), trained("erm")
    for (key, a), b in zip(state(method).items(), state(erm).values()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", ["adabn", "tent"])
def test_predict_changes_no_state(name):
    method = trained(name)
    x = shifted()
    method.adapt(x)
    before = copy.deepcopy(state(method))
    first = method.predict(x)
    assert torch.equal(first, method.predict(x))
    for key, value in state(method).items():
        assert torch.equal(value, before[key]), key


def test_adabn_reestimates_batch_norm_statistics_only_in_adapt():
    method, erm = trained("adabn"), trained("erm")
    x = shifted()
    assert torch.equal(method.predict(x), erm.predict(x))  # nothing adapted yet
    params = {k: p.detach().clone() for k, p in method.network.named_parameters()}
    method.adapt(x)
    for k, p in method.network.named_parameters():
        assert torch.equal(p, params[k]), k  # weights untouched
    # First BN layer: its running statistics are now the batch's (definition of AdaBN).
    conv, bn = method.network[0][0], norm_layers(method.network)[0]
    with torch.no_grad():
        h = conv(x)
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)
    assert not bn.training  # back in evaluation mode for predict
    assert not torch.allclose(method.predict(x), erm.predict(x), atol=1e-4)


def test_adabn_and_tent_leave_single_sample_batches_alone():
    for name in ("adabn", "tent"):
        method = trained(name)
        before = state(method)
        method.adapt(shifted(1))
        assert all(torch.equal(v, before[k]) for k, v in state(method).items()), name


def test_tent_updates_only_batch_norm_affine_parameters():
    method = trained("tent", adapt_steps=5, adapt_lr=1e-2)
    x = shifted()
    affine = {id(p) for m in norm_layers(method.network) for p in (m.weight, m.bias)}
    before = {k: p.detach().clone() for k, p in method.network.named_parameters()}
    grads = {k: None if p.grad is None else p.grad.clone()
             for k, p in method.network.named_parameters()}
    entropy_before = prediction_entropy(_batch_stat_logits(method, x)).mean().item()
    method.adapt(x)
    changed = set()
    for k, p in method.network.named_parameters():
        if id(p) in affine:
            changed.add(k) if not torch.equal(p, before[k]) else None
        else:
            assert torch.equal(p, before[k]), k  # bitwise unchanged
            # adapt computes no gradient for them either (training's last .grad stays as is)
            assert (p.grad is None) if grads[k] is None else torch.equal(p.grad, grads[k]), k
    assert changed  # the affine parameters moved
    # It minimised the entropy of its (batch-statistics) predictions on this batch.
    assert prediction_entropy(method.predict(x)).mean().item() < entropy_before


def _batch_stat_logits(method, x):
    """The model's logits on ``x`` normalising with x's own batch statistics (no state change)."""
    network = copy.deepcopy(method.network)
    for m in norm_layers(network):
        m.train(True)
    with torch.no_grad():
        return network(x)


def test_tta_evaluation_restores_the_trained_state():
    method = trained("tent", adapt_steps=3, adapt_lr=1e-2)
    before = state(method)
    x = shifted(20)
    with evaluation_mode(method):
        first = predict_all(method, x, batch_size=8)
    with evaluation_mode(method):
        second = predict_all(method, x, batch_size=8)
    assert torch.equal(first, second)
    assert all(torch.equal(v, before[k]) for k, v in state(method).items())


@pytest.mark.parametrize("name", ["adabn", "tent"])
def test_tta_job_through_the_runner(name, monkeypatch):
    """Each evaluation pass starts from the trained state: evaluating twice agrees."""
    calls = []
    real_evaluate = runner.evaluate

    def evaluate_twice(method, *args, **kwargs):
        before = state(method)
        first = real_evaluate(method, *args, **kwargs)
        second = real_evaluate(method, *args, **kwargs)
        kept = first.pop("pred_test"), second.pop("pred_test")  # tensors: compared one by one
        assert first == second
        assert kept[0].keys() == kept[1].keys()
        assert all(torch.equal(kept[0][d], kept[1][d]) for d in kept[0])
        first["pred_test"] = kept[0]
        assert all(torch.equal(v, before[k]) for k, v in state(method).items())
        calls.append(first)
        return first

    monkeypatch.setattr(runner, "evaluate", evaluate_twice)
    job = Job(suite="test", task="digits_rotated", task_version="1",
              task_options={"resolution": 8}, target=("75",), protocol="tta", method=name,
              hparams={}, seed=0,
              budget={"steps": 4, "batch_size": 8, "eval_every": 4, "eval_batch_size": 128},
              stream={"batch_size": 16, "mode": "reset"})
    record = runner.run_job(job)
    assert record["status"] == "ok", record.get("traceback")
    assert record["transductive"] is True and record["oracle"] is False
    assert record["stream"] == {"batch_size": 16, "mode": "reset"}
    assert len(calls) == 1


@pytest.mark.parametrize("protocol", ["uda", "dg"])
def test_tta_methods_refuse_every_other_protocol(protocol):
    job = Job(suite="test", task="digits_rotated", task_version="1", task_options={},
              target=("75",), protocol=protocol, method="tent", hparams={}, seed=0, budget={})
    from xbench.errors import ProtocolError
    with pytest.raises(ProtocolError, match=f"does not support protocol '{protocol}'"):
        runner.run_job(job)


def test_erm_is_the_tta_reference_row_and_records_the_default_stream():
    job = Job(suite="test", task="digits_rotated", task_version="1",
              task_options={"resolution": 8}, target=("75",), protocol="tta", method="erm",
              hparams={}, seed=0,
              budget={"steps": 4, "batch_size": 8, "eval_every": 4, "eval_batch_size": 128})
    record = runner.run_job(job)
    assert record["status"] == "ok", record.get("traceback")
    assert record["transductive"] is False
    assert record["stream"] == {"batch_size": 64, "mode": "reset"}
    dg = runner.run_job(dataclasses.replace(job, protocol="dg"))
    assert record["metrics"]["history"] == dg["metrics"]["history"]  # trained as dg


def test_reset_stream_adapts_each_batch_from_the_trained_state():
    """reset: a batch's logits are those of adapting the trained model on it alone;
    continual: adaptation carries over, so later batches differ."""
    from xbench.tasks.base import Stream

    method = trained("tent", adapt_steps=3, adapt_lr=5e-2)
    x = shifted(24)
    with evaluation_mode(method):
        reset = predict_all(method, x, 512, stream=Stream(batch_size=8, mode="reset"))
    with evaluation_mode(method):
        continual = predict_all(method, x, 512, stream=Stream(batch_size=8, mode="continual"))
    alone = []
    for i in range(0, 24, 8):
        with evaluation_mode(method):
            alone.append(predict_all(method, x[i:i + 8], 512,
                                     stream=Stream(batch_size=8, mode="reset")))
    assert torch.equal(reset, torch.cat(alone))
    assert torch.equal(reset[:8], continual[:8])  # the first batch starts from the trained state
    assert not torch.allclose(reset[8:], continual[8:])


def test_stream_batch_size_not_the_evaluation_chunk_decides_what_adabn_adapts_on():
    from xbench.tasks.base import Stream

    method = trained("adabn")
    x = shifted(32)
    with evaluation_mode(method):
        small = predict_all(method, x, 512, stream=Stream(batch_size=8))
    with evaluation_mode(method):
        whole = predict_all(method, x, 512, stream=Stream(batch_size=32))
    with evaluation_mode(method):
        chunked = predict_all(method, x, 8)  # no stream: the chunk is the batch
    assert torch.equal(small, chunked)
    assert not torch.allclose(small, whole)


def test_tent_predicts_with_the_forward_pass_it_adapted_on():
    """As the reference forward_and_adapt: outputs computed before the optimizer step."""
    method = trained("tent", adapt_steps=1, adapt_lr=5e-2)
    x = shifted()
    before_step = _batch_stat_logits(method, x)  # the forward pass adapt takes its loss on
    method.adapt(x)
    assert torch.allclose(method.predict(x), before_step, atol=1e-6)
    after_step = _batch_stat_logits(method, x)
    assert not torch.allclose(before_step, after_step, atol=1e-4)  # the update did move it
    other = shifted(16) + 0.5  # another batch: a plain forward with the adapted state
    assert torch.equal(method.predict(other), method.network(other))
