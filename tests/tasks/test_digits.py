"""Digit tasks: determinism, shapes, and the shift each one claims, measured on its data."""

from __future__ import annotations

import pytest
import torch

from taskcheck import check_determinism, check_splits, erm_record
from xbench.registry import load_task
from xbench.tasks.digits import load_digits_images


def _true_digits(resolution: int = 16) -> dict[bytes, int]:
    """Map each (upsampled) scikit-learn digit image's bytes to its digit."""
    x, y = load_digits_images(resolution)
    return {img.numpy().tobytes(): int(label) for img, label in zip(x, y)}


@pytest.mark.parametrize("name", ["digits_rotated", "digits_colored", "digits_corrupted",
                                  "digits_fewshot", "digits_paired"])
def test_deterministic_given_version_and_seed(name):
    data = check_determinism(name)
    check_splits(load_task(name), data)


def test_colored_agreement_and_label_noise_are_as_claimed():
    task = load_task("digits_colored")
    data = task.build()
    assert task.domains == ("90", "80", "10") and task.default_target == ("10",)
    truth = _true_digits()
    for domain, agreement in zip(task.domains, (0.90, 0.80, 0.10)):
        for split, part in data[domain].items():
            assert part.x.shape[1:] == (2, 16, 16)
            ink = part.x.flatten(2).sum(dim=2)  # (N, 2)
            assert bool(((ink[:, 0] > 0) ^ (ink[:, 1] > 0)).all()), "ink in exactly one channel"
            colour = (ink[:, 1] > 0).long()  # 0 red, 1 green
            measured = (colour == part.y).float().mean().item()
            assert abs(measured - agreement) <= 0.02, (domain, split, measured)
            digit = torch.tensor([truth[img.sum(dim=0).numpy().tobytes()] for img in part.x])
            clean = (digit < 5).long()
            noise = (part.y != clean).float().mean().item()
            assert abs(noise - 0.25) <= 0.02, (domain, split, noise)


def test_corrupted_domains_show_their_corruption():
    task = load_task("digits_corrupted")
    data = task.build()
    assert set(task.domains) >= {"clean", "noise", "blur", "contrast", "invert", "elastic",
                                 "affine"}
    assert task.default_target == ("affine",)
    x = {d: torch.cat([p.x for p in parts.values()]) for d, parts in data.items()}

    def roughness(images):  # mean absolute difference between horizontal neighbours
        return (images[..., 1:] - images[..., :-1]).abs().mean().item()

    assert x["clean"].mean() < 0.35 and x["invert"].mean() > 0.65
    assert roughness(x["noise"]) > 2 * roughness(x["clean"])
    assert roughness(x["blur"]) < 0.8 * roughness(x["clean"])
    assert x["contrast"].std(dim=(1, 2, 3)).mean() < 0.4 * x["clean"].std(dim=(1, 2, 3)).mean()
    truth = _true_digits()
    assert all(img.numpy().tobytes() in truth for img in x["clean"])
    for warped in ("elastic", "affine"):  # geometry changed, ink roughly kept
        unchanged = sum(img.numpy().tobytes() in truth for img in x[warped])
        assert unchanged == 0, warped
        ratio = x[warped].sum() / x["clean"].sum() * len(x["clean"]) / len(x[warped])
        assert 0.7 < ratio < 1.3, warped


def test_fewshot_classes_are_disjoint_and_labels_local():
    task = load_task("digits_fewshot")
    data = task.build()
    assert task.kind == "cross_task" and task.protocols == ("fewshot",)
    assert task.default_target == ("novel",) and task.num_classes == 5
    base, novel = task.domain_classes["base"], task.domain_classes["novel"]
    assert set(base).isdisjoint(novel) and set(base) | set(novel) == {str(d) for d in range(10)}
    truth = _true_digits()
    for domain, classes in task.domain_classes.items():
        for part in data[domain].values():
            assert set(part.y.tolist()) == set(range(len(classes)))
            digits = [truth[img.numpy().tobytes()] for img in part.x]
            assert [classes[int(i)] for i in part.y] == [str(d) for d in digits]


def test_paired_rows_are_the_same_instance():
    task = load_task("digits_paired")
    data = task.build()
    assert task.paired and task.kind == "cross_modality" and task.protocols == ("paired",)
    assert task.default_target == ("signal",)
    assert task.input_shapes == {"image": (1, 16, 16), "signal": (8, 16)}
    for split in ("train", "val", "test"):
        image, signal = data["image"][split], data["signal"][split]
        assert torch.equal(image.y, signal.y)
        # channel 0 is the unrotated projection: each column's mean ink
        assert torch.allclose(signal.x[:, 0], image.x[:, 0].mean(dim=1), atol=1e-6)
        # channel 4 (90 degrees) is, up to interpolation, each row's mean ink
        rows = image.x[:, 0].mean(dim=2)
        assert (signal.x[:, 4] - rows.flip(1)).abs().mean() < 0.05 or \
               (signal.x[:, 4] - rows).abs().mean() < 0.05


def test_bad_options_are_one_line_config_errors():
    from xbench.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown corruption 'fog'"):
        load_task("digits_corrupted", corruptions=["clean", "fog"])
    with pytest.raises(ConfigError, match="base_classes"):
        load_task("digits_fewshot", base_classes=list(range(10)))


def test_erm_accuracy_drops_from_source_to_rotated_target():
    record = erm_record("digits_rotated", ("75",), steps=150, batch_size=16,
                        angles=[0, 15, 30, 75])
    metrics = record["metrics"]
    assert metrics["acc_source_val"] > 0.8
    assert metrics["acc_source_val"] - metrics["acc_target"] > 0.1, metrics
