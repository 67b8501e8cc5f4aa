"""gate_stats: golden values against scipy/statsmodels and closed forms, and power by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xbench.analysis import gate_stats as gs

sm_power = pytest.importorskip("statsmodels.stats.power")


# -- tests against scipy ------------------------------------------------------------------------

def test_paired_and_welch_p_values_are_scipys():
    rng = np.random.default_rng(0)
    base = {s: float(v) for s, v in enumerate(0.8 + rng.normal(0, 0.02, 8))}
    new = {s: base[s] - 0.01 + float(rng.normal(0, 0.01)) for s in base}
    ev = gs.evidence(base, new)
    assert ev.paired and ev.df == 7
    b, n = np.array(list(base.values())), np.array(list(new.values()))
    assert gs.p_worse(ev) == pytest.approx(stats.ttest_rel(n, b, alternative="less").pvalue)
    assert gs.p_better(ev) == pytest.approx(stats.ttest_rel(n, b, alternative="greater").pvalue)
    # non-inferiority with margin 0.02: H1 mean(n - b) > -0.02
    assert gs.p_noninferior(ev, 0.02) == pytest.approx(
        stats.ttest_rel(n + 0.02, b, alternative="greater").pvalue)

    other = 0.79 + rng.normal(0, 0.03, 6)
    ev = gs.evidence(list(b), list(other))
    assert not ev.paired
    welch = stats.ttest_ind(other, b, equal_var=False, alternative="less")
    assert gs.p_worse(ev) == pytest.approx(welch.pvalue)
    assert ev.df == pytest.approx(welch.df)


def test_lower_is_better_flips_the_sign_and_scale_makes_it_relative():
    ev = gs.evidence([100.0, 102.0, 98.0], [110.0, 113.0, 108.0], higher_is_better=False,
                     scale=100.0)
    assert ev.mean == pytest.approx(-0.1033, abs=1e-3)


def test_zero_variance_is_not_testable():
    ev = gs.evidence({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.45, 1: 0.55, 2: 0.65})
    assert not ev.testable and math.isnan(gs.p_worse(ev))
    assert gs.minimum_detectable_drop(ev.se, ev.df, 0.05) in (0.0, math.inf)
    assert not gs.evidence([0.5], [0.4, 0.3]).testable


# -- power against statsmodels ------------------------------------------------------------------

@pytest.mark.parametrize("n, alpha, power", [(5, 0.05, 0.8), (10, 0.05, 0.8), (30, 0.05, 0.8),
                                             (10, 0.01, 0.9), (20, 0.002, 0.8)])
def test_detectable_drop_matches_statsmodels_one_sample_t(n, alpha, power):
    sd = 0.03
    expected = sm_power.TTestPower().solve_power(nobs=n, alpha=alpha, power=power,
                                                 alternative="larger") * sd
    got = gs.minimum_detectable_drop(sd / math.sqrt(n), n - 1, alpha, power)
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("n", [5, 10, 30])
def test_detectable_drop_matches_statsmodels_two_sample_t(n):
    # Welch with equal n and variances has 2n - 2 df and se = sd * sqrt(2 / n)
    sd = 0.025
    expected = sm_power.TTestIndPower().solve_power(nobs1=n, ratio=1.0, alpha=0.05, power=0.8,
                                                    alternative="larger") * sd
    got = gs.minimum_detectable_drop(sd * math.sqrt(2 / n), 2 * n - 2, 0.05)
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("sd, delta", [(0.03, 0.02), (0.033, 0.02), (0.01, 0.005)])
def test_seeds_needed_matches_statsmodels(sd, delta):
    nobs = sm_power.TTestPower().solve_power(effect_size=delta / sd, alpha=0.05, power=0.8,
                                             alternative="larger")
    assert gs.seeds_needed(sd, delta, 0.05) == math.ceil(nobs)
    nobs1 = sm_power.TTestIndPower().solve_power(effect_size=delta / sd, alpha=0.05, power=0.8,
                                                 ratio=1.0, alternative="larger")
    assert gs.seeds_needed(sd, delta, 0.05, paired=False) == math.ceil(nobs1)


def test_detectable_drop_has_80_percent_power_by_simulation():
    rng = np.random.default_rng(1)
    n, sd, alpha = 12, 0.03, 0.05
    drop = gs.minimum_detectable_drop(sd / math.sqrt(n), n - 1, alpha)
    d = rng.normal(-drop, sd, size=(20000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(stats.t.cdf(t, n - 1) < alpha)
    assert rejected == pytest.approx(0.8, abs=0.015)


# -- timing -------------------------------------------------------------------------------------

def test_mann_whitney_floor_and_runs_needed():
    assert gs.min_mannwhitney_p(6, 6) == pytest.approx(1 / 924)
    assert gs.min_mannwhitney_p(5, 5) == pytest.approx(1 / 252)
    assert gs.runs_needed_for(0.002) == 6   # 1/252 > 0.002 > 1/924
    assert gs.runs_needed_for(0.05) == 4    # 1/20 = 0.05 is not < 0.05; 1/70 is
    base, new = [10.0, 11, 12, 13, 14, 15], [1.0, 2, 3, 4, 5, 6]
    p, change = gs.timing_test(base, new, 0.0, higher_is_better=True)
    assert p == pytest.approx(stats.mannwhitneyu(new, base, alternative="less",
                                                 method="exact").pvalue)
    assert p == pytest.approx(1 / 924) and change == pytest.approx(3.5 / 12.5 - 1)


def test_one_statistic_per_run_and_spread():
    assert gs.run_timing([3.0, 1.0, 2.0, 100.0]) == 2.5
    assert gs.timing_spread([1.0, 1.0]) == 0.0
    values = [100.0, 110.0, 90.0, 105.0, 95.0]
    mad = np.median(np.abs(np.array(values) - 100.0))
    assert gs.timing_spread(values) == pytest.approx(1.4826 * mad / 100.0)


def test_per_item_hook():
    a = {"metrics": {"item_correct": [1, 1, 0, 0, 1]}}
    b = {"metrics": {"item_correct": [1, 0, 1, 0, 1]}}
    assert gs.paired_items(a, b) == (1, 1)
    assert gs.paired_items(a, {"metrics": {}}) is None
