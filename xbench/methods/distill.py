"""Knowledge distillation across domains: a teacher trained on the labeled
source domains, then a (smaller) student trained on source labels plus the
teacher's soft targets.

Staged: the runner trains the teacher(s) first, then freezes them (eval mode,
no gradients, and it fails the job if they change afterwards) and trains the
student. Under ``uda`` the soft targets are the teacher's predictions on the
unlabeled target inputs (cross-domain distillation); under ``dg`` there is no
target data, so they come from the source inputs. Every record also scores
the teacher(s) (``metrics.references``), and ``kd_scratch`` is the same
student trained without the teacher, so a table shows the gain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xbench import networks
from xbench.hparams import LogUniform, Uniform
from xbench.losses import kd_loss
from xbench.methods.base import Batch, Method
from xbench.registry import register_method
from xbench.tasks.base import TaskInfo


def network(input_shape: tuple[int, ...], num_classes: int, width: int) -> nn.Sequential:
    """A featurizer of the given width and a linear head."""
    features = networks.featurizer(input_shape, width=width)
    return nn.Sequential(features, networks.classifier(features.n_outputs, num_classes))


def ensemble_logits(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is the teachers' mean softmax at ``temperature``.

    ``T · log(mean_i softmax(l_i / T))``, computed with log-sum-exp; passing them
    to ``kd_loss`` at the same temperature distils the averaged soft targets.
    """
    log_probs = torch.stack([F.log_softmax(l / temperature, dim=1) for l in logits])
    return temperature * (torch.logsumexp(log_probs, dim=0) - math.log(len(logits)))


