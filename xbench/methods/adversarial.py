"""Adversarial feature alignment: DANN, conditional DANN and CDAN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xbench import losses
from xbench.errors import ProtocolError
from xbench.hparams import LogUniform
from xbench.methods._layers import grad_reverse, mlp_head, take_step
from xbench.methods.base import Batch
from xbench.methods.erm import ERM
from xbench.registry import register_method
from xbench.tasks.base import TaskInfo


def group_balanced_ce(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the groups present of each group's (weighted) mean cross-entropy.

    Each group counts equally whatever its size: source vs target under
    ``uda`` (where the pooled source batch is larger), or classes for CDANN.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    weights = torch.ones_like(ce) if weights is None else weights.to(ce.dtype)
    member = F.one_hot(groups).to(ce.dtype)  # (n, n_groups)
    total, mass = member.T @ (weights * ce), member.T @ weights
    present = mass > 0
    return (total / mass.clamp_min(torch.finfo(mass.dtype).tiny))[present].mean()


@register_method("dann", tags={"dg", "uda", "adversarial"})
class DANN(ERM):
    """Domain-adversarial neural network (Ganin et al., 2016, JMLR).

    A discriminator on the features learns to tell domains apart while a
    gradient-reversal layer makes the featurizer confuse it:
    ``loss = CE + penalty_weight * CE_domain(D(GRL(z)))``. Under ``dg`` the
    domains are the source domains; under ``uda`` it is source (pooled) vs
    the unlabeled target batch, each side weighted equally. With
    ``grl_schedule`` the reversal strength ramps up as in the paper,
    ``2 / (1 + exp(-10 p)) - 1`` with ``p`` the fraction of training done.
    One Adam optimizer updates all networks. Under ``dg`` it needs two source
    domains to tell apart; under ``uda`` one source domain is enough.
    """

    protocols = ("dg", "uda")
    needs = frozenset({"target_unlabeled"})
    min_source_domains = {"dg": 2}
    search_space = {**ERM.search_space, "penalty_weight": LogUniform(0.01, 10.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 penalty_weight: float = 1.0, grl_schedule: bool = True):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.penalty_weight = penalty_weight
        self.grl_schedule = grl_schedule

    # -- what the discriminator sees (subclasses change these) -----------------
    def discriminator_inputs(self, info: TaskInfo) -> int:
        return self.featurizer.n_outputs

    def domain_loss(self, z: torch.Tensor, logits: torch.Tensor, y: torch.Tensor | None,
                    domains: torch.Tensor, scale: float) -> torch.Tensor:
        """Discriminator loss on features ``z`` whose gradient is reversed (times ``scale``)."""
        return group_balanced_ce(self.discriminator(grad_reverse(z, scale)), domains, domains)

    # -- the learning rule -------------------------------------------------------
    def setup(self, info: TaskInfo, device: torch.device) -> None:
        super().setup(info, device)
        self.protocol = info.protocol
        self.total_steps = info.steps
        n_domains = 2 if info.protocol == "uda" else info.num_source_domains
        self.discriminator = mlp_head(self.discriminator_inputs(info), n_domains).to(device)
        self.optimizer = self.make_optimizer(*self.modules().values())
        self.update_count = 0

    def grl_scale(self) -> float:
        """Reversal strength now: Ganin et al.'s ramp from 0 to 1, or 1 without schedule."""
        if not self.grl_schedule:
            return 1.0
        progress = min(self.update_count / max(self.total_steps, 1), 1.0)
        return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs to featurize, source labels, and the domain label of every input."""
        x, y = batch.pooled()
        if self.protocol == "uda":
            if batch.target is None:
                raise ProtocolError(f"{self.registered_name} under 'uda' needs unlabeled target "
                                    f"inputs in batch.target, got none")
            domains = torch.cat([torch.zeros(len(x)), torch.ones(len(batch.target))])
            return torch.cat([x, batch.target]), y, domains.long().to(y.device)
        if batch.target is not None:
            raise ProtocolError(f"{self.registered_name} received target data under protocol "
                                f"'{self.protocol}'; only 'uda' may train on it")
        domains = torch.cat([torch.full((len(t),), i) for i, (_, t) in enumerate(batch.source)])
        return x, y, domains.to(y.device)

    def update(self, batch: Batch) -> dict[str, float]:
        x, y, domains = self._inputs(batch)
        z = self.featurizer(x)
        logits = self.classifier(z)
        ce = F.cross_entropy(logits[:len(y)], y)
        scale = self.grl_scale()
        disc_loss = self.domain_loss(z, logits, y, domains, scale)
        loss = ce + self.penalty_weight * disc_loss
        take_step(self.optimizer, loss)
        self.update_count += 1
        return {"loss": loss.item(), "ce": ce.item(), "disc_loss": disc_loss.item(),
                "grl_scale": scale}


@register_method("dann_cond", tags={"dg", "adversarial"})
class ConditionalDANN(DANN):
    """Conditional DANN (Li et al., 2018), in DomainBed's CDANN formulation.

    Li et al., "Deep domain generalization via conditional invariant
    adversarial networks", ECCV 2018.

    The discriminator sees ``GRL(z) + e(y)``, with ``e`` a learned class
    embedding (trained with the discriminator), so the featurizer aligns the
    class-conditional feature distributions P(z | y) across source domains.
    The domain loss is class-balanced: each class counts equally. It needs
    labels for every input, so it runs under ``dg`` only.
    """

    protocols = ("dg",)
    needs = frozenset()
    min_source_domains = 2

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        super().setup(info, device)
        self.class_embedding = nn.Embedding(info.num_classes, self.featurizer.n_outputs).to(device)
        self.optimizer = self.make_optimizer(*self.modules().values())  # now with the embedding

    def domain_loss(self, z, logits, y, domains, scale):
        inputs = grad_reverse(z, scale) + self.class_embedding(y)
        return group_balanced_ce(self.discriminator(inputs), domains, groups=y)


@register_method("cdan", tags={"uda", "adversarial"})
class CDAN(DANN):
    """Conditional adversarial domain adaptation, CDAN / CDAN+E (Long et al., 2018).

    The source-vs-target discriminator sees the multilinear map
    ``g (x) z`` (outer product of the softmax predictions, detached as in the
    authors' code, and the gradient-reversed features; the full map, not the
    randomised one, since d x C is small here). With ``entropy_conditioning``
    (CDAN+E) each sample's discriminator loss is weighted by
    ``1 + exp(-H(g))``, normalised within source and within target, so
    confident predictions count more.
    """

    protocols = ("uda",)

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 penalty_weight: float = 1.0, grl_schedule: bool = True,
                 entropy_conditioning: bool = True):
        super().__init__(lr=lr, weight_decay=weight_decay, penalty_weight=penalty_weight,
                         grl_schedule=grl_schedule)
        self.entropy_conditioning = entropy_conditioning

    def discriminator_inputs(self, info: TaskInfo) -> int:
        return self.featurizer.n_outputs * info.num_classes

    def domain_loss(self, z, logits, y, domains, scale):
        probs = F.softmax(logits.detach(), dim=1)
        mapped = (probs.unsqueeze(2) * grad_reverse(z, scale).unsqueeze(1)).flatten(1)
        weights = None
        if self.entropy_conditioning:
            weights = 1.0 + torch.exp(-losses.entropy(logits.detach(), reduction="none"))
        return group_balanced_ce(self.discriminator(mapped), domains, domains, weights)
