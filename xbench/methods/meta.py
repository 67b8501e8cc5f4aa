"""Meta-learning: MLDG for domain generalisation; MAML, Reptile, Prototypical
Networks and the fine-tuning baseline for few-shot (cross-task) transfer.

The inner loops are functional (``torch.func.functional_call`` on a dict of
tensors), so adapting never touches a module's stored parameters, and they
are plain SGD steps. ``inner_adapt`` and ``meta_objective`` are small pure
functions shared by MLDG and MAML; ``tests/methods/test_meta.py`` checks
their meta-gradient against the closed form on a scalar quadratic.

The few-shot methods' ``predict(x)`` scores the task's training (base)
classes; under the ``fewshot`` protocol the runner scores ``predict_episode``
on novel classes instead.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from xbench import networks
from xbench.errors import ConfigError
from xbench.hparams import Choice, IntUniform, LogUniform
from xbench.methods.base import Batch, Method
from xbench.registry import register_method
from xbench.tasks.base import TaskInfo

Params = dict[str, torch.Tensor]


# -- pure functions: the inner loop and the meta-objective --------------------------------------
def sgd_step(loss: torch.Tensor, params: Params, *, inner_lr: float,
             first_order: bool) -> Params:
    """One SGD step ``p - inner_lr * dloss/dp``, returned as new tensors (``params`` untouched).

    Second order (``first_order=False``): the step stays differentiable w.r.t.
    ``params`` (``create_graph``), so a loss on the result back-propagates
    through it. First order: the gradient is a constant, so ``d(result)/d(params)``
    is the identity. ``loss``'s graph is kept, so it may still be back-propagated.
    """
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order,
                                retain_graph=True)
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}


def inner_adapt(loss_of: Callable[[Params], torch.Tensor], params: Params, *, inner_lr: float,
                inner_steps: int, first_order: bool) -> Params:
    """``inner_steps`` SGD steps on ``loss_of`` starting from ``params`` (functional)."""
    for _ in range(inner_steps):
        params = sgd_step(loss_of(params), params, inner_lr=inner_lr, first_order=first_order)
    return params


def meta_objective(inner_loss: Callable[[Params], torch.Tensor],
                   outer_loss: Callable[[Params], torch.Tensor], params: Params, *,
                   inner_lr: float, inner_steps: int = 1, first_order: bool = False
                   ) -> torch.Tensor:
    """MAML's objective: the outer loss at the parameters adapted on the inner loss."""
    return outer_loss(inner_adapt(inner_loss, params, inner_lr=inner_lr,
                                  inner_steps=inner_steps, first_order=first_order))


def maml_meta_gradient(inner_loss: Callable[[Params], torch.Tensor],
                       outer_loss: Callable[[Params], torch.Tensor], params: Params, *,
                       inner_lr: float, inner_steps: int = 1, first_order: bool = False
                       ) -> Params:
    """``d meta_objective / d params`` (what ``MAML.update`` back-propagates)."""
    loss = meta_objective(inner_loss, outer_loss, params, inner_lr=inner_lr,
                          inner_steps=inner_steps, first_order=first_order)
    grads = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, grads))


def mldg_objective(train_loss: Callable[[Params], torch.Tensor],
                   test_loss: Callable[[Params], torch.Tensor], params: Params, *,
                   inner_lr: float, meta_test_weight: float, first_order: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLDG's ``F(θ) + meta_test_weight · G(θ − inner_lr · ∇F(θ))``; returns (total, F, G)."""
    loss_train = train_loss(params)
    adapted = sgd_step(loss_train, params, inner_lr=inner_lr, first_order=first_order)
    loss_test = test_loss(adapted)
    return loss_train + meta_test_weight * loss_test, loss_train, loss_test


# -- networks ------------------------------------------------------------------------------------
def group_norm_instead_of_batch_norm(module: nn.Module, groups: int = 8) -> nn.Module:
    """Replace every batch-norm layer of ``module`` (in place) by a group norm of its width.

    Batch norm makes an inner loop's result depend on running statistics that
    the inner loop itself never sees (or, with batch statistics at test time,
    on the other queries: transductive). Group norm normalises each sample on
    its own, so an adapted network predicts every query independently.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            setattr(module, name, nn.GroupNorm(math.gcd(groups, channels), channels))
        else:
            group_norm_instead_of_batch_norm(child, groups)
    return module


class Net(nn.Module):
    """A featurizer and a linear head (the head may be sliced to N ways functionally)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int,
                 group_norm: bool = False):
        super().__init__()
        self.features = networks.featurizer(input_shape)
        if group_norm:
            group_norm_instead_of_batch_norm(self.features)
        self.head = networks.classifier(self.features.n_outputs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _cross_entropy_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor
                      ) -> Callable[[Params], torch.Tensor]:
    return lambda params: F.cross_entropy(functional_call(net, params, (x,)), y)


