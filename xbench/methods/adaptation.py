"""Unsupervised domain adaptation: labeled sources plus the unlabeled target train split.

Every method here trains ERM's network on the pooled sources and adds a loss
on the unlabeled target batch (``batch.target``). Source and target go through
the network in one forward pass, so batch normalisation sees both. The
``erm_oracle`` row trains on the target's labels instead: an upper bound,
tagged ``oracle`` (its records say ``oracle: true``), not a competitor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xbench.errors import ProtocolError
from xbench.hparams import LogUniform, Uniform
from xbench.losses import (align_distribution, class_confusion, prediction_entropy,
                           pseudo_labels)
from xbench.methods.base import Batch
from xbench.methods.erm import ERM
from xbench.registry import register_method


class _Adaptation(ERM):
    """ERM plus a loss on unlabeled target inputs (shared plumbing of this family)."""

    protocols = ("uda",)
    needs = frozenset({"target_unlabeled"})

    def _forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source logits, source labels and target logits from one joint forward pass."""
        if batch.target is None:
            raise ProtocolError(f"method '{self.registered_name}' needs unlabeled target "
                                f"batches; run it under protocol 'uda'")
        x, y = batch.pooled()
        logits = self.network(torch.cat([x, batch.target]))
        return logits[:len(x)], y, logits[len(x):]

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


