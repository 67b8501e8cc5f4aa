"""Statistics of the regression gate: seed-level tests, their power, and timing by runs.

The unit of replication is the trained model (one run = one seed): every test
here takes **one value per run**, never the samples inside a run (the test
items of one model, or the timing blocks of one run, are not independent
replicates of the code under test).

Accuracy (and memory): a seed-level t-test
------------------------------------------
``evidence(base, new)`` summarises NEW - BASE in the metric's "goodness"
direction (positive = better): paired over seeds when both sides ran exactly
the same seeds (the differences ``d_s = new_s - base_s``; mean, standard error
``sd(d) / sqrt(n)``, ``n - 1`` degrees of freedom), otherwise Welch's
unequal-variance comparison (Welch-Satterthwaite degrees of freedom). From it:

* ``p_worse`` -- one-sided t-test of H0 "NEW is no worse" (mean >= 0) against
  H1 "NEW is worse" (mean < 0);
* ``p_noninferior`` -- the one-sided non-inferiority test with margin
  ``delta`` (the metric's threshold): H0 "NEW is worse by delta or more"
  (mean <= -delta) against H1 "NEW is non-inferior" (mean > -delta);
* ``minimum_detectable_drop(se, df, alpha, power)`` -- the smallest true drop
  the level-``alpha`` test of ``p_worse`` detects with probability ``power``
  (default 0.8), exactly, from the noncentral t distribution (the same number
  ``statsmodels.stats.power.TTestPower`` gives in units of the standard
  deviation). With ``delta`` it is also the smallest margin for which an
  unchanged NEW is shown non-inferior with that probability.
* ``seeds_needed(...)`` -- the smallest number of seeds per side at which that
  detectable drop is at most ``delta``, at the measured standard deviation.

The verdict (:func:`xbench.analysis.compare.assess`) is: **regression** when NEW
is significantly worse (``p_worse < alpha``) and not shown within the
threshold (``p_noninferior >= alpha``); **underpowered (needs N seeds)** when
it is not a regression, not shown non-inferior, and the detectable drop is
larger than the threshold. A zero standard error is never a test (no p ~ 0
from two seeds that happen to lose the same number of items): identical
values are "same", anything else is "needs more seeds".

Per-item paired evidence (hook)
-------------------------------
When records carry per-item outcomes of the target test split
(``metrics.item_correct``: one 0/1 per item, in the split's fixed order; not
written by the runner yet, issue 10), :func:`item_outcomes` returns them and
``--exact`` compares them item by item; :func:`paired_items` gives, for two runs
of the same seed, the discordant-item counts (McNemar's b and c) that a
per-item variance estimate of each seed's difference will use. The decision
stays at the seed level: items within one model are not independent
replicates of the code.

Timing: one statistic per run
-----------------------------
``run_timing(values)`` is the median of one run's timing blocks; runs (not
their blocks) are the replicates. ``timing_spread`` is the run-to-run spread
(a robust relative standard deviation: 1.4826 * MAD / median) and
``timing_test`` a one-sided Mann-Whitney U test on the per-run statistics,
at a stricter level than accuracy (``TIMING_SIGNIFICANCE``, 0.002 as in asv)
and against a threshold of at least the measured spread (``SPREAD_FACTOR``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

#: Power at which the detectable drop is quoted.
POWER = 0.8
#: Significance level of timing comparisons (asv's default).
TIMING_SIGNIFICANCE = 0.002
#: The timing threshold is at least this many measured run-to-run spreads (the test itself
#: accounts for noise; the spread guards against a drifting machine).
SPREAD_FACTOR = 1.0
#: No more seeds than this are suggested ("needs more than N seeds").
MAX_SEEDS = 1000


@dataclasses.dataclass(frozen=True)
class Evidence:
    """NEW - BASE in the goodness direction (positive = better), one value per run.

    ``mean``: mean difference (paired) or difference of means (Welch);
    ``se``: its standard error; ``df``: degrees of freedom (``nan`` when a side
    has fewer than two runs, or fewer than two pairs); ``sd``: standard deviation
    of the paired differences, or the root-mean-square of the two sides' standard
    deviations (Welch) -- the per-seed noise a seed count is planned from.
    """

    mean: float
    se: float
    df: float
    sd: float
    n_base: int
    n_new: int
    paired: bool

    @property
    def testable(self) -> bool:
        return math.isfinite(self.df) and self.df > 0 and self.se > 0

    @property
    def test(self) -> str:
        return "paired t" if self.paired else "Welch t"


def evidence(base: Mapping[Any, float] | Sequence[float],
             new: Mapping[Any, float] | Sequence[float], *,
             higher_is_better: bool = True, scale: float = 1.0) -> Evidence:
    """Seed-level evidence: paired over seeds when ``base`` and ``new`` are mappings with the
    same (at least two) seeds, Welch otherwise. Values are divided by ``scale`` (relative
    metrics pass BASE's centre, so differences are fractions of it)."""
    sign = 1.0 if higher_is_better else -1.0
    if isinstance(base, Mapping) and isinstance(new, Mapping) and len(base) >= 2 \
            and set(base) == set(new):
        seeds = sorted(base, key=str)
        d = sign * (np.array([new[s] for s in seeds], float)
                    - np.array([base[s] for s in seeds], float)) / scale
        n = len(d)
        sd = _noise_floor(float(np.std(d, ddof=1)), d)
        return Evidence(float(np.mean(d)), sd / math.sqrt(n), float(n - 1), sd, n, n, True)
    b = np.asarray(list(base.values()) if isinstance(base, Mapping) else base, float) / scale
    v = np.asarray(list(new.values()) if isinstance(new, Mapping) else new, float) / scale
    mean = sign * (float(np.mean(v)) - float(np.mean(b)))
    if len(b) < 2 or len(v) < 2:
        return Evidence(mean, math.nan, math.nan, math.nan, len(b), len(v), False)
    vb = _noise_floor(float(np.std(b, ddof=1)), b) ** 2 / len(b)
    vn = _noise_floor(float(np.std(v, ddof=1)), v) ** 2 / len(v)
    se = math.sqrt(vb + vn)
    df = (vb + vn) ** 2 / (vb ** 2 / (len(b) - 1) + vn ** 2 / (len(v) - 1)) if se > 0 \
        else math.nan
    sd = math.sqrt((np.var(b, ddof=1) + np.var(v, ddof=1)) / 2)
    return Evidence(mean, se, df, sd, len(b), len(v), False)


def _noise_floor(sd: float, values: np.ndarray) -> float:
    """``sd``, or 0 when it is floating-point noise (equal values that went through a
    subtraction): a zero-variance difference must never become a p-value of ~0."""
    return 0.0 if sd <= 1e-9 + 1e-6 * float(np.max(np.abs(values))) else sd


def p_worse(ev: Evidence) -> float:
    """One-sided p of H1 "NEW is worse" (mean < 0); ``nan`` when not testable."""
    if not ev.testable:
        return math.nan
    return float(stats.t.cdf(ev.mean / ev.se, ev.df))


def p_better(ev: Evidence) -> float:
    """One-sided p of H1 "NEW is better" (mean > 0); ``nan`` when not testable."""
    if not ev.testable:
        return math.nan
    return float(stats.t.sf(ev.mean / ev.se, ev.df))


def p_noninferior(ev: Evidence, delta: float) -> float:
    """One-sided non-inferiority p: H0 mean <= -delta against H1 mean > -delta."""
    if not ev.testable:
        return math.nan
    return float(stats.t.sf((ev.mean + delta) / ev.se, ev.df))


def minimum_detectable_drop(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """The smallest true drop the one-sided level-``alpha`` t-test detects with ``power``.

    Solves ``P(T > t_{1-alpha, df}) = power`` for ``T ~ noncentral t(df, drop / se)``.
    ``inf`` when there is no test (fewer than 2 runs or pairs); 0 when ``se`` is 0.
    """
    if not (math.isfinite(df) and df > 0 and math.isfinite(se)):
        return math.inf
    if se == 0:
        return 0.0
    return _detectable_ncp(float(df), float(alpha), float(power)) * se


@functools.lru_cache(maxsize=4096)
def _detectable_ncp(df: float, alpha: float, power: float) -> float:
    """The noncentrality the drop must reach: it depends on (df, alpha, power) only, so a
    compare of thousands of benchmarks with a few seed counts solves it a few times."""
    critical = stats.t.ppf(1 - alpha, df)

    def gap(ncp: float) -> float:
        return float(stats.nct.sf(critical, df, ncp)) - power

    hi = critical + stats.norm.ppf(power) + 1.0
    while gap(hi) < 0:
        hi *= 2
    from scipy.optimize import brentq

    return float(brentq(gap, 0.0, hi, xtol=1e-10))


def seeds_needed(sd: float, delta: float, alpha: float, power: float = POWER, *,
                 paired: bool = True) -> int | None:
    """Seeds per side for a detectable drop of at most ``delta`` at per-seed noise ``sd``.

    Paired: ``se = sd / sqrt(n)``, ``n - 1`` df; unpaired (Welch, equal n and
    variances): ``se = sd * sqrt(2 / n)``, ``2n - 2`` df. ``None`` beyond
    ``MAX_SEEDS`` or when ``sd`` is unknown.
    """
    if not math.isfinite(sd) or delta <= 0:
        return None
    if sd == 0:
        return 2

    def enough(n: int) -> bool:
        se, df = (sd / math.sqrt(n), n - 1) if paired else (sd * math.sqrt(2 / n), 2 * n - 2)
        return minimum_detectable_drop(se, df, alpha, power) <= delta

    if not enough(MAX_SEEDS):
        return None
    lo, hi = 1, MAX_SEEDS  # enough(hi); the detectable drop falls with n: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= 2 and enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


# -- per-item hook ------------------------------------------------------------------------------

def item_outcomes(record: Mapping[str, Any]) -> np.ndarray | None:
    """Per-item 0/1 outcomes on the target test split (``metrics.item_correct``), if any."""
    items = (record.get("metrics") or {}).get("item_correct")
    if not isinstance(items, (list, tuple)) or not items:
        return None
    return np.asarray(items, dtype=float)


def paired_items(base: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[int, int] | None:
    """(b, c): items right in BASE only, and right in NEW only, for two runs of one seed
    (McNemar's discordant pairs); ``None`` without per-item outcomes on both sides."""
    a, b = item_outcomes(base), item_outcomes(new)
    if a is None or b is None or len(a) != len(b):
        return None
    return int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))


# -- timing -------------------------------------------------------------------------------------

def run_timing(samples: Sequence[float]) -> float:
    """One run's timing statistic: the median of its timing blocks."""
    values = [float(v) for v in samples if math.isfinite(float(v))]
    # statistics.median: np.median's value, without its overhead on a run's few blocks
    return statistics.median(values) if values else math.nan


def timing_spread(values: Sequence[float]) -> float:
    """Run-to-run spread of per-run statistics: robust relative standard deviation
    (1.4826 * median absolute deviation / median); 0 for fewer than 3 runs."""
    v = np.asarray(values, dtype=float)
    if len(v) < 3:
        return 0.0
    centre = float(np.median(v))
    return float(1.4826 * np.median(np.abs(v - centre)) / abs(centre)) if centre else 0.0


def min_mannwhitney_p(n_base: int, n_new: int) -> float:
    """The smallest one-sided exact Mann-Whitney p-value ``n_base`` vs ``n_new`` runs allow."""
    return 1.0 / math.comb(n_base + n_new, n_base) if n_base and n_new else 1.0


def runs_needed_for(alpha: float) -> int:
    """Runs per side at which the one-sided Mann-Whitney test can reach ``alpha``."""
    n = 1
    while min_mannwhitney_p(n, n) >= alpha:
        n += 1
    return n


def timing_test(base: Sequence[float], new: Sequence[float], threshold: float,
                higher_is_better: bool) -> tuple[float, float]:
    """One-sided Mann-Whitney p that NEW is worse than BASE moved by ``threshold``
    (relative), on per-run statistics; and the relative change of the medians."""
    b, v = np.asarray(base, float), np.asarray(new, float)
    mb, mn = float(np.median(b)), float(np.median(v))
    change = mn / mb - 1.0 if mb else math.inf
    if higher_is_better:
        bound, alternative = b * (1 - threshold), "less"
    else:
        bound, alternative = b * (1 + threshold), "greater"
    p = float(stats.mannwhitneyu(v, bound, alternative=alternative, method="exact").pvalue) \
        if len(b) and len(v) else math.nan
    return p, change


def interleaved_test(base: Sequence[float], new: Sequence[float], threshold: float,
                     higher_is_better: bool) -> tuple[float, float, float]:
    """Interleaved A/B runs, paired by repeat (run i of NEW next to run i of BASE, so a drift
    of the machine's load hits both): (p, change, spread).

    ``change``: the median of the per-pair ratios NEW / BASE, minus 1. ``spread``:
    the pairs' robust relative spread (1.4826 * MAD of the log ratios). ``p``: exact
    one-sided Wilcoxon signed-rank test that the log ratios lie beyond ``log(1 -
    threshold)`` (higher is better) or ``log(1 + threshold)`` (lower is better) in
    the worse direction; with n pairs its smallest value is 2^-n (9 pairs for 0.002).
    """
    b, v = np.asarray(base, float), np.asarray(new, float)
    n = min(len(b), len(v))
    logs = np.log(v[:n] / b[:n])
    change = float(np.exp(np.median(logs)) - 1.0) if n else math.nan
    spread = float(1.4826 * np.median(np.abs(logs - np.median(logs)))) if n >= 3 else 0.0
    if n == 0:
        return math.nan, change, spread
    if higher_is_better:
        shifted, alternative = logs - math.log(1 - min(threshold, 0.99)), "less"
    else:
        shifted, alternative = logs - math.log(1 + threshold), "greater"
    if np.all(shifted == 0):
        return 1.0, change, spread
    p = float(stats.wilcoxon(shifted, alternative=alternative, method="exact").pvalue)
    return p, change, spread


def pairs_needed_for(alpha: float) -> int:
    """Interleaved pairs at which the exact one-sided signed-rank test can reach ``alpha``."""
    n = 1
    while 2.0 ** -n >= alpha:
        n += 1
    return n