def _ways(labels: torch.Tensor) -> int:
    return int(labels.max().item()) + 1


# -- domain generalisation -----------------------------------------------------------------------
@register_method("mldg", tags={"meta", "dg"})
class MLDG(Method):
    """MLDG, Meta-Learning Domain Generalization (Li et al., AAAI 2018).

    Each step splits the source domains at random into meta-train and
    ``meta_test_domains`` meta-test domains and minimises
    ``L_train(θ) + meta_test_weight · L_test(θ − inner_lr · ∇L_train(θ))``.
    The inner step is one plain **SGD** step of size ``inner_lr``, taken
    functionally (``torch.func.functional_call``); the outer optimiser is
    Adam (``lr``). ``first_order=True`` drops the second derivatives (as
    DomainBed's MLDG does). Needs at least two source domains
    (``min_source_domains = 2``).
    """

    protocols = ("dg",)
    min_source_domains = 2
    search_space = {"lr": LogUniform(1e-4, 1e-2), "inner_lr": LogUniform(1e-3, 0.3),
                    "meta_test_weight": LogUniform(0.1, 10.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, inner_lr: float = 0.05,
                 meta_test_weight: float = 1.0, meta_test_domains: int = 1,
                 first_order: bool = False):
        self.lr = lr
        self.weight_decay = weight_decay
        self.inner_lr = inner_lr
        self.meta_test_weight = meta_test_weight
        self.meta_test_domains = meta_test_domains
        self.first_order = first_order

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        if info.num_source_domains <= self.meta_test_domains:
            raise ConfigError(f"mldg needs more source domains than meta_test_domains "
                              f"({self.meta_test_domains}); task '{info.name}' has "
                              f"{info.num_source_domains}")
        self.network = Net(info.input_shape, info.num_classes).to(device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.lr,
                                          weight_decay=self.weight_decay)

    def update(self, batch: Batch) -> dict[str, float]:
        order = torch.randperm(len(batch.source)).tolist()
        test_ids, train_ids = order[:self.meta_test_domains], order[self.meta_test_domains:]
        x_tr = torch.cat([batch.source[i][0] for i in train_ids])
        y_tr = torch.cat([batch.source[i][1] for i in train_ids])
        x_te = torch.cat([batch.source[i][0] for i in test_ids])
        y_te = torch.cat([batch.source[i][1] for i in test_ids])
        loss, loss_train, loss_test = mldg_objective(
            _cross_entropy_of(self.network, x_tr, y_tr),
            _cross_entropy_of(self.network, x_te, y_te),
            dict(self.network.named_parameters()), inner_lr=self.inner_lr,
            meta_test_weight=self.meta_test_weight, first_order=self.first_order)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "loss_meta_train": loss_train.item(),
                "loss_meta_test": loss_test.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


# -- few-shot ------------------------------------------------------------------------------------
class _FewShot(Method):
    """Shared pieces of the few-shot methods (protocol ``fewshot``)."""

    protocols = ("fewshot",)
    needs = frozenset({"episodes"})


class _Initialisation(_FewShot):
    """MAML and Reptile: meta-learn an initialisation, adapt it by SGD on each support set.

    The network's head has ``num_classes`` rows (the task's training classes,
    so never fewer than the episodes' ``ways``); an episode uses an N-way
    head made of its first ``ways`` rows, sliced functionally. The backbone's
    batch norm is replaced by group norm (``group_norm_instead_of_batch_norm``):
    non-transductive, each query is predicted on its own.
    """

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        self.network = Net(info.input_shape, info.num_classes, group_norm=True).to(device)
        self.optimizer = self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=self.lr,
                                weight_decay=self.weight_decay)

    def episode_params(self, ways: int) -> Params:
        """The live parameters, with the head cut to ``ways`` outputs (differentiable views)."""
        if ways > self.network.head.out_features:
            raise ConfigError(f"{self.registered_name}: an episode has {ways} ways but the head "
                              f"has {self.network.head.out_features} rows (training classes)")
        params = dict(self.network.named_parameters())
        params["head.weight"] = params["head.weight"][:ways]
        params["head.bias"] = params["head.bias"][:ways]
        return params

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The un-adapted initialisation's head (its rows are not tied to classes)."""
        return self.network(x)

    def predict_episode(self, support_x: torch.Tensor, support_y: torch.Tensor,
                        query_x: torch.Tensor) -> torch.Tensor:
        """Adapt a copy of the weights with ``inner_steps`` SGD steps on the support set."""
        with torch.enable_grad():
            start = {k: v.detach().requires_grad_() for k, v in
                     self.episode_params(_ways(support_y)).items()}
            adapted = inner_adapt(_cross_entropy_of(self.network, support_x, support_y), start,
                                  inner_lr=self.inner_lr, inner_steps=self.inner_steps,
                                  first_order=True)
        with torch.no_grad():
            return functional_call(self.network, adapted, (query_x,))


