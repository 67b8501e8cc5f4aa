"""Digit tasks: scikit-learn's bundled handwritten digits and generated ones (no download).

``digits_rotated``, ``digits_colored`` and ``digits_corrupted`` come in two versions:

* Version 2 (default): every domain draws its own ``n_per_domain`` digits from the
  unbounded generator of :mod:`xbench.tasks.handwriting` (matplotlib's font glyphs
  with random affine, elastic, stroke-width, blur and noise jitter), 10,000 by
  default, so each target test split holds 2,000 images; stored as uint8. These
  tasks keep one shift each (rotation, colour, corruption), so none of them adds
  scikit-learn's real digits as a domain (that would add a second, synthetic ->
  real, shift to the held-out domain): the real digits are the target of
  ``digits_syn2real``, capped at scikit-learn's 1,797 images.
* Version 1 (old records): scikit-learn's 1,797 digits dealt into the domains (51
  to 360 test images per domain), built exactly as before.

``digits_fewshot`` and ``digits_paired`` use scikit-learn's digits only (version 1).
"""

from __future__ import annotations

import functools
import hashlib

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from xbench.errors import ConfigError
from xbench.registry import register_task
from xbench.tasks import imageops
from xbench.tasks.base import Budget, Split, Task, known_names, split_indices, split_sizes

#: Version 2's default count of generated digits per domain: 2,000 test images per domain.
V2_PER_DOMAIN = 10_000
#: Digits in scikit-learn's bundled set (what version 1 deals into domains).
SKLEARN_DIGITS = 1797


@functools.lru_cache(maxsize=4)
def load_digits_images(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as (N, 1, R, R) floats in [0, 1], and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0), torch.tensor(data.target, dtype=torch.long)


def domain_generator(task: str, data_seed: int, domain: str) -> torch.Generator:
    """A generator seeded from the task, ``data_seed`` and the domain's name, so a domain
    draws the same digits whichever other domains the task lists."""
    digest = hashlib.sha256(f"{task}:{data_seed}:{domain}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class GeneratedDigits(Task):
    """Version plumbing of the digit tasks whose version 2 draws generated digits.

    Option ``n_per_domain`` (0: the version's default) is version 2's; version 1
    refuses it and leaves it out of ``options()``, so old jobs keep their identity.
    """

    version = "2"
    old_versions = ("1",)

    def _set_count(self, n_per_domain: int) -> None:
        name = self.registered_name
        if self.version == "1":
            if n_per_domain:
                raise ConfigError(f"task '{name}': option 'n_per_domain' belongs to version 2 "
                                  f"(version 1 deals scikit-learn's {SKLEARN_DIGITS} digits)")
            self.n_per_domain = 0
            return
        self.n_per_domain = int(n_per_domain) or V2_PER_DOMAIN
        if self.n_per_domain < 50:
            raise ConfigError(f"task '{name}': option 'n_per_domain' must be at least 50 "
                              f"(5 per class and split), got {n_per_domain!r}")

    def options(self) -> dict:
        options = super().options()
        if self.version == "1":
            options.pop("n_per_domain", None)
        return options

    def generated(self, domain: str) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        """Version 2: ``n_per_domain`` generated digits for ``domain`` (floats in [0, 1],
        labels ``arange(n) % 10``) and the domain's generator, to draw the rest from."""
        from xbench.tasks.handwriting import handwritten_digits  # imports syndigits

        generator = domain_generator(self.registered_name, self.data_seed, domain)
        x, y = handwritten_digits(self.n_per_domain, self.resolution, generator)
        return x, y, generator

    def target_test_size(self) -> int | None:
        if self.version != "1":
            return split_sizes(self.n_per_domain)[2]
        index = self.domains.index(self.default_target[0])
        return split_sizes(len(range(index, SKLEARN_DIGITS, len(self.domains))))[2]


@register_task("digits_rotated", tags={"digits", "embedded"})
class RotatedDigits(GeneratedDigits):
    """Rotated digits, a RotatedMNIST analogue (Ghifary et al., 2015) on generated digits.

    Each domain is rotated by its angle (degrees) and split 60/20/20 into
    train/val/test; cross-domain transfer, 10 classes, target "75". Version 2:
    each domain draws its own ``n_per_domain`` generated digits (10,000: 2,000
    test images per domain; no real-digit domain, see the module docstring).
    Version 1: scikit-learn's 1,797 digits shuffled with ``data_seed`` and
    dealt into disjoint domains (299 images, 60 test, in the target).
    """

    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 10
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16,
                 angles: tuple[int, ...] = (0, 15, 30, 45, 60, 75), n_per_domain: int = 0):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.angles = tuple(int(a) for a in angles)
        self._set_count(n_per_domain)

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
        if self.version == "1":
            return self._build_v1()
        data = {}
        for angle in self.angles:
            x, y, generator = self.generated(str(angle))
            rotated = TF.rotate(x, float(angle), interpolation=InterpolationMode.BILINEAR)
            rotated = imageops.to_uint8(rotated)
            parts = split_indices(len(y), (0.6, 0.2, 0.2), generator)
            data[str(angle)] = {name: Split(rotated[idx], y[idx])
                                for name, idx in zip(("train", "val", "test"), parts)}
        return data

    def _build_v1(self) -> dict[str, dict[str, Split]]:
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


