"""Feature alignment across source domains: Deep CORAL and MMD."""

from __future__ import annotations

import abc
import itertools

import torch
import torch.nn.functional as F

from xbench import losses
from xbench.hparams import LogUniform
from xbench.methods._layers import take_step
from xbench.methods.base import Batch
from xbench.methods.erm import ERM
from xbench.registry import register_method


class FeatureAlignment(ERM):
    """ERM plus ``penalty_weight`` x the mean distance between every pair of source domains'
    features (it needs two source domains). Subclasses define ``distance``."""

    protocols = ("dg",)
    min_source_domains = 2
    search_space = {**ERM.search_space, "penalty_weight": LogUniform(0.1, 10.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 penalty_weight: float = 1.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.penalty_weight = penalty_weight

    @abc.abstractmethod
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The discrepancy between two domains' feature batches (a scalar)."""

    def penalty(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Mean ``distance`` over all pairs of per-domain feature batches."""
        pairs = list(itertools.combinations(features, 2))
        if not pairs:
            return features[0].new_zeros(())
        return torch.stack([self.distance(a, b) for a, b in pairs]).mean()

    def update(self, batch: Batch) -> dict[str, float]:
        x, y = batch.pooled()
        z = self.featurizer(x)
        ce = F.cross_entropy(self.classifier(z), y)
        penalty = self.penalty(list(z.split([len(t) for _, t in batch.source])))
        loss = ce + self.penalty_weight * penalty
        take_step(self.optimizer, loss)
        return {"loss": loss.item(), "ce": ce.item(), "penalty": penalty.item()}


@register_method("coral", tags={"dg", "alignment"})
class CORAL(FeatureAlignment):
    """Deep CORAL (Sun & Saenko, 2016): match feature means and covariances across domains.

    The penalty is ``losses.coral_loss`` (DomainBed's form: squared Frobenius
    distance of the covariances over d^2, plus the squared distance of the
    means over d), averaged over pairs of source domains.
    """

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return losses.coral_loss(a, b)


@register_method("mmd", tags={"dg", "alignment"})
class MMD(FeatureAlignment):
    """MMD penalty across source domains, as in MMD-AAE (Li et al., 2018).

    Squared MMD with the sum of DomainBed's seven Gaussian kernels
    (``losses.mmd_loss``) between every pair of source domains' features,
    averaged over the pairs, as DomainBed's MMD (kernels summed since
    issue 12; they were averaged before, 1/7 of the strength). The adversarial
    autoencoder parts of MMD-AAE are left out, as in DomainBed.
    """

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return losses.mmd_loss(a, b)
