"""MNIST-1D (Greydanus, 2020) under shifts of its own generator's parameters.

MNIST-1D builds 1-D digit signals from ten templates (padding, scaling,
translation, correlated and i.i.d. noise, shear, subsampling). Each domain here
is one setting of those generator arguments.

* Version 2 (default) draws every signal at once with :func:`transform_batch`,
  the package's per-signal ``transform`` written over a batch (tested equal to
  it given the same draws), so a domain of 10,000 signals takes milliseconds and
  each target test split holds 2,000.
* Version 1 (old records) calls ``mnist1d.data.make_dataset`` one signal at a
  time (its output also depends on the ``mnist1d`` version: pyproject bounds it).

The package's download path is never used.
"""

from __future__ import annotations

import random
import types

import numpy as np
import torch

from xbench.errors import ConfigError
from xbench.registry import register_task
from xbench.tasks.base import Budget, Split, Task, known_names, split_indices, split_sizes

#: The package's default generator arguments (``mnist1d.data.get_dataset_args``).
PACKAGE_DEFAULTS = dict(max_translation=48, scale_coeff=0.4, corr_noise_scale=0.25,
                        iid_noise_scale=0.02, shear_scale=0.75)
#: Every perturbation turned down; each single-factor domain turns one back up.
MILD = dict(max_translation=8, scale_coeff=0.1, corr_noise_scale=0.1, iid_noise_scale=0.01,
            shear_scale=0.2)
#: Generator arguments per domain.
DOMAINS: dict[str, dict[str, float]] = {
    "clean": MILD,
    "shifted": {**MILD, "max_translation": 48},
    "scaled": {**MILD, "scale_coeff": 1.5},
    "noisy": {**MILD, "corr_noise_scale": 0.5, "iid_noise_scale": 0.15},
    "sheared": {**MILD, "shear_scale": 2.0},
    "standard": PACKAGE_DEFAULTS,
}


#: The package's fixed generator arguments (``get_dataset_args``) that no domain changes.
TEMPLATE_LEN, PADDING, SMOOTHING = 12, (36, 60), 2.0


def templates() -> np.ndarray:
    """The ten digit templates (10, 12), as ``mnist1d.data.get_templates`` builds them."""
    from mnist1d.data import get_templates

    return np.asarray(get_templates()["x"], dtype=np.float64)


def _resample(x: np.ndarray, lengths: np.ndarray, size: int) -> np.ndarray:
    """Row ``i``'s first ``lengths[i]`` values linearly resampled to ``size`` points
    (``interp1d`` from ``linspace(0, 1, lengths[i])`` onto ``linspace(0, 1, size)``)."""
    position = np.linspace(0.0, 1.0, size)[None, :] * (lengths[:, None] - 1)
    left = np.minimum(np.floor(position).astype(np.int64), lengths[:, None] - 2)
    frac = position - left
    rows = np.arange(len(x))[:, None]
    return (1 - frac) * x[rows, left] + frac * x[rows, left + 1]


def transform_batch(labels: np.ndarray, length: int, *, pad: np.ndarray, scale: np.ndarray,
                    shift: np.ndarray, corr_noise: np.ndarray, iid_noise: np.ndarray,
                    shear: np.ndarray, scale_coeff: float, corr_noise_scale: float,
                    iid_noise_scale: float, shear_scale: float, eps: float = 1e-8) -> np.ndarray:
    """MNIST-1D's ``transform`` for a batch, given its random draws per signal.

    Per signal: pad the template with ``pad`` zeros, stretch it to 72 points,
    scale by ``1 + scale_coeff * (scale - 0.5)``, roll right by ``shift``, fill
    the zeros with smoothed noise ``corr_noise`` (Gaussian filter, sigma 2), add
    ``iid_noise``, subtract a ramp ``shear_scale * (shear - 0.5)`` and subsample
    to ``length``. ``scale`` and ``shear`` are U(0, 1) draws; the noises N(0, 1).
    """
    from scipy.ndimage import gaussian_filter1d

    n, wide = len(labels), TEMPLATE_LEN + PADDING[1]
    padded = np.zeros((n, TEMPLATE_LEN + PADDING[1] + 1))
    padded[:, :TEMPLATE_LEN] = templates()[labels] + eps
    x = _resample(padded, TEMPLATE_LEN + pad, wide)
    x *= 1 + scale_coeff * (scale[:, None] - 0.5)
    x = x[np.arange(n)[:, None], (np.arange(wide)[None, :] - shift[:, None]) % wide]
    noise = gaussian_filter1d(corr_noise_scale * corr_noise, SMOOTHING, axis=1)
    x = np.where(x != 0, x, noise) + iid_noise_scale * iid_noise
    x -= (shear_scale * (shear[:, None] - 0.5)) * np.linspace(-0.5, 0.5, wide)[None, :]
    return _resample(x, np.full(n, wide), length)


