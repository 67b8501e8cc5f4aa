"""Statistics against hand computation: CIs, IQM, bootstrap, ranks, Friedman/Nemenyi, ties,
pairwise comparisons, Pareto front."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

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
    rng = np.random.default_rng(3)
    for n in (2, 5, 30):  # against scipy's t interval, at two confidence levels
        y = rng.normal(0.5, 0.1, n)
        for level in (0.95, 0.9):
            low, high = st.t.interval(level, n - 1, loc=y.mean(),
                                               scale=st.sem(y))
            assert stats.mean_ci(y, level)["ci"] == pytest.approx((high - low) / 2, rel=1e-9)


def test_iqm_by_hand():
    # 8 values: drop the lowest 2 and highest 2, mean of 3, 4, 5, 6
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # 5 values: trim int(0.25 * 5) = 1 each side -> mean(0.7, 0.8, 0.82)
    assert stats.iqm([0.8, 0.82, 0.84, 0.7, 0.7]) == pytest.approx((0.7 + 0.8 + 0.82) / 3)


def test_mean_of_means_over_one_task_is_the_student_t_interval():
    x = np.array([0.30, 0.442, 0.38])
    out = stats.mean_of_means_ci([x])
    assert out["mean"] == pytest.approx(x.mean())
    assert out["ci"] == pytest.approx(st.sem(x) * st.t.ppf(0.975, 2))
    assert out["df"] == pytest.approx(2)


def test_mean_of_means_welch_satterthwaite_by_hand():
    a, b = np.array([0.80, 0.82, 0.84]), np.array([0.70, 0.71, 0.72, 0.76])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    out = stats.mean_of_means_ci([a, b])
    assert out["mean"] == pytest.approx((a.mean() + b.mean()) / 2)
    assert out["df"] == pytest.approx(df)
    assert out["ci"] == pytest.approx(st.t.ppf(0.975, df) * math.sqrt(va + vb) / 2)
    assert math.isnan(stats.mean_of_means_ci([a, np.array([0.5])])["ci"])  # one seed: unknown


def test_an_interval_over_three_seeds_is_never_narrower_than_the_t_interval():
    # the old percentile bootstrap over 3 values was their [min, max] (about 75% coverage)
    x = np.array([0.300, 0.442, 0.320])
    out = stats.mean_of_means_ci([x])
    assert out["mean"] - out["ci"] < x.min() and out["mean"] + out["ci"] > x.max()


@pytest.mark.parametrize("sds", [[0.05] * 6, [0.01, 0.02, 0.05, 0.1, 0.03, 0.08]])
def test_mean_of_means_interval_covers_95_percent_by_simulation(sds):
    rng = np.random.default_rng(0)
    mus = np.linspace(0.3, 0.9, len(sds))
    replicates = 2000
    covered = 0
    for _ in range(replicates):
        out = stats.mean_of_means_ci([rng.normal(m, s, 3) for m, s in zip(mus, sds)])
        covered += abs(out["mean"] - mus.mean()) <= out["ci"]
    assert 0.93 <= covered / replicates <= 0.98


def test_single_cell_t_interval_covers_95_percent_by_simulation():
    rng = np.random.default_rng(1)
    covered = sum(abs(out["mean"] - 0.5) <= out["ci"] for out in
                  (stats.mean_ci(rng.normal(0.5, 0.1, 3)) for _ in range(2000)))
    assert 0.935 <= covered / 2000 <= 0.965


def test_iqm_uses_chance_normalised_scores_from_ten_tasks_on():
    assert stats.normalised(np.array([0.5, 1.0, 0.75]), 0.5).tolist() == [0.0, 1.0, 0.5]
    runs = _runs([("A", f"t{i}", s, 0.5 + 0.01 * i + 0.001 * s) for i in range(10)
                  for s in range(3)])
    chance = {f"t{i}": 0.1 for i in range(10)}
    agg = stats.aggregate(stats.cells(runs), runs, chance).set_index("method")
    scores = [(0.5 + 0.01 * i + 0.001 * s - 0.1) / 0.9 for i in range(10) for s in range(3)]
    assert agg.loc["A", "iqm"] == pytest.approx(stats.iqm(scores))
    assert agg.loc["A", "iqm_lo"] <= agg.loc["A", "iqm"] <= agg.loc["A", "iqm_hi"]
    nine = runs[runs["task"] != "t9"]
    assert math.isnan(stats.aggregate(stats.cells(nine), nine, chance)
                      .set_index("method").loc["A", "iqm"])


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


def test_signed_rank_test_is_exact_against_scipy_and_by_hand():
    # 4 pairs, all differences positive: exact two-sided p = 2 / 2^4, the minimum for n = 4
    out = stats.signed_rank_test([0.1, 0.05, 0.3, 0.05 + 1e-9])
    assert out["pvalue"] == pytest.approx(2 / 16) and out["min_p"] == pytest.approx(2 / 16)
    d = [0.12, -0.05, 0.30, 0.07, 0.21, -0.02, 0.15]
    assert stats.signed_rank_test(d)["pvalue"] == pytest.approx(
        st.wilcoxon(d, method="exact").pvalue)
    # zeros are dropped before ranking (Wilcoxon's convention): n = 3 non-zero
    out = stats.signed_rank_test([0.1, 0.0, 0.2, 0.3])
    assert out["n"] == 3 and out["pvalue"] == pytest.approx(0.25)
    assert stats.signed_rank_test([0.0, 0.0])["pvalue"] == 1.0


def test_signed_rank_test_with_ties_is_an_exact_enumeration():
    # |d| = 1, 1, 2, 3 (a tie): mid-ranks 1.5, 1.5, 3, 4. T+ for d = +1, -1, +2, +3 is
    # 1.5 + 3 + 4 = 8.5; E[T+] = 5. Of the 16 sign patterns, |T+ - 5| >= 3.5 for
    # T+ in {0, 1.5 (x2), 8.5 (x2), 10}: 6 / 16.
    out = stats.signed_rank_test([1.0, -1.0, 2.0, 3.0])
    assert out["pvalue"] == pytest.approx(6 / 16)
    assert out["method"].startswith("exact")


def test_signed_rank_test_false_positive_rate_is_at_most_alpha_by_simulation():
    rng = np.random.default_rng(2)
    rejections = sum(stats.signed_rank_test(rng.normal(0, 1, 10))["pvalue"] <= 0.05
                     for _ in range(2000))
    assert rejections / 2000 <= 0.06  # exact test: at most alpha (conservative, discrete)


def test_holm_against_the_step_down_rule_by_hand():
    # sorted p: .01 (x3), .03 (x2), .04 (x1) -> .03, .06, .06 (monotone)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([0.01, math.nan])[1])


def test_iman_davenport_closed_form():
    # Demsar (2006), section 3.2.2: chi2_F = 9.28, k = 4, N = 14 -> F = 13 * 9.28 / (42 -
    # 9.28) = 3.69 on (3, 39) degrees of freedom
    out = stats.iman_davenport(9.28, 4, 14)
    assert out["f"] == pytest.approx(13 * 9.28 / (42 - 9.28))
    assert out["f_df"] == (3, 39)
    assert out["f_pvalue"] == pytest.approx(st.f.sf(out["f"], 3, 39))


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
    assert math.isnan(agg.loc["A", "iqm"])  # 2 tasks: no IQM


def test_few_shot_interval_is_over_seeds_with_episodes_averaged_within_each():
    runs = _runs([("A", "fs", 0, 0.6), ("A", "fs", 1, 0.6), ("A", "fs", 2, 0.9)])
    runs["episodes"] = [{"hash": "h", "acc": [0.4, 0.6, 0.8]},
                        {"hash": "h", "acc": [0.6, 0.6, 0.6]},
                        {"hash": "h", "acc": [0.9, 0.9, 0.9]}]
    (row,) = stats.episodes(runs).itertuples()
    assert row.mean == pytest.approx(0.7) and row.seeds == 3 and row.episodes == 3
    assert row.ci == pytest.approx(st.sem([0.6, 0.6, 0.9]) * st.t.ppf(0.975, 2))
    # within seed: the 95% half-width over seed 0's episodes (the others are constant: 0)
    assert row.within == pytest.approx(st.sem([0.4, 0.6, 0.8]) * st.t.ppf(0.975, 2) / 3)


def test_min_detectable_difference_against_the_normal_closed_form_for_many_seeds():
    # large n: the noncentral t tends to the normal, MDD -> (z_{1-a/2} + z_{power}) sd / sqrt n
    sd, n = 0.04, 400
    closed = (st.norm.ppf(0.975) + st.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert stats.min_detectable_difference(sd, n) == pytest.approx(closed, rel=0.01)
    assert math.isnan(stats.min_detectable_difference(0.0, 5))
    assert math.isnan(stats.min_detectable_difference(0.04, 1))


def test_min_detectable_difference_has_80_percent_power_by_simulation():
    # a planted difference equal to the MDD is detected in ~80% of replicates
    rng = np.random.default_rng(3)
    sd, n = 0.03, 5
    mdd = stats.min_detectable_difference(sd, n)
    hits = sum(st.ttest_1samp(rng.normal(mdd, sd, n), 0).pvalue <= 0.05 for _ in range(3000))
    assert 0.77 <= hits / 3000 <= 0.83
    # and the seeds needed for that difference are the seeds we had
    assert stats.seeds_needed(mdd, sd) == n


def test_difference_sd_pools_the_variance_of_paired_differences():
    runs = _runs([("erm", "t", 0, 0.50), ("erm", "t", 1, 0.60), ("erm", "t", 2, 0.55),
                  ("A", "t", 0, 0.52), ("A", "t", 1, 0.61), ("A", "t", 2, 0.60),
                  ("B", "t", 0, 0.40), ("B", "t", 1, 0.60), ("B", "t", 2, 0.50)])
    va = np.var([0.02, 0.01, 0.05], ddof=1)
    vb = np.var([-0.10, 0.0, -0.05], ddof=1)
    sd, n = stats.difference_sd(runs, "erm", "t")
    assert sd == pytest.approx(math.sqrt((va + vb) / 2)) and n == 3


# -- paired comparisons on the same test items ----------------------------------------------

@pytest.mark.parametrize("b, c", [(7, 2), (2, 7), (0, 5), (13, 13), (40, 25), (0, 0), (1, 0)])
def test_mcnemar_exact_is_statsmodels_and_mid_p_is_the_closed_form(b, c):
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    got = stats.mcnemar(b, c)
    assert got["p"] == pytest.approx(sm_mcnemar([[50, b], [c, 40]], exact=True).pvalue)
    n, k = b + c, min(b, c)
    if n and b != c:  # Fagerland et al. (2013): 2 * [P(X <= k) - P(X = k) / 2]
        expected = 2 * (st.binom.cdf(k, n, 0.5) - 0.5 * st.binom.pmf(k, n, 0.5))
        assert got["mid_p"] == pytest.approx(expected)
    assert got["mid_p"] <= got["p"]


def test_combining_mcnemar_over_seeds_rejects_on_seed_noise_the_seed_level_test_does_not():
    """Why the report tests over seeds, not over items pooled across seeds: two methods
    with the same expected accuracy but 1.5 points of training noise per trained model
    disagree on ~10% of 2,000 items; pooling McNemar over 5 seeds treats the trained
    models as fixed and rejects far more often than alpha, while the paired test over
    the seeds (the unit of replication) holds its size."""
    rng = np.random.default_rng(5)
    n_items, seeds, reps, pooled, seed_level = 2000, 5, 400, 0, 0
    for _ in range(reps):
        b_total = c_total = 0
        diffs = []
        for _ in range(seeds):
            acc = 0.75 + rng.normal(0, 0.015, 2)      # each trained model's true accuracy
            item = rng.random(n_items)
            right = np.stack([item < a for a in acc])
            flip = rng.random(n_items) < 0.05         # some items both get right/wrong by chance
            right[1, flip] = rng.random(flip.sum()) < acc[1]
            b_total += int(np.sum(right[0] & ~right[1]))
            c_total += int(np.sum(~right[0] & right[1]))
            diffs.append(right[0].mean() - right[1].mean())
        pooled += stats.mcnemar(b_total, c_total)["mid_p"] < 0.05
        seed_level += st.ttest_1samp(diffs, 0.0).pvalue < 0.05
    assert pooled / reps > 0.3
    assert seed_level / reps == pytest.approx(0.05, abs=0.035)


def test_holm_equals_statsmodels_multipletests():
    """stats.holm writes out statsmodels' Holm arithmetic (without its gc.collect per call)."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 17, 60):
        p = rng.uniform(0, 0.2, n)
        p[: n // 3] = p[0]  # ties
        assert stats.holm(p) == multipletests(p, method="holm")[1].tolist()


# -- tied with the best ----------------------------------------------------------------------

def _column(rng, means, seeds, seed_sd=0.03, own_sd=0.01):
    """Per-seed accuracies of methods on one task: a shared seed effect (the data split)
    plus each run's own noise."""
    effect = rng.normal(0, seed_sd, seeds)
    return {m: pd.Series(mu + effect + rng.normal(0, own_sd, seeds), index=range(seeds))
            for m, mu in means.items()}


def test_a_best_method_is_marked_with_95_percent_confidence_whatever_the_noise():
    """Ten equal methods, so each is a best one: each is unmarked in at most alpha of the
    replicates, although noise puts one of them on top every time."""
    rng = np.random.default_rng(21)
    reps = 400
    unmarked = {f"m{i}": 0 for i in range(10)}
    for _ in range(reps):
        tied = stats.tied_with_best(_column(rng, {m: 0.7 for m in unmarked}, 5))
        for m, t in tied.items():
            unmarked[m] += not t
    rates = np.array(list(unmarked.values())) / reps
    assert rates.mean() <= 0.06 and rates.max() <= 0.09  # 400 replicates: sd ~1.1 points
    # and with a real best: it keeps its mark
    kept = sum(stats.tied_with_best(_column(rng, {"best": 0.75, "x": 0.70, "y": 0.70}, 5))["best"]
               for _ in range(200))
    assert kept / 200 >= 0.95


def test_tied_with_best_sees_a_three_point_gap_with_five_paired_seeds():
    """Five seeds, 1-point run noise on a shared seed effect of 3 points: a method 3 points
    below the best is told apart in >= 80% of replicates; Welch without pairing cannot."""
    rng = np.random.default_rng(22)
    reps, seen, seen_unpaired = 300, 0, 0
    for _ in range(reps):
        column = _column(rng, {"best": 0.73, "a": 0.72, "worse": 0.70}, 5)
        seen += not stats.tied_with_best(column)["worse"]
        shuffled = {m: pd.Series(v.to_numpy(), index=range(i * 10, i * 10 + 5))
                    for i, (m, v) in enumerate(column.items())}
        seen_unpaired += not stats.tied_with_best(shuffled)["worse"]
    assert seen / reps >= 0.8
    assert seen_unpaired / reps < 0.5


def test_tied_with_best_cannot_separate_what_it_cannot_test():
    one_seed = {"a": pd.Series([0.9]), "b": pd.Series([0.1])}
    assert stats.tied_with_best(one_seed) == {"a": True, "b": True}
    a, b, c = [0.80, 0.82, 0.81], [0.70, 0.73, 0.70], [0.79, 0.815, 0.80]
    p_ab = st.ttest_rel(a, b, alternative="greater").pvalue      # 0.0046
    p_cb = st.ttest_rel(c, b, alternative="greater").pvalue
    tied = stats.tied_with_best({"a": pd.Series(a), "b": pd.Series(b), "c": pd.Series(c)})
    # three methods: each "is it the best" test spends 0.05 / 2 per comparison
    assert tied["b"] == (not min(p_ab, p_cb) <= 0.025) and tied["a"]


def test_item_variance_is_the_variance_of_the_difference_over_resampled_items():
    """Two fixed models disagreeing on 12% of items (8% / 4% each way): resampling n items,
    the accuracy difference varies as the paired multinomial formula says."""
    rng = np.random.default_rng(4)
    n, pb, pc = 2000, 0.08, 0.04
    diffs = []
    for _ in range(4000):
        u = rng.random(n)
        diffs.append(((u < pb).sum() - ((u >= pb) & (u < pb + pc)).sum()) / n)
    expected = stats.item_variance(round(pb * n), round(pc * n), n)
    assert np.var(diffs) == pytest.approx(expected, rel=0.06)
    assert expected == pytest.approx(((pb + pc) - (pb - pc) ** 2) / n)


def test_items_needed_reaches_the_difference_and_no_fewer_items_do():
    from statsmodels.stats.power import TTestPower

    sd, var_item, seeds, items = 0.03, 0.0006, 5, 1000   # item sampling: 2/3 of the variance
    need = stats.items_needed(0.04, sd, var_item, seeds, items)
    effect = TTestPower().solve_power(nobs=seeds, alpha=0.05, power=0.8, effect_size=None)

    def mdd(k: float) -> float:
        return effect * math.sqrt(sd ** 2 - var_item * (1 - 1 / k))

    assert mdd(need / items) <= 0.04 < mdd((need - 1) / items)
    # training noise alone too large: no number of items helps
    assert stats.items_needed(0.01, sd, var_item, seeds, items) == math.inf
    # already detectable: the items we have
    assert stats.items_needed(0.2, sd, var_item, seeds, items) == items


def test_one_sided_t_p_values_equal_scipys():
    rng = np.random.default_rng(23)
    for n_a, n_b in ((2, 2), (5, 5), (5, 9), (48, 30)):
        a, b = rng.normal(0.7, 0.02, n_a), rng.normal(0.69, 0.05, n_b)
        expected = st.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
        assert stats.p_greater_welch(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-15)
        d = a - rng.normal(0.69, 0.02, n_a)
        expected = st.ttest_1samp(d, 0.0, alternative="greater").pvalue
        assert stats.p_greater_paired(d) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert math.isnan(stats.p_greater_paired(np.array([0.1, 0.1, 0.1])))
    assert math.isnan(stats.p_greater_welch(np.array([0.5, 0.5]), np.array([0.4, 0.4])))


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    rng = np.random.default_rng(24)
    a = {"t1": rng.normal(0.7, 0.02, 7).round(2), "t2": np.array([0.5, 0.5, 0.6])}
    b = {"t1": rng.normal(0.69, 0.02, 5).round(2), "t2": np.array([0.5, 0.4])}
    expected = np.mean([st.mannwhitneyu(a[t], b[t]).statistic / (len(a[t]) * len(b[t]))
                        for t in ("t1", "t2")])
    assert stats.probability_of_improvement(a, b) == pytest.approx(expected, abs=1e-12)
    # t2 by hand: pairs (a > b) 4, ties 1 (0.5 = 0.5 twice counts 2 x 1/2) -> (4 + 1) / 6
    assert stats.probability_of_improvement({"t2": a["t2"]}, {"t2": b["t2"]}) == \
        pytest.approx(5 / 6)


def test_all_pairs_paired_p_equals_the_pairwise_function():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 48):
        scores = rng.normal(0.7, 0.02, size=(6, n)).round(3)  # rounding makes ties
        scores[2] = scores[1]  # a pair without variance in the difference: NaN
        got = stats._p_greater_paired_all(scores)
        for k in range(6):
            for m in range(6):
                if k != m:
                    expected = stats.p_greater_paired(scores[k] - scores[m])
                    assert (math.isnan(got[k, m]) and math.isnan(expected)) or \
                        got[k, m] == expected, (n, k, m)
