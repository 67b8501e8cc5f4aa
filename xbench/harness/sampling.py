"""Training batches drawn by indexing tensors already on the device.

No DataLoader and no worker processes for data that is in memory: each step
draws ``batch_size`` indices per domain (with replacement) from a CPU
generator seeded by the job, so the draw is the same on every device. A
stage gets only the data it reads (``Method.stage_needs``): a distillation
teacher stage gets no target batch, so nothing it never reads is drawn or
counted.
"""

from __future__ import annotations

from typing import Callable

import torch

from xbench.errors import ProtocolError
from xbench.harness.episodes import as_episode, draw_episode
from xbench.methods.base import Batch
from xbench.tasks.base import EpisodeSpec, Split, TaskInfo


class BatchSampler:
    """Draws per-domain minibatches; includes unlabeled target inputs only when allowed."""

    def __init__(self, source: list[Split], batch_size: int, seed: int,
                 target: list[Split] | None = None, target_labeled: list[Split] | None = None,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                 episodes: tuple[Split, EpisodeSpec] | None = None,
                 pairs: tuple[Split, Split] | None = None,
                 stage_needs: dict[str, frozenset[str]] | None = None):
        self.prepare = prepare
        self.stage_needs = stage_needs or {}
        self.episodes = episodes
        self.pairs = pairs
        self.source = source
        self.target = target
        self.target_labeled = target_labeled
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, split: Split, with_labels: bool):
        idx = torch.randint(len(split.x), (self.batch_size,), generator=self.generator)
        idx = idx.to(split.x.device)
        x = self.prepare(split.x[idx])
        return (x, split.y[idx]) if with_labels else x

    def _reads(self, stage: str, need: str) -> bool:
        return stage not in self.stage_needs or need in self.stage_needs[stage]

    def sample(self, step: int, stage: str = "train") -> Batch:
        """The batch for ``step`` of ``stage`` (only the data that stage reads)."""
        source = [self._draw(split, True) for split in self.source]
        target = None
        if self.target and self._reads(stage, "target_unlabeled"):
            target = torch.cat([self._draw(split, False) for split in self.target])
        labeled = None
        if self.target_labeled and self._reads(stage, "target_labeled"):
            pairs = [self._draw(split, True) for split in self.target_labeled]
            labeled = (torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]))
        episode = None
        if self.episodes is not None and self._reads(stage, "episodes"):
            split, spec = self.episodes
            episode = as_episode(split, draw_episode(split.y, spec, self.generator), self.prepare)
        pairs = None
        if self.pairs is not None and self._reads(stage, "pairs"):
            a, b = self.pairs
            idx = torch.randint(len(a.x), (self.batch_size,), generator=self.generator)
            pairs = (self.prepare(a.x[idx.to(a.x.device)]), self.prepare(b.x[idx.to(b.x.device)]))
        return Batch(source=source, target=target, target_labeled=labeled, episode=episode,
                     pairs=pairs, stage=stage, step=step)


def training_sampler(method_cls: type, info: TaskInfo, data: dict[str, dict[str, Split]],
                     seed: int, prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                     episodes: EpisodeSpec | None = None) -> BatchSampler:
    """The leak guard: a sampler over exactly the training data ``method_cls`` may see.

    Source domains' train splits always; the target train split's inputs only
    under ``uda`` for methods that need them; target labels only for oracle
    rows under ``uda`` (``tta`` trains exactly as ``dg``: no target data);
    episodes from the first source domain's train split under ``fewshot``; unlabeled index-aligned (source, target) train pairs
    under ``paired``. Validation and test splits never reach training.
    """
    needs = method_cls.needs
    uda = info.protocol == "uda"
    if "target_labeled" in needs and "oracle" not in method_cls.tags:
        raise ProtocolError(f"method '{method_cls.registered_name}' asks for target labels but "
                            f"is not tagged 'oracle'; only oracle rows may train on them")
    target = [data[d]["train"] for d in info.target_domains]
    unlabeled = [Split(s.x, s.y[:0]) for s in target]  # labels dropped, not just unused
    first_source = data[info.source_domains[0]]["train"]
    want_episodes = info.protocol == "fewshot" and "episodes" in needs
    if want_episodes and episodes is None:
        raise ProtocolError("a few-shot job needs an episode spec (ways, shots, queries)")
    want_pairs = info.protocol == "paired" and "pairs" in needs
    if want_pairs and not info.paired:
        raise ProtocolError(f"task '{info.name}' has no index-aligned pairs; the paired "
                            f"protocol needs a paired task")
    return BatchSampler(
        [data[d]["train"] for d in info.source_domains], info.batch_size, seed,
        target=unlabeled if uda and "target_unlabeled" in needs else None,
        target_labeled=target if uda and "target_labeled" in needs else None, prepare=prepare,
        episodes=(first_source, episodes) if want_episodes else None,
        pairs=(first_source, unlabeled[0]) if want_pairs else None,
        stage_needs=dict(method_cls.stage_needs))
