"""Kendall's tau between two suites' control-relative scores (golden: scipy, by hand)."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from tests import records_factory as rf
from xbench.analysis import agreement
from xbench.analysis.report import build, report


def _suite(tmp_path, name, accs):
    """Method -> accuracy on tasks t1 and t2 (same on both), seeds 0-2 (+-1 point)."""
    records = []
    for method, acc in accs.items():
        for task in ("t1", "t2"):
            for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
                records.append(rf.record(f"{method}-{task}-{seed}", method=method, task=task,
                                         seed=seed, protocol="dg", acc_target=acc + jitter))
    return rf.write(tmp_path / name, records)


def test_relative_scores_are_method_minus_control_averaged_over_tasks(tmp_path):
    folder = _suite(tmp_path, "a", {"erm": 0.60, "x": 0.70, "y": 0.55})
    scores = agreement.relative_scores(build(folder).analyses).set_index("method")
    assert scores.loc["x", "score"] == pytest.approx(0.10)
    assert scores.loc["y", "score"] == pytest.approx(-0.05)
    assert set(scores["tasks"]) == {2} and "erm" not in scores.index


def test_kendall_matches_scipy_and_counts_signs():
    a = pd.DataFrame({"protocol": "dg", "method": list("pqrs"), "score": [0.1, 0.2, -0.1, 0.3]})
    b = pd.DataFrame({"protocol": "dg", "method": list("pqrs"), "score": [0.2, 0.1, 0.05, 0.4]})
    result = agreement.kendall(a, b)
    expected = scipy_stats.kendalltau([0.1, 0.2, -0.1, 0.3], [0.2, 0.1, 0.05, 0.4])
    assert result["tau"] == pytest.approx(expected.statistic)
    # by hand: 6 pairs, (p,q) discordant, the other 5 concordant -> (5 - 1) / 6
    assert result["tau"] == pytest.approx(4 / 6)
    assert result["p"] == pytest.approx(expected.pvalue)
    assert result["same_sign"] == pytest.approx(0.75)  # r is below erm in a, above in b


def test_methods_in_only_one_suite_are_left_out():
    a = pd.DataFrame({"protocol": "dg", "method": ["p", "q"], "score": [0.1, 0.2]})
    b = pd.DataFrame({"protocol": ["dg", "tta"], "method": ["p", "q"], "score": [0.1, 0.2]})
    result = agreement.kendall(a, b)
    assert result["n"] == 1 and result["tau"] != result["tau"]  # NaN: nothing to correlate


def test_report_prints_tau_between_two_suites(tmp_path):
    quick = _suite(tmp_path, "quick", {"erm": 0.60, "x": 0.70, "y": 0.55, "z": 0.65})
    standard = _suite(tmp_path, "standard", {"erm": 0.60, "x": 0.72, "y": 0.50, "z": 0.61})
    text = report(standard, agree_with=[quick], selection="training_domain")
    assert "Kendall tau-b = 1.00" in text and "3 methods" in text
