"""Report: golden tables computed by hand from committed fixture records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from xbench.report import accuracy_table, cost_table, load_results, mean_ci, report

FIXTURE = Path(__file__).parent / "fixtures" / "report"

# Student t quantiles t_{0.975, df}, from printed tables.
T975 = {1: 12.7062, 2: 4.3027}


def test_mean_ci_matches_the_student_t_formula_with_ddof_1():
    values = [0.80, 0.82, 0.84]
    # sample sd with ddof=1: sqrt(((-.02)^2 + 0 + .02^2) / 2) = 0.02
    expected_half = T975[2] * 0.02 / math.sqrt(3)
    ci = mean_ci(values)
    assert ci["mean"] == pytest.approx(0.82)
    assert ci["std"] == pytest.approx(0.02)
    assert ci["n"] == 3
    assert ci["ci"] == pytest.approx(expected_half, rel=1e-4)
    assert math.isnan(mean_ci([0.5])["ci"]) and mean_ci([0.5])["n"] == 1


def test_accuracy_table_golden_markdown():
    df = load_results(FIXTURE)
    with pytest.warns(UserWarning, match="beta: no result for t2"):
        table = accuracy_table(df, "md")
    # alpha/t1: mean 82.0, half-width 4.3027 * 2.0 / sqrt(3) = 4.97 -> 5.0, n = 3
    # alpha/t2: 70.0, sd 0 -> ± 0.0, n = 2; average (82.0 + 70.0) / 2 = 76.0
    # beta/t1: mean 88.0, sd 2.828 -> 12.7062 * 2.828 / sqrt(2) = 25.41 -> 25.4, n = 2
    # beta/t2: only a failed run -> missing, and no average over fewer tasks
    assert "| alpha    | 82.0 ± 5.0 (3)  | 70.0 ± 0.0 (2) | 76.0      |" in table
    assert "| beta     | 88.0 ± 25.4 (2) | —              | —         |" in table
    assert table.index("| alpha") < table.index("| beta")
    assert "model selection: training_domain" in table


def test_selection_last_reads_the_last_step_scores():
    df = load_results(FIXTURE)
    with pytest.warns(UserWarning):
        table = accuracy_table(df, "md", selection="last")
    assert "| alpha    | 50.0 ± 0.0 (3) | 60.0 ± 0.0 (2) | 55.0      |" in table
    assert "model selection: last" in table
    with pytest.warns(UserWarning):
        oracle = accuracy_table(df, "md", selection="oracle")
    assert "ORACLE" in oracle


def test_cost_table_medians_per_method_and_device():
    table = cost_table(load_results(FIXTURE), "md")
    # alpha: train samples/s over 5 jobs 100..500 -> median 300; peak mem 10..50 -> 30
    assert "| alpha    | cpu: Test CPU | 300               | 3,000             | 1.00         " \
           "| 30.00          | 1,000    | 5      |" in table
    # beta: two ok jobs (the failed one is left out): median(1000, 3000) = 2000
    assert "| beta     | cpu: Test CPU | 2,000             | 20,000            |" in table


def test_csv_is_long_form_with_numbers():
    csv = accuracy_table(load_results(FIXTURE), "csv")
    header, *rows = csv.strip().splitlines()
    assert header == "method,task,selection,mean,std,n,ci"
    assert any(r.startswith("alpha,t1,training_domain,0.82") for r in rows)


def test_full_report_lists_failed_jobs_and_latex_renders():
    with pytest.warns(UserWarning):
        text = report(FIXTURE, fmt="md")
    assert "Failed jobs" in text and "beta on t2 (seed 0): RuntimeError: boom" in text
    with pytest.warns(UserWarning):
        latex = report(FIXTURE, fmt="latex")
    assert "\\toprule" in latex and "82.0 ± 5.0 (3)" in latex