@register_method("maml", tags={"meta", "fewshot"})
class MAML(_Initialisation):
    """MAML, Model-Agnostic Meta-Learning (Finn et al., ICML 2017).

    Per step, one training episode: ``inner_steps`` SGD steps of size
    ``inner_lr`` on the support set (functional, ``torch.func.functional_call``),
    then the query loss at the adapted weights is back-propagated to the
    initialisation through the inner loop (second order) or around it
    (``first_order=True``, FOMAML) and the outer optimiser (Adam, ``lr``) steps.
    """

    search_space = {"lr": LogUniform(1e-4, 1e-2), "inner_lr": LogUniform(1e-2, 1.0),
                    "inner_steps": IntUniform(1, 10), "first_order": Choice((False, True))}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, inner_lr: float = 0.4,
                 inner_steps: int = 5, first_order: bool = False):
        self.lr = lr
        self.weight_decay = weight_decay
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = first_order

    def update(self, batch: Batch) -> dict[str, float]:
        ep = batch.episode
        loss = meta_objective(_cross_entropy_of(self.network, ep.support_x, ep.support_y),
                              _cross_entropy_of(self.network, ep.query_x, ep.query_y),
                              self.episode_params(ep.ways), inner_lr=self.inner_lr,
                              inner_steps=self.inner_steps, first_order=self.first_order)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


@register_method("reptile", tags={"meta", "fewshot"})
class Reptile(_Initialisation):
    """Reptile (Nichol, Achiam & Schulman, 2018, "On First-Order Meta-Learning Algorithms").

    Per step, one training episode (support and query together):
    ``inner_steps`` plain SGD steps of size ``inner_lr`` from the current
    weights θ to φ, then the outer step ``θ ← θ + ε · (φ − θ)`` (SGD on the
    pseudo-gradient ``θ − φ``), with ``ε`` annealed linearly from ``lr`` to 0
    over the training steps, as in the paper. Test-time adaptation is the
    same SGD loop on the support set.
    """

    search_space = {"lr": LogUniform(0.1, 1.0), "inner_lr": LogUniform(1e-2, 1.0),
                    "inner_steps": IntUniform(1, 20)}

    def __init__(self, *, lr: float = 1.0, weight_decay: float = 0.0, inner_lr: float = 0.2,
                 inner_steps: int = 10):
        self.lr = lr
        self.weight_decay = weight_decay
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        if self.inner_steps < 1:
            raise ConfigError(f"reptile needs inner_steps >= 1, got {self.inner_steps}")
        super().setup(info, device)
        self.total_steps = max(1, info.steps)

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.network.parameters(), lr=self.lr,
                               weight_decay=self.weight_decay)

    def update(self, batch: Batch) -> dict[str, float]:
        ep = batch.episode
        x = torch.cat([ep.support_x, ep.query_x])
        y = torch.cat([ep.support_y, ep.query_y])
        loss_of = _cross_entropy_of(self.network, x, y)
        start = {k: v.detach().requires_grad_() for k, v in self.episode_params(ep.ways).items()}
        adapted, losses = start, []
        for _ in range(self.inner_steps):
            loss = loss_of(adapted)
            losses.append(loss.item())
            adapted = sgd_step(loss, adapted, inner_lr=self.inner_lr, first_order=True)
        for name, p in self.network.named_parameters():
            grad = torch.zeros_like(p)
            grad[:len(start[name])] = (start[name] - adapted[name]).detach()  # head: N rows
            p.grad = grad
        for group in self.optimizer.param_groups:  # ε annealed linearly to 0
            group["lr"] = self.lr * max(0.0, 1.0 - batch.step / self.total_steps)
        self.optimizer.step()
        return {"loss": losses[0]}


