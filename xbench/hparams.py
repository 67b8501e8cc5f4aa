"""Hyper-parameter search spaces and seeded random draws for sweeps.

A method declares ``search_space = {"lr": LogUniform(1e-4, 1e-2), ...}``.
Draws are keyed by hyper-parameter *name*, trial and sweep seed (not by
method), so two methods that share ``lr`` get identical values in the same
trial, as in DomainBed's random search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from typing import Any


def _rng(name: str, trial: int, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{trial}:{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A float drawn uniformly in log space between ``low`` and ``high``."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly between ``low`` and ``high``."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class IntUniform:
    """An integer drawn uniformly from ``low`` to ``high`` inclusive."""

    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return int(rng.randint(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``options``, each equally likely."""

    options: tuple

    def sample(self, rng: random.Random) -> Any:
        return self.options[rng.randrange(len(self.options))]


def sample_hparams(space: dict[str, Any], trial: int, seed: int = 0) -> dict[str, Any]:
    """Draw one value per name in ``space`` for sweep ``trial`` (trial 0 = defaults, empty)."""
    if trial == 0:
        return {}
    return {name: dist.sample(_rng(name, trial, seed)) for name, dist in sorted(space.items())}
