"""Loss functions shared by methods: pure functions, exact formulas, stable numerics.

Every loss works in log-sum-exp / cross-entropy form (raw logits are never
exponentiated) and runs in float32 with autocast switched off, so it stays
finite at temperature 0.01 and when called under ``torch.autocast`` with
bf16/fp16 activations (16-bit inputs are upcast; float64 stays float64).

Sections (keep new helpers in the section of their family, so that parallel
edits merge cleanly):

* knowledge distillation: ``kd_loss``
* contrastive: ``info_nce``, ``nt_xent``
* domain alignment: ``coral_loss``, ``gaussian_kernel``, ``mmd_loss``
* predictions: ``entropy``
* invariance: ``irm_penalty``
* adaptation (UDA, test-time): ``prediction_entropy``, ``class_confusion``,
  ``pseudo_labels``, ``align_distribution``
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F

_Fn = TypeVar("_Fn", bound=Callable[..., torch.Tensor])


def _upcast(value):
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def full_precision(fn: _Fn) -> _Fn:
    """Run ``fn`` with autocast off and 16-bit tensor arguments upcast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        args = tuple(_upcast(a) for a in args)
        kwargs = {k: _upcast(v) for k, v in kwargs.items()}
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


# =============================================================================
# Knowledge distillation
# =============================================================================

@full_precision
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            targets: torch.Tensor | None = None, *, temperature: float = 4.0,
            soft_weight: float = 1.0, hard_weight: float = 0.0) -> torch.Tensor:
    """Hinton et al. (2015) distillation loss.

    ``hard_weight * CE(student, targets)
    + soft_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))``,
    KL averaged over the batch (``batchmean``). The T^2 factor is always
    applied to the soft term, so its gradient w.r.t. the student logits,
    ``T * (p_s - p_t) / B``, keeps its size as T grows, and the loss is
    continuous as ``hard_weight -> 0``. ``targets`` are required when
    ``hard_weight > 0`` and ignored otherwise. Gradients flow into
    ``teacher_logits`` too: pass them detached (or under ``no_grad``) for a
    frozen teacher.
    """
    _check_positive("temperature", temperature)
    if soft_weight < 0 or hard_weight < 0:
        raise ValueError(f"soft_weight and hard_weight must be >= 0, got "
                         f"{soft_weight!r} and {hard_weight!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: "
                         f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if hard_weight > 0 and targets is None:
        raise ValueError("kd_loss: hard_weight > 0 needs `targets` (the hard labels); "
                         "pass them, or set hard_weight=0 for pure distillation")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    loss = soft_weight * temperature ** 2 * soft
    if hard_weight > 0:
        loss = loss + hard_weight * F.cross_entropy(student_logits, targets)
    return loss


# =============================================================================
# Contrastive
# =============================================================================

@full_precision
def info_nce(query: torch.Tensor, key: torch.Tensor, *, temperature: float = 0.1,
             symmetric: bool = False) -> torch.Tensor:
    """InfoNCE (van den Oord et al., 2018) between two encoders' outputs.

    ``mean_i -log exp(q_i.k_i / T) / sum_j exp(q_i.k_j / T)`` on L2-normalised
    rows, over the batch (the denominator includes the positive ``k_i``).
    ``symmetric=True`` averages the query->key and key->query directions
    (CLIP, Radford et al., 2021).
    """
    _check_positive("temperature", temperature)
    if query.shape != key.shape or query.dim() != 2:
        raise ValueError(f"info_nce needs two (N, D) tensors of the same shape, got "
                         f"{tuple(query.shape)} and {tuple(key.shape)}")
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(len(q), device=q.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss


@full_precision
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al., 2020): 2N anchors, each against the 2N-1 others.

    For the two views ``z1[i]`` and ``z2[i]`` (L2-normalised), anchor ``a`` with
    positive ``p(a)``: ``-log exp(s_ap / T) / sum_{b != a} exp(s_ab / T)``,
    averaged over all 2N anchors.
    """
    _check_positive("temperature", temperature)
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent needs two (N, D) tensors of the same shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # exp(-inf) = 0: never its own pair
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


# =============================================================================
# Domain alignment (domain generalisation / adaptation)
# =============================================================================

@full_precision
def coral_loss(x: torch.Tensor, y: torch.Tensor, *, match_mean: bool = True) -> torch.Tensor:
    """CORAL distance between two feature batches (Sun & Saenko, 2016).

    ``||C_x - C_y||_F^2 / d^2`` (+ ``||mu_x - mu_y||^2 / d`` when ``match_mean``),
    with unbiased covariances (divided by n - 1). Choice: DomainBed's form,
    i.e. the mean of squared entries rather than the paper's ``1 / (4 d^2)``
    (a constant factor 4, absorbed by the penalty weight), and with the means
    matched as well, as DomainBed does; ``match_mean=False`` gives the pure
    second-order (paper) distance up to that factor.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"coral_loss needs (n, d) and (m, d) features, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("coral_loss needs at least 2 samples per batch to estimate a covariance")
    mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    cent_x, cent_y = x - mean_x, y - mean_y
    cov_x = cent_x.T @ cent_x / (len(x) - 1)
    cov_y = cent_y.T @ cent_y / (len(y) - 1)
    loss = (cov_x - cov_y).pow(2).mean()
    if match_mean:
        loss = loss + (mean_x - mean_y).pow(2).mean()
    return loss


#: Inverse bandwidths ``gamma`` of the Gaussian kernel mixture (DomainBed's set).
MMD_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@full_precision
def gaussian_kernel(x: torch.Tensor, y: torch.Tensor,
                    gammas: Sequence[float] = MMD_GAMMAS) -> torch.Tensor:
    """Sum of Gaussian kernels: ``sum_g exp(-g ||x_i - y_j||^2)`` as an (n, m) matrix.

    Summed over ``gammas``, not averaged, as DomainBed's ``MMD.gaussian_kernel``
    (so ``k(a, a) = len(gammas)``): the same ``penalty_weight`` means the same
    strength as there.
    """
    sq_dist = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0)
               - 2.0 * x @ y.T).clamp_min(0.0)  # clamp: rounding can go slightly negative
    gammas_t = torch.as_tensor(gammas, dtype=sq_dist.dtype, device=sq_dist.device)
    return torch.exp(-gammas_t.view(-1, 1, 1) * sq_dist).sum(0)


