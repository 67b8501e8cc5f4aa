"""Synthetic -> real digits: font glyphs, determinism, and ERM's drop from synthetic to real."""

from __future__ import annotations

import torch

from taskcheck import check_determinism, check_splits, erm_record
from xbench.registry import load_task
from xbench.tasks.digits import load_digits_images
from xbench.tasks.syndigits import FONT_FILES, glyph_templates


def test_glyphs_come_from_several_matplotlib_fonts_with_open_holes():
    templates = glyph_templates()
    assert templates.shape == (len(FONT_FILES), 10, 64, 64)
    families = ("DejaVuSans.", "DejaVuSansMono", "DejaVuSerif", "STIXGeneral", "cm")
    assert all(any(name.startswith(f) for name in FONT_FILES) for f in families)
    assert any("Bold" in name or "Bol" in name for name in FONT_FILES)  # several weights
    def ink_runs(row: torch.Tensor) -> int:  # separate stretches of ink along a line
        ink = (row > 0.5).int()
        return int(ink[0]) + int((ink[1:] - ink[:-1] == 1).sum())

    middle = templates[:, :, 32]  # the horizontal line through every glyph's centre
    # the hole of each 0 stays open: at least two strokes (three with Mono's dotted zero)
    assert all(ink_runs(middle[f, 0]) >= 2 for f in range(len(FONT_FILES)))
    assert all(ink_runs(middle[f, 1]) == 1 for f in range(len(FONT_FILES)))  # one stem
    ink = templates.mean(dim=(2, 3))
    assert float(ink.min()) > 0.03 and float(ink.max()) < 0.6
    # different fonts draw visibly different glyphs
    assert (templates[0, 2] - templates[-1, 2]).abs().mean() > 0.05


def test_deterministic_and_shaped_like_the_real_digits():
    data = check_determinism("digits_syn2real", n_per_class=20)
    task = load_task("digits_syn2real", n_per_class=20)
    check_splits(task, data)
    assert task.domains == ("synthetic", "real") and task.default_target == ("real",)
    assert set(task.protocols) == {"dg", "uda"}
    synthetic = torch.cat([p.y for p in data["synthetic"].values()])
    assert torch.equal(synthetic.bincount(), torch.full((10,), 20))
    real_x, _ = load_digits_images(16)
    assert sum(len(p.y) for p in data["real"].values()) == len(real_x)
    # the real pool caps the target test split, and the task says so
    assert len(data["real"]["test"].y) == task.target_test_size() == 360
    assert "1,797" in task.target_test_cap
    for part in data["synthetic"].values():
        assert part.x.min() >= 0 and part.x.max() <= 1


def test_synthetic_and_real_domains_differ_in_appearance():
    data = load_task("digits_syn2real", n_per_class=50).build()
    syn = torch.cat([p.x for p in data["synthetic"].values()])
    real = torch.cat([p.x for p in data["real"].values()])
    # rendered glyphs: thinner strokes (less ink) and pixel noise in the background
    assert syn.mean() < 0.8 * real.mean()
    corner = (slice(None), 0, slice(0, 2), slice(0, 2))
    assert syn[corner].std() > 2 * real[corner].std()


def test_erm_accuracy_drops_from_synthetic_to_real():
    record = erm_record("digits_syn2real", ("real",), steps=200, batch_size=32)
    metrics = record["metrics"]
    assert metrics["acc_source_val"] > 0.75
    assert metrics["acc_source_val"] - metrics["acc_target"] > 0.1, metrics
