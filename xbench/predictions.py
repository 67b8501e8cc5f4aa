"""Per-item predictions in a record: compact, and tied to the exact test items they score.

A record keeps, at every evaluation point of its history, the predicted class of
each target test item (``pred_target``: one base64 string per target domain, one
byte per item, two when there are more than 256 classes), and in its metrics the
hash of those items in their order (``test_items``); beside the predictions, whether
each was right (``correct_target``: one bit per item), which is what a paired
comparison of two runs reads. Two runs whose hashes match
scored the same items in the same order, so their predictions can be compared
item by item (``xbench.analysis.stats.mcnemar``).
"""

from __future__ import annotations

import base64
import hashlib

from typing import Any

import numpy as np


def _array(values: Any) -> np.ndarray:
    """A NumPy array of a tensor (moved to the CPU) or of anything array-like."""
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)


def encode(classes: Any) -> str:
    """Predicted classes (a 1-D tensor or array of non-negative integers) as a base64 string."""
    values = _array(classes)
    dtype = np.uint8 if values.size == 0 or values.max() < 256 else np.uint16
    return ("u8:" if dtype is np.uint8 else "u16:") + \
        base64.b64encode(values.astype(dtype).tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """The classes :func:`encode` wrote, as int64."""
    kind, _, payload = text.partition(":")
    dtype = {"u8": np.uint8, "u16": np.uint16}.get(kind)
    if dtype is None:
        raise ValueError(f"not an encoded prediction list (prefix {kind!r})")
    return np.frombuffer(base64.b64decode(payload), dtype=dtype).astype(np.int64)


def items_hash(x: Any, y: Any) -> str:
    """A short hash of a split's inputs and labels, in order (same items, same order)."""
    digest = hashlib.sha256()
    for values in (x, y):
        array = np.ascontiguousarray(_array(values))
        digest.update(str((array.shape, str(array.dtype))).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]



def encode_bits(flags: Any) -> str:
    """0/1 flags (1-D) packed eight to a byte, as ``"bits<n>:"`` + base64."""
    values = _array(flags).astype(bool)
    return f"bits{values.size}:" + base64.b64encode(np.packbits(values).tobytes()).decode("ascii")


def decode_bits(text: str) -> np.ndarray:
    """The 0/1 flags :func:`encode_bits` wrote, as int8."""
    head, _, payload = text.partition(":")
    if not head.startswith("bits") or not head[4:].isdigit():
        raise ValueError(f"not an encoded bit list (prefix {head!r})")
    packed = np.frombuffer(base64.b64decode(payload), dtype=np.uint8)
    return np.unpackbits(packed)[:int(head[4:])].astype(np.int8)


def correct_at(history: list, step: int, domain: str) -> np.ndarray | None:
    """0/1 per target test item of ``domain`` at evaluation ``step`` of a record's history,
    or None when that point keeps no per-item outcomes."""
    point = next((p for p in history or [] if p.get("step") == step), None)
    bits = ((point or {}).get("correct_target") or {}).get(domain)
    return None if bits is None else decode_bits(bits)
