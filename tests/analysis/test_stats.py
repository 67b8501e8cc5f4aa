"""Statistics against hand computation: CIs, IQM, bootstrap, ranks, Friedman/Nemenyi, ties,
pairwise comparisons, Pareto front."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xbench.analysis import stats

# Student t quantile t_{0.975, 3} and Nemenyi q_{0.05} for k = 3 and k = 4 (Demsar 2006,
# Table 5), from printed tables.
T975_3 = 3.1824
Q05 = {3: 2.343, 4: 2.569}


def test_mean_ci_student_t_ddof_1():
    x = [0.60, 0.70, 0.80, 0.90]
    sd = math.sqrt(((-.15) ** 2 + (-.05) ** 2 + .05 ** 2 + .15 ** 2) / 3)  # ddof = 1
    out = stats.mean_ci(x)
    assert out["mean"] == pytest.approx(0.75) and out["n"] == 4
    assert out["std"] == pytest.approx(sd)
    assert out["ci"] == pytest.approx(T975_3 * sd / 2, rel=1e-4)


def test_iqm_by_hand():
    # 8 values: drop the lowest 2 and highest 2, mean of 3, 4, 5, 6
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # 5 values: trim int(0.25 * 5) = 1 each side -> mean(0.7, 0.8, 0.82)
    assert stats.iqm([0.8, 0.82, 0.84, 0.7, 0.7]) == pytest.approx((0.7 + 0.8 + 0.82) / 3)


def test_stratified_bootstrap_resamples_within_tasks_and_is_reproducible():
    # task A all 0, task B all 1: a stratified resample always keeps 3 zeros and 3 ones,
    # so the mean over tasks is 0.5 in every resample (pooled resampling would vary)
    per_task = [np.zeros(3), np.ones(3)]
    point, lo, hi = stats.stratified_bootstrap(per_task, "mean")
    assert (point, lo, hi) == (0.5, 0.5, 0.5)
    noisy = [np.array([0.1, 0.5, 0.9, 0.3]), np.array([0.6, 0.7, 0.2, 0.8])]
    first = stats.stratified_bootstrap(noisy, "iqm")
    assert first == stats.stratified_bootstrap(noisy, "iqm")  # fixed RNG seed
    assert first[1] <= first[0] <= first[2]
    assert first[0] == pytest.approx(stats.iqm(np.concatenate(noisy)))
    assert math.isnan(stats.stratified_bootstrap([np.array([0.5]), np.ones(3)], "iqm")[1])


def test_average_ranks_with_a_tie_by_hand():
    table = pd.DataFrame({"t1": [0.9, 0.8, 0.7], "t2": [0.6, 0.6, 0.9], "t3": [0.5, 0.7, 0.6]},
                         index=["A", "B", "C"])
    # t1: A1 B2 C3; t2: C1, A and B tie for 2-3 -> 2.5 each; t3: B1 C2 A3
    ranks = stats.average_ranks(table)
    assert ranks["A"] == pytest.approx((1 + 2.5 + 3) / 3)
    assert ranks["B"] == pytest.approx((2 + 2.5 + 1) / 3)
    assert ranks["C"] == pytest.approx((3 + 1 + 2) / 3)


def test_friedman_statistic_and_nemenyi_cd_by_hand():
    # 3 methods x 4 tasks without ties; ranks per task (1 = best)
    table = pd.DataFrame({"t1": [0.9, 0.8, 0.7], "t2": [0.8, 0.9, 0.6],
                          "t3": [0.7, 0.6, 0.5], "t4": [0.95, 0.85, 0.75]}, index=["A", "B", "C"])
    k, n = 3, 4
    rank_sums = {"A": 1 + 2 + 1 + 1, "B": 2 + 1 + 2 + 2, "C": 3 + 3 + 3 + 3}
    chi2 = 12 / (n * k * (k + 1)) * sum(r * r for r in rank_sums.values()) - 3 * n * (k + 1)
    out = stats.friedman_nemenyi(table)
    assert out["statistic"] == pytest.approx(chi2)        # = 6.5
    assert out["pvalue"] == pytest.approx(math.exp(-chi2 / 2))  # chi2 with 2 df: exp(-x/2)
    assert out["cd"] == pytest.approx(Q05[3] * math.sqrt(k * (k + 1) / (6 * n)), rel=1e-3)
    four = pd.concat([table, pd.DataFrame({c: [0.1] for c in table}, index=["D"])])
    assert stats.friedman_nemenyi(four)["cd"] == pytest.approx(
        Q05[4] * math.sqrt(4 * 5 / (6 * 4)), rel=1e-3)
    assert math.isnan(stats.friedman_nemenyi(table.iloc[:2])["cd"])  # fewer than 3 methods


def test_top_group_marks_every_interval_overlapping_the_best():
    means = pd.Series([0.80, 0.76, 0.70, 0.79])
    halves = pd.Series([0.02, 0.03, 0.01, float("nan")])
    # best [0.78, 0.82]; 0.76 + 0.03 = 0.79 >= 0.78 tied; 0.71 < 0.78 not; 0.79 (n=1) inside
    assert stats.top_group(means, halves).tolist() == [True, True, False, True]


def test_probability_of_improvement_and_paired_tests_by_hand():
    # pairs (a, b): a>b counts 1, tie 0.5: a=1: (1 vs 0) + 0.5 -> 1.5; a=2: 2.5; a=3: 3 -> 7/9
    a = {"t": np.array([1.0, 2.0, 3.0])}
    b = {"t": np.array([1.0, 2.0, 0.0])}
    assert stats.probability_of_improvement(a, b) == pytest.approx(7 / 9)
    # two tasks: the mean of per-task probabilities, 1 and 0
    assert stats.probability_of_improvement({"x": np.array([1.0]), "y": np.array([0.0])},
                                            {"x": np.array([0.0]), "y": np.array([1.0])}) == 0.5
    # 4 pairs, all differences positive: exact two-sided p = 2 / 2^4
    pairs = [(0.9, 0.8), (0.8, 0.75), (0.7, 0.4), (0.6, 0.55)]
    assert stats.paired_wilcoxon(pairs) == pytest.approx(2 / 16)
    assert stats.paired_wilcoxon([(0.5, 0.5), (0.6, 0.6)]) == 1.0
    assert math.isnan(stats.paired_wilcoxon([(0.5, 0.4)]))


def test_pareto_front_on_a_hand_example():
    #            A    B    C    D    E (ties A on both)   F (missing)
    accuracy = [0.9, 0.8, 0.7, 0.85, 0.9, float("nan")]
    speed = [100, 300, 200, 100, 100, 1000]
    # C is dominated by B (more accurate and faster); D by A; A and E are equal: neither
    # dominates the other; F has no accuracy
    assert stats.pareto_front(accuracy, speed) == [True, True, False, False, True, False]


def _runs(rows):
    return pd.DataFrame([{"method": m, "task": t, "seed": s, "acc_target": acc,
                          "acc_target_worst": acc - 0.1, "oracle": m.endswith("oracle"),
                          "episodes": None} for m, t, s, acc in rows])


def test_cells_aggregate_ties_and_oracle_rows():
    runs = _runs([("A", "t1", 0, 0.80), ("A", "t1", 1, 0.84), ("A", "t2", 0, 0.60),
                  ("A", "t2", 1, 0.62), ("B", "t1", 0, 0.81), ("B", "t1", 1, 0.83),
                  ("B", "t2", 0, 0.40), ("B", "t2", 1, 0.44), ("C", "t1", 0, 0.5),
                  ("erm_oracle", "t1", 0, 0.99), ("erm_oracle", "t1", 1, 0.99),
                  ("erm_oracle", "t2", 0, 0.99), ("erm_oracle", "t2", 1, 0.99)])
    cells = stats.cells(runs, incomplete={("C", "t2"): "seed 0: failed"})
    cell = cells.set_index(["method", "task"])
    # t1: A 0.82 ± 12.706 * 0.02828 / sqrt(2) = 0.254, B 0.82 ± 0.127: tied, both top
    assert cell.loc[("A", "t1"), "ci"] == pytest.approx(12.7062 * math.sqrt(0.0008) / math.sqrt(2),
                                                        rel=1e-4)
    assert cell.loc[("A", "t1"), "top"] and cell.loc[("B", "t1"), "top"]
    assert not cell.loc[("erm_oracle", "t1"), "top"]   # an oracle is never ranked
    assert cell.loc[("C", "t2"), "status"] == "incomplete"
    agg = stats.aggregate(cells, runs).set_index("method")
    assert agg.loc["A", "mean"] == pytest.approx((0.82 + 0.61) / 2)
    assert agg.loc["B", "mean"] == pytest.approx((0.82 + 0.42) / 2)
    assert math.isnan(agg.loc["C", "mean"]) and agg.loc["C", "tasks"] == 1  # not over fewer
    # ranks among A and B only: t1 tie (1.5 each), t2 A first
    assert agg.loc["A", "rank"] == pytest.approx((1.5 + 1) / 2)
    assert agg.loc["B", "rank"] == pytest.approx((1.5 + 2) / 2)
    assert math.isnan(agg.loc["erm_oracle", "rank"]) and not agg.loc["erm_oracle", "top"]
    assert agg.loc["A", "worst"] == pytest.approx(0.61)
    assert agg.loc["A", "iqm"] == pytest.approx(stats.iqm([0.80, 0.84, 0.60, 0.62]))


def test_few_shot_episodes_are_averaged_over_seeds_then_summarised():
    runs = _runs([("A", "fs", 0, 0.5), ("A", "fs", 1, 0.5)])
    runs["episodes"] = [{"hash": "h", "acc": [0.4, 0.6, 0.8]},
                        {"hash": "h", "acc": [0.6, 0.6, 0.6]}]
    (row,) = stats.episodes(runs).itertuples()
    # per episode: 0.5, 0.6, 0.7 -> mean 0.6, sd 0.1, CI 4.3027 * 0.1 / sqrt(3)
    assert row.mean == pytest.approx(0.6) and row.episodes == 3 and row.seeds == 2
    assert row.ci == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    runs.at[1, "episodes"] = {"hash": "other", "acc": [0.6, 0.6, 0.6]}
    assert stats.episodes(runs).iloc[0]["problem"] == "seeds were scored on different episode lists"