@full_precision
def mmd_loss(x: torch.Tensor, y: torch.Tensor,
             gammas: Sequence[float] = MMD_GAMMAS) -> torch.Tensor:
    """Squared maximum mean discrepancy with a Gaussian kernel mixture (Li et al., 2018).

    The biased (V-statistic) estimate ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``,
    which is >= 0 and exactly 0 for identical samples. The kernel is the sum
    of Gaussian kernels over ``gammas`` (DomainBed's definition; so
    ``k(a, a) = len(gammas)`` and MMD^2 <= 2 len(gammas)).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_loss needs (n, d) and (m, d) features, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    return (gaussian_kernel(x, x, gammas).mean() + gaussian_kernel(y, y, gammas).mean()
            - 2.0 * gaussian_kernel(x, y, gammas).mean())


# =============================================================================
# Predictions
# =============================================================================

@full_precision
def entropy(logits: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Shannon entropy of ``softmax(logits)`` per row (nats): mean over rows, or ``"none"``."""
    log_p = F.log_softmax(logits, dim=1)
    per_row = -(log_p.exp() * log_p).sum(1)
    if reduction == "none":
        return per_row
    if reduction != "mean":
        raise ValueError(f"entropy: reduction must be 'mean' or 'none', got {reduction!r}")
    return per_row.mean()


# =============================================================================
# Invariance (domain generalisation)
# =============================================================================

@full_precision
def irm_penalty(logits: torch.Tensor, targets: torch.Tensor, *,
                unbiased: bool = True) -> torch.Tensor:
    """IRMv1 penalty (Arjovsky et al., 2019) of one environment.

    The squared gradient of ``CE(w * logits, targets)`` w.r.t. a dummy scalar
    classifier ``w`` at ``w = 1``. ``unbiased=True`` multiplies the gradients
    of the even and the odd half of the batch instead (the unbiased estimate of
    the paper's Section 3.2, as in DomainBed); ``unbiased=False`` squares the
    full-batch gradient (the paper's colored-MNIST code).
    """
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    if not unbiased:
        grad, = torch.autograd.grad(F.cross_entropy(logits * scale, targets), [scale],
                                    create_graph=True)
        return grad.pow(2)
    if len(targets) < 2:
        raise ValueError("irm_penalty(unbiased=True) needs at least 2 samples")
    grad_even, = torch.autograd.grad(F.cross_entropy(logits[0::2] * scale, targets[0::2]),
                                     [scale], create_graph=True)
    grad_odd, = torch.autograd.grad(F.cross_entropy(logits[1::2] * scale, targets[1::2]),
                                    [scale], create_graph=True)
    return grad_even * grad_odd


# =============================================================================
# --- adaptation ---
# Helpers of the unsupervised-domain-adaptation and test-time-adaptation
# methods (xbench/methods/adaptation.py, xbench/methods/test_time.py).


def prediction_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of ``softmax(logits / temperature)``: shape ``(n,)``."""
    return entropy(logits / temperature, reduction="none")


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