class _Distillation(Method):
    """Shared pieces: protocols, the student, its optimiser, predict."""

    protocols = ("dg", "uda")
    needs = frozenset({"target_unlabeled"})
    stages = ("teacher", "student")
    frozen_after = {"teacher": ("teacher",)}
    stage_needs = {"teacher": frozenset()}  # the teacher learns source labels only
    search_space = {"lr": LogUniform(1e-4, 1e-2), "temperature": LogUniform(1.0, 10.0),
                    "soft_weight": LogUniform(0.1, 10.0), "hard_weight": Uniform(0.0, 1.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, temperature: float = 4.0,
                 soft_weight: float = 1.0, hard_weight: float = 1.0, teacher_width: int = 64,
                 student_width: int = 32):
        self.lr = lr
        self.weight_decay = weight_decay
        self.temperature = temperature
        self.soft_weight = soft_weight
        self.hard_weight = hard_weight
        self.teacher_width = teacher_width
        self.student_width = student_width

    def _build_student(self, info: TaskInfo, device: torch.device) -> None:
        self.student = network(info.input_shape, info.num_classes, self.student_width).to(device)
        self.student_optimizer = torch.optim.Adam(self.student.parameters(), lr=self.lr,
                                                  weight_decay=self.weight_decay)

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def distill(self, batch: Batch, teacher_logits) -> torch.Tensor:
        """The student-stage loss: hard labels on source, soft targets at ``temperature``.

        Soft targets on the unlabeled target batch when the runner gives one
        (``uda``), otherwise on the source batch (``dg``). ``teacher_logits(x)``
        is evaluated without gradients.
        """
        x, y = batch.pooled()
        student_source = self.student(x)
        if batch.target is None:
            with torch.no_grad():
                teacher = teacher_logits(x)
            return kd_loss(student_source, teacher, y, temperature=self.temperature,
                           soft_weight=self.soft_weight, hard_weight=self.hard_weight)
        with torch.no_grad():
            teacher = teacher_logits(batch.target)
        soft = kd_loss(self.student(batch.target), teacher, temperature=self.temperature,
                       soft_weight=self.soft_weight, hard_weight=0.0)
        return soft + self.hard_weight * F.cross_entropy(student_source, y)


@register_method("kd_logit", tags={"distillation", "uda", "dg"})
class KDLogit(_Distillation):
    """Logit distillation across domains (Hinton, Vinyals & Dean, 2015).

    Hinton et al. (2015), "Distilling the Knowledge in a Neural Network".

    Stage ``teacher``: a network of width ``teacher_width`` learns the pooled
    labeled source domains (cross-entropy, Adam). Stage ``student``: the
    teacher is frozen by the runner; a network of width ``student_width``
    (smaller: that is what distillation is for; the default 32 against the
    teacher's 64 is about a quarter of its parameters) minimises
    ``hard_weight · CE(student(x_s), y_s) + soft_weight · T² · KL(p_teacher^T || p_student^T)``
    (``xbench.losses.kd_loss``, ``T = temperature``), the KL term on the
    unlabeled target batch under ``uda`` and on the source batch under ``dg``.
    ``references()`` reports the teacher's accuracy.
    """

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        self.teacher = network(info.input_shape, info.num_classes, self.teacher_width).to(device)
        self.teacher_optimizer = torch.optim.Adam(self.teacher.parameters(), lr=self.lr,
                                                  weight_decay=self.weight_decay)
        self._build_student(info, device)

    def update(self, batch: Batch) -> dict[str, float]:
        if batch.stage == "teacher":
            x, y = batch.pooled()
            loss = F.cross_entropy(self.teacher(x), y)
            self._step(self.teacher_optimizer, loss)
        else:
            loss = self.distill(batch, self.teacher)
            self._step(self.student_optimizer, loss)
        return {"loss": loss.item()}

    def references(self) -> dict[str, object]:
        return {"teacher": self.teacher}


@register_method("kd_scratch", tags={"distillation", "baseline", "uda", "dg"})
class KDScratch(KDLogit):
    """Student-from-scratch baseline: kd_logit's recipe without the teacher (Hinton et al., 2015).

    The same recipe as ``kd_logit`` without distillation: the same stages
    and step split, the same teacher (trained in stage ``teacher`` only so
    that its accuracy is reported beside this row), and the same student
    network (``student_width``) and optimiser trained for the same
    student-stage steps on the source labels alone (cross-entropy). The
    student never sees the teacher or target data, so
    ``kd_logit - kd_scratch`` is the gain distillation brings.
    """

    needs = frozenset()
    search_space = {"lr": LogUniform(1e-4, 1e-2), "weight_decay": LogUniform(1e-6, 1e-3)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, teacher_width: int = 64,
                 student_width: int = 32):
        self.lr = lr
        self.weight_decay = weight_decay
        self.teacher_width = teacher_width
        self.student_width = student_width

    def update(self, batch: Batch) -> dict[str, float]:
        x, y = batch.pooled()
        if batch.stage == "teacher":
            loss = F.cross_entropy(self.teacher(x), y)
            self._step(self.teacher_optimizer, loss)
        else:
            loss = F.cross_entropy(self.student(x), y)
            self._step(self.student_optimizer, loss)
        return {"loss": loss.item()}


@register_method("kd_multi_source", tags={"distillation", "multi_source", "uda", "dg"})
class KDMultiSource(_Distillation):
    """One teacher per source domain, their averaged soft targets distilled into one student.

    The ensemble distillation of Hinton, Vinyals & Dean (2015), with one
    ensemble member per source domain.

    Stage ``teachers``: teacher ``i`` (width ``teacher_width``) learns source
    domain ``i`` alone. Stage ``student``: the teachers are frozen; the
    student (``student_width``) learns from ``kd_loss`` with soft targets
    ``mean_i softmax(teacher_i(x) / T)`` (on the target batch under ``uda``,
    the source batch under ``dg``) plus ``hard_weight`` · CE on source labels.
    ``references()`` reports each teacher (``teacher_<domain>``) and their
    ensemble (``teacher_ensemble``, mean of softmaxes at T = 1).
    """

    stages = ("teachers", "student")
    frozen_after = {"teachers": ("teachers",)}
    stage_needs = {"teachers": frozenset()}
    min_source_domains = 2  # one teacher per source domain: an ensemble needs two

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        self.domains = tuple(info.source_domains)
        self.teachers = nn.ModuleList(
            network(info.input_shape, info.num_classes, self.teacher_width)
            for _ in self.domains).to(device)
        self.teacher_optimizer = torch.optim.Adam(self.teachers.parameters(), lr=self.lr,
                                                  weight_decay=self.weight_decay)
        self._build_student(info, device)

    def ensemble(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``ensemble_logits`` of every teacher on ``x``."""
        return ensemble_logits([teacher(x) for teacher in self.teachers], temperature)

    def update(self, batch: Batch) -> dict[str, float]:
        if batch.stage == "teachers":
            losses = [F.cross_entropy(teacher(x), y)
                      for teacher, (x, y) in zip(self.teachers, batch.source)]
            loss = torch.stack(losses).sum()  # independent networks: one step each
            self._step(self.teacher_optimizer, loss)
            return {"loss": loss.item() / len(losses)}
        loss = self.distill(batch, lambda x: self.ensemble(x, self.temperature))
        self._step(self.student_optimizer, loss)
        return {"loss": loss.item()}

    def references(self) -> dict[str, object]:
        refs: dict[str, object] = {f"teacher_{d}": t for d, t in zip(self.domains, self.teachers)}
        refs["teacher_ensemble"] = self.ensemble
        return refs