@register_method("mcc", tags={"adaptation", "uda"})
class MCC(_Adaptation):
    """MCC (Jin et al., 2020): minimise the class confusion of target predictions.

    "Minimum Class Confusion for Versatile Domain Adaptation". Source
    cross-entropy plus ``confusion_weight`` times the class confusion of the
    target predictions, rescaled by ``temperature`` and weighted per sample by
    prediction certainty (``xbench.losses.class_confusion``). Defaults are the
    paper's (weight 1, temperature 2.5).
    """

    search_space = {**ERM.search_space, "confusion_weight": LogUniform(0.1, 10.0),
                    "temperature": Uniform(1.0, 5.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 confusion_weight: float = 1.0, temperature: float = 2.5):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.confusion_weight = confusion_weight
        self.temperature = temperature

    def update(self, batch: Batch) -> dict[str, float]:
        source_logits, y, target_logits = self._forward(batch)
        loss_source = F.cross_entropy(source_logits, y)
        loss_confusion = class_confusion(target_logits, self.temperature)
        loss = loss_source + self.confusion_weight * loss_confusion
        self._step(loss)
        return {"loss": loss.item(), "loss_source": loss_source.item(),
                "loss_confusion": loss_confusion.item()}


@register_method("self_training", tags={"adaptation", "uda"})
class SelfTraining(_Adaptation):
    """Self-training: confidence-thresholded pseudo-labels on target (AdaMatch's rules).

    Pseudo-Label (Lee, 2013) with the pseudo-labelling rules of AdaMatch
    (Berthelot et al., 2022), FixMatch (Sohn et al., 2020) adapted to domain
    adaptation, without its augmentations and logit interpolation. For the
    first ``pretrain_frac`` of the job's steps (half by default: 100 of the
    200 steps the defaults were chosen at): source cross-entropy only. Then, from the
    same forward pass (not differentiated): target probabilities are
    distribution-aligned to the source batch's mean prediction (if
    ``align_distribution``; this prevents collapse onto one class), and each
    target sample whose top aligned probability reaches the *relative*
    threshold ``confidence`` x (mean top probability on the source batch) is
    trained towards its arg-max class. The masked cross-entropy is averaged
    over the whole target batch and weighted by ``pseudo_weight``.

    ``confidence`` defaults to 0.5, not FixMatch's 0.95: without augmentation
    the target predictions stay unconfident under a large shift (on rotated
    digits the median top probability is about 0.4 at the end of training
    while the source's is 0.97), and 0.5 selects roughly the most confident
    quarter of the target at the end of warm-up (chosen from these label-free
    statistics).
    """

    search_space = {**ERM.search_space, "confidence": Uniform(0.3, 0.95),
                    "pseudo_weight": LogUniform(0.1, 10.0), "pretrain_frac": Uniform(0.0, 0.7)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, confidence: float = 0.5,
                 pseudo_weight: float = 1.0, pretrain_frac: float = 0.5,
                 align_distribution: bool = True):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.confidence = confidence
        self.pseudo_weight = pseudo_weight
        self.pretrain_frac = pretrain_frac
        self.align_distribution = align_distribution

    def setup(self, info, device) -> None:
        super().setup(info, device)
        self.pretrain_steps = round(self.pretrain_frac * info.steps)

    def update(self, batch: Batch) -> dict[str, float]:
        source_logits, y, target_logits = self._forward(batch)
        loss_source = F.cross_entropy(source_logits, y)
        loss = loss_source
        logs = {"loss_pseudo": 0.0, "pseudo_fraction": 0.0}
        if batch.step >= self.pretrain_steps:  # set in setup from pretrain_frac
            source_probs = F.softmax(source_logits.detach(), dim=1)
            threshold = self.confidence * source_probs.max(dim=1).values.mean().item()
            probs = F.softmax(target_logits.detach(), dim=1)
            if self.align_distribution:
                probs = align_distribution(probs, source_probs.mean(dim=0))
            labels, mask = pseudo_labels(probs, threshold)
            loss_pseudo = (F.cross_entropy(target_logits, labels, reduction="none") * mask).mean()
            loss = loss_source + self.pseudo_weight * loss_pseudo
            logs = {"loss_pseudo": loss_pseudo.item(), "pseudo_fraction": mask.mean().item()}
        self._step(loss)
        return {"loss": loss.item(), "loss_source": loss_source.item(), **logs}


@register_method("entropy_min", tags={"adaptation", "uda"})
class EntropyMin(_Adaptation):
    """Entropy minimisation (Grandvalet & Bengio, 2005) of the target predictions.

    "Semi-supervised Learning by Entropy Minimization": source cross-entropy
    plus ``entropy_weight`` times the mean entropy of the target predictions.
    Entropy alone has a degenerate minimum (every target sample confidently in
    one class); ``entropy_weight=0.1`` reached it on rotated digits (the target
    predictions, no labels needed to see it, collapsed onto one class), hence
    the default 0.03.
    """

    search_space = {**ERM.search_space, "entropy_weight": LogUniform(0.01, 1.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 entropy_weight: float = 0.03):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.entropy_weight = entropy_weight

    def update(self, batch: Batch) -> dict[str, float]:
        source_logits, y, target_logits = self._forward(batch)
        loss_source = F.cross_entropy(source_logits, y)
        target_entropy = prediction_entropy(target_logits).mean()
        loss = loss_source + self.entropy_weight * target_entropy
        self._step(loss)
        return {"loss": loss.item(), "loss_source": loss_source.item(),
                "target_entropy": target_entropy.item()}


@register_method("erm_oracle", tags={"oracle", "uda", "baseline"})
class ERMOracle(ERM):
    """Oracle: ERM on the *labeled* target train split (an upper bound, not a competitor).

    The upper-bound row of the UDA protocol (as the "train on target" rows of
    Ganin et al., 2016); the source batches are not used. It reads target
    labels, so it is tagged ``oracle``: the sampler lets only oracle rows have
    target labels, and the runner writes ``oracle: true`` into its records so
    that reports can keep it out of the ranking.
    """

    protocols = ("uda",)
    needs = frozenset({"target_labeled"})

    def update(self, batch: Batch) -> dict[str, float]:
        if batch.target_labeled is None:
            raise ProtocolError("method 'erm_oracle' needs the labeled target train split; "
                                "run it under protocol 'uda'")
        x, y = batch.target_labeled
        loss = F.cross_entropy(self.network(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}