def generate_v2(n: int, length: int, seed: int, **params: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals (``n // 10`` per class, shuffled) from :func:`transform_batch`,
    standardised over the domain as the package does; labels int64."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), n // 10))
    m, wide = len(labels), TEMPLATE_LEN + PADDING[1]
    x = transform_batch(
        labels, length, pad=rng.integers(PADDING[0], PADDING[1] + 1, m),
        scale=rng.random(m), shift=rng.integers(0, int(params["max_translation"]), m),
        corr_noise=rng.standard_normal((m, wide)), iid_noise=rng.standard_normal((m, wide)),
        shear=rng.random(m), scale_coeff=params["scale_coeff"],
        corr_noise_scale=params["corr_noise_scale"], iid_noise_scale=params["iid_noise_scale"],
        shear_scale=params["shear_scale"])
    return (x - x.mean()) / x.std(), labels.astype(np.int64)


def generate(n: int, length: int, seed: int, **params: float) -> tuple[np.ndarray, np.ndarray]:
    """Version 1: ``n`` MNIST-1D signals of ``length`` from the package's generator with ``params``.

    The package seeds NumPy's and Python's global generators; their states are
    restored afterwards so building a task never disturbs a job's seeding.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError(f"mnist1d_shift needs the 'mnist1d' package ({exc}); "
                          f"run `pip install mnist1d`") from None
    args = get_dataset_args(as_dict=True)
    args.update(params, num_samples=n, train_split=1.0, final_seq_length=length, seed=seed,
                shuffle_seq=False)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(types.SimpleNamespace(**args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return data["x"], data["y"]


@register_task("mnist1d_shift", tags={"mnist1d", "embedded", "signal"})
class MNIST1DShift(Task):
    """MNIST-1D (Greydanus, 2020) with domains made by changing its generator's parameters.

    Domains (``DOMAINS``): ``clean`` (every perturbation turned down),
    ``shifted``, ``scaled``, ``noisy`` and ``sheared`` (one perturbation turned
    up each) and ``standard`` (the package's defaults: all at once), each with
    ``n_per_domain`` signals of shape (1, L), standardised per domain by the
    generator, split 60/20/20. Target ``sheared``: learnable in-domain,
    harder when held out (``noisy`` is hard even in-domain). Version 2: 10,000
    signals per domain by default (2,000 test items per target); version 1:
    1,000, from the package's one-signal-at-a-time generator.
    """

    version = "2"
    old_versions = ("1",)
    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 10
    budget = Budget(steps=400, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, length: int = 40, n_per_domain: int = 0,
                 domains: tuple[str, ...] = tuple(DOMAINS)):
        super().__init__(data_seed=data_seed)
        self.length = int(length)
        if self.length < 2:
            raise ConfigError(f"task 'mnist1d_shift': option 'length' must be at least 2, "
                              f"got {length!r}")
        #: 0 means the version's default
        self.n_per_domain = int(n_per_domain) or (1000 if self.version == "1" else 10_000)
        if self.n_per_domain < 50:
            raise ConfigError(f"task 'mnist1d_shift': option 'n_per_domain' must be at least "
                              f"50 (5 per class and split), got {n_per_domain!r}")
        self.domains_ = known_names("mnist1d_shift", "domain", domains, DOMAINS)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.domains_

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("sheared",) if "sheared" in self.domains else (self.domains[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.length)

    def target_test_size(self) -> int | None:
        return split_sizes(self.n_per_domain)[2]

    def build(self) -> dict[str, dict[str, Split]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        data = {}
        for name in self.domains:
            seed = (self.data_seed * 1_000_003 + list(DOMAINS).index(name)) % 2**32
            make = generate if self.version == "1" else generate_v2
            x, y = make(self.n_per_domain, self.length, seed, **DOMAINS[name])
            x = torch.tensor(x, dtype=torch.float32).unsqueeze(1)
            y = torch.tensor(y, dtype=torch.long)
            parts = split_indices(len(x), (0.6, 0.2, 0.2), generator)
            data[name] = {s: Split(x[idx].contiguous(), y[idx])
                          for s, idx in zip(("train", "val", "test"), parts)}
        return data
