"""MNIST-1D (Greydanus, 2020) under shifts of its own generator's parameters.

The ``mnist1d`` package builds its 1-D digit signals locally from ten
templates (padding, scaling, translation, correlated and i.i.d. noise, shear,
subsampling). Each domain here is one setting of those generator arguments;
the package's download path is never used, only ``mnist1d.data.make_dataset``
(so the data also depends on the ``mnist1d`` version: pyproject bounds it).
"""

from __future__ import annotations

import random
import types

import numpy as np
import torch

from xbench.errors import ConfigError
from xbench.registry import register_task
from xbench.tasks.base import Budget, Split, Task, known_names, split_indices

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


def generate(n: int, length: int, seed: int, **params: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST-1D signals of ``length`` from the package's generator with ``params``.

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
    harder when held out (``noisy`` is hard even in-domain).
    """

    version = "1"
    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 10
    budget = Budget(steps=400, batch_size=32, eval_every=100)

    def __init__(self, *, data_seed: int = 0, length: int = 40, n_per_domain: int = 1000,
                 domains: tuple[str, ...] = tuple(DOMAINS)):
        super().__init__(data_seed=data_seed)
        self.length = int(length)
        self.n_per_domain = int(n_per_domain)
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

    def build(self) -> dict[str, dict[str, Split]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        data = {}
        for name in self.domains:
            seed = (self.data_seed * 1_000_003 + list(DOMAINS).index(name)) % 2**32
            x, y = generate(self.n_per_domain, self.length, seed, **DOMAINS[name])
            x = torch.tensor(x, dtype=torch.float32).unsqueeze(1)
            y = torch.tensor(y, dtype=torch.long)
            parts = split_indices(len(x), (0.6, 0.2, 0.2), generator)
            data[name] = {s: Split(x[idx].contiguous(), y[idx])
                          for s, idx in zip(("train", "val", "test"), parts)}
        return data
