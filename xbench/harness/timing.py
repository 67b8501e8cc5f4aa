"""Honest clocks: device-synchronised timers and a peak-memory monitor."""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` so that a clock read means something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no Apple GPU in CI
        torch.mps.synchronize()


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` after synchronising ``device``."""
    synchronize(device)
    return time.perf_counter()


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory while the ``with`` block runs, in MiB (``.peak_mb``, ``.kind``).

    On CUDA: ``torch.cuda.max_memory_allocated`` after a reset. On the CPU: the
    process's resident set size sampled every ``interval`` seconds by a
    background thread (Linux ``/proc``), or ``ru_maxrss`` elsewhere.
    """

    def __init__(self, device: torch.device, interval: float = 0.01):
        self.device = device
        self.interval = interval
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss"
        self.peak_mb = float("nan")
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _rss_bytes() is not None:
            self._peak = _rss_bytes() or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.peak_mb = self._peak / 2**20
        else:  # ru_maxrss: KiB on Linux, bytes on macOS
            scale = 1 if sys.platform == "darwin" else 1024
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
