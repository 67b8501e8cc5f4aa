"""MNIST-1D shifts: determinism, shapes, untouched global RNGs, and each domain's shift measured."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from taskcheck import check_determinism, check_splits
from xbench.registry import load_task
from xbench.tasks.mnist1d import DOMAINS

SMALL = {"n_per_domain": 300}


@pytest.fixture(scope="module")
def signals() -> dict[str, torch.Tensor]:
    data = load_task("mnist1d_shift", **SMALL).build()
    return {d: (torch.cat([p.x for p in parts.values()])[:, 0],
                torch.cat([p.y for p in parts.values()])) for d, parts in data.items()}


def test_deterministic_with_signals_shaped_1_by_length():
    data = check_determinism("mnist1d_shift", n_per_domain=100,
                             domains=["clean", "noisy"])
    task = load_task("mnist1d_shift", n_per_domain=100, domains=["clean", "noisy"])
    check_splits(task, data)
    assert task.input_shape == (1, 40) and task.default_target == ("noisy",)
    assert load_task("mnist1d_shift").default_target == ("sheared",)
    assert load_task("mnist1d_shift", length=64, n_per_domain=100,
                     domains=["clean"]).build()["clean"]["train"].x.shape[1:] == (1, 64)


def test_building_leaves_the_global_generators_alone():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    load_task("mnist1d_shift", n_per_domain=50, domains=["standard"]).build()
    assert (np.random.rand(), random.random()) == expected


def test_domains_are_generator_parameter_changes(signals):
    defaults = {"max_translation": 48, "scale_coeff": 0.4, "corr_noise_scale": 0.25,
                "iid_noise_scale": 0.02, "shear_scale": 0.75}
    assert DOMAINS["standard"] == defaults  # the package's own defaults
    changed = {name: {k for k in defaults if DOMAINS[name][k] != DOMAINS["clean"][k]}
               for name in ("shifted", "scaled", "noisy", "sheared")}
    assert changed == {"shifted": {"max_translation"}, "scaled": {"scale_coeff"},
                       "noisy": {"corr_noise_scale", "iid_noise_scale"},
                       "sheared": {"shear_scale"}}
    assert set(signals) == set(DOMAINS)
    for x, y in signals.values():
        assert torch.equal(y.bincount(), torch.full((10,), 30))


def _class_spread(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean within-class variance per time step (how much instances of a digit differ)."""
    return float(torch.stack([x[y == c].var(dim=0).mean() for c in range(10)]).mean())


def _roughness(x: torch.Tensor) -> float:
    return float((x[:, 1:] - x[:, :-1]).pow(2).mean())


def _slopes(x: torch.Tensor) -> torch.Tensor:
    t = torch.linspace(-0.5, 0.5, x.shape[1])
    return ((x - x.mean(dim=1, keepdim=True)) * t).sum(dim=1) / t.pow(2).sum()


def test_each_domain_shows_its_shift(signals):
    clean = signals["clean"]
    # more translation: instances of a digit are less alike
    assert _class_spread(*signals["shifted"]) > 1.5 * _class_spread(*clean)
    # more noise: rougher signals
    assert _roughness(signals["noisy"][0]) > 1.5 * _roughness(clean[0])
    # stronger shear: a wider spread of linear trends
    assert _slopes(signals["sheared"][0]).std() > 1.5 * _slopes(clean[0]).std()
    # larger scale coefficient: more varied amplitudes
    amp = {d: signals[d][0].std(dim=1) for d in ("scaled", "clean")}
    assert (amp["scaled"].std() / amp["scaled"].mean()) > 1.4 * (
        amp["clean"].std() / amp["clean"].mean())
    # the package defaults perturb everything at once
    assert _class_spread(*signals["standard"]) > 1.5 * _class_spread(*clean)


def test_batch_transform_equals_the_package_transform_given_the_same_draws():
    from types import SimpleNamespace

    from mnist1d.data import get_dataset_args, get_templates
    from mnist1d.transform import transform

    from xbench.tasks.mnist1d import transform_batch

    params = DOMAINS["standard"]
    args = SimpleNamespace(**{**get_dataset_args(as_dict=True), **params})
    t = get_templates()
    labels = np.arange(20) % 10
    state = np.random.get_state()
    try:
        np.random.seed(7)
        expected = np.stack([transform(t["x"][c], t["t"], args)[0] for c in labels])
        np.random.seed(7)  # replay the package's draws, in its order, one signal at a time
        draws = {k: [] for k in ("pad", "scale", "shift", "corr_noise", "iid_noise", "shear")}
        for _ in labels:
            draws["pad"].append(36 + int(np.random.rand() * 25))
            draws["scale"].append(np.random.rand())
            draws["shift"].append(np.random.choice(params["max_translation"]))
            draws["corr_noise"].append(np.random.randn(72))
            draws["iid_noise"].append(np.random.randn(72))
            draws["shear"].append(np.random.rand())
    finally:
        np.random.set_state(state)
    got = transform_batch(labels, 40, **{k: np.asarray(v) for k, v in draws.items()},
                          **{k: v for k, v in params.items() if k != "max_translation"})
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_version_2_is_deterministic_balanced_and_holds_2000_test_items_per_domain():
    task = load_task("mnist1d_shift", domains=["clean", "sheared"])
    assert task.version == "2" and task.n_per_domain == 10_000
    data = check_determinism("mnist1d_shift", domains=["clean", "sheared"])
    check_splits(task, data)
    test = data["sheared"]["test"]
    assert len(test.y) == task.target_test_size() == 2000
    counts = torch.cat([p.y for p in data["sheared"].values()]).bincount()
    assert torch.equal(counts, torch.full((10,), 1000))
    other = load_task("mnist1d_shift", domains=["clean", "sheared"], data_seed=1).build()
    assert not torch.equal(other["sheared"]["test"].x, test.x)


def test_version_1_still_builds_the_package_generator_data():
    from xbench.tasks.mnist1d import generate

    task = load_task("mnist1d_shift", version="1", domains=["clean"])
    assert task.version == "1" and task.n_per_domain == 1000
    data = task.build()["clean"]
    x, y = generate(1000, 40, (0 * 1_000_003 + list(DOMAINS).index("clean")) % 2**32,
                    **DOMAINS["clean"])
    built = torch.cat([data[s].x for s in ("train", "val", "test")])[:, 0]
    assert sorted(map(tuple, built.numpy().round(5).tolist())) == \
        sorted(map(tuple, np.float32(x).round(5).tolist()))
    with pytest.raises(Exception, match="has no version '9'"):
        load_task("mnist1d_shift", version="9")