def deal(n: int, parts: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle ``range(n)`` with ``generator`` and deal it into ``parts`` disjoint groups."""
    order = torch.randperm(n, generator=generator)
    return [order[i::parts] for i in range(parts)]


def exact_mask(n: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask of length ``n`` with exactly ``round(fraction * n)`` random True entries."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:int(round(fraction * n))]] = True
    return mask


@register_task("digits_colored", tags={"digits", "embedded", "spurious"})
class ColoredDigits(GeneratedDigits):
    """Coloured digits, a ColoredMNIST analogue (Arjovsky et al., 2019) on generated digits.

    Binary label ``y = 1`` for digits 0-4, then flipped for exactly
    ``label_noise`` (25%) of each split's images, so shape predicts the label
    75% of the time. Each image is drawn in one of two colour channels (red =
    0, green = 1); the colour equals the noisy label in exactly ``agreement[i]``
    of domain ``i``'s images (90% / 80% / 10%, per split), so colour is a
    shortcut that flips in the test domain. Inputs (2, R, R); domains are named
    by their agreement in percent ("90", "80", "10"); target "10". Version 2:
    each domain draws its own ``n_per_domain`` generated digits (10,000: 2,000
    test images per domain). Version 1: scikit-learn's 1,797 digits dealt
    into the domains (120 test images in the target).
    """

    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 2
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16,
                 agreement: tuple[float, ...] = (0.9, 0.8, 0.1), label_noise: float = 0.25,
                 n_per_domain: int = 0):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.agreement = tuple(float(a) for a in agreement)
        self.label_noise = float(label_noise)
        self._set_count(n_per_domain)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(f"{100 * a:g}" for a in self.agreement)

    @property
    def default_target(self) -> tuple[str, ...]:
        return (self.domains[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (2, self.resolution, self.resolution)

    def colour(self, x: torch.Tensor, digit: torch.Tensor, agree: float,
               generator: torch.Generator) -> Split:
        """One split: noisy binary labels from ``digit``, and ``x`` (N, 1, R, R) drawn in
        the channel that equals the label in exactly ``agree`` of the images."""
        y = (digit < 5).long()
        y = torch.where(exact_mask(len(y), self.label_noise, generator), 1 - y, y)
        colour = torch.where(exact_mask(len(y), agree, generator), y, 1 - y)
        images = torch.zeros(len(y), 2, self.resolution, self.resolution, dtype=x.dtype)
        images[torch.arange(len(y)), colour] = x[:, 0]
        return Split(images, y)

    def build(self) -> dict[str, dict[str, Split]]:
        if self.version == "1":
            return self._build_v1()
        data = {}
        for name, agree in zip(self.domains, self.agreement):
            x, digit, generator = self.generated(name)
            x = imageops.to_uint8(x)
            parts = split_indices(len(digit), (0.6, 0.2, 0.2), generator)
            data[name] = {split: self.colour(x[idx], digit[idx], agree, generator)
                          for split, idx in zip(("train", "val", "test"), parts)}
        return data

    def _build_v1(self) -> dict[str, dict[str, Split]]:
        x, digit = load_digits_images(self.resolution)
        generator = torch.Generator().manual_seed(self.data_seed)
        data = {}
        for name, agree, members in zip(self.domains, self.agreement,
                                        deal(len(x), len(self.agreement), generator)):
            parts = split_indices(len(members), (0.6, 0.2, 0.2), generator)
            data[name] = {split: self.colour(x[members[idx]], digit[members[idx]], agree,
                                             generator)
                          for split, idx in zip(("train", "val", "test"), parts)}
        return data


def _corrupt_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (x + 0.35 * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)


def _corrupt_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return imageops.gaussian_blur(x, 0.08 * x.shape[-1])


def _corrupt_contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * 0.3 + mean


def _corrupt_elastic(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return imageops.elastic(x, g, alpha=0.12, sigma=0.12)


def _corrupt_affine(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return imageops.random_affine(x, g, rotate=25.0, scale=(0.75, 1.05), shear=0.35,
                                  translate=0.12)


#: MNIST-C-style corruptions (Mu & Gilmer, 2019) by domain name.
CORRUPTIONS = {
    "clean": lambda x, g: x,
    "noise": _corrupt_noise,        # additive Gaussian noise, sigma 0.35
    "blur": _corrupt_blur,          # Gaussian blur, sigma 8% of the width
    "contrast": _corrupt_contrast,  # contrast scaled to 30% around each image's mean
    "invert": lambda x, g: 1.0 - x,  # white background, dark ink
    "elastic": _corrupt_elastic,    # smooth random displacement field
    "affine": _corrupt_affine,      # random rotation, scale, shear and translation
}


@register_task("digits_corrupted", tags={"digits", "embedded"})
class CorruptedDigits(GeneratedDigits):
    """Corrupted digits, an MNIST-C analogue (Mu & Gilmer, 2019) on generated digits.

    Each domain has one corruption of ``CORRUPTIONS`` (clean, Gaussian noise,
    blur, low contrast, inversion, elastic and affine distortion) and is split
    60/20/20. Target "affine". Version 2: each domain draws its own
    ``n_per_domain`` generated digits (10,000: 2,000 test images per domain).
    Version 1: scikit-learn's 1,797 digits dealt into disjoint domains (51
    test images in the target); there ERM learns "affine" in-domain (about 60%
    at a small budget) but drops to about 40% when it is held out, while
    "elastic" and "blur" barely shift.
    """

    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 10
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16,
                 corruptions: tuple[str, ...] = tuple(CORRUPTIONS), n_per_domain: int = 0):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.corruptions = known_names("digits_corrupted", "corruption", corruptions,
                                       CORRUPTIONS)
        self._set_count(n_per_domain)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.corruptions

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("affine",) if "affine" in self.domains else (self.domains[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.resolution, self.resolution)

    def build(self) -> dict[str, dict[str, Split]]:
        if self.version == "1":
            return self._build_v1()
        data = {}
        for name in self.domains:
            x, y, generator = self.generated(name)
            images = imageops.to_uint8(CORRUPTIONS[name](x, generator))
            parts = split_indices(len(y), (0.6, 0.2, 0.2), generator)
            data[name] = {s: Split(images[idx], y[idx])
                          for s, idx in zip(("train", "val", "test"), parts)}
        return data

    def _build_v1(self) -> dict[str, dict[str, Split]]:
        x, y = load_digits_images(self.resolution)
        generator = torch.Generator().manual_seed(self.data_seed)
        data = {}
        for name, members in zip(self.domains, deal(len(x), len(self.domains), generator)):
            images = CORRUPTIONS[name](x[members], generator).contiguous()
            parts = split_indices(len(members), (0.6, 0.2, 0.2), generator)
            data[name] = {s: Split(images[idx], y[members][idx])
                          for s, idx in zip(("train", "val", "test"), parts)}
        return data


@register_task("digits_fewshot", tags={"digits", "embedded", "fewshot"})
class FewShotDigits(Task):
    """Digit class split for few-shot learning, as in the cross-task protocol of BSCD-FSL.

    Domain ``base`` holds the ``base_classes`` (0-4 by default) and domain
    ``novel`` the other digits (5-9); labels are local (0..k-1 within each
    domain) and ``domain_classes`` names the global classes behind them. Each
    domain is split 60/20/20. ``num_classes`` is the number of base classes.
    """

    version = "1"
    kind = "cross_task"
    protocols = ("fewshot",)
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16,
                 base_classes: tuple[int, ...] = (0, 1, 2, 3, 4)):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.base_classes = tuple(int(c) for c in base_classes)
        novel = tuple(c for c in range(10) if c not in self.base_classes)
        if not self.base_classes or not novel or not set(self.base_classes) <= set(range(10)):
            raise ConfigError(f"digits_fewshot: base_classes {list(self.base_classes)} must be "
                              f"a proper, non-empty subset of the digits 0-9")
        self.domain_classes: dict[str, tuple[str, ...]] = {
            "base": tuple(str(c) for c in self.base_classes),
            "novel": tuple(str(c) for c in novel)}
        self.num_classes = len(self.base_classes)

    @property
    def domains(self) -> tuple[str, ...]:
        return ("base", "novel")

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("novel",)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.resolution, self.resolution)

    def build(self) -> dict[str, dict[str, Split]]:
        x, digit = load_digits_images(self.resolution)
        generator = torch.Generator().manual_seed(self.data_seed)
        data = {}
        for domain, classes in self.domain_classes.items():
            members = torch.nonzero(torch.isin(digit, torch.tensor([int(c) for c in classes])))
            members = members.squeeze(1)
            local = torch.tensor([classes.index(str(int(d))) for d in digit[members]])
            parts = split_indices(len(members), (0.6, 0.2, 0.2), generator)
            data[domain] = {s: Split(x[members][idx].contiguous(), local[idx])
                            for s, idx in zip(("train", "val", "test"), parts)}
        return data


def radon_projections(x: torch.Tensor, n_angles: int) -> torch.Tensor:
    """Parallel-beam projections (a sinogram): (N, 1, R, R) images -> (N, n_angles, R).

    Channel ``k`` is the image rotated by ``180 * k / n_angles`` degrees and
    averaged down its columns, so channel 0 is the column ink profile.
    """
    views = [TF.rotate(x, 180.0 * k / n_angles, interpolation=InterpolationMode.BILINEAR)
             if k else x for k in range(n_angles)]
    return torch.cat([v.mean(dim=2) for v in views], dim=1)


@register_task("digits_paired", tags={"digits", "embedded", "paired"})
class PairedDigits(Task):
    """Digits seen in two modalities: images and their 1-D projections (a sinogram, as in CT).

    Domain ``image`` holds scikit-learn's digits as (1, R, R) images; domain
    ``signal`` holds the same instances as ``radon_projections`` — ``projections``
    channels of length R, the ink profile along each angle. Row i of every split
    is the same instance in both domains (``paired``), for learning from labeled
    images and unlabeled pairs and testing on signals (CLIP-style transfer).
    The pool caps the test split at 360 pairs.
    """

    target_test_cap = f"scikit-learn's {SKLEARN_DIGITS:,} real digits"

    version = "1"
    kind = "cross_modality"
    protocols = ("paired",)
    paired = True
    num_classes = 10
    budget = Budget(steps=300, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, resolution: int = 16, projections: int = 8):
        super().__init__(data_seed=data_seed)
        self.resolution = int(resolution)
        self.projections = int(projections)

    @property
    def domains(self) -> tuple[str, ...]:
        return ("image", "signal")

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("signal",)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.resolution, self.resolution)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"image": self.input_shape, "signal": (self.projections, self.resolution)}

    def target_test_size(self) -> int | None:
        return split_sizes(SKLEARN_DIGITS)[2]

    def build(self) -> dict[str, dict[str, Split]]:
        x, y = load_digits_images(self.resolution)
        generator = torch.Generator().manual_seed(self.data_seed)
        signal = radon_projections(x, self.projections)
        parts = split_indices(len(x), (0.6, 0.2, 0.2), generator)
        return {
            "image": {s: Split(x[idx].contiguous(), y[idx])
                      for s, idx in zip(("train", "val", "test"), parts)},
            "signal": {s: Split(signal[idx].contiguous(), y[idx])
                       for s, idx in zip(("train", "val", "test"), parts)}}
