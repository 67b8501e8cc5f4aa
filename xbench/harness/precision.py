"""Runner-owned numeric precision: autocast around a method's ``update`` and ``predict``.

A job's ``precision`` is one of :data:`PRECISIONS` and part of its identity
(``job_id``) and of every record (top-level ``"precision"``); methods never
see it. The runner enters :func:`autocast` around each ``update`` call and
around every evaluation (``predict``, ``adapt``, ``predict_episode``):

* ``fp32`` (the default): no autocast at all, bit-for-bit the numbers
  published before precision existed.
* ``bf16``: ``torch.autocast(device_type, dtype=torch.bfloat16)``, on CPU and
  CUDA. bf16 has fp32's exponent range, so no loss scaling is needed.
* ``fp16``: CUDA only, ``torch.autocast(..., dtype=torch.float16)`` plus
  dynamic loss scaling (``torch.amp.GradScaler``) applied without changing
  methods: while ``update`` runs, a scalar ``loss.backward()`` backpropagates
  ``scale * loss`` and every optimizer the method holds steps through
  ``scaler.step`` (gradients unscaled, a step with inf/NaN gradients
  skipped), then ``scaler.update()``. On the CPU fp16 is refused: CPU
  autocast in fp16 is slower than bf16 on every CPU we know of, and without
  CUDA's scaler support its gradients underflow; use bf16.
* ``auto`` is resolved before planning (:func:`resolve_precision`): ``bf16``
  where the device computes it natively (a CUDA GPU with
  ``torch.cuda.is_bf16_supported()``; a CPU with ``avx512_bf16`` or AMX), else
  ``fp32``. The resolved value is what jobs and records carry.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Iterator

import torch

from xbench.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = (*PRECISIONS, "auto")
DEFAULT = "fp32"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str) -> str:
    """``name`` if it is a known precision (or ``auto``), else a usage error."""
    if name not in CHOICES:
        raise UsageError(f"precision '{name}': use one of {', '.join(CHOICES)}")
    return name


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (``avx512_bf16`` or AMX, Linux flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (so ``auto`` picks it)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """The concrete precision for ``device``: ``auto`` resolved; fp16 refused off CUDA."""
    check_precision(name)
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA device (loss scaling); on "
                         f"{device.type} use --precision bf16")
    return name


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` for ``precision`` on ``device`` (nothing for fp32)."""
    if precision == DEFAULT:
        yield
        return
    with torch.autocast(device.type, dtype=_DTYPES[precision]):
        yield


class Precision:
    """The runner's precision policy for one job: ``train()`` wraps ``update``,
    ``infer()`` wraps evaluation; fp16 adds loss scaling around ``update``."""

    def __init__(self, precision: str, device: torch.device):
        self.precision, self.device = precision, device
        self.scaler = None
        if precision == "fp16":
            self.scaler = torch.amp.GradScaler(device.type)

    def infer(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    @contextlib.contextmanager
    def train(self, method: Any) -> Iterator[None]:
        with autocast(self.precision, self.device):
            if self.scaler is None:
                yield
            else:
                with scaled_update(self.scaler, method):
                    yield

    def record(self) -> dict[str, Any]:
        """Extra record fields (the loss scale at the end, for fp16)."""
        return {"loss_scale": self.scaler.get_scale()} if self.scaler is not None else {}


def optimizers_of(method: Any) -> list[torch.optim.Optimizer]:
    """Every optimizer held by ``method`` (attributes, and lists/dicts of them)."""
    found: dict[int, torch.optim.Optimizer] = {}
    for value in vars(method).values():
        items = value.values() if isinstance(value, dict) else \
            value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, torch.optim.Optimizer):
                found[id(item)] = item
    return list(found.values())


@contextlib.contextmanager
def scaled_update(scaler: Any, method: Any) -> Iterator[None]:
    """GradScaler semantics around one ``update`` without changing the method.

    A scalar ``Tensor.backward()`` backpropagates ``scale * loss``; each of the
    method's optimizers steps through ``scaler.step`` (gradients unscaled, the
    step skipped when they hold inf/NaN); ``scaler.update()`` follows the last
    step (and precedes an optimizer's second step within one update, as in
    meta-learning inner loops).
    """
    original_backward = torch.Tensor.backward
    originals: dict[int, tuple[torch.optim.Optimizer, Any]] = {}
    stepped: set[int] = set()

    def backward(self: torch.Tensor, gradient: Any = None, *args: Any, **kwargs: Any) -> Any:
        if gradient is None and self.numel() == 1 and self.requires_grad:
            return original_backward(scaler.scale(self), None, *args, **kwargs)
        return original_backward(self, gradient, *args, **kwargs)

    def make_step(optimizer: torch.optim.Optimizer) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            if id(optimizer) in stepped:
                scaler.update()
                stepped.clear()
            wrapper = optimizer.step
            optimizer.step = originals[id(optimizer)][1]  # scaler.step calls it
            try:
                return scaler.step(optimizer, *args, **kwargs)
            finally:
                optimizer.step = wrapper
                stepped.add(id(optimizer))
        return step

    own: set[int] = set()  # optimizers whose ``step`` was already an instance attribute
    for optimizer in optimizers_of(method):
        if "step" in vars(optimizer):
            own.add(id(optimizer))
        originals[id(optimizer)] = (optimizer, optimizer.step)
        optimizer.step = make_step(optimizer)
    torch.Tensor.backward = backward
    try:
        yield
    finally:
        torch.Tensor.backward = original_backward
        for optimizer, original in originals.values():
            if id(optimizer) in own:
                optimizer.step = original
            else:
                del optimizer.step
        if stepped:
            scaler.update()
