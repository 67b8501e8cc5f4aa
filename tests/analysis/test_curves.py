"""Learning curves and the plateau verdict: constructed histories with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tests import records_factory as rf
from xbench.analysis import curves
from xbench.analysis.records import load_results
from xbench.analysis.report import report


def _run(tmp_path, gains_per_seed, method="erm"):
    """ERM on task t, seeds 0..n-1: source val 0.5, 0.7, 0.8, then 0.8 + gain (steps 100..400);
    the target's validation accuracy is 0.1 everywhere and must never enter the curve."""
    records = []
    for seed, gain in enumerate(gains_per_seed):
        values = [0.5, 0.7, 0.8, 0.8 + gain]
        history = [rf.point(100 * (i + 1), v, 0.1, 0.1) for i, v in enumerate(values)]
        records.append(rf.record(f"{method}-{seed}", method=method, seed=seed,
                                 protocol="dg", history=history))
    return rf.write(tmp_path / "runs", records)


def test_curve_is_the_mean_over_seeds_of_the_source_validation_accuracy(tmp_path):
    folder = _run(tmp_path, [0.01, 0.03])
    table = curves.learning_curves(load_results(folder))
    assert sorted(table["seed"].unique()) == [0, 1]
    mean = table.groupby("step")["acc"].mean()
    assert mean.to_dict() == pytest.approx({100: 0.5, 200: 0.7, 300: 0.8, 400: 0.82})


def test_gain_over_the_last_interval_is_paired_over_seeds_with_a_t_interval(tmp_path):
    gains = [0.01, 0.03, 0.02, 0.04]
    row = curves.plateau(curves.learning_curves(load_results(_run(tmp_path, gains)))).iloc[0]
    assert (row["from_step"], row["to_step"]) == (300, 400)  # the last two points
    half = scipy_stats.sem(gains) * scipy_stats.t.ppf(0.975, len(gains) - 1)
    assert row["gain"] == pytest.approx(np.mean(gains))
    assert row["ci"] == pytest.approx(half)
    assert row["rising"]  # every seed gained: the interval is above zero
    assert curves.verdict(row).startswith("still rising: +2.5 points from step 300 to 400")


def test_a_flat_curve_is_not_called_rising(tmp_path):
    row = curves.plateau(curves.learning_curves(
        load_results(_run(tmp_path, [0.01, -0.01, 0.005, -0.004])))).iloc[0]
    assert not row["rising"]
    assert curves.verdict(row).startswith("flat: ")


def test_other_methods_and_failed_runs_are_left_out(tmp_path):
    folder = _run(tmp_path, [0.0, 0.0])
    other = rf.record("coral-0", method="coral", protocol="dg",
                      history=[rf.point(100, 0.99, 0.1, 0.1)])
    failed = rf.record("erm-9", method="erm", seed=9, protocol="dg", status="failed")
    rf.write(tmp_path / "more", [other, failed])
    table = curves.learning_curves(load_results(folder, tmp_path / "more"))
    assert sorted(table["seed"].unique()) == [0, 1]
    assert table["acc"].max() == pytest.approx(0.8)


def test_report_prints_the_curves_table(tmp_path):
    text = report(_run(tmp_path, [0.01, 0.03]), curves_of="erm")
    assert "Learning curves of erm" in text
    assert "100: 50.0 · 200: 70.0 · 300: 80.0 · 400: 82.0" in text
