"""Batched, seeded image operations shared by the embedded tasks.

Every function takes a float batch ``(N, C, H, W)`` and, where random, a
``torch.Generator``, so a task's data depends only on its own seed. They are
vectorised over the batch (no per-image Python loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` floats drawn uniformly from ``[low, high)``."""
    return low + (high - low) * torch.rand(n, generator=generator)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian kernel reaching 3 sigma on each side."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, edges replicated."""
    if sigma <= 0:
        return x
    kernel = gaussian_kernel1d(sigma).to(x)
    c, k = x.shape[1], len(kernel)
    pad = k // 2
    out = F.pad(x, (pad, pad, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    out = F.pad(out, (0, 0, pad, pad), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def affine_matrices(n: int, generator: torch.Generator, *, rotate: float = 0.0,
                    scale: tuple[float, float] = (1.0, 1.0), shear: float = 0.0,
                    translate: float = 0.0) -> torch.Tensor:
    """``n`` random 2x3 matrices for ``F.affine_grid`` (output -> input coordinates).

    Rotation is uniform in ``[-rotate, rotate]`` degrees, scale in ``scale``,
    shear in ``[-shear, shear]`` (a factor) and translation in
    ``[-translate, translate]`` of the half-width, all in normalised coordinates.
    """
    angle = torch.deg2rad(uniform(n, -rotate, rotate, generator))
    s = uniform(n, *scale, generator)
    sh = uniform(n, -shear, shear, generator)
    t = uniform(2 * n, -translate, translate, generator).view(n, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map A = R(angle) @ Shear @ diag(s); affine_grid wants its inverse.
    forward = torch.zeros(n, 2, 2)
    forward[:, 0, 0] = s * cos
    forward[:, 0, 1] = s * (cos * sh - sin)
    forward[:, 1, 0] = s * sin
    forward[:, 1, 1] = s * (sin * sh + cos)
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, -(inverse @ t.unsqueeze(-1))], dim=2)
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor, size: int | None = None,
         fill: float = 0.0) -> torch.Tensor:
    """Apply per-image affine ``theta`` (N, 2, 3) with bilinear sampling; outside is ``fill``.

    ``size`` resamples to a square output of that many pixels (default: the input's size).
    """
    n, c, h, w = x.shape
    out_h, out_w = (size, size) if size is not None else (h, w)
    grid = F.affine_grid(theta.to(x), [n, c, out_h, out_w], align_corners=False)
    if fill == 0.0:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shifted = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    return shifted + fill


def random_affine(x: torch.Tensor, generator: torch.Generator, **ranges: float) -> torch.Tensor:
    """``warp`` with random matrices from ``affine_matrices(**ranges)``."""
    return warp(x, affine_matrices(len(x), generator, **ranges))


def elastic(x: torch.Tensor, generator: torch.Generator, *, alpha: float = 0.2,
            sigma: float = 0.1) -> torch.Tensor:
    """Elastic distortion (Simard et al., 2003): a smooth random displacement field.

    The field is Gaussian noise on a coarse grid of about ``1 / sigma`` cells
    a side, upsampled bicubically and scaled so its largest displacement is
    ``alpha`` of the image width: it looks alike at any resolution.
    """
    n, _, h, w = x.shape
    cells = max(2, round(1 / sigma))
    coarse = torch.randn(n, 2, cells, cells, generator=generator)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    field = field / field.flatten(1).abs().amax(dim=1).clamp_min(1e-8).view(n, 1, 1, 1)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = base.unsqueeze(0) + 2 * alpha * field.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
