"""Shapes in styles: templates against their definitions, determinism, sizes, and style shifts."""

from __future__ import annotations

import math

import pytest
import torch

from taskcheck import check_determinism, check_splits, data_digest
from xbench.registry import load_task
from xbench.tasks.shapes import EXTENT, SHAPES, STYLES, shape_templates


def test_at_least_seven_shapes_and_four_styles():
    assert len(SHAPES) >= 7 and {"circle", "square", "triangle", "star", "cross", "ring",
                                 "hexagon"} <= set(SHAPES)
    assert set(STYLES) == {"photo", "sketch", "cartoon", "painting"}
    task = load_task("shapes_styles")
    assert task.domains == STYLES and task.default_target == ("cartoon",)
    assert task.num_classes == len(SHAPES) and task.input_shape == (3, 32, 32)


def test_templates_match_their_geometric_definitions():
    area = shape_templates(512).mean(dim=(1, 2, 3))  # fraction of the (2 * EXTENT)^2 frame
    frame = (2 * EXTENT) ** 2
    names = list(SHAPES)
    expected = {
        "circle": math.pi * 0.85 ** 2,
        "square": 1.44 ** 2,
        "ring": math.pi * (0.9 ** 2 - 0.55 ** 2),
        "hexagon": 3 * math.sqrt(3) / 2,  # circumradius 1
        "triangle": 3 * math.sqrt(3) / 4,  # circumradius 1
        "cross": 2 * (0.6 * 1.9) - 0.6 ** 2,
        # 5-pointed star, outer radius 1, inner 0.45: 10 triangles of sides 1 and 0.45
        "star": 10 * 0.5 * 1 * 0.45 * math.sin(math.pi / 5),
    }
    for name, value in expected.items():
        measured = float(area[names.index(name)]) * frame
        assert measured == pytest.approx(value, rel=0.01), name


def test_deterministic_with_uint8_images():
    data = check_determinism("shapes_styles", n_per_class=6)
    task = load_task("shapes_styles", n_per_class=6)
    check_splits(task, data)
    for parts in data.values():
        assert all(p.x.dtype == torch.uint8 for p in parts.values())
        labels = torch.cat([p.y for p in parts.values()])
        assert torch.equal(labels.bincount(), torch.full((len(SHAPES),), 6))
    prepared = task.prepare(data["photo"]["train"].x)
    assert prepared.dtype == torch.float32 and 0 <= prepared.min() and prepared.max() <= 1


@pytest.mark.parametrize("resolution", [64, 224])
def test_larger_resolutions_work(resolution):
    task = load_task("shapes_styles", resolution=resolution, n_per_class=1)
    data = task.build()
    check_splits(task, data)
    for parts in data.values():
        for part in parts.values():
            assert part.x.shape[1:] == (3, resolution, resolution)


def _style_stats(x: torch.Tensor) -> dict[str, float]:
    x = x.float() / 255
    grey = (x.amax(dim=1) - x.amin(dim=1)).mean().item()  # 0 for grey images
    border = torch.cat([x[..., :3, :].flatten(2), x[..., -3:, :].flatten(2)], dim=2)
    band = torch.cat([x[..., :3, :], x[..., -3:, :]], dim=2)  # top and bottom rows
    rough = (band[..., 1:] - band[..., :-1]).abs().mean().item()  # pixel-to-pixel noise
    return {"colourfulness": grey, "brightness": x.mean().item(),
            "border_spread": border.std(dim=2).mean().item(), "roughness": rough}


def test_styles_differ_the_way_they_claim():
    data = load_task("shapes_styles", n_per_class=10).build()
    stats = {s: _style_stats(torch.cat([p.x for p in data[s].values()])) for s in STYLES}
    # sketch: grey lines on white paper
    assert stats["sketch"]["colourfulness"] < 0.01 and stats["sketch"]["brightness"] > 0.8
    # cartoon: a flat background colour (edges of the frame vary little)
    assert stats["cartoon"]["border_spread"] < 0.02
    # photo: textured, cluttered background
    assert stats["photo"]["border_spread"] > 5 * stats["cartoon"]["border_spread"]
    # painting: noisy brush texture everywhere, where a cartoon is flat
    assert stats["painting"]["roughness"] > 5 * stats["cartoon"]["roughness"]
    for style in ("photo", "cartoon", "painting"):
        assert stats[style]["colourfulness"] > 0.1, style


def test_cartoon_images_are_mostly_two_flat_colours():
    x = load_task("shapes_styles", n_per_class=3, styles=["cartoon"]).build()["cartoon"]
    images = torch.cat([p.x for p in x.values()])
    for image in images:
        colours, counts = image.flatten(1).T.unique(dim=0, return_counts=True)
        assert counts.topk(2).values.sum() / counts.sum() > 0.6


def test_fewshot_shapes_split_classes_and_may_change_style():
    task = load_task("shapes_fewshot", n_per_class=4, novel_styles=["sketch"])
    data = task.build()
    assert task.kind == "cross_task" and task.protocols == ("fewshot",)
    assert task.default_target == ("novel",) and task.num_classes == 5
    base, novel = task.domain_classes["base"], task.domain_classes["novel"]
    assert set(base).isdisjoint(novel) and set(base) | set(novel) == set(SHAPES)
    for domain, classes in task.domain_classes.items():
        labels = torch.cat([p.y for p in data[domain].values()])
        assert torch.equal(labels.bincount(), torch.full((len(classes),), 4))
    novel_x = torch.cat([p.x for p in data["novel"].values()]).float()
    assert (novel_x.amax(dim=1) - novel_x.amin(dim=1)).max() < 3  # sketches are grey
    check_determinism("shapes_fewshot", n_per_class=4)


def test_version_2_default_target_holds_2000_balanced_test_images():
    task = load_task("shapes_styles")
    assert task.version == "2" and task.old_versions == ("1",) and task.n_per_class == 1000
    assert task.target_test_size() == 2000
    only = load_task("shapes_styles", styles=["cartoon"])  # the default target alone
    data = only.build()["cartoon"]
    assert [len(data[s].y) for s in ("train", "val", "test")] == [6000, 2000, 2000]
    labels = torch.cat([p.y for p in data.values()])
    assert torch.equal(labels.bincount(), torch.full((len(SHAPES),), 1000))
    assert abs(data["test"].y.bincount().float() / 2000 - 0.1).max() < 0.03


#: sha256 of version 1's splits at data_seed 0 (domain/split/dtype/shape header, x bytes,
#: y bytes), taken from the code that built version 1 before version 2 existed.
V1_SHA256 = "ee257ec6d82a266391173781450c19384b5b38c14943c717f7af8f4195d8f7eb"


def test_version_1_builds_identical_data_with_200_per_class():
    task = load_task("shapes_styles", version="1")
    assert task.options()["n_per_class"] == 200 and task.target_test_size() == 400
    data = task.build()
    assert data_digest(data) == V1_SHA256
    # the versions differ only in the default count: the same count draws the same images
    v1 = load_task("shapes_styles", version="1", n_per_class=5, styles=["sketch"]).build()
    v2 = load_task("shapes_styles", n_per_class=5, styles=["sketch"]).build()
    assert torch.equal(v1["sketch"]["test"].x, v2["sketch"]["test"].x)
