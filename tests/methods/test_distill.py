"""Knowledge-distillation family: frozen teachers, soft targets at T, references in the record."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from families_support import assert_same_state, tiny_job
from xbench.harness.runner import check_frozen, freeze, run_job
from xbench.harness.sampling import training_sampler
from xbench.methods.distill import KDLogit, KDMultiSource, ensemble_logits
from xbench.registry import METHODS, load_task
from xbench.tasks.base import Budget


def _blobs(method: str, protocol: str = "uda", hparams: dict | None = None, steps: int = 20):
    job = tiny_job("tiny_blobs", method, protocol, ("c",), steps=steps, batch=16,
                   hparams=hparams)
    return dataclasses.replace(job, task_options={"data_seed": 0, "n_per_domain": 60})


def _setting(cls, protocol: str = "uda"):
    task = load_task("tiny_blobs")
    info = task.info(("c",), protocol, Budget(batch_size=16))
    sampler = training_sampler(cls, info, task.build(), seed=0)
    torch.manual_seed(0)
    return info, sampler


@pytest.mark.parametrize("protocol", ["uda", "dg"])
def test_kd_logit_record_reports_the_teacher(protocol):
    record = run_job(_blobs("kd_logit", protocol))
    assert record["status"] == "ok", record["error"]
    teacher = record["metrics"]["references"]["teacher"]
    assert 0.0 <= teacher["acc_target"] <= 1.0 and set(teacher["domains"]) == {"a", "b", "c"}
    assert list(record["cost"]["stages"]) == ["teacher", "student"]
    assert record["metrics"]["acc_target"] > 1 / 3  # chance: 3 classes


def test_teacher_is_unchanged_through_the_student_stage():
    info, sampler = _setting(KDLogit)
    method = KDLogit()
    method.setup(info, torch.device("cpu"))
    method.train(True)
    for step in range(3):
        method.update(sampler.sample(step, "teacher"))
    frozen = freeze(method, KDLogit.frozen_after["teacher"])  # what the runner does
    before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    student_before = copy.deepcopy(method.student.state_dict())
    method.train(True)
    for step in range(3, 6):
        method.update(sampler.sample(step, "student"))
    assert not method.teacher.training
    assert_same_state(before, method.teacher.state_dict())
    check_frozen(method, frozen)  # does not raise
    assert any(not torch.equal(v, method.student.state_dict()[k])
               for k, v in student_before.items())  # the student did learn


class TeacherToucher(KDLogit):
    """Misbehaves: keeps training its teacher during the student stage (test method)."""

    def update(self, batch):
        if batch.stage == "student":
            self.teacher.train()  # batch-norm statistics drift
            self.teacher(batch.pooled()[0])
        return super().update(batch)


def test_a_distiller_that_touches_its_teacher_fails_the_job():
    METHODS.register("test_teacher_toucher", TeacherToucher, origin="tests")
    try:
        record = run_job(_blobs("test_teacher_toucher"))
    finally:
        METHODS.unregister("test_teacher_toucher")
    assert record["status"] == "failed"
    assert "frozen module 'teacher' changed" in record["error"]


def _expected_student_loss(method, batch, teacher_logits, soft_x):
    """hard·CE(source) + soft·T²·KL(p_t || p_s) at T on ``soft_x``, written out (batchmean)."""
    T = method.temperature
    x, y = batch.pooled()
    p_teacher = F.softmax(teacher_logits(soft_x) / T, dim=1)
    log_p_student = F.log_softmax(method.student(soft_x) / T, dim=1)
    kl = (p_teacher * (p_teacher.log() - log_p_student)).sum(1).mean()
    return method.hard_weight * F.cross_entropy(method.student(x), y) \
        + method.soft_weight * T ** 2 * kl


@pytest.mark.parametrize("protocol", ["uda", "dg"])
def test_student_learns_the_teachers_soft_targets_at_temperature(protocol):
    info, sampler = _setting(KDLogit, protocol)
    method = KDLogit(temperature=3.0, soft_weight=0.7, hard_weight=0.4)
    method.setup(info, torch.device("cpu"))
    method.train(True)
    for step in range(3):
        method.update(sampler.sample(step, "teacher"))
    freeze(method, ("teacher",))
    batch = sampler.sample(3, "student")
    assert (batch.target is not None) == (protocol == "uda")
    soft_x = batch.target if protocol == "uda" else batch.pooled()[0]
    reference = copy.deepcopy(method)
    with torch.no_grad():
        expected = _expected_student_loss(reference, batch, reference.teacher, soft_x)
    logs = method.update(batch)
    assert logs["loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_ensemble_logits_give_the_mean_soft_targets():
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 4, generator=generator) * 3 for _ in range(3)]
    for T in (1.0, 4.0):
        mean = torch.stack([F.softmax(l / T, dim=1) for l in logits]).mean(0)
        assert torch.allclose(F.softmax(ensemble_logits(logits, T) / T, dim=1), mean, atol=1e-6)


def test_kd_multi_source_has_one_frozen_teacher_per_source_and_reports_each():
    record = run_job(_blobs("kd_multi_source"))
    assert record["status"] == "ok", record["error"]
    assert set(record["metrics"]["references"]) == {"teacher_a", "teacher_b",
                                                    "teacher_ensemble"}
    # each teacher learns from its own source domain's batch only
    info, sampler = _setting(KDMultiSource)
    method = KDMultiSource()
    method.setup(info, torch.device("cpu"))
    method.train(True)
    assert len(method.teachers) == 2
    clean, poisoned = copy.deepcopy(method), copy.deepcopy(method)
    batch = sampler.sample(0, "teachers")
    clean.update(batch)
    x_b, y_b = batch.source[1]
    batch.source[1] = (x_b + 100.0, (y_b + 1) % 3)  # a different domain b
    poisoned.update(batch)
    assert_same_state(clean.teachers[0].state_dict(), poisoned.teachers[0].state_dict())
    assert not torch.equal(clean.teachers[1][1].weight, poisoned.teachers[1][1].weight)


def test_kd_scratch_is_the_same_recipe_without_the_teacher():
    scratch = run_job(_blobs("kd_scratch", "dg"))
    distilled = run_job(_blobs("kd_logit", "dg"))
    assert scratch["status"] == distilled["status"] == "ok"
    # same stages, same steps, and (same seed, same batches) the very same teacher
    assert scratch["cost"]["stages"].keys() == distilled["cost"]["stages"].keys()
    assert scratch["metrics"]["references"]["teacher"] == \
        distilled["metrics"]["references"]["teacher"]
    assert scratch["cost"]["params"] == distilled["cost"]["params"]
