"""Training batches drawn by indexing tensors already on the device.

No DataLoader and no worker processes for data that is in memory: each step
draws ``batch_size`` indices per domain (with replacement) from a CPU
generator seeded by the job, so the draw is the same on every device.
"""

from __future__ import annotations

from typing import Callable

import torch

from xbench.errors import ProtocolError
from xbench.methods.base import Batch
from xbench.tasks.base import Split, TaskInfo


class BatchSampler:
    """Draws per-domain minibatches; includes unlabeled target inputs only when allowed."""

    def __init__(self, source: list[Split], batch_size: int, seed: int,
                 target: list[Split] | None = None, target_labeled: list[Split] | None = None,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x):
        self.prepare = prepare
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

    def sample(self, step: int, stage: str = "train") -> Batch:
        """The batch for ``step`` of ``stage``."""
        source = [self._draw(split, True) for split in self.source]
        target = None
        if self.target:
            target = torch.cat([self._draw(split, False) for split in self.target])
        labeled = None
        if self.target_labeled:
            pairs = [self._draw(split, True) for split in self.target_labeled]
            labeled = (torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]))
        return Batch(source=source, target=target, target_labeled=labeled, stage=stage,
                     step=step)


def training_sampler(method_cls: type, info: TaskInfo, data: dict[str, dict[str, Split]],
                     seed: int, prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
                     ) -> BatchSampler:
    """The leak guard: a sampler over exactly the training data ``method_cls`` may see.

    Source domains' train splits always; the target train split's inputs only
    under ``uda`` for methods that need them; target labels only for oracle
    rows under ``uda``. Validation and test splits never reach training.
    """
    needs = method_cls.needs
    uda = info.protocol == "uda"
    if "target_labeled" in needs and "oracle" not in method_cls.tags:
        raise ProtocolError(f"method '{method_cls.registered_name}' asks for target labels but "
                            f"is not tagged 'oracle'; only oracle rows may train on them")
    target = [data[d]["train"] for d in info.target_domains]
    unlabeled = [Split(s.x, s.y[:0]) for s in target]  # labels dropped, not just unused
    return BatchSampler(
        [data[d]["train"] for d in info.source_domains], info.batch_size, seed,
        target=unlabeled if uda and "target_unlabeled" in needs else None,
        target_labeled=target if uda and "target_labeled" in needs else None, prepare=prepare)
