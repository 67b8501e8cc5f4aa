"""An unbounded generator of handwritten-style digits, vectorised in torch over a batch.

Each digit starts from a glyph of one of matplotlib's bundled fonts
(:func:`xbench.tasks.syndigits.glyph_templates`: 18 fonts, several families,
weights and slants) and gets its own random

* affine transform: rotation, shear, scale, aspect and translation;
* elastic deformation (Simard et al., 2003): a smooth random displacement field,
  Gaussian noise on a coarse grid upsampled bicubically, added to the affine
  sampling grid so the glyph is resampled once (``F.grid_sample``);
* stroke width: the ink mask eroded or dilated by a fractional amount (max-pool
  levels blended linearly);
* blur, ink intensity and pixel noise.

Everything is drawn on a 2x supersampled grid (images under 32 pixels) and
averaged down. No per-image Python loop: a domain of 10,000 images at 16
pixels takes well under a second on one core (after the one-off glyph
rendering, about a second). ``CHUNK`` images are drawn per batch; the chunk
size is part of the data's identity (it fixes the order of the random draws).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from xbench.tasks import imageops
from xbench.tasks.syndigits import glyph_templates

#: Images drawn per vectorised batch (bounds memory at large resolutions).
CHUNK = 2048
#: Random ranges: rotation (degrees), scale, shear factor, translation (of the half-width),
#: horizontal aspect, elastic displacement (largest, as a fraction of the width), stroke
#: width change (supersampled pixels at 16 px output; negative thins), blur sigma (fraction
#: of the width), ink intensity and pixel noise std.
ROTATE, SCALE, SHEAR, TRANSLATE = 12.0, (0.9, 1.15), 0.3, 0.07
ASPECT = (0.7, 1.05)
ELASTIC, ELASTIC_CELLS = 0.08, 4
STROKE = (-0.5, 2.0)
BLUR = 0.06
INK = (0.75, 1.0)
NOISE = 0.06


def supersampling(resolution: int) -> int:
    """Grid refinement for anti-aliasing: 2 for images under 32 pixels, else 1."""
    return 2 if resolution < 32 else 1


@functools.lru_cache(maxsize=4)
def templates_at(size: int) -> torch.Tensor:
    """Every font's glyphs area-resampled to ``size``: (fonts * 10, 1, size, size)."""
    glyphs = glyph_templates()
    return F.interpolate(glyphs.flatten(0, 1).unsqueeze(1), size=(size, size), mode="area")


def _max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey dilation by a (2 radius + 1) square (what ``F.max_pool2d`` with stride 1 and
    that padding computes), separably: rows, then columns, as maxima of shifted copies."""
    size = x.shape[-1]
    padded = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = functools.reduce(torch.maximum, [padded[..., i:i + size]
                                         for i in range(2 * radius + 1)])
    padded = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return functools.reduce(torch.maximum, [padded[..., i:i + size, :]
                                            for i in range(2 * radius + 1)])


@functools.lru_cache(maxsize=4)
def _field_basis(size: int) -> torch.Tensor:
    """Bicubic upsampling from ``ELASTIC_CELLS`` squared to ``size`` squared, as a matrix."""
    cells = ELASTIC_CELLS * ELASTIC_CELLS
    impulses = torch.eye(cells).view(cells, 1, ELASTIC_CELLS, ELASTIC_CELLS)
    return F.interpolate(impulses, size=(size, size), mode="bicubic",
                         align_corners=False).view(cells, size * size)


def _stroke(x: torch.Tensor, width: torch.Tensor, unit: int) -> torch.Tensor:
    """Thin (``width`` < 0) or thicken each mask by ``width`` steps of ``unit`` pixels.

    Levels -1 (eroded), 0, 1 and 2 (dilated) are max-pool filters; a fractional
    width blends the two levels around it.
    """
    dilated = _max_filter(x, unit)
    levels = torch.stack([-_max_filter(-x, unit), x, dilated, _max_filter(dilated, unit)],
                         dim=1)  # (N, 4, 1, S, S)
    position = (width + 1).clamp(0.0, 3.0)
    low = position.floor().clamp(max=2.0).long()
    frac = (position - low).view(-1, 1, 1, 1)
    rows = torch.arange(len(x))
    return torch.lerp(levels[rows, low], levels[rows, low + 1], frac)


def _draw(labels: torch.Tensor, resolution: int, generator: torch.Generator) -> torch.Tensor:
    n = len(labels)
    factor = supersampling(resolution)
    size = factor * resolution
    templates = templates_at(size)
    fonts = len(templates) // 10
    font = torch.randint(fonts, (n,), generator=generator)
    source = templates[font * 10 + labels]
    theta = imageops.affine_matrices(n, generator, rotate=ROTATE, scale=SCALE, shear=SHEAR,
                                     translate=TRANSLATE)
    theta[:, :, 0] = theta[:, :, 0] / imageops.uniform(n, *ASPECT, generator).view(n, 1)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    coarse = torch.randn(n, 2, ELASTIC_CELLS, ELASTIC_CELLS, generator=generator)
    field = (coarse.view(2 * n, -1) @ _field_basis(size)).view(n, 2, size, size)
    field = field / field.flatten(1).abs().amax(dim=1).clamp_min(1e-8).view(n, 1, 1, 1)
    alpha = imageops.uniform(n, 0.0, ELASTIC, generator).view(n, 1, 1, 1)
    grid = grid + 2 * alpha * field.permute(0, 2, 3, 1)
    x = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    unit = max(1, size // 32)
    x = _stroke(x, imageops.uniform(n, *STROKE, generator), unit)
    if factor > 1:
        x = F.avg_pool2d(x, factor)
    mix = torch.rand(n, 1, 1, 1, generator=generator)
    x = torch.lerp(x, imageops.gaussian_blur(x, BLUR * resolution), mix)
    x = x / x.flatten(1).amax(dim=1).clamp_min(1e-6).view(n, 1, 1, 1)
    x = x * imageops.uniform(n, *INK, generator).view(n, 1, 1, 1)
    noise = imageops.uniform(n, 0.0, NOISE, generator).view(n, 1, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0.0, 1.0)


def handwritten_digits(n: int, resolution: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` generated digits: (N, 1, R, R) floats in [0, 1], and labels ``arange(n) % 10``
    (balanced: exactly ``n / 10`` per digit when ``n`` is a multiple of 10)."""
    labels = torch.arange(n) % 10
    out = torch.empty(n, 1, resolution, resolution)
    for start in range(0, n, CHUNK):
        out[start:start + CHUNK] = _draw(labels[start:start + CHUNK], resolution, generator)
    return out, labels
