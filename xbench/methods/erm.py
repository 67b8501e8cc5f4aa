"""Empirical risk minimisation, the baseline every table carries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xbench import networks
from xbench.hparams import LogUniform
from xbench.methods.base import Batch, Method
from xbench.registry import register_method
from xbench.tasks.base import TaskInfo


@register_method("erm", tags={"baseline", "dg"})
class ERM(Method):
    """ERM (Vapnik, 1998): cross-entropy on all source domains pooled together.

    Gulrajani & Lopez-Paz (2021) showed that, tuned fairly, it matches most
    domain-generalisation methods; every xbench table carries it. Under
    ``tta`` it is the reference row: the same training, no adaptation.
    """

    protocols = ("dg", "uda", "tta")
    search_space = {"lr": LogUniform(1e-4, 1e-2), "weight_decay": LogUniform(1e-6, 1e-3)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0):
        self.lr = lr
        self.weight_decay = weight_decay

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        features = networks.featurizer(info.input_shape)
        self.network = nn.Sequential(features, networks.classifier(features.n_outputs,
                                                                   info.num_classes)).to(device)
        self.optimizer = self.make_optimizer(self.network)

    @property
    def featurizer(self) -> networks.Featurizer:
        """The feature extractor: the first part of ``network``."""
        return self.network[0]

    @property
    def classifier(self) -> nn.Module:
        """The classification head on the features: the second part of ``network``."""
        return self.network[1]

    def make_optimizer(self, *modules: nn.Module) -> torch.optim.Optimizer:
        """Adam over the parameters of ``modules`` with this method's lr and weight decay."""
        params = [p for module in modules for p in module.parameters()]
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def update(self, batch: Batch) -> dict[str, float]:
        x, y = batch.pooled()
        loss = F.cross_entropy(self.network(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)
