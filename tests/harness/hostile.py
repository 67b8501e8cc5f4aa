"""Hostile or broken methods (a careless or malicious plugin author) for the isolation tests.

Importable by spawned workers: the executors hand them the driver's
registrations (``Registry.portable_entries``), and the workers import this module.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

from xbench.methods.erm import ERM


class MutatesInput(ERM):
    """Zeroes the inputs it is asked to predict, in place (after predicting)."""

    def predict(self, x):
        out = self.network(x)
        x.zero_()
        return out


class ChangesGlobals(ERM):
    """Changes torch's default dtype, RNG and thread count (and trains in float64)."""

    def setup(self, info, device):
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(12345)
        torch.set_num_threads(3)
        super().setup(info, device)

    def update(self, batch):
        x, y = batch.pooled()
        loss = torch.nn.functional.cross_entropy(self.network(x.double()), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.network(x.double()).float()


class Exits(ERM):
    """Calls sys.exit(0) in update."""

    def update(self, batch):
        sys.exit(0)


class Interrupts(ERM):
    """Raises KeyboardInterrupt itself in update."""

    def update(self, batch):
        raise KeyboardInterrupt


class Hangs(ERM):
    """Sleeps for an hour in update."""

    def update(self, batch):
        time.sleep(3600)
        return {}


class StuckInNative(ERM):
    """Blocks SIGALRM, then sleeps: like a job stuck inside one native call."""

    def update(self, batch):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
        return {}


class Crashes(ERM):
    """Kills its own process with os._exit(1) in update."""

    def update(self, batch):
        os._exit(1)


def _find_split(x):
    """The Split (in a caller's frame) whose storage ``x`` is a view of, and the row offset."""
    frame = sys._getframe(1)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, dict):
                for parts in value.values():
                    if not isinstance(parts, dict):
                        continue
                    for split in parts.values():
                        sx = getattr(split, "x", None)
                        if isinstance(sx, torch.Tensor) and sx.numel() and \
                                sx.untyped_storage().data_ptr() == \
                                x.untyped_storage().data_ptr():
                            row = sx[0].numel() * sx.element_size()
                            return split, (x.data_ptr() - sx.data_ptr()) // row
        frame = frame.f_back
    return None, 0


class ReadsLabels(ERM):
    """Finds the labels of whatever it predicts through the runner's call frames."""

    def predict(self, x):
        out = self.network(x)
        split, offset = _find_split(x)
        if split is None:
            return out
        y = split.y[offset:offset + len(x)]
        return torch.nn.functional.one_hot(y, out.shape[1]).float() * 10


class OverwritesLabels(ERM):
    """Sets the labels it finds to 0 and predicts 0 (so the score becomes 1.0)."""

    def predict(self, x):
        out = self.network(x)
        split, offset = _find_split(x)
        if split is not None:
            split.y[offset:offset + len(x)] = 0
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long),
                                           out.shape[1]).float()


class OneRow(ERM):
    """predict returns one row whatever the batch size."""

    def predict(self, x):
        return self.network(x)[:1]


class NaNLogits(ERM):
    """predict returns NaN logits."""

    def predict(self, x):
        return self.network(x) * float("nan")


class WideLogits(ERM):
    """predict returns 1000 extra columns."""

    def predict(self, x):
        out = self.network(x)
        return torch.cat([out, torch.zeros(len(x), 1000)], dim=1)


HOSTILE = {"h_mutates_input": MutatesInput, "h_changes_globals": ChangesGlobals,
           "h_exits": Exits, "h_interrupts": Interrupts, "h_hangs": Hangs, "h_crashes": Crashes,
           "h_stuck": StuckInNative,
           "h_reads_labels": ReadsLabels, "h_overwrites_labels": OverwritesLabels,
           "h_one_row": OneRow, "h_nan_logits": NaNLogits, "h_wide_logits": WideLogits}
