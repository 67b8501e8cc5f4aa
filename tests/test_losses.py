"""Golden tests for xbench.losses: expected values come from the formulas, not from the code.

Reference values are computed with NumPy in float64 (or by hand) from the
definitions; the implementation under test is torch-based.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xbench import losses
from xbench.methods._layers import grad_reverse


def np_log_softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def np_softmax(a: np.ndarray) -> np.ndarray:
    return np.exp(np_log_softmax(a))


def np_normalize(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def rand(*shape, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# =============================================================================
# Knowledge distillation
# =============================================================================

def kd_reference(s: np.ndarray, t: np.ndarray, y, T, soft_weight, hard_weight) -> float:
    """hard * CE + soft * T^2 * mean_b sum_c p_t (log p_t - log p_s), written out."""
    log_ps, log_pt = np_log_softmax(s / T), np_log_softmax(t / T)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    ce = -np_log_softmax(s)[np.arange(len(s)), y].mean() if hard_weight > 0 else 0.0
    return hard_weight * ce + soft_weight * T ** 2 * kl


@pytest.mark.parametrize("T,soft_weight,hard_weight", [(4.0, 1.0, 0.0), (2.0, 0.7, 0.3),
                                                       (1.0, 1.0, 1.0), (10.0, 0.5, 0.0)])
def test_kd_loss_matches_formula(T, soft_weight, hard_weight):
    s, t = rand(6, 5, seed=1, scale=3), rand(6, 5, seed=2, scale=3)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    got = losses.kd_loss(s, t, y, temperature=T, soft_weight=soft_weight, hard_weight=hard_weight)
    want = kd_reference(s.numpy(), t.numpy(), y.numpy(), T, soft_weight, hard_weight)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_kd_loss_identical_logits_is_zero_and_positive_otherwise():
    s = rand(4, 3, seed=3)
    assert losses.kd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.kd_loss(s, rand(4, 3, seed=4)).item() > 0


def test_kd_gradient_equals_closed_form():
    """d/dz_s [T^2 KL(p_t || p_s)] (batchmean) = T (p_s - p_t) / B, by autograd and by
    central finite differences."""
    B, C, T = 5, 4, 3.0
    s, t = rand(B, C, seed=5, scale=2).requires_grad_(), rand(B, C, seed=6, scale=2)
    closed = T * (np_softmax(s.detach().numpy() / T) - np_softmax(t.numpy() / T)) / B
    grad, = torch.autograd.grad(losses.kd_loss(s, t, temperature=T), s)
    np.testing.assert_allclose(grad.numpy(), closed, rtol=1e-9, atol=1e-12)

    eps = 1e-6
    fd = np.zeros((B, C))
    for i in range(B):
        for j in range(C):
            plus, minus = s.detach().clone(), s.detach().clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            fd[i, j] = (losses.kd_loss(plus, t, temperature=T).item()
                        - losses.kd_loss(minus, t, temperature=T).item()) / (2 * eps)
    np.testing.assert_allclose(fd, closed, rtol=1e-5, atol=1e-9)


def test_kd_t_squared_keeps_gradient_flat_without_it_shrinks_like_inverse_square():
    s, t = rand(8, 10, seed=7, scale=2), rand(8, 10, seed=8, scale=2)

    def grad_norm(T: float, t_squared: bool) -> float:
        z = s.clone().requires_grad_()
        loss = losses.kd_loss(z, t, temperature=T)
        if not t_squared:
            loss = loss / T ** 2  # the soft term as it would be without the T^2 factor
        grad, = torch.autograd.grad(loss, z)
        return grad.norm().item()

    temps = [20.0, 40.0, 80.0, 160.0]
    with_t2 = [grad_norm(T, True) for T in temps]
    without = [grad_norm(T, False) for T in temps]
    for a, b in zip(with_t2, with_t2[1:]):
        assert b / a == pytest.approx(1.0, rel=0.02)   # flat
    for a, b in zip(without, without[1:]):
        assert a / b == pytest.approx(4.0, rel=0.02)   # doubling T quarters it


def test_kd_hard_weight_continuity_and_targets_rule():
    s, t = rand(6, 5, seed=9), rand(6, 5, seed=10)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    pure = losses.kd_loss(s, t, temperature=4.0)
    assert losses.kd_loss(s, t, y, temperature=4.0, hard_weight=1e-9).item() == pytest.approx(
        pure.item(), abs=1e-7)
    # targets are optional at hard_weight 0 (ignored), required above it
    assert losses.kd_loss(s, t, y, temperature=4.0).item() == pure.item()
    with pytest.raises(ValueError, match="targets"):
        losses.kd_loss(s, t, temperature=4.0, hard_weight=0.5)
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_loss(s, t, temperature=0.0)
    ce = F.cross_entropy(s, y).item()
    both = losses.kd_loss(s, t, y, temperature=4.0, soft_weight=0.0, hard_weight=2.0)
    assert both.item() == pytest.approx(2.0 * ce, rel=1e-12)


def test_kd_loss_has_no_alpha():
    import inspect
    assert "alpha" not in inspect.signature(losses.kd_loss).parameters


# =============================================================================
# Contrastive
# =============================================================================

def info_nce_reference(q: np.ndarray, k: np.ndarray, tau: float) -> float:
    """mean_i -log( exp(q_i.k_i/tau) / sum_j exp(q_i.k_j/tau) ), loops over i and j."""
    q, k = np_normalize(q), np_normalize(k)
    total = 0.0
    for i in range(len(q)):
        sims = [q[i] @ k[j] / tau for j in range(len(k))]
        m = max(sims)
        total += -(sims[i] - m - math.log(sum(math.exp(v - m) for v in sims)))
    return total / len(q)


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """2N anchors a; positive is the other view of the same instance; all b != a in the sum."""
    z = np_normalize(np.concatenate([z1, z2]))
    n = len(z1)
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        sims = {b: z[a] @ z[b] / tau for b in range(2 * n) if b != a}
        m = max(sims.values())
        total += -(sims[pos] - m - math.log(sum(math.exp(v - m) for v in sims.values())))
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_matches_formula(tau):
    q, k = rand(7, 5, seed=11), rand(7, 5, seed=12)
    got = losses.info_nce(q, k, temperature=tau).item()
    assert got == pytest.approx(info_nce_reference(q.numpy(), k.numpy(), tau), rel=1e-10)
    sym = losses.info_nce(q, k, temperature=tau, symmetric=True).item()
    want = 0.5 * (info_nce_reference(q.numpy(), k.numpy(), tau)
                  + info_nce_reference(k.numpy(), q.numpy(), tau))
    assert sym == pytest.approx(want, rel=1e-10)


def test_info_nce_collinear_is_log_n():
    n = 6
    direction = rand(1, 4, seed=13)
    scales = torch.linspace(0.5, 3.0, n, dtype=torch.float64).unsqueeze(1)
    q, k = direction * scales, direction * scales.flip(0)  # all collinear, positive scales
    for symmetric in (False, True):
        got = losses.info_nce(q, k, temperature=0.1, symmetric=symmetric).item()
        assert got == pytest.approx(math.log(n), rel=1e-10)


@pytest.mark.parametrize("tau", [0.05, 0.1, 1.0])
def test_info_nce_aligned_orthonormal_closed_form(tau):
    # q_i = k_i = e_i: positive similarity 1, the N-1 others 0:
    # -log(e^{1/tau} / (e^{1/tau} + N - 1)) = log(e^{1/tau} + N - 1) - 1/tau
    n = 5
    eye = torch.eye(n, 8, dtype=torch.float64)
    want = math.log(math.exp(1 / tau) + n - 1) - 1 / tau
    assert losses.info_nce(eye, eye.clone(), temperature=tau).item() == pytest.approx(want)
    assert losses.info_nce(eye, eye.clone(), temperature=tau,
                           symmetric=True).item() == pytest.approx(want)


def test_info_nce_scale_invariant_and_differentiable():
    q, k = rand(4, 3, seed=14).requires_grad_(), rand(4, 3, seed=15)
    a = losses.info_nce(q, k)
    assert a.item() == pytest.approx(losses.info_nce(q * 7.0, k * 0.2).item(), rel=1e-10)
    a.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_nt_xent_matches_formula(tau):
    z1, z2 = rand(5, 6, seed=16), rand(5, 6, seed=17)
    got = losses.nt_xent(z1, z2, temperature=tau).item()
    assert got == pytest.approx(nt_xent_reference(z1.numpy(), z2.numpy(), tau), rel=1e-10)


def test_nt_xent_collinear_is_log_2n_minus_1():
    n = 4
    d = rand(1, 3, seed=18)
    z1 = d * torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1)
    z2 = d * 2.5
    z2 = z2.expand(n, -1).clone()
    assert losses.nt_xent(z1, z2, temperature=0.5).item() == pytest.approx(math.log(2 * n - 1))


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_aligned_orthonormal_closed_form(tau):
    # z1_i = z2_i = e_i: for each anchor the positive has similarity 1 and the
    # other 2N-2 candidates (both views of the other instances) 0:
    # log(e^{1/tau} + 2N - 2) - 1/tau
    n = 4
    eye = torch.eye(n, 6, dtype=torch.float64)
    want = math.log(math.exp(1 / tau) + 2 * n - 2) - 1 / tau
    assert losses.nt_xent(eye, eye.clone(), temperature=tau).item() == pytest.approx(want)


def test_contrastive_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        losses.info_nce(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError):
        losses.nt_xent(torch.zeros(3, 2), torch.zeros(3, 5))


# =============================================================================
# Numerical stability: small temperatures, large logits, bf16 autocast
# =============================================================================

def _all_losses(a: torch.Tensor, b: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    return {"kd": losses.kd_loss(a, b, temperature=tau),
            "kd_hard": losses.kd_loss(a, b, torch.zeros(len(a), dtype=torch.long),
                                      temperature=tau, hard_weight=0.5),
            "info_nce": losses.info_nce(a, b, temperature=tau),
            "info_nce_sym": losses.info_nce(a, b, temperature=tau, symmetric=True),
            "nt_xent": losses.nt_xent(a, b, temperature=tau),
            "entropy": losses.entropy(a)}


def test_losses_finite_at_small_temperature_in_float32_with_large_logits():
    a = rand(16, 10, seed=19, scale=1000.0, dtype=torch.float32).requires_grad_()
    b = rand(16, 10, seed=20, scale=1000.0, dtype=torch.float32)
    for name, value in _all_losses(a, b, 0.01).items():
        assert value.dtype == torch.float32
        assert torch.isfinite(value), name
        grad, = torch.autograd.grad(value, a)
        assert torch.isfinite(grad).all(), name


def test_small_temperature_values_are_right_not_just_finite():
    # aligned orthonormal embeddings at tau = 0.01: log(e^100 + N - 1) - 100 ~= (N-1) e^-100
    eye = torch.eye(4, dtype=torch.float32)
    assert losses.info_nce(eye, eye.clone(), temperature=0.01).item() == pytest.approx(
        0.0, abs=1e-6)
    # KD at T = 0.01 with huge logits: teacher one-hot on class 0, student one-hot on class 1
    s = torch.tensor([[0.0, 50.0]])
    t = torch.tensor([[50.0, 0.0]])
    # T^2 * KL = T^2 * (log p_t0 - log p_s0) ~= T^2 * (50/T) * 1 = 50 T = 0.5
    assert losses.kd_loss(s, t, temperature=0.01).item() == pytest.approx(0.5, rel=1e-4)


def test_losses_finite_under_bf16_autocast():
    a = rand(16, 10, seed=21, scale=30.0, dtype=torch.float32)
    b = rand(16, 10, seed=22, scale=30.0, dtype=torch.float32)
    lin = torch.nn.Linear(10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ha, hb = lin(a), lin(b)
        assert ha.dtype == torch.bfloat16
        values = _all_losses(ha, hb, 0.01)
        values["coral"] = losses.coral_loss(ha, hb)
        values["mmd"] = losses.mmd_loss(ha, hb)
    for name, value in values.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
    sum(values.values()).backward()
    assert torch.isfinite(lin.weight.grad).all()
    # bf16 inputs give (nearly) the float32 answer: the loss itself is computed in float32
    exact = losses.info_nce(ha.detach().float(), hb.detach().float(), temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = losses.info_nce(ha.detach(), hb.detach(), temperature=0.1)
    assert approx.item() == pytest.approx(exact.item(), rel=1e-6)


# =============================================================================
# Domain alignment
# =============================================================================

def test_coral_identical_batches_is_zero():
    x = rand(10, 4, seed=23)
    assert losses.coral_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-15)


def test_coral_hand_computed_example():
    # x rows (0,0),(2,0): mean (1,0), centred (-1,0),(1,0), cov (n-1=1) [[2,0],[0,0]]
    # y rows (0,0),(0,2): mean (0,1), cov [[0,0],[0,2]]
    # cov diff [[2,0],[0,-2]]: squared entries 4+4=8, over d^2=4 -> 2
    # mean diff (1,-1): squared 1+1=2, over d=2 -> 1
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert losses.coral_loss(x, y).item() == pytest.approx(3.0)
    assert losses.coral_loss(x, y, match_mean=False).item() == pytest.approx(2.0)
    # a pure shift changes only the mean term: (3,3) shift -> mean diff 9+9 over 2 = 9
    assert losses.coral_loss(x, x + 3.0).item() == pytest.approx(9.0)
    assert losses.coral_loss(x, x + 3.0, match_mean=False).item() == pytest.approx(0.0)


def test_coral_rejects_single_sample():
    with pytest.raises(ValueError, match="2 samples"):
        losses.coral_loss(torch.zeros(1, 3), torch.zeros(4, 3))


def test_gaussian_kernel_hand_computed():
    x = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # squared distances 2, 0
    k = losses.gaussian_kernel(x, y, gammas=(0.5, 2.0))
    want = [math.exp(-1.0) + math.exp(-4.0), 2.0]  # summed over the kernels, as DomainBed
    np.testing.assert_allclose(k.numpy(), [want], rtol=1e-12)


def test_mmd_hand_computed_example():
    # one point each, squared distance 1: k(x,x)=k(y,y)=len(gammas), k(x,y)=sum_g e^{-g}
    x = torch.tensor([[0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0]], dtype=torch.float64)
    gammas = (0.1, 1.0, 10.0)
    want = 2.0 * len(gammas) - 2.0 * sum(math.exp(-g) for g in gammas)
    assert losses.mmd_loss(x, y, gammas=gammas).item() == pytest.approx(want, rel=1e-12)


def test_mmd_matches_domainbed_definition():
    """DomainBed's MMD (algorithms.py, AbstractMMD): K = sum over its 7 gammas of
    exp(-g * squared distance); mmd = mean Kxx + mean Kyy - 2 mean Kxy. Computed here
    with plain Python loops from that definition."""
    x, y = rand(5, 3, seed=40), rand(4, 3, seed=41) + 0.3
    gammas = [0.001, 0.01, 0.1, 1, 10, 100, 1000]

    def kernel_mean(a, b):
        total = 0.0
        for u in a.tolist():
            for v in b.tolist():
                d = sum((p - q) ** 2 for p, q in zip(u, v))
                total += sum(math.exp(-g * d) for g in gammas)
        return total / (len(a) * len(b))

    want = kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)
    assert losses.mmd_loss(x, y).item() == pytest.approx(want, rel=1e-9)


def test_mmd_zero_for_identical_and_positive_growing_with_shift():
    x = rand(32, 5, seed=24)
    assert losses.mmd_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)
    values = [losses.mmd_loss(x, rand(32, 5, seed=25) + shift).item()
              for shift in (0.0, 0.5, 2.0)]
    assert all(v > 0 for v in values)
    assert values[0] < values[1] < values[2]


def test_alignment_losses_have_gradients():
    x, y = rand(8, 3, seed=26).requires_grad_(), rand(8, 3, seed=27) + 1
    (losses.coral_loss(x, y) + losses.mmd_loss(x, y)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# =============================================================================
# Predictions and invariance
# =============================================================================

def test_entropy_matches_formula_and_extremes():
    logits = rand(6, 4, seed=28, scale=2)
    p = np_softmax(logits.numpy())
    want = -(p * np.log(p)).sum(axis=1)
    np.testing.assert_allclose(losses.entropy(logits, reduction="none").numpy(), want, rtol=1e-12)
    assert losses.entropy(logits).item() == pytest.approx(want.mean(), rel=1e-12)
    assert losses.entropy(torch.zeros(3, 7)).item() == pytest.approx(math.log(7), rel=1e-6)
    confident = torch.tensor([[1e4, 0.0, 0.0]])
    assert losses.entropy(confident).item() == 0.0


def test_irm_penalty_matches_closed_form():
    # d/dw CE(w z, y) at w = 1 = mean_i sum_c (softmax(z_i)_c - [c = y_i]) z_ic
    z = rand(8, 3, seed=29, scale=2)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    zn, yn = z.numpy(), np.eye(3)[y.numpy()]

    def dw(rows):
        return ((np_softmax(zn[rows]) - yn[rows]) * zn[rows]).sum(axis=1).mean()

    full = losses.irm_penalty(z, y, unbiased=False).item()
    assert full == pytest.approx(dw(np.arange(8)) ** 2, rel=1e-10)
    split = losses.irm_penalty(z, y).item()
    assert split == pytest.approx(dw(np.arange(0, 8, 2)) * dw(np.arange(1, 8, 2)), rel=1e-10)


def test_irm_penalty_is_differentiable_wrt_logits():
    z = rand(8, 3, seed=30).requires_grad_()
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    losses.irm_penalty(z, y).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_grad_reverse_is_identity_forward_and_flips_gradient():
    x = rand(3, 2, seed=31).requires_grad_()
    out = grad_reverse(x, 0.25)
    assert torch.equal(out, x)
    (out * torch.tensor([[1.0, 2.0]], dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -0.25 * np.array([[1.0, 2.0]] * 3))
