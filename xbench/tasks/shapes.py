"""Procedurally drawn shapes in four styles: a PACS-like benchmark at any size, offline.

PACS (Li et al., 2017) asks a model trained on photos, art and cartoons to
recognise sketches. Here ten shape classes are drawn, vectorised in torch,
in four styles that change texture, colour statistics, outline and
background the way PACS's domains do: ``photo`` (shaded, textured, on a
cluttered background), ``sketch`` (a dark, jittery outline on white),
``cartoon`` (flat colours with an ink outline) and ``painting`` (blotchy
colour, soft edges and brush noise). Images are stored as uint8.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from xbench.errors import ConfigError
from xbench.registry import register_task
from xbench.tasks import imageops
from xbench.tasks.base import Budget, Split, Task, known_names, split_indices, split_sizes


def _polygon(n: int, rotate: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Inside test of a regular ``n``-gon with circumradius 1."""
    half = math.pi / n

    def inside(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r = torch.sqrt(u * u + v * v)
        phi = torch.remainder(torch.atan2(v, u) + rotate, 2 * half)
        return r * torch.cos(phi - half) <= math.cos(half)
    return inside


def _star(u: torch.Tensor, v: torch.Tensor, points: int = 5, inner: float = 0.45) -> torch.Tensor:
    """Inside test of a ``points``-pointed star (outer radius 1), edges exact."""
    r = torch.sqrt(u * u + v * v)
    step = math.pi / points
    phi = torch.remainder(torch.atan2(v, u) + math.pi / 2, 2 * math.pi)
    k = torch.floor(phi / step)
    a = k * step
    odd = torch.remainder(k, 2) == 1
    ra = torch.where(odd, torch.full_like(r, inner), torch.ones_like(r))
    rb = torch.where(odd, torch.ones_like(r), torch.full_like(r, inner))
    edge = ra * rb * math.sin(step) / (ra * torch.sin(phi - a) + rb * torch.sin(a + step - phi))
    return r <= edge


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    x, y = 1.25 * u, 1.25 * v + 0.25
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _arrow(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    shaft = (u >= -0.95) & (u <= 0.15) & (v.abs() <= 0.22)
    head = (u >= 0.1) & (u <= 0.95) & (v.abs() <= 0.85 * (0.95 - u))
    return shaft | head


#: Shape classes, each an inside test on local coordinates (unit size, centred).
SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": lambda u, v: u * u + v * v <= 0.85 ** 2,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.72,
    "triangle": _polygon(3, rotate=math.pi / 2),
    "star": _star,
    "cross": lambda u, v: ((u.abs() <= 0.3) & (v.abs() <= 0.95))
    | ((v.abs() <= 0.3) & (u.abs() <= 0.95)),
    "ring": lambda u, v: (u * u + v * v <= 0.9 ** 2) & (u * u + v * v >= 0.55 ** 2),
    "hexagon": _polygon(6),
    "crescent": lambda u, v: (u * u + v * v <= 0.9 ** 2) & ((u - 0.45) ** 2 + v * v >= 0.75 ** 2),
    "heart": _heart,
    "arrow": _arrow,
}

#: Style domains, in order.
STYLES = ("photo", "sketch", "cartoon", "painting")

#: Half-width of a shape template in local units (every shape fits in radius ~1.05).
EXTENT = 1.1
#: Shapes are rotated uniformly within +-ROTATION radians (30 degrees: upright-ish, as
#: objects in photos are; full rotations leave too little signal for small CNNs).
ROTATION = math.pi / 6
#: Images drawn per vectorised batch (bounds memory at 224 pixels; part of the data's identity).
CHUNK = 256


def supersampling(resolution: int) -> int:
    """Grid refinement for anti-aliasing: 2 for images up to 32 pixels, else 1."""
    return 2 if resolution <= 32 else 1


def shape_templates(size: int) -> torch.Tensor:
    """Every class of ``SHAPES`` as a binary mask (classes, 1, size, size) on [-EXTENT, EXTENT]."""
    axis = ((torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1) * EXTENT
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([inside(gx, -gy).float() for inside in SHAPES.values()]).unsqueeze(1)


def shape_masks(labels: torch.Tensor, resolution: int, generator: torch.Generator,
                templates: torch.Tensor) -> torch.Tensor:
    """Anti-aliased masks (N, 1, R, R) in [0, 1] of the shapes ``labels`` index in ``SHAPES``.

    Each shape gets a random centre (within the middle fifth of the frame),
    radius (22-34% of the frame) and rotation (``ROTATION``); ``templates`` (from
    ``shape_templates``) are warped with bilinear sampling, on a 2x grid
    averaged down for images up to 32 pixels (``supersampling``).
    """
    n = len(labels)
    centre = imageops.uniform(2 * n, -0.2, 0.2, generator).view(n, 2)
    scale = EXTENT * imageops.uniform(n, 0.44, 0.68, generator)
    angle = imageops.uniform(n, -ROTATION, ROTATION, generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    linear = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    theta = torch.cat([linear, -(linear @ centre.unsqueeze(-1))], dim=2)
    factor = supersampling(resolution)
    grid = F.affine_grid(theta, [n, 1, factor * resolution, factor * resolution],
                         align_corners=False)
    out = torch.empty(n, 1, factor * resolution, factor * resolution)
    for c in labels.unique().tolist():
        rows = torch.nonzero(labels == c).squeeze(1)
        source = templates[c:c + 1].expand(len(rows), -1, -1, -1)
        out[rows] = F.grid_sample(source, grid[rows], mode="bilinear", padding_mode="zeros",
                                  align_corners=False)
    return F.avg_pool2d(out, factor) if factor > 1 else out


def _colours(n: int, generator: torch.Generator, low: float = 0.0,
             high: float = 1.0) -> torch.Tensor:
    """``n`` random RGB colours (N, 3, 1, 1) with channels uniform in ``[low, high)``."""
    return imageops.uniform(3 * n, low, high, generator).view(n, 3, 1, 1)


def _noise_field(n: int, channels: int, resolution: int, generator: torch.Generator,
                 cells: tuple[int, int]) -> torch.Tensor:
    """Smooth random fields (N, C, R, R) with values mostly in [-1, 1]: ``cells`` (rows,
    columns) of Gaussian noise upsampled bicubically (wide columns make horizontal streaks)."""
    coarse = torch.randn(n, channels, *cells, generator=generator) / 2
    return F.interpolate(coarse, size=(resolution, resolution), mode="bicubic",
                         align_corners=False)


def _outline(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A band of about ``width`` pixels around the edge of ``mask``."""
    def square_max(x: torch.Tensor) -> torch.Tensor:  # separable: rows, then columns
        x = F.max_pool2d(x, (1, 2 * width + 1), stride=1, padding=(0, width))
        return F.max_pool2d(x, (2 * width + 1, 1), stride=1, padding=(width, 0))

    return (square_max(mask) + square_max(-mask)).clamp(0.0, 1.0)


def _clutter(background: torch.Tensor, generator: torch.Generator,
             count: int = 6) -> torch.Tensor:
    """``background`` with ``count`` small random coloured bars and blocks painted over it."""
    n, _, r, _ = background.shape
    axis = torch.arange(r, dtype=torch.float32) / r
    for _ in range(count):
        x0, y0 = (imageops.uniform(n, -0.05, 1.0, generator).view(n, 1, 1) for _ in range(2))
        w, h = (imageops.uniform(n, 0.03, 0.15, generator).view(n, 1, 1) for _ in range(2))
        cols = ((axis >= x0) & (axis <= x0 + w)).float()  # (n, 1, R)
        rows = ((axis >= y0) & (axis <= y0 + h)).float().transpose(1, 2)  # (n, R, 1)
        box = (rows * cols).unsqueeze(1)
        background = torch.lerp(background, _colours(n, generator, 0.1, 0.9), 0.8 * box)
    return background


def _contrasting(base: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A colour clearly darker or lighter than each ``base`` colour (N, 3, 1, 1)."""
    n = len(base)
    darker = torch.rand(n, 1, 1, 1, generator=g) < 0.5
    return torch.where(darker, base * imageops.uniform(n, 0.1, 0.4, g).view(n, 1, 1, 1),
                       base + (1 - base) * imageops.uniform(n, 0.6, 0.9, g).view(n, 1, 1, 1))


def _photo(mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, r, _ = mask.shape
    base = _colours(n, g, 0.25, 0.75)
    background = _clutter(base * (1 + 0.4 * _noise_field(n, 3, r, g, (4, 4))), g)
    axis = torch.linspace(-1, 1, r)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    light = imageops.uniform(2 * n, -1.0, 1.0, g).view(n, 2, 1, 1)
    shade = 0.8 + 0.2 * (light[:, :1] * gx + light[:, 1:] * gy)
    freq = imageops.uniform(n, 3, 8, g).view(n, 1, 1, 1)
    phase = imageops.uniform(n, 0, 2 * math.pi, g).view(n, 1, 1, 1)
    stripes = 0.9 + 0.1 * torch.sin(freq * math.pi * (gx + 0.6 * gy) + phase)
    texture = 1 + 0.15 * _noise_field(n, 1, r, g, (r // 4, r // 4))
    fill = _contrasting(base, g) * shade * stripes * texture
    return torch.lerp(background, fill, mask)


def _sketch(mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, r, _ = mask.shape
    width = max(1, r // 32)
    jitter = imageops.elastic(mask, g, alpha=0.03, sigma=0.15)
    line = torch.maximum(_outline((jitter > 0.5).float(), width),
                         0.6 * _outline((mask > 0.5).float(), width))
    line = line * imageops.uniform(n, 0.6, 1.0, g).view(n, 1, 1, 1)
    paper = 1.0 - 0.04 * torch.rand(n, 1, r, r, generator=g)
    return (paper - line).clamp(0.0, 1.0).expand(n, 3, r, r)


def _cartoon(mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, r, _ = mask.shape
    background = _colours(n, g, 0.55, 1.0).expand(n, 3, r, r)
    fill = _colours(n, g, 0.0, 1.0)
    fill = fill / fill.amax(dim=1, keepdim=True).clamp_min(1e-6)  # saturated, bright
    image = torch.lerp(background, fill.expand(n, 3, r, r), mask)
    ink = _outline((mask > 0.5).float(), max(1, r // 32))
    return image * (1 - 0.9 * ink)


def _painting(mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, r, _ = mask.shape
    soft = imageops.gaussian_blur(imageops.elastic(mask, g, alpha=0.04, sigma=0.15), 0.025 * r)
    base = _colours(n, g, 0.2, 0.8)
    background = base + 0.2 * _noise_field(n, 3, r, g, (5, 5))
    fill = _contrasting(base, g) + 0.15 * _noise_field(n, 3, r, g, (6, 6))
    image = torch.lerp(background, fill, soft)
    strokes = _noise_field(n, 3, r, g, (max(2, r // 2), max(2, r // 10)))  # brush streaks
    return image + 0.08 * strokes + 0.04 * torch.randn(n, 3, r, r, generator=g)


#: Style renderers by domain name: mask (N, 1, R, R) -> RGB floats (N, 3, R, R).
RENDERERS = {"photo": _photo, "sketch": _sketch, "cartoon": _cartoon, "painting": _painting}


def draw(labels: torch.Tensor, style: str, resolution: int,
         generator: torch.Generator) -> torch.Tensor:
    """Images (N, 3, R, R) uint8 of the shapes ``labels`` in ``style``, ``CHUNK`` at a time."""
    templates = shape_templates(2 * supersampling(resolution) * resolution)
    out = torch.empty(len(labels), 3, resolution, resolution, dtype=torch.uint8)
    for start in range(0, len(labels), CHUNK):
        mask = shape_masks(labels[start:start + CHUNK], resolution, generator, templates)
        out[start:start + CHUNK] = imageops.to_uint8(RENDERERS[style](mask, generator))
    return out


def _check_resolution(name: str, resolution: int) -> int:
    resolution = int(resolution)
    if resolution < 16:
        raise ConfigError(f"{name}: resolution {resolution} is too small; use 16 or more "
                          f"(32 default, 64 or 224 for GPU runs)")
    return resolution


@register_task("shapes_styles", tags={"shapes", "embedded", "pacs_like"})
class ShapeStyles(Task):
    """Shapes in styles, a PACS analogue (Li et al., 2017) drawn procedurally at any size.

    Ten classes (``SHAPES``: circle, square, triangle, star, cross, ring,
    hexagon, crescent, heart, arrow) in four style domains (``photo``,
    ``sketch``, ``cartoon``, ``painting``), ``n_per_class`` images per class
    and domain at ``resolution`` (32 by default; 64 or 224 for GPU runs),
    split 60/20/20: multi-source DG. Target ``cartoon``: ERM with the small
    CNN learns it best in-domain (about 50-65% after 400 steps) yet falls to
    near chance when it is held out; as in PACS, report every target in turn
    (``targets = "all"``) when the budget allows.

    Versions differ only in the default ``n_per_class`` (0 means the
    version's): 1,000 in version 2 (10,000 images per style, 2,000 test images
    per target), 200 in version 1 (400 test images). The drawing is the same,
    so version 1 builds the data it always did.
    """

    version = "2"
    old_versions = ("1",)
    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = len(SHAPES)
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 32, n_per_class: int = 0,
                 styles: tuple[str, ...] = STYLES):
        super().__init__(data_seed=data_seed)
        self.resolution = _check_resolution("shapes_styles", resolution)
        #: 0 means the version's default
        self.n_per_class = int(n_per_class) or (200 if self.version == "1" else 1000)
        self.styles = known_names("shapes_styles", "style", styles, STYLES)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.styles

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("cartoon",) if "cartoon" in self.styles else (self.styles[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    def target_test_size(self) -> int | None:
        return split_sizes(len(SHAPES) * self.n_per_class)[2]

    def build(self) -> dict[str, dict[str, Split]]:
        data = {}
        for style in self.styles:
            generator = torch.Generator().manual_seed(
                self.data_seed * 7919 + STYLES.index(style))
            y = torch.arange(len(SHAPES)).repeat_interleave(self.n_per_class)
            x = draw(y, style, self.resolution, generator)
            parts = split_indices(len(y), (0.6, 0.2, 0.2), generator)
            data[style] = {s: Split(x[idx].contiguous(), y[idx])
                           for s, idx in zip(("train", "val", "test"), parts)}
        return data


@register_task("shapes_fewshot", tags={"shapes", "embedded", "fewshot"})
class FewShotShapes(Task):
    """Shape class split for few-shot learning (cross-task; cross-domain too if styles differ).

    Domain ``base`` holds ``base_classes`` (circle, square, triangle, star,
    cross) drawn in ``base_styles``; domain ``novel`` the other five shapes in
    ``novel_styles`` — give ``novel_styles = ["sketch"]`` for a BSCD-FSL-like
    cross-domain few-shot task. Labels are local (0..k-1 per domain);
    ``domain_classes`` names the shapes behind them. Split 60/20/20.
    """

    version = "1"
    kind = "cross_task"
    protocols = ("fewshot",)
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 32, n_per_class: int = 100,
                 base_classes: tuple[str, ...] = ("circle", "square", "triangle", "star",
                                                  "cross"),
                 base_styles: tuple[str, ...] = STYLES, novel_styles: tuple[str, ...] = STYLES):
        super().__init__(data_seed=data_seed)
        self.resolution = _check_resolution("shapes_fewshot", resolution)
        self.n_per_class = int(n_per_class)
        self.base_classes = tuple(str(c) for c in base_classes)
        self.base_styles = known_names("shapes_fewshot", "style", base_styles, STYLES)
        self.novel_styles = known_names("shapes_fewshot", "style", novel_styles, STYLES)
        novel = tuple(c for c in SHAPES if c not in self.base_classes)
        unknown = [c for c in self.base_classes if c not in SHAPES]
        if unknown or not self.base_classes or not novel:
            raise ConfigError(f"shapes_fewshot: base_classes must be a proper subset of "
                              f"{', '.join(SHAPES)}; got {list(self.base_classes)}")
        self.domain_classes: dict[str, tuple[str, ...]] = {"base": self.base_classes,
                                                           "novel": novel}
        self.num_classes = len(self.base_classes)

    @property
    def domains(self) -> tuple[str, ...]:
        return ("base", "novel")

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("novel",)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    def build(self) -> dict[str, dict[str, Split]]:
        names = list(SHAPES)
        data = {}
        for d, (domain, styles) in enumerate((("base", self.base_styles),
                                              ("novel", self.novel_styles))):
            generator = torch.Generator().manual_seed(self.data_seed * 7919 + 100 + d)
            classes = self.domain_classes[domain]
            local = torch.arange(len(classes)).repeat_interleave(self.n_per_class)
            shape = torch.tensor([names.index(c) for c in classes])[local]
            style_of = torch.arange(len(local)) % len(styles)
            x = torch.empty(len(local), 3, self.resolution, self.resolution, dtype=torch.uint8)
            for i, style in enumerate(styles):
                rows = torch.nonzero(style_of == i).squeeze(1)
                x[rows] = draw(shape[rows], style, self.resolution, generator)
            parts = split_indices(len(local), (0.6, 0.2, 0.2), generator)
            data[domain] = {s: Split(x[idx].contiguous(), local[idx])
                            for s, idx in zip(("train", "val", "test"), parts)}
        return data
