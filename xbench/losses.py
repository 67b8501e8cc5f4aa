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
    confusion = confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1e-12)
    num_classes = confusion.shape[0]
    return (confusion.sum() - confusion.trace()) / num_classes


def pseudo_labels(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels (arg-max of ``probs``, n x C) and the float mask of rows whose
    top probability is at least ``threshold``."""
    top, labels = probs.detach().max(dim=1)
    return labels, (top >= threshold).to(probs.dtype)


def align_distribution(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (Berthelot et al., 2020, ReMixMatch; 2022, AdaMatch).

    Each row of ``probs`` (n x C) is multiplied by ``prior / probs.mean(0)`` and
    renormalised, so the batch's mean prediction is pulled towards ``prior``: a
    class the batch over-predicts is damped, one it under-predicts is boosted.
    """
    aligned = probs * (prior / probs.mean(dim=0).clamp_min(1e-12))
    return aligned / aligned.sum(dim=1, keepdim=True)
