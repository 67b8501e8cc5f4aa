"""Inter-domain mixup."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xbench.hparams import LogUniform
from xbench.methods._layers import take_step
from xbench.methods.base import Batch
from xbench.methods.erm import ERM
from xbench.registry import register_method


@register_method("mixup", tags={"dg", "mixup"})
class Mixup(ERM):
    """Inter-domain mixup (Yan et al., 2020), in DomainBed's domain-generalisation form.

    Yan et al., "Improve unsupervised domain adaptation with mixup training",
    arXiv:2001.00677, 2020.

    Each step the source domains are shuffled into a cycle and each domain is
    mixed with the next one: ``x = lam x_i + (1 - lam) x_j`` with one
    ``lam ~ Beta(c, c)`` per pair, trained with
    ``lam CE(f(x), y_i) + (1 - lam) CE(f(x), y_j)``; it needs two source
    domains (with one it would be plain within-domain mixup, another method).
    ``c`` is ``beta_concentration``.
    """

    protocols = ("dg",)
    min_source_domains = 2
    search_space = {**ERM.search_space, "beta_concentration": LogUniform(0.1, 10.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 beta_concentration: float = 0.2):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.beta_concentration = beta_concentration

    def mix(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixed inputs, both label sets and the per-sample mixing weight ``lam`` of ``y_a``."""
        n = len(batch.source)
        order = torch.randperm(n).tolist()
        beta = torch.distributions.Beta(self.beta_concentration, self.beta_concentration)
        xs, ys_a, ys_b, lams = [], [], [], []
        for k, i in enumerate(order):
            x_a, y_a = batch.source[i]
            if n > 1:
                x_b, y_b = batch.source[order[(k + 1) % n]]
            else:
                perm = torch.randperm(len(y_a)).to(y_a.device)
                x_b, y_b = x_a[perm], y_a[perm]
            m = min(len(y_a), len(y_b))
            lam = beta.sample().item()
            xs.append(lam * x_a[:m] + (1.0 - lam) * x_b[:m])
            ys_a.append(y_a[:m])
            ys_b.append(y_b[:m])
            lams.append(torch.full((m,), lam, device=y_a.device))
        return torch.cat(xs), torch.cat(ys_a), torch.cat(ys_b), torch.cat(lams)

    def update(self, batch: Batch) -> dict[str, float]:
        x, y_a, y_b, lam = self.mix(batch)
        logits = self.network(x)
        loss = (lam * F.cross_entropy(logits, y_a, reduction="none")
                + (1.0 - lam) * F.cross_entropy(logits, y_b, reduction="none")).mean()
        take_step(self.optimizer, loss)
        return {"loss": loss.item(), "mix_weight": lam.mean().item()}
