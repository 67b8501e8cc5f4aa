"""Meta-learning family: meta-gradients against closed forms, few-shot methods end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from families_support import assert_same_state, module_state, tiny_job
from xbench.harness.runner import run_job
from xbench.methods.meta import (Reptile, fit_linear_head, inner_adapt, maml_meta_gradient,
                                 mldg_objective)
from xbench.registry import create_method, load_task
from xbench.tasks.base import Budget

# The scalar quadratic of the issue: inner loss ½h(w−a)², outer loss ½k(w−b)².
W, A, H, B, K, INNER_LR = 2.0, 0.5, 3.0, 1.0, 2.0, 0.1


def _quadratic(weight: float, center: float):
    return lambda p: 0.5 * weight * (p["w"] - center) ** 2


def _w() -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(W, dtype=torch.float64, requires_grad=True)}


def test_one_inner_step_meta_gradient_matches_the_closed_form():
    # inner gradient h(w−a) = 3·(2−0.5) = 4.5, so w' = w − α·4.5 = 2 − 0.45 = 1.55
    # outer gradient at w': k(w'−b) = 2·(1.55−1) = 1.1
    # dw'/dw = 1 − αh = 1 − 0.1·3 = 0.7, so the MAML meta-gradient is 1.1·0.7 = 0.77
    adapted = inner_adapt(_quadratic(H, A), _w(), inner_lr=INNER_LR, inner_steps=1,
                          first_order=False)
    assert adapted["w"].item() == pytest.approx(1.55, abs=1e-12)
    grad = maml_meta_gradient(_quadratic(H, A), _quadratic(K, B), _w(), inner_lr=INNER_LR,
                              inner_steps=1, first_order=False)
    assert grad["w"].item() == pytest.approx(0.77, abs=1e-12)
    # the same from the formula k(w'−b)(1−αh)
    w_prime = W - INNER_LR * H * (W - A)
    assert grad["w"].item() == pytest.approx(K * (w_prime - B) * (1 - INNER_LR * H), abs=1e-12)


def test_first_order_meta_gradient_drops_the_inner_jacobian():
    # first order: dw'/dw is taken as 1, so the meta-gradient is k(w'−b) = 1.1
    grad = maml_meta_gradient(_quadratic(H, A), _quadratic(K, B), _w(), inner_lr=INNER_LR,
                              inner_steps=1, first_order=True)
    assert grad["w"].item() == pytest.approx(1.1, abs=1e-12)


def test_two_inner_steps_compose_the_jacobian():
    # w1 = 1.55 (above); w2 = w1 − α·h·(w1−a) = 1.55 − 0.3·1.05 = 1.235
    # outer gradient k(w2−b) = 2·0.235 = 0.47; dw2/dw = (1−αh)² = 0.49 -> 0.47·0.49 = 0.2303
    second = maml_meta_gradient(_quadratic(H, A), _quadratic(K, B), _w(), inner_lr=INNER_LR,
                                inner_steps=2, first_order=False)
    first = maml_meta_gradient(_quadratic(H, A), _quadratic(K, B), _w(), inner_lr=INNER_LR,
                               inner_steps=2, first_order=True)
    assert second["w"].item() == pytest.approx(0.2303, abs=1e-12)
    assert first["w"].item() == pytest.approx(0.47, abs=1e-12)


def test_mldg_objective_gradient_matches_the_closed_form():
    # MLDG: F(w) + β·G(w − α∇F(w)) with F = ½h(w−a)², G = ½k(w−b)², β = 0.5
    # d/dw = h(w−a) + β·k(w'−b)(1−αh) = 4.5 + 0.5·0.77 = 4.885 (first order: 4.5 + 0.5·1.1 = 5.05)
    for first_order, expected in ((False, 4.885), (True, 5.05)):
        params = _w()
        total, f, g = mldg_objective(_quadratic(H, A), _quadratic(K, B), params,
                                     inner_lr=INNER_LR, meta_test_weight=0.5,
                                     first_order=first_order)
        # F(2) = ½·3·1.5² = 3.375; G(1.55) = ½·2·0.55² = 0.3025
        assert f.item() == pytest.approx(3.375) and g.item() == pytest.approx(0.3025)
        (grad,) = torch.autograd.grad(total, [params["w"]])
        assert grad.item() == pytest.approx(expected, abs=1e-12)


def test_fit_linear_head_takes_gradient_steps_on_the_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    weight, bias = fit_linear_head(features, labels, 3, inner_lr=0.5, inner_steps=1)
    w0 = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    b0 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    gw, gb = torch.autograd.grad(F.cross_entropy(features @ w0.T + b0, labels), [w0, b0])
    assert torch.allclose(weight, -0.5 * gw) and torch.allclose(bias, -0.5 * gb)
    again = fit_linear_head(features, labels, 3, inner_lr=0.5, inner_steps=20)
    assert torch.equal(again[0], fit_linear_head(features, labels, 3, inner_lr=0.5,
                                                 inner_steps=20)[0])  # deterministic


FEWSHOT = ("maml", "reptile", "protonet", "finetune")
SPEC = {"ways": 3, "shots": 1, "queries": 5, "test_episodes": 40, "val_episodes": 5}


#: fewer inner steps than the defaults keep these end-to-end runs fast
FAST = {"maml": {"inner_steps": 2}, "reptile": {"inner_steps": 3}, "finetune": {"inner_steps": 20}}


@pytest.mark.parametrize("method", FEWSHOT)
def test_fewshot_method_beats_chance_on_tiny_fewshot(method):
    record = run_job(tiny_job("tiny_fewshot", method, "fewshot", ("novel",), steps=20, batch=16,
                              hparams=FAST.get(method), episodes=SPEC))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["episodes"]["n"] == 40
    assert record["metrics"]["acc_target"] > 0.5  # chance is 1/3 (3 ways)


def _trained(method_name: str, steps: int = 3):
    from xbench.harness.sampling import training_sampler
    from xbench.tasks.base import EpisodeSpec

    torch.manual_seed(0)
    task = load_task("tiny_fewshot")
    data = task.build()
    info = task.info(("novel",), "fewshot", Budget(batch_size=8))
    method = create_method(method_name)
    method.setup(info, torch.device("cpu"))
    method.train(True)
    sampler = training_sampler(type(method), info, data, seed=0,
                               episodes=EpisodeSpec(ways=3, shots=2, queries=3))
    for step in range(steps):
        method.update(sampler.sample(step))
    return method, data


@pytest.mark.parametrize("method_name", FEWSHOT)
def test_predict_episode_leaves_the_method_unchanged(method_name):
    method, data = _trained(method_name)
    novel = data["novel"]["test"]
    support = torch.cat([torch.nonzero(novel.y == c)[:2, 0] for c in range(3)])
    query = torch.cat([torch.nonzero(novel.y == c)[2:6, 0] for c in range(3)])
    method.train(False)  # as the runner evaluates
    before = module_state(method)
    rng = torch.get_rng_state()
    logits = method.predict_episode(novel.x[support], novel.y[support], novel.x[query])
    assert logits.shape == (len(query), 3) and torch.isfinite(logits).all()
    assert_same_state(before, module_state(method))
    assert torch.equal(rng, torch.get_rng_state())
    again = method.predict_episode(novel.x[support], novel.y[support], novel.x[query])
    assert torch.equal(logits, again)


def test_reptile_outer_step_moves_towards_the_adapted_weights():
    # with lr = 1 the outer step θ + 1·(φ − θ) lands exactly on φ (one SGD step on the episode)
    from xbench.harness.sampling import training_sampler
    from xbench.tasks.base import EpisodeSpec

    task = load_task("tiny_fewshot")
    info = task.info(("novel",), "fewshot", Budget(batch_size=8))
    torch.manual_seed(0)
    method = Reptile(lr=1.0, inner_lr=0.3, inner_steps=1)
    method.setup(info, torch.device("cpu"))
    method.train(True)
    spec = EpisodeSpec(ways=4, shots=2, queries=3)  # 4 ways = the whole head
    batch = training_sampler(Reptile, info, task.build(), seed=0, episodes=spec).sample(0)
    reference = copy.deepcopy(method.network)
    ep = batch.episode
    loss = F.cross_entropy(reference(torch.cat([ep.support_x, ep.query_x])),
                           torch.cat([ep.support_y, ep.query_y]))
    loss.backward()
    method.update(batch)
    for (name, p), q in zip(method.network.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q - 0.3 * q.grad, atol=1e-6), name
