"""Synthetic -> real digits: font-rendered digits against scikit-learn's handwritten ones.

A SynDigits -> MNIST analogue (Ganin & Lempitsky, 2015): the synthetic domain
is rendered, offline, from the fonts that matplotlib ships (DejaVu, STIX and
Computer Modern; several weights and slants), with random affine transforms
and noise. The glyphs come from matplotlib's own font files, never the
system's, so the data only changes if matplotlib changes its bundled fonts.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F

from xbench.registry import register_task
from xbench.tasks import imageops
from xbench.tasks.base import Budget, Split, Task, split_indices, split_sizes
from xbench.tasks.digits import SKLEARN_DIGITS, load_digits_images

#: Font files from matplotlib's ``mpl-data/fonts/ttf``: 4 families, several weights and slants.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)

TEMPLATE_SIZE = 64


@functools.lru_cache(maxsize=1)
def glyph_templates(size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """Digits 0-9 in every font of ``FONT_FILES``: (fonts, 10, size, size) ink masks in [0, 1].

    Each glyph is matplotlib's ``TextPath`` outline, centred and scaled so its
    longer side spans 80% of the frame (aspect kept), filled with the even-odd
    rule (so the holes of 0, 6, 8 and 9 stay open) on a 2x supersampled grid.
    """
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as MplPath
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    fine = 2 * size
    ys, xs = np.mgrid[0:fine, 0:fine]
    points = np.stack([xs.ravel() + 0.5, fine - (ys.ravel() + 0.5)], axis=1)
    out = np.zeros((len(FONT_FILES), 10, fine, fine), dtype=np.float32)
    for f, name in enumerate(FONT_FILES):
        prop = FontProperties(fname=os.path.join(folder, name))
        for digit in range(10):
            path = TextPath((0, 0), str(digit), prop=prop, size=1)
            low, high = path.vertices.min(axis=0), path.vertices.max(axis=0)
            scale = 0.8 * fine / (high - low).max()
            transform = (Affine2D().translate(-(low[0] + high[0]) / 2, -(low[1] + high[1]) / 2)
                         .scale(scale).translate(fine / 2, fine / 2))
            inside = np.zeros(len(points), dtype=bool)
            for polygon in path.transformed(transform).to_polygons():
                inside ^= MplPath(polygon).contains_points(points)
            out[f, digit] = inside.reshape(fine, fine)
    return F.avg_pool2d(torch.from_numpy(out).flatten(0, 1).unsqueeze(1), 2).view(
        len(FONT_FILES), 10, size, size)


def render_digits(n_per_class: int, resolution: int, generator: torch.Generator,
                  noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``10 * n_per_class`` synthetic digits: (N, 1, R, R) floats in [0, 1], and labels.

    Each draws a random font, a random affine transform (rotation +-15 deg,
    scale 0.8-1.1, shear +-0.25, translation +-8%), a random stroke blur, ink
    intensity 0.7-1 and Gaussian pixel noise of std ``noise``.
    """
    templates = glyph_templates()
    y = torch.arange(10).repeat_interleave(n_per_class)
    n = len(y)
    font = torch.randint(len(FONT_FILES), (n,), generator=generator)
    x = templates[font, y].unsqueeze(1)
    theta = imageops.affine_matrices(n, generator, rotate=15.0, scale=(0.8, 1.1), shear=0.25,
                                     translate=0.08)
    x = imageops.warp(x, theta)
    x = F.interpolate(x, size=(resolution, resolution), mode="area")
    blurred = imageops.gaussian_blur(x, 0.05 * resolution)
    mix = torch.rand(n, 1, 1, 1, generator=generator)
    x = mix * blurred + (1 - mix) * x
    x = x / x.flatten(1).amax(dim=1).clamp_min(1e-6).view(n, 1, 1, 1)
    x = x * imageops.uniform(n, 0.7, 1.0, generator).view(n, 1, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0.0, 1.0), y


@register_task("digits_syn2real", tags={"digits", "embedded"})
class SynToRealDigits(Task):
    """Synthetic -> real digits, a SynDigits -> MNIST analogue (Ganin & Lempitsky, 2015).

    Domain ``synthetic``: ``render_digits`` from matplotlib's bundled fonts,
    ``n_per_class`` per digit. Domain ``real``: scikit-learn's handwritten
    digits upsampled to the same resolution (as in ``digits_rotated`` version 1).
    Each domain is split 60/20/20; target ``real``, for DG and UDA.

    The real target is capped by its pool: scikit-learn's 1,797 digits give 360
    target test images, fewer than the 2,000 the other digit tasks' version 2
    hold (no real handwritten digits ship with the installed packages). The
    synthetic source grows with ``n_per_class``.
    """

    target_test_cap = f"scikit-learn's {SKLEARN_DIGITS:,} real digits"

    version = "1"
    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 10
    budget = Budget(steps=300, batch_size=64, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16, n_per_class: int = 200):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.n_per_class = int(n_per_class)

    @property
    def domains(self) -> tuple[str, ...]:
        return ("synthetic", "real")

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("real",)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.resolution, self.resolution)

    def target_test_size(self) -> int | None:
        return split_sizes(SKLEARN_DIGITS)[2]

    def build(self) -> dict[str, dict[str, Split]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        domains = {"synthetic": render_digits(self.n_per_class, self.resolution, generator),
                   "real": load_digits_images(self.resolution)}
        data = {}
        for name, (x, y) in domains.items():
            parts = split_indices(len(x), (0.6, 0.2, 0.2), generator)
            data[name] = {s: Split(x[idx].contiguous(), y[idx])
                          for s, idx in zip(("train", "val", "test"), parts)}
        return data
