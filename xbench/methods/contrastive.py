"""Contrastive transfer: self-supervised pre-training with NT-Xent (SimCLR) and the
two-encoder, paired form (InfoNCE between modalities, CLIP-style).

Augmentations are plain tensor operations on whole batches, on the batch's
device, driven by an explicit ``torch.Generator`` (no PIL, no global random
state): the same generator seed gives the same views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xbench import networks
from xbench.errors import ConfigError
from xbench.hparams import LogUniform
from xbench.losses import info_nce, nt_xent
from xbench.methods.base import Batch, Method
from xbench.registry import register_method
from xbench.tasks.base import TaskInfo


# -- augmentations --------------------------------------------------------------------------------
def _uniform(n: int, low: float, high: float, generator: torch.Generator,
             like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, *,
                        scale: tuple[float, float] = (0.6, 1.0), shift: float = 0.1
                        ) -> torch.Tensor:
    """Per-sample random crop (area fraction in ``scale``) resized back, plus a translation.

    Images ``(N, C, H, W)`` are cropped in both axes, signals ``(N, C, L)``
    along their length. ``shift`` moves the crop by up to that fraction of the
    half-width beyond the input's border (zero padding).
    """
    signal = x.dim() == 3
    images = x.unsqueeze(2) if signal else x
    n = len(x)
    low, high = scale if signal else (math.sqrt(scale[0]), math.sqrt(scale[1]))
    side = _uniform(n, low, high, generator, x)  # fraction of each axis kept
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = side
    theta[:, 0, 2] = _uniform(n, -1.0, 1.0, generator, x) * (1.0 - side + shift)
    if signal:
        theta[:, 1, 1] = 1.0
    else:
        theta[:, 1, 1] = side
        theta[:, 1, 2] = _uniform(n, -1.0, 1.0, generator, x) * (1.0 - side + shift)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(2) if signal else out


def jitter(x: torch.Tensor, generator: torch.Generator, *, gain: float = 0.3,
           offset: float = 0.2, noise: float = 0.1) -> torch.Tensor:
    """Per-sample intensity gain in ``1 ± gain``, offset and Gaussian noise (scaled by its std)."""
    n = len(x)
    shape = (n,) + (1,) * (x.dim() - 1)
    std = x.reshape(n, -1).std(dim=1).clamp_min(1e-6).view(shape)
    g = _uniform(n, 1.0 - gain, 1.0 + gain, generator, x).view(shape)
    b = _uniform(n, -offset, offset, generator, x).view(shape) * std
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x * g + b + noise * std * eps


def feature_dropout(x: torch.Tensor, generator: torch.Generator, *, p: float = 0.2
                    ) -> torch.Tensor:
    """Zero each feature of a flat vector with probability ``p`` (the crop of vector inputs)."""
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each row: crop/translate (images, signals) or feature dropout
    (vectors), then intensity jitter and noise. Same shape, dtype and device as ``x``."""
    view = random_resized_crop(x, generator) if x.dim() in (3, 4) else feature_dropout(x, generator)
    return jitter(view, generator)


def generator_for(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from torch's global generator (so from the job's seed)."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator(device=device).manual_seed(seed)


def projection_head(n_inputs: int, n_outputs: int) -> nn.Sequential:
    """SimCLR's two-layer MLP projection head."""
    return nn.Sequential(nn.Linear(n_inputs, n_inputs), nn.ReLU(), nn.Linear(n_inputs, n_outputs))


# -- SimCLR ----------------------------------------------------------------------------------------
@register_method("contrastive_simclr", tags={"contrastive", "self_supervised", "uda", "dg"})
class SimCLR(Method):
    """SimCLR (Chen, Kornblith, Norouzi & Hinton, ICML 2020) pre-training, then a linear probe.

    Stage ``pretrain``: two augmented views (``augment``) of the pooled source
    inputs, plus the unlabeled target inputs under ``uda``, through the
    encoder and a projection head; NT-Xent at ``temperature``
    (``xbench.losses.nt_xent``). Stage ``probe``: the runner freezes the
    encoder; a linear head on its features learns the source labels (Adam,
    ``probe_lr``).
    """

    protocols = ("dg", "uda")
    needs = frozenset({"target_unlabeled"})
    stages = ("pretrain", "probe")
    frozen_after = {"pretrain": ("encoder",)}
    stage_needs = {"probe": frozenset()}  # the probe learns source labels only
    search_space = {"lr": LogUniform(1e-4, 1e-2), "temperature": LogUniform(0.05, 1.0),
                    "probe_lr": LogUniform(1e-3, 1e-1)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, temperature: float = 0.5,
                 projection_dim: int = 64, probe_lr: float = 1e-2):
        self.lr = lr
        self.weight_decay = weight_decay
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.probe_lr = probe_lr

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        self.encoder = networks.featurizer(info.input_shape).to(device)
        self.projector = projection_head(self.encoder.n_outputs, self.projection_dim).to(device)
        self.head = networks.classifier(self.encoder.n_outputs, info.num_classes).to(device)
        self.pretrain_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.projector.parameters()], lr=self.lr,
            weight_decay=self.weight_decay)
        self.probe_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.probe_lr)
        self.generator = generator_for(device)

    def update(self, batch: Batch) -> dict[str, float]:
        x, y = batch.pooled()
        if batch.stage == "pretrain":
            if batch.target is not None:
                x = torch.cat([x, batch.target])
            z1 = self.projector(self.encoder(augment(x, self.generator)))
            z2 = self.projector(self.encoder(augment(x, self.generator)))
            loss = nt_xent(z1, z2, temperature=self.temperature)
            optimizer = self.pretrain_optimizer
        else:
            with torch.no_grad():
                features = self.encoder(x)
            loss = F.cross_entropy(self.head(features), y)
            optimizer = self.probe_optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


