"""What one job may not do to the next: the guard the runner puts around every job.

* **Global state** (torch's default dtype, grad mode, thread count, anomaly
  mode, deterministic-algorithms flag; the Python, NumPy and torch random
  generators; signal handlers; the working directory) is saved before a job
  and restored after it, whatever the job did.
* **Exits**: ``SystemExit``, ``KeyboardInterrupt`` *raised by the method*
  (not the user's Ctrl-C, which a SIGINT handler flags) and any other
  ``BaseException`` become a failed job instead of ending the run.
* **Time**: a per-job timeout (``timeout_s``) interrupts a job that runs too
  long with :class:`JobTimeout` (a ``BaseException``, so a method's
  ``except Exception`` cannot swallow it). It uses ``SIGALRM`` and so works
  in a process's main thread; a job stuck inside one C call is interrupted
  when the call returns.

A worker *crash* (``os._exit``, a segfault, the OOM killer) cannot be caught
in the process that crashed; the executors handle it (see
:mod:`xbench.harness.executors`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from typing import Any, Iterator

import numpy as np
import torch

#: Default per-job time limit in seconds (6 hours); 0 or None switches it off.
DEFAULT_TIMEOUT_S = 6 * 3600.0


class JobTimeout(BaseException):
    """Raised inside a job that ran past its ``timeout_s``."""


class JobExit(Exception):
    """A method ended its job with SystemExit, KeyboardInterrupt or another BaseException."""


def _torch_state() -> dict[str, Any]:
    state = {
        "dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
        "anomaly": torch.is_anomaly_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "rng": torch.get_rng_state(),
        "cudnn": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
    }
    if hasattr(torch, "get_default_device"):
        state["device"] = torch.get_default_device()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _restore_torch(state: dict[str, Any]) -> None:
    torch.set_default_dtype(state["dtype"])
    torch.set_grad_enabled(state["grad"])
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    torch.set_anomaly_enabled(state["anomaly"])
    torch.use_deterministic_algorithms(state["deterministic"])
    torch.set_rng_state(state["rng"])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = state["cudnn"]
    if "device" in state and hasattr(torch, "set_default_device"):
        torch.set_default_device(state["device"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def preserved_global_state() -> Iterator[None]:
    """Restore torch's, NumPy's and Python's global state (and signal handlers) on exit."""
    py_rng, np_rng = random.getstate(), np.random.get_state()
    torch_state = _torch_state()
    cwd = os.getcwd()
    handlers = {}
    if _in_main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGALRM", None)):
            if sig is not None:
                handlers[sig] = signal.getsignal(sig)
    try:
        yield
    finally:
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        _restore_torch(torch_state)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def canonical_global_state() -> Iterator[None]:
    """The state every job starts from (float32, gradients on), restored on exit."""
    with preserved_global_state():
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
        torch.set_anomaly_enabled(False)
        yield


class Guard:
    """Catches what a method may throw at the run (see the module docstring).

    ``with Guard(timeout_s) as guard: ...``; afterwards ``guard.error`` is None
    or the one-line reason the job failed. The user's Ctrl-C (a real SIGINT)
    is re-raised as ``KeyboardInterrupt``; a ``KeyboardInterrupt`` the method
    raised itself is a failure like any other.
    """

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else None
        self.user_interrupt = False
        self.error: str | None = None
        self._main = _in_main_thread()
        self._previous: dict[int, Any] = {}

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.user_interrupt = True
        raise KeyboardInterrupt

    def _on_alarm(self, signum: int, frame: Any) -> None:
        raise JobTimeout(f"the job ran past its time limit of {self.timeout_s:g} s")

    def __enter__(self) -> "Guard":
        if self._main:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            if self.timeout_s and hasattr(signal, "SIGALRM"):
                self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
                signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        return self

    def disarm(self) -> None:
        """Stop the timer and give SIGINT back to whoever had it."""
        if self._main:
            if signal.SIGALRM in self._previous if hasattr(signal, "SIGALRM") else False:
                signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in self._previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            self._previous = {}

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        self.disarm()
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt) and self.user_interrupt:
            return False  # the user's Ctrl-C: stop the run
        if isinstance(exc, JobTimeout):
            self.error = f"timeout: {exc}"
        elif isinstance(exc, SystemExit):
            self.error = (f"SystemExit: the method called sys.exit({exc.code!r}); a method must "
                          f"raise an exception, not exit")
        elif isinstance(exc, KeyboardInterrupt):
            self.error = ("KeyboardInterrupt: raised by the method itself (not a Ctrl-C); a "
                          "method must raise an exception, not interrupt the run")
        elif isinstance(exc, GeneratorExit) or not isinstance(exc, Exception):
            self.error = f"{type(exc).__name__}: {exc}"
        else:
            return False  # ordinary exceptions are the caller's to record
        return True
