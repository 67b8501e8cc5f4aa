"""Training batches drawn by indexing tensors already on the device.

No DataLoader and no worker processes for data that is in memory: each step
draws ``batch_size`` indices per domain (with replacement) from a CPU
generator seeded by the job, so the draw is the same on every device.
"""

from __future__ import annotations

import torch

from xbench.methods.base import Batch
from xbench.tasks.base import Split


class BatchSampler:
    """Draws per-domain minibatches; includes unlabeled target inputs only when allowed."""

    def __init__(self, source: list[Split], batch_size: int, seed: int,
                 target: list[Split] | None = None):
        self.source = source
        self.target = target
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, split: Split, with_labels: bool):
        idx = torch.randint(len(split.y), (self.batch_size,), generator=self.generator)
        idx = idx.to(split.x.device)
        return (split.x[idx], split.y[idx]) if with_labels else split.x[idx]

    def sample(self, step: int, stage: str = "train") -> Batch:
        """The batch for ``step`` of ``stage``."""
        source = [self._draw(split, True) for split in self.source]
        target = None
        if self.target:
            target = torch.cat([self._draw(split, False) for split in self.target])
        return Batch(source=source, target=target, stage=stage, step=step)
