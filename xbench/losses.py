"""Loss functions: pure functions of tensors, each with golden tests.

Sections are owned by method families; keep each helper in its section.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --- adaptation ---
# Helpers of the unsupervised-domain-adaptation and test-time-adaptation
# methods (xbench/methods/adaptation.py, xbench/methods/test_time.py).


def prediction_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of ``softmax(logits / temperature)``: shape ``(n,)``."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def class_confusion(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum Class Confusion loss (Jin et al., 2020, eqs. 1-6), a scalar.

    With ``Y = softmax(logits / temperature)`` (n x C, temperature rescaling),
    each sample is weighted by ``W_ii = n (1 + exp(-H(Y_i))) / sum_k (1 + exp(-H(Y_k)))``
    (confident samples count more; the weights are constants, not differentiated);
    the class confusion matrix ``M = Y^T W Y`` (C x C) is normalised row by row
    (category normalisation) and the loss is the sum of its off-diagonal
    entries divided by C.
    """
    probs = F.softmax(logits / temperature, dim=1)
    weights = 1.0 + torch.exp(-prediction_entropy(logits, temperature).detach())
    weights = len(logits) * weights / weights.sum()
    confusion = probs.t() @ (weights.unsqueeze(1) * probs)
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    num_classes = confusion.shape[0]
    return (confusion.sum() - confusion.trace()) / num_classes


def pseudo_labels(logits: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels (arg-max) and the mask of rows whose top probability >= ``confidence``."""
    probs = F.softmax(logits.detach(), dim=1)
    top, labels = probs.max(dim=1)
    return labels, (top >= confidence).to(logits.dtype)