# -- paired modalities ---------------------------------------------------------------------------
@register_method("contrastive_paired", tags={"contrastive", "paired", "cross_modality"})
class ContrastivePaired(Method):
    """Two-encoder contrastive transfer across modalities, CLIP-style (Radford et al., 2021).

    InfoNCE (van den Oord, Li & Vinyals, 2018, CPC) between the modalities'
    encoders as in CLIP (Radford et al., ICML 2021), plus a classifier on
    modality A's labels.

    φ (``phi``) embeds modality A (the source domain), ψ (``psi``) modality B
    (the target); both map into one ``embed_dim``-dimensional space. Each
    step: ``info_nce(φ(x_A), ψ(x_B), temperature, symmetric)`` on the
    unlabeled pairs (the same instances in both modalities) plus
    cross-entropy of ``head(normalize(φ(x)))`` on A's labels. ``predict(x)``
    routes an input by its shape (``TaskInfo.input_shapes``) through ψ for B
    or φ for A, then the shared head: labels learned on A predict on B. The
    two modalities' input shapes must differ.
    """

    protocols = ("paired",)
    needs = frozenset({"pairs"})
    search_space = {"lr": LogUniform(1e-4, 1e-2), "temperature": LogUniform(0.03, 1.0),
                    "align_weight": LogUniform(0.1, 10.0)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, temperature: float = 0.1,
                 symmetric: bool = True, align_weight: float = 1.0, embed_dim: int = 64):
        self.lr = lr
        self.weight_decay = weight_decay
        self.temperature = temperature
        self.symmetric = symmetric
        self.align_weight = align_weight
        self.embed_dim = embed_dim

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        shapes = info.input_shapes or {d: info.input_shape
                                       for d in info.source_domains + info.target_domains}
        shape_a = tuple(shapes[info.source_domains[0]])
        shape_b = tuple(shapes[info.target_domains[0]])
        self.routes: dict[tuple[int, ...], str] = {}
        for domains, name in ((info.source_domains, "phi"), (info.target_domains, "psi")):
            for domain in domains:
                shape = tuple(shapes[domain])
                if self.routes.setdefault(shape, name) != name:
                    raise ConfigError(f"contrastive_paired routes inputs by shape, but source and "
                                      f"target domains share the shape {shape} (domain "
                                      f"'{domain}'); it needs modalities of different shapes")
        self.phi = self._encoder(shape_a).to(device)
        self.psi = self._encoder(shape_b).to(device)
        self.head = networks.classifier(self.embed_dim, info.num_classes).to(device)
        modules = (self.phi, self.psi, self.head)
        self.optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()],
                                          lr=self.lr, weight_decay=self.weight_decay)

    def _encoder(self, shape: tuple[int, ...]) -> nn.Sequential:
        features = networks.featurizer(shape)
        return nn.Sequential(features, nn.Linear(features.n_outputs, self.embed_dim))

    def update(self, batch: Batch) -> dict[str, float]:
        x_a, x_b = batch.pairs
        align = info_nce(self.phi(x_a), self.psi(x_b), temperature=self.temperature,
                         symmetric=self.symmetric)
        x, y = batch.pooled()
        classify = F.cross_entropy(self.head(F.normalize(self.phi(x), dim=1)), y)
        loss = classify + self.align_weight * align
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "loss_align": align.item(), "loss_cls": classify.item()}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The shared, L2-normalised embedding of ``x`` (through φ or ψ by its shape)."""
        route = self.routes.get(tuple(x.shape[1:]))
        if route is None:
            raise ValueError(f"contrastive_paired: no modality has input shape "
                             f"{tuple(x.shape[1:])}; known shapes: {sorted(self.routes)}")
        return F.normalize(getattr(self, route)(x), dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
