"""Tasks built from scikit-learn's bundled handwritten digits (no download)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from xbench.registry import register_task
from xbench.tasks.base import Budget, Split, Task, split_indices


@functools.lru_cache(maxsize=4)
def load_digits_images(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as (N, 1, R, R) floats in [0, 1], and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0), torch.tensor(data.target, dtype=torch.long)


@register_task("digits_rotated", tags={"digits", "embedded"})
class RotatedDigits(Task):
    """Rotated digits, a RotatedMNIST analogue (Ghifary et al., 2015) on scikit-learn's digits.

    The 1,797 images are shuffled with ``data_seed`` and dealt into disjoint
    domains, each rotated by its angle (degrees); every domain is split
    60/20/20 into train/val/test. Cross-domain transfer, 10 classes.
    """

    version = "1"
    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 10
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16,
                 angles: tuple[int, ...] = (0, 15, 30, 45, 60, 75)):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.angles = tuple(int(a) for a in angles)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.angles)

    @property
    def default_target(self) -> tuple[str, ...]:
        return (self.domains[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.resolution, self.resolution)

    def build(self) -> dict[str, dict[str, Split]]:
        x, y = load_digits_images(self.resolution)
        generator = torch.Generator().manual_seed(self.data_seed)
        order = torch.randperm(len(x), generator=generator)
        data = {}
        for i, angle in enumerate(self.angles):
            members = order[i::len(self.angles)]
            rotated = TF.rotate(x[members], float(angle), interpolation=InterpolationMode.BILINEAR)
            parts = split_indices(len(members), (0.6, 0.2, 0.2), generator)
            data[str(angle)] = {name: Split(rotated[idx].contiguous(), y[members][idx])
                                for name, idx in zip(("train", "val", "test"), parts)}
        return data
