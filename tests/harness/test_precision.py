"""Runner-owned precision: records carry it, job ids differ, the runner (not the method)
enters autocast, bf16 accuracy stays close to fp32, fp16 loss scaling, CUDA paths."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import make_job
from xbench.errors import UsageError
from xbench.harness import precision as prec
from xbench.harness.runner import run_job
from xbench.methods.erm import ERM
from xbench.registry import METHODS

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here; CUDA precision paths need a GPU")


def _job(precision: str = "fp32", **kwargs):
    return dataclasses.replace(make_job(**kwargs), precision=precision)


class AssertsAutocast(ERM):
    """Test method: fails unless autocast (bf16) is on inside update and predict."""

    def update(self, batch):
        assert torch.is_autocast_enabled("cpu"), "update ran without autocast"
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        return super().update(batch)

    def predict(self, x):
        assert torch.is_autocast_enabled("cpu"), "predict ran without autocast"
        return super().predict(x)


class AssertsNoAutocast(ERM):
    """Test method: fails if autocast is on (fp32 must be plain fp32)."""

    def update(self, batch):
        assert not torch.is_autocast_enabled("cpu")
        return super().update(batch)

    def predict(self, x):
        assert not torch.is_autocast_enabled("cpu")
        return super().predict(x)


@pytest.fixture
def autocast_methods():
    METHODS.register("test_asserts_autocast", AssertsAutocast, origin="tests")
    METHODS.register("test_asserts_no_autocast", AssertsNoAutocast, origin="tests")
    yield
    METHODS.unregister("test_asserts_autocast")
    METHODS.unregister("test_asserts_no_autocast")


def test_records_carry_precision_and_fp32_job_ids_are_unchanged():
    fp32, bf16 = _job("fp32"), _job("bf16")
    assert fp32.job_id == make_job().job_id  # ids of records made before precision existed
    assert "precision" not in fp32.config()
    assert bf16.job_id != fp32.job_id and bf16.config()["precision"] == "bf16"
    record = run_job(bf16)
    assert record["status"] == "ok", record.get("error")
    assert record["precision"] == "bf16" and record["job_id"] == bf16.job_id
    assert run_job(fp32)["precision"] == "fp32"


def test_runner_enters_autocast_not_the_method(autocast_methods):
    record = run_job(_job("bf16", method="test_asserts_autocast"))
    assert record["status"] == "ok", record.get("error")
    record = run_job(_job("fp32", method="test_asserts_no_autocast"))
    assert record["status"] == "ok", record.get("error")
    failed = run_job(_job("fp32", method="test_asserts_autocast"))
    assert failed["status"] == "failed" and "without autocast" in failed["error"]


def test_bf16_accuracy_on_a_tiny_task_is_within_five_points_of_fp32():
    """Tolerance: 5 accuracy points per seed on tiny_blobs (60 test samples: 1 sample = 1.7
    points), and the mean over three seeds within 3 points."""
    diffs = []
    for seed in range(3):
        fp32 = run_job(_job("fp32", seed=seed, steps=40))["metrics"]["acc_target"]
        bf16 = run_job(_job("bf16", seed=seed, steps=40))["metrics"]["acc_target"]
        assert abs(bf16 - fp32) <= 0.05, (seed, fp32, bf16)
        diffs.append(bf16 - fp32)
    assert abs(sum(diffs) / len(diffs)) <= 0.03


def test_bf16_and_fp32_records_never_share_a_cell(tmp_path):
    from xbench.analysis.records import load_results
    from xbench.store import RecordStore

    store = RecordStore(tmp_path)
    for p in ("fp32", "bf16"):
        store.append(run_job(_job(p)))
    df = load_results(tmp_path)
    assert df["comparable"].nunique() == 2
    assert sorted(df["task_label"]) == ["tiny_blobs[bf16]", "tiny_blobs[fp32]"]


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert prec.resolve_precision("fp32", cpu) == "fp32"
    assert prec.resolve_precision("bf16", cpu) == "bf16"
    assert prec.resolve_precision("auto", cpu) == ("bf16" if prec.cpu_has_native_bf16()
                                                   else "fp32")
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        prec.resolve_precision("fp16", cpu)
    with pytest.raises(UsageError, match="use one of"):
        prec.resolve_precision("fp8", cpu)


def test_suite_key_and_flag_reach_the_plan(tmp_path, tiny_suite):
    from xbench.harness.session import run

    text = tiny_suite.read_text().replace('name = "tiny"\n', 'name = "tiny"\nprecision = "bf16"\n')
    path = tmp_path / "bf16.toml"
    path.write_text(text)
    summary = run(str(path), out=tmp_path / "a", seeds=[0], progress=False)
    assert {j.precision for j in summary.plan.jobs} == {"bf16"}
    summary = run(str(path), out=tmp_path / "a", seeds=[0], progress=False, precision="fp32")
    assert {j.precision for j in summary.plan.jobs} == {"fp32"} and summary.ran == 1
    from xbench.store import read_records

    assert sorted(r["precision"] for r in read_records(tmp_path / "a" / "records.jsonl")
                  .records) == ["bf16", "fp32"]


def test_fp16_loss_scaling_scales_backward_and_steps_through_the_scaler():
    """The fp16 machinery without a GPU: a CPU GradScaler stands in for CUDA's."""
    method = ERM()
    from xbench.registry import load_task
    from xbench.tasks.base import Budget

    method.setup(load_task("tiny_blobs").info(("c",), "dg", Budget()), torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in method.network.parameters()]
    seen = {}
    hook = method.network[-1].weight.register_hook(
        lambda g: seen.setdefault("norm", g.norm().item()) and None)
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    with prec.scaled_update(scaler, method):
        loss = torch.nn.functional.cross_entropy(method.predict(x), y)
        loss.backward()
        method.optimizer.step()
    hook.remove()
    # the gradient reaching the weights was scaled; the step used the unscaled gradient
    grad = method.network[-1].weight.grad
    assert seen["norm"] == pytest.approx(grad.norm().item() * 1024.0, rel=1e-3)
    assert any(not torch.equal(b, p) for b, p in zip(before, method.network.parameters()))
    assert "step" not in vars(method.optimizer) and torch.Tensor.backward is not None
    # an inf gradient skips the step and halves the scale
    frozen = [p.detach().clone() for p in method.network.parameters()]
    with prec.scaled_update(scaler, method):
        loss = torch.nn.functional.cross_entropy(method.predict(x), y) * float("inf")
        loss.backward()
        method.optimizer.step()
    assert all(torch.equal(b, p) for b, p in zip(frozen, method.network.parameters()))
    assert scaler.get_scale() == 512.0


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_precision_job_runs_and_records_cuda_memory(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    job = _job(precision)
    record = run_job(job, "cuda")
    assert record["status"] == "ok", record.get("error")
    assert record["precision"] == precision
    assert record["cost"]["peak_mem_kind"] == "cuda_max_allocated"
    assert record["cost"]["peak_mem_mb"] > 0
    if precision == "fp16":
        assert record["cost"]["loss_scale"] > 0


@needs_cuda
def test_auto_precision_on_cuda_follows_bf16_support():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert prec.resolve_precision("auto", torch.device("cuda")) == expected