@register_method("protonet", tags={"meta", "fewshot", "metric"})
class ProtoNet(_FewShot):
    """Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

    Logits are the negative squared Euclidean distances from a query's
    embedding to each class's prototype (the mean support embedding); trained
    by cross-entropy on training episodes' queries. ``predict(x)`` uses
    prototypes of the training classes, a running mean (momentum
    ``prototype_momentum``) of their embeddings in the source batches.
    """

    search_space = {"lr": LogUniform(1e-4, 1e-2), "weight_decay": LogUniform(1e-6, 1e-3)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 prototype_momentum: float = 0.1):
        self.lr = lr
        self.weight_decay = weight_decay
        self.prototype_momentum = prototype_momentum

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        self.encoder = networks.featurizer(info.input_shape).to(device)
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=self.lr,
                                          weight_decay=self.weight_decay)
        self.prototypes = torch.zeros(info.num_classes, self.encoder.n_outputs, device=device)

    @staticmethod
    def logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor
               ) -> torch.Tensor:
        """``-||query - prototype_k||^2`` for each class ``k`` of the support embeddings."""
        ways = _ways(support_y)
        one_hot = F.one_hot(support_y, ways).to(support.dtype)
        prototypes = one_hot.T @ support / one_hot.sum(0).unsqueeze(1)
        return -torch.cdist(query, prototypes).pow(2)

    def update(self, batch: Batch) -> dict[str, float]:
        ep = batch.episode
        z = self.encoder(torch.cat([ep.support_x, ep.query_x]))
        n = len(ep.support_y)
        loss = F.cross_entropy(self.logits(z[:n], ep.support_y, z[n:]), ep.query_y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():  # running prototypes of the training classes, for predict()
            x, y = batch.pooled()
            z = self.encoder(x)
            for k in torch.unique(y).tolist():
                self.prototypes[k].lerp_(z[y == k].mean(0), self.prototype_momentum)
        return {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(self.encoder(x), self.prototypes).pow(2)

    def predict_episode(self, support_x: torch.Tensor, support_y: torch.Tensor,
                        query_x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(self.encoder(support_x), support_y, self.encoder(query_x))


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, ways: int, *,
                    inner_lr: float, inner_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A new ``ways``-way linear head ``(weight, bias)`` fitted on fixed features.

    ``inner_steps`` full-batch gradient-descent steps of size ``inner_lr`` on
    the mean cross-entropy, from zero: deterministic (no random init, no
    sampling). The gradient is written out, ``dCE/dlogits = (softmax - onehot) / n``,
    which avoids autograd and optimizer overhead for a tiny problem solved
    once per episode.
    """
    n = len(labels)
    onehot = F.one_hot(labels, ways).to(features.dtype)
    weight = features.new_zeros(ways, features.shape[1])
    bias = features.new_zeros(ways)
    for _ in range(inner_steps):
        residual = (torch.softmax(features @ weight.T + bias, dim=1) - onehot) / n
        weight = weight - inner_lr * residual.T @ features
        bias = bias - inner_lr * residual.sum(0)
    return weight, bias


@register_method("finetune", tags={"meta", "fewshot", "baseline"})
class FineTune(_FewShot):
    """Fine-tuning baseline: pre-train, then fit a new head per episode (Chen et al., ICLR 2019).

    The "Baseline" of Chen et al. (2019), "A Closer Look at Few-shot
    Classification", and the strong baseline of BSCD-FSL (Guo et al., ECCV
    2020), where simple fine-tuning beats meta-learning across far domains.

    Supervised pre-training on the training (base) classes with the source
    batches; each episode then fits a new linear head on the frozen,
    L2-normalised support features (``inner_steps`` full-batch gradient steps
    of size ``inner_lr`` from zero, deterministic; see ``fit_linear_head``)
    and predicts the queries.
    """

    needs = frozenset()
    search_space = {"lr": LogUniform(1e-4, 1e-2), "weight_decay": LogUniform(1e-6, 1e-3),
                    "inner_lr": LogUniform(0.5, 50.0), "inner_steps": IntUniform(10, 100)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, inner_lr: float = 5.0,
                 inner_steps: int = 50):
        self.lr = lr
        self.weight_decay = weight_decay
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        self.network = Net(info.input_shape, info.num_classes).to(device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.lr,
                                          weight_decay=self.weight_decay)

    def update(self, batch: Batch) -> dict[str, float]:
        x, y = batch.pooled()
        loss = F.cross_entropy(self.network(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def predict_episode(self, support_x: torch.Tensor, support_y: torch.Tensor,
                        query_x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            support = F.normalize(self.network.features(support_x), dim=1)
            query = F.normalize(self.network.features(query_x), dim=1)
            weight, bias = fit_linear_head(support, support_y, _ways(support_y),
                                           inner_lr=self.inner_lr, inner_steps=self.inner_steps)
            return query @ weight.T + bias
