"""Few-shot episodes: drawn for training, fixed and hashed for evaluation.

Evaluation episodes depend only on the task's data (its options, including
``data_seed``, which follows the job's seed unless a suite pins it), the
split and the episode spec, never on the method, so every method with the
same seed is scored on the same list (comparisons can be paired by episode)
and the record carries the list's hash to prove it.
"""

from __future__ import annotations

import hashlib
import statistics
from typing import Callable

import torch

from xbench.errors import ConfigError
from xbench.methods.base import Episode, Method
from xbench.tasks.base import EpisodeSpec, Split

#: (support indices, support labels, query indices, query labels)
EpisodeIndex = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def draw_episode(y: torch.Tensor, spec: EpisodeSpec, generator: torch.Generator) -> EpisodeIndex:
    """Indices of one ``ways``-way ``shots``-shot episode with ``queries`` per class."""
    per_class = spec.shots + spec.queries
    labels = y.cpu()
    classes = [c for c in torch.unique(labels).tolist() if int((labels == c).sum()) >= per_class]
    if len(classes) < spec.ways:
        raise ConfigError(f"few-shot split has only {len(classes)} classes with at least "
                          f"{per_class} examples; lower ways ({spec.ways}), shots or queries")
    chosen = torch.tensor(classes)[torch.randperm(len(classes), generator=generator)[:spec.ways]]
    support, query = [], []
    for members in (torch.nonzero(labels == c).flatten() for c in chosen.tolist()):
        picked = members[torch.randperm(len(members), generator=generator)[:per_class]]
        support.append(picked[:spec.shots])
        query.append(picked[spec.shots:])
    ways = torch.arange(spec.ways)
    return (torch.cat(support), ways.repeat_interleave(spec.shots),
            torch.cat(query), ways.repeat_interleave(spec.queries))


def as_episode(split: Split, index: EpisodeIndex,
               prepare: Callable[[torch.Tensor], torch.Tensor]) -> Episode:
    """Materialise an episode on the split's device."""
    s_idx, s_y, q_idx, q_y = (t.to(split.x.device) for t in index)
    return Episode(prepare(split.x[s_idx]), s_y, prepare(split.x[q_idx]), q_y)


def fixed_episodes(split: Split, spec: EpisodeSpec, count: int, key: str) -> list[EpisodeIndex]:
    """``count`` episodes drawn from a generator seeded by ``key`` (task, domain, split, spec)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 2**63
    generator = torch.Generator().manual_seed(seed)
    return [draw_episode(split.y, spec, generator) for _ in range(count)]


def episodes_hash(episodes: list[EpisodeIndex]) -> str:
    """A short SHA-256 of every index and label in the list."""
    digest = hashlib.sha256()
    for part in (t for episode in episodes for t in episode):
        digest.update(part.numpy().tobytes())
    return digest.hexdigest()[:16]


def episode_accuracies(method: Method, split: Split, episodes: list[EpisodeIndex],
                       prepare: Callable[[torch.Tensor], torch.Tensor]) -> list[float]:
    """Query accuracy of ``method.predict_episode`` on each episode (eval mode)."""
    method.train(False)
    try:
        out = []
        for index in episodes:
            episode = as_episode(split, index, prepare)
            logits = method.predict_episode(episode.support_x, episode.support_y,
                                            episode.query_x)
            from xbench.harness.evaluation import check_logits

            check_logits(logits, len(episode.query_x), int(episode.support_y.max()) + 1,
                         "predict_episode")
            out.append((logits.argmax(dim=1) == episode.query_y).float().mean().item())
        return out
    finally:
        method.train(True)


def mean(values: list[float]) -> float:
    """Mean of a non-empty list (NaN when empty)."""
    return statistics.fmean(values) if values else float("nan")
