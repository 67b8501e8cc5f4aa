"""Per-item predictions in a record: compact, and tied to the exact test items they score.

A record keeps, at every evaluation point of its history, the predicted class of
each target test item (``pred_target``: one base64 string per target domain, one
byte per item, two when there are more than 256 classes), and in its metrics the
hash of those items in their order (``test_items``). Two runs whose hashes match
scored the same items in the same order, so their predictions can be compared
item by item (``xbench.analysis.stats.mcnemar``).
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import torch


def encode(classes: torch.Tensor | np.ndarray) -> str:
    """Predicted classes (1-D, non-negative integers) as a base64 string."""
    values = np.asarray(classes.cpu() if isinstance(classes, torch.Tensor) else classes)
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


def items_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of a split's inputs and labels, in order (same items, same order)."""
    digest = hashlib.sha256()
    for tensor in (x, y):
        array = tensor.detach().cpu().contiguous()
        digest.update(str((tuple(array.shape), str(array.dtype))).encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()[:16]
