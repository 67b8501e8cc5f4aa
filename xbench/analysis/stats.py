"""Statistics over chosen runs: intervals, ties, ranks, tests, Pareto.

The unit of replication is a trained model (a seed), never an episode or a timing
block; every interval and test below is over seeds. Everything scipy.stats or
statsmodels provides is taken from them:

* per (method, task): mean, std (ddof=1), n and the 95% Student-t interval
  half-width (``scipy.stats.sem`` x ``scipy.stats.t.ppf``);
* across tasks: the mean of per-task means with a Student-t interval whose
  variance is the sum of the per-task variances of the mean and whose degrees of
  freedom are Welch-Satterthwaite's (:func:`mean_of_means_ci`; over one task it is
  the per-cell t-interval exactly); average rank (``DataFrame.rank``); IQM over
  chance-normalised scores with a stratified bootstrap interval, only from
  :data:`IQM_MIN_TASKS` tasks on (a 25% trim of fewer tasks drops whole tasks);
* Friedman test (``scipy.stats.friedmanchisquare``) with Iman-Davenport's F and
  the Nemenyi critical difference, its q from ``scipy.stats.studentized_range``
  (Demsar, 2006);
* pairwise against a control fixed in advance (ERM or a named baseline):
  probability of improvement, and the Wilcoxon signed-rank test over paired (task,
  seed) differences -- exact (``scipy.stats.wilcoxon(method="exact")``, or an
  exact sign-flip enumeration with mid-ranks via ``scipy.stats.permutation_test``
  when there are ties or zeros) up to :data:`EXACT_MAX_PAIRS` pairs, the normal
  approximation beyond -- Holm-adjusted across the comparisons of one table
  (``statsmodels.stats.multitest.multipletests``), with the smallest p-value the
  test could reach with that many pairs.

Ties: a cell whose 95% interval overlaps the best cell's interval is *tied*
with it; the best and its ties form the top group, marked together.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import special, stats

CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000
#: Power of every minimum-detectable-difference and sample-size computation.
POWER = 0.8


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean, standard deviation (ddof=1), n and the Student-t CI half-width."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci": math.nan}
    if n == 1:
        return {"mean": float(x[0]), "std": math.nan, "n": 1, "ci": math.nan}
    sd = float(np.std(x, ddof=1))
    # scipy.stats.sem(x) * scipy.stats.t.ppf(q, n - 1), without their per-call overhead
    # (a report computes thousands): the t quantile is special.stdtrit
    half = sd / math.sqrt(n) * float(special.stdtrit(n - 1, 0.5 + confidence / 2))
    return {"mean": float(x.mean()), "std": sd, "n": n, "ci": half}


CELL_COLUMNS = ["method", "task", "mean", "std", "n", "ci", "worst_mean", "worst_ci", "status",
                "oracle", "top"]


def cells(runs: pd.DataFrame, incomplete: dict[tuple[str, str], str] | None = None,
          not_applicable: set[tuple[str, str]] | None = None,
          oracle: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per (method, task): accuracy and worst-domain accuracy over seeds.

    ``status`` is ``ok``, ``incomplete`` (shown as missing, left out of every
    average and rank) or ``n/a``; ``top`` marks the best cell of each task and
    every cell tied with it (ranked cells only: never oracle rows). ``oracle``
    names oracle methods beyond those seen in ``runs`` (e.g. with every cell incomplete).
    """
    incomplete = incomplete or {}
    rows = []
    keys = {(m, t) for m, t in zip(runs["method"], runs["task"])} | set(incomplete) \
        | set(not_applicable or ())
    oracle_of = {**(oracle or {}), **dict(zip(runs["method"], runs["oracle"]))}
    # positions of each (method, task)'s runs: one pass, then numpy (a pandas group per
    # cell cost seconds over a 100,000-record sweep's 17 analyses)
    positions = runs.groupby(["method", "task"]).indices if not runs.empty else {}
    acc_all = runs["acc_target"].to_numpy(float) if not runs.empty else np.array([])
    worst_all = runs["acc_target_worst"].to_numpy(float) if not runs.empty else np.array([])
    seed_all = runs["seed"].to_numpy() if not runs.empty else np.array([])
    groups = {key: (acc_all[i], worst_all[i]) for key, i in positions.items()}

    def seed_means(key: tuple[str, str], values: np.ndarray) -> pd.Series:
        where = positions[key][~np.isnan(values[positions[key]])]  # as groupby().mean()
        seeds, inverse = np.unique(seed_all[where], return_inverse=True)
        sums = np.bincount(inverse, weights=values[where], minlength=len(seeds))
        return pd.Series(sums / np.bincount(inverse, minlength=len(seeds)), index=seeds)
    empty = (np.array([]), np.array([]))
    for method, task in sorted(keys):
        values, worst_values = groups.get((method, task), empty)
        acc, worst = mean_ci(values), mean_ci(worst_values)
        status = ("incomplete" if (method, task) in incomplete
                  else "n/a" if (method, task) in (not_applicable or ()) else "ok")
        rows.append({"method": method, "task": task, **acc, "worst_mean": worst["mean"],
                     "worst_ci": worst["ci"], "status": status,
                     "oracle": bool(oracle_of.get(method, False)), "top": False})
    out = pd.DataFrame(rows, columns=CELL_COLUMNS)
    out["n"] = out["n"].astype(int)
    for column, flag in (("mean", "top"), ("worst_mean", "worst_top")):
        ci = "ci" if column == "mean" else "worst_ci"
        out[flag] = False
        ranked = (out["status"] == "ok") & ~out["oracle"] & out[column].notna()
        source = acc_all if column == "mean" else worst_all
        for task, group in out[ranked].groupby("task"):
            per_seed = {m: seed_means((m, task), source) for m in group["method"]}
            tied = tied_with_best(per_seed)
            out.loc[group.index, flag] = [tied[m] for m in group["method"]]
    return out


def tied_with_best(per_seed: dict[str, pd.Series], alpha: float = 0.05) -> dict[str, bool]:
    """For each method of a column: True when the data cannot rule it out as the best.

    A method is ruled out when some other method is significantly better: a one-sided
    t-test over seeds, paired when both ran the same seeds (the seed fixes the data split,
    so both scored the same test items), Welch's otherwise, at ``alpha / (k - 1)`` for the
    ``k - 1`` other methods (Bonferroni; the union-intersection test of "this method is a
    best one"). So a method that is in fact a best one is marked with probability at least
    ``1 - alpha``, whichever method the noise puts on top -- no test is made against a best
    picked from the data. A comparison that cannot be tested (fewer than two seeds, no
    variance) rules nothing out: the data cannot tell the two apart.
    """
    methods = sorted(per_seed)
    level = alpha / max(len(methods) - 1, 1)
    seeds = {m: per_seed[m].sort_index() for m in methods}
    arrays = {m: (tuple(s.index), s.to_numpy(float)) for m, s in seeds.items()}
    # the paired tests of methods that ran the same seeds, all at once (p_greater_paired
    # of every pair: a column of 20 methods is 380 tests, and a report has hundreds)
    paired: dict[tuple[str, str], float] = {}
    same_seeds: dict[tuple, list[str]] = {}
    for m in methods:
        if len(arrays[m][1]) >= 2:
            same_seeds.setdefault(arrays[m][0], []).append(m)
    for group in same_seeds.values():
        if len(group) > 1:
            p = _p_greater_paired_all(np.stack([arrays[m][1] for m in group]))
            paired.update(((k, m), p[i, j]) for i, k in enumerate(group)
                          for j, m in enumerate(group) if i != j)

    def p_better(k: str, m: str) -> float:
        (ka, a), (kb, b) = arrays[k], arrays[m]
        if len(a) >= 2 and ka == kb:
            return paired[k, m]
        if len(a) >= 2 and len(b) >= 2:
            return p_greater_welch(a, b)
        return math.nan

    return {m: not any(p_better(k, m) <= level for k in methods if k != m) for m in methods}


def _p_greater_paired_all(scores: np.ndarray) -> np.ndarray:
    """``p[k, m]``: :func:`p_greater_paired` of ``scores[k] - scores[m]`` for every pair of
    rows of ``scores`` (methods x seeds), as one array computation."""
    d = scores[:, None, :] - scores[None, :, :]
    n = scores.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean(axis=-1) / (d.std(axis=-1, ddof=1) / math.sqrt(n))
        return np.where(np.ptp(d, axis=-1) > 0, special.stdtr(n - 1, -t), math.nan)


def p_greater_paired(d: np.ndarray) -> float:
    """One-sided p of a one-sample t-test that the mean of ``d`` is above 0 (what
    ``scipy.stats.ttest_1samp(d, 0, alternative="greater")`` gives, without its per-call
    overhead: the report runs thousands). NaN without variance."""
    n = len(d)
    if n < 2 or not np.ptp(d) > 0:
        return math.nan
    sd = float(np.std(d, ddof=1))
    t = float(np.mean(d)) / (sd / math.sqrt(n))
    return float(special.stdtr(n - 1, -t))


def p_greater_welch(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided p of Welch's t-test that ``a``'s mean is above ``b``'s (as
    ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")``). NaN when
    neither sample varies."""
    if not (np.ptp(a) > 0 or np.ptp(b) > 0):
        return math.nan
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(special.stdtr(df, -t))


def mean_over_targets(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """Fold the runs of one task with each domain held out in turn into one column.

    As in DomainBed, a seed's score on a task is its target accuracy averaged over
    the task's targets (``task_group``: the comparability key without the target),
    so the unit of replication stays the seed. A seed lacking one of the targets
    the group was run with is left out, and named in the returned problems
    (``{(method, task group): why}``). ``domain_acc`` becomes ``{target: accuracy}``
    and ``acc_target_worst`` the worst target.
    """
    if runs.empty or "task_group" not in runs or runs["task_group"].isna().all():
        return runs, {}
    targets = runs.groupby("task_group")["task"].unique().map(set).to_dict()
    problems: dict[tuple[str, str], list[str]] = {}
    tasks = runs["task"].to_numpy(dtype=object)
    kept = []  # the positions of each complete (method, task group, seed), in groupby order
    for (method, group, seed), positions in runs.groupby(
            ["method", "task_group", "seed"], sort=True).indices.items():
        missing = sorted(targets[group] - {tasks[i] for i in positions})
        if missing:
            problems.setdefault((method, group), []).append(
                f"seed {seed}: no run for {', '.join(missing)}")
        else:
            kept.append(positions)
    # column by column (a dict or a sub-frame per group cost seconds over the thousands of
    # sweeps of 100,000 records): each group's first run, then what folding changes
    first = np.array([p[0] for p in kept], dtype=np.int64)
    out = {c: runs[c].to_numpy(dtype=object)[first] for c in runs.columns}
    out["task"] = runs["task_group"].to_numpy(dtype=object)[first]
    out["n_targets"] = np.array([len(p) for p in kept], dtype=object)
    acc = runs["acc_target"].to_numpy(dtype=float)
    target = runs["target"].to_numpy(dtype=object)
    job = runs["job_id"].to_numpy(dtype=object)
    chance = pd.to_numeric(runs["chance"], errors="coerce").to_numpy(dtype=float)
    size = pd.to_numeric(runs["test_size"], errors="coerce").to_numpy(dtype=float)
    for row, positions in enumerate(kept):
        if len(positions) == 1:  # one target: the run itself
            continue
        names = [str(t) for t in target[positions]]
        chances, sizes = chance[positions], size[positions]
        out["target"][row] = "|".join(sorted(names))
        out["acc_target"][row] = float(acc[positions].mean())
        out["acc_target_worst"][row] = float(acc[positions].min())
        out["domain_acc"][row] = dict(zip(names, acc[positions].tolist()))
        out["chance"][row] = float(np.nanmean(chances)) if (~np.isnan(chances)).any() else None
        out["test_size"][row] = np.nanmin(sizes) if (~np.isnan(sizes)).any() else math.nan
        out["job_id"][row] = ",".join(map(str, job[positions]))
        out["step"][row] = None
    folded = pd.DataFrame({c: list(v) for c, v in out.items()},
                          columns=[*runs.columns, "n_targets"])
    return folded, {cell: "; ".join(why) for cell, why in problems.items()}


def top_group(means: pd.Series, halves: pd.Series) -> pd.Series:
    """True for the best mean and every mean whose interval overlaps the best's.

    A missing half-width (one seed) is an interval of zero width.
    """
    if means.empty:
        return pd.Series([], dtype=bool)
    half = halves.fillna(0.0)
    best = means.idxmax()
    lo_best = means[best] - half[best]
    return (means + half) >= lo_best


def wide(cell_table: pd.DataFrame, column: str = "mean") -> pd.DataFrame:
    """Methods x tasks of ``column`` over complete cells (incomplete ones are NaN)."""
    ok = cell_table[cell_table["status"] == "ok"]
    return ok.pivot(index="method", columns="task", values=column)


def episodes(runs: pd.DataFrame) -> pd.DataFrame:
    """Few-shot cells: the seed is the unit; episodes are averaged within each seed.

    ``mean`` and ``ci`` are over seeds (the per-seed mean over the fixed test
    episodes is the seed's accuracy); ``within`` is the mean over seeds of the 95%
    half-width over one seed's episodes -- the test-sampling part alone, shown for
    reference, never used to test.
    """
    rows = []
    few = runs[runs["episodes"].notna()]
    for (method, task), group in few.groupby(["method", "task"], sort=True):
        per_seed = mean_ci(group["acc_target"].to_numpy(float))
        within = [mean_ci(e["acc"])["ci"] for e in group["episodes"]]
        lengths = sorted({len(e["acc"]) for e in group["episodes"]})
        rows.append({"method": method, "task": task, "mean": per_seed["mean"],
                     "ci": per_seed["ci"], "seeds": per_seed["n"],
                     "episodes": lengths[0] if len(lengths) == 1 else math.nan,
                     "within": float(np.nanmean(within)) if within else math.nan})
    return pd.DataFrame(rows, columns=["method", "task", "mean", "ci", "seeds", "episodes",
                                       "within"])


# --------------------------------------------------------------------------- across tasks


def average_ranks(table: pd.DataFrame) -> pd.Series:
    """Mean over tasks of each method's rank (1 = best; ties share the average rank).

    ``table``: methods x tasks, complete (no NaN).
    """
    return table.rank(axis=0, ascending=False, method="average").mean(axis=1)


def iqm(values: Iterable[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    return float(stats.trim_mean(np.asarray(list(values), dtype=float), 0.25))


#: fewer tasks than this: no IQM (a 25% trim would drop whole tasks)
IQM_MIN_TASKS = 10


def mean_of_means_ci(per_task: list[np.ndarray],
                     confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean over tasks of each task's mean over seeds, with a Welch-Satterthwaite t-interval.

    Tasks are fixed; seeds are the replicates. Var = sum_t s_t^2 / n_t / T^2,
    df = (sum_t v_t)^2 / sum_t v_t^2 / (n_t - 1) with v_t = s_t^2 / n_t. Over a
    single task this is the Student-t interval of its seeds. A task with one seed
    makes the interval unknown (NaN); zero variance everywhere gives a zero width.
    """
    per_task = [np.asarray(x, dtype=float) for x in per_task]
    out = {"mean": math.nan, "ci": math.nan, "df": math.nan, "tasks": len(per_task)}
    if not per_task or any(len(x) == 0 for x in per_task):
        return out
    out["mean"] = float(np.mean([x.mean() for x in per_task]))
    if any(len(x) < 2 for x in per_task):
        return out
    v = np.array([x.var(ddof=1) / len(x) for x in per_task])
    n = np.array([len(x) for x in per_task])
    if v.sum() == 0:
        out.update(ci=0.0, df=math.inf)
        return out
    df = float(v.sum() ** 2 / np.sum(v ** 2 / (n - 1)))
    # special.stdtrit: stats.t.ppf without its per-call overhead (thousands per report)
    half = float(special.stdtrit(df, 0.5 + confidence / 2) * math.sqrt(v.sum()) / len(per_task))
    out.update(ci=half, df=df)
    return out


def normalised(acc: np.ndarray, chance: float) -> np.ndarray:
    """(acc - chance) / (1 - chance): 0 at chance, 1 at perfect accuracy."""
    return (np.asarray(acc, dtype=float) - chance) / (1.0 - chance)


def stratified_bootstrap_iqm(per_task: list[np.ndarray], confidence: float = CONFIDENCE,
                             n_resamples: int = BOOTSTRAP_RESAMPLES,
                             seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(IQM, low, high) of every (task, seed) score, seeds resampled within each task
    (rliable). Needs at least 2 seeds per task, else the interval is NaN."""
    per_task = [np.asarray(x, dtype=float) for x in per_task]
    pooled = np.concatenate(per_task)
    point = iqm(pooled)
    if any(len(x) < 2 for x in per_task):
        return point, math.nan, math.nan
    if np.ptp(pooled) == 0:
        return point, point, point

    def fn(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)

    result = stats.bootstrap(tuple(per_task), fn, vectorized=True, paired=False,
                             confidence_level=confidence, n_resamples=n_resamples,
                             method="percentile", rng=np.random.default_rng(seed))
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)


AGGREGATE_COLUMNS = ["method", "mean", "ci", "df", "rank", "iqm", "iqm_lo", "iqm_hi",
                     "worst", "tasks", "complete", "oracle", "top"]


def common_tasks(cell_table: pd.DataFrame) -> list[str]:
    """The tasks every method of the table can run on (no ``n/a`` cell in their column).

    One rule for everybody: a task where some method cannot apply (too few source
    domains, say) is shown in its column but left out of every across-task number.
    """
    tasks = sorted(cell_table["task"].unique())
    blocked = set(cell_table.loc[cell_table["status"] == "n/a", "task"])
    return [t for t in tasks if t not in blocked]


def aggregate(cell_table: pd.DataFrame, runs: pd.DataFrame,
              chance: dict[str, float] | None = None) -> pd.DataFrame:
    """Across the common tasks (:func:`common_tasks`), per method: mean [t-interval],
    average rank, IQM (from :data:`IQM_MIN_TASKS` tasks, chance-normalised), worst task.

    A method missing any common task (failed, incomplete, not run) gets no numbers:
    never an average over fewer tasks. Ranks are among ranked (non-oracle) methods.
    """
    tasks = common_tasks(cell_table)
    means = wide(cell_table).reindex(columns=tasks)
    oracle_of = cell_table.groupby("method")["oracle"].first()
    acc = runs["acc_target"].to_numpy(dtype=float)
    scores = {key: acc[where] for key, where in
              runs.groupby(["method", "task"]).indices.items()} if not runs.empty else {}
    ok = cell_table["status"] == "ok"
    have_of = collections.Counter(m for m, t in zip(cell_table.loc[ok, "method"],
                                                    cell_table.loc[ok, "task"]) if t in tasks)
    rows = []
    for method in sorted(cell_table["method"].unique()):
        have = have_of[method]  # the common tasks where the method's cell is complete
        complete = have == len(tasks) and len(tasks) > 0
        row = {"method": method, "tasks": have, "complete": complete,
               "oracle": bool(oracle_of.get(method, False)), "top": False}
        for key in ("mean", "ci", "df", "rank", "iqm", "iqm_lo", "iqm_hi", "worst"):
            row[key] = math.nan
        if complete:
            per_task = [scores[method, t] for t in tasks]
            summary = mean_of_means_ci(per_task)
            row.update(mean=summary["mean"], ci=summary["ci"], df=summary["df"],
                       worst=float(means.loc[method].min()))
            if len(tasks) >= IQM_MIN_TASKS and chance and all(t in chance for t in tasks):
                row["iqm"], row["iqm_lo"], row["iqm_hi"] = stratified_bootstrap_iqm(
                    [normalised(scores[method, t], chance[t]) for t in tasks])
        rows.append(row)
    out = pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)
    ranked = out["complete"] & ~out["oracle"]
    if ranked.any():
        ranks = average_ranks(means.loc[out.loc[ranked, "method"]])
        out.loc[ranked, "rank"] = out.loc[ranked, "method"].map(ranks).to_numpy()
        group = out[ranked]
        out.loc[group.index, "top"] = top_group(group["mean"], group["ci"]).to_numpy()
    return out


def friedman_nemenyi(table: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Friedman test over methods (rows) x tasks (columns) and the Nemenyi critical difference.

    CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha = studentized_range.ppf(1 - alpha, k, inf)
    / sqrt(2) (Demsar, 2006). Needs at least 3 methods and 2 tasks, else NaNs.
    """
    k, n = table.shape
    out = {"k": k, "n": n, "statistic": math.nan, "pvalue": math.nan, "cd": math.nan,
           "alpha": alpha, "f": math.nan, "f_pvalue": math.nan}
    if k < 3 or n < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.friedmanchisquare(*[table.loc[m].to_numpy(dtype=float)
                                           for m in table.index])
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    out.update(statistic=float(result.statistic), pvalue=float(result.pvalue),
               cd=float(q * math.sqrt(k * (k + 1) / (6.0 * n))),
               **iman_davenport(float(result.statistic), k, n))
    return out


def iman_davenport(chi2: float, k: int, n: int) -> dict[str, float]:
    """Iman-Davenport's F = (N - 1) chi2 / (N (k - 1) - chi2) on (k - 1, (k - 1)(N - 1)) df,
    less conservative than Friedman's chi2 (Demsar, 2006, eq. 2)."""
    denominator = n * (k - 1) - chi2
    if denominator <= 0:
        return {"f": math.inf, "f_pvalue": 0.0, "f_df": (k - 1, (k - 1) * (n - 1))}
    f = (n - 1) * chi2 / denominator
    df1, df2 = k - 1, (k - 1) * (n - 1)
    return {"f": float(f), "f_pvalue": float(stats.f.sf(f, df1, df2)), "f_df": (df1, df2)}


def probability_of_improvement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """P(a > b): per task the Mann-Whitney U of a's scores over b's / (n m), mean over tasks."""
    shared = [t for t in a if t in b and len(a[t]) and len(b[t])]
    if not shared:
        return math.nan
    # Mann-Whitney's U of a over b counts the pairs a > b, a tie counting one half
    # (what scipy.stats.mannwhitneyu(a, b).statistic gives, without its per-call overhead)
    values = [float(np.mean((np.sign(np.subtract.outer(np.asarray(a[t], float),
                                                       np.asarray(b[t], float))) + 1) / 2))
              for t in shared]
    return float(np.mean(values))


#: up to this many non-zero pairs the signed-rank test is exact
EXACT_MAX_PAIRS = 12


def signed_rank_test(differences: Iterable[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired differences (zeros dropped).

    Exact where it can be: scipy's exact null distribution when the non-zero
    differences have no ties, an exact sign-flip enumeration of the mid-rank
    statistic (``scipy.stats.permutation_test``) with ties up to
    :data:`EXACT_MAX_PAIRS` pairs, the normal approximation beyond. ``min_p`` is the
    smallest p-value the exact test can give with this many pairs (2 / 2^n): when it
    is above alpha the test cannot reject, whatever the data.
    """
    d = np.asarray([x for x in differences if x is not None and not math.isnan(x)], float)
    d = d[d != 0]
    n = len(d)
    out = {"pvalue": math.nan, "n": n, "min_p": math.nan, "method": "none"}
    if n == 0:
        out.update(pvalue=1.0, method="all differences zero")
        return out
    out["min_p"] = min(1.0, 2.0 / 2.0 ** n)
    ties = len(np.unique(np.abs(d))) < n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if not ties and n <= 50:
            p, method = stats.wilcoxon(d, method="exact").pvalue, "exact"
        elif n <= EXACT_MAX_PAIRS:
            def plus_ranks(x: np.ndarray, axis: int = -1) -> np.ndarray:
                return np.sum(stats.rankdata(np.abs(x), axis=axis) * (x > 0), axis=axis)

            p = stats.permutation_test((d,), plus_ranks, permutation_type="samples",
                                       vectorized=True, n_resamples=np.inf,
                                       alternative="two-sided").pvalue
            method = "exact (ties: sign-flip enumeration)"
        else:
            p, method = stats.wilcoxon(d, method="approx").pvalue, "normal approximation"
    out.update(pvalue=float(min(1.0, p)), method=method)
    return out


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN kept.

    The arithmetic of ``statsmodels.stats.multitest.multipletests(p, method="holm")``
    (sorted p times m, m - 1, ..., 1, running maximum, capped at 1), written out here: the
    statsmodels function runs ``gc.collect()`` on every call, which costs a quarter of a
    second per table once torch or a large frame is in memory (the test suite checks both
    give the same numbers).
    """
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(len(p), math.nan)
    valid = ~np.isnan(p)
    if valid.any():
        q = p[valid]
        order = np.argsort(q)
        adjusted = np.maximum.accumulate(q[order] * np.arange(len(q), 0, -1))
        adjusted[adjusted > 1] = 1
        back = np.empty_like(adjusted)
        back[order] = adjusted
        out[valid] = back
    return out.tolist()


PAIRWISE_COLUMNS = ["method", "control", "diff", "p_improvement", "pairs", "nonzero", "p",
                    "p_holm", "min_p", "test", "verdict"]


def pairwise_vs_control(runs: pd.DataFrame, control: str, methods: list[str],
                        tasks: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Each method against ``control`` (fixed in advance) over paired (task, seed) runs.

    ``diff``: mean of method - control over the pairs; ``p``: two-sided signed-rank
    test (:func:`signed_rank_test`); ``p_holm``: Holm-adjusted across the rows;
    ``verdict``: better / worse at ``alpha`` after Holm, "no difference detected", or
    "cannot reject with n pairs" when even the most extreme data could not reach alpha.
    """
    # each (method, task)'s accuracies by seed, from one grouping of the runs (a pandas
    # group per method and task cost seconds over a 100,000-record sweep's analyses)
    mine = runs[runs["task"].isin(tasks)]
    acc, seed = mine["acc_target"].to_numpy(float), mine["seed"].to_numpy()
    by_cell: dict[str, dict[str, pd.Series]] = {}
    for (method, task), where in mine.groupby(["method", "task"], sort=True).indices.items():
        by_cell.setdefault(method, {})[task] = pd.Series(acc[where], index=seed[where])

    def scores(method: str) -> dict[str, pd.Series]:
        return by_cell.get(method, {})

    base = scores(control)
    rows = []
    for method in methods:
        if method == control:
            continue
        other = scores(method)
        diffs = []
        for t in base:
            if t in other:
                shared = base[t].index.intersection(other[t].index)
                diffs += (other[t][shared].to_numpy(float)
                          - base[t][shared].to_numpy(float)).tolist()
        test = signed_rank_test(diffs)
        rows.append({"method": method, "control": control,
                     "diff": float(np.mean(diffs)) if diffs else math.nan,
                     "p_improvement": probability_of_improvement(
                         {t: v.to_numpy() for t, v in other.items()},
                         {t: v.to_numpy() for t, v in base.items()}),
                     "pairs": len(diffs), "nonzero": test["n"], "p": test["pvalue"],
                     "min_p": test["min_p"], "test": test["method"]})
    out = pd.DataFrame(rows, columns=[c for c in PAIRWISE_COLUMNS if c not in ("p_holm",
                                                                              "verdict")])
    out["p_holm"] = holm(out["p"]) if len(out) else []
    out["verdict"] = [_verdict(r, alpha) for r in out.itertuples()]
    return out[PAIRWISE_COLUMNS]


def _verdict(r: Any, alpha: float) -> str:
    if r.pairs == 0:
        return "no shared seeds"
    if r.nonzero == 0:
        return "identical on every pair"
    if not r.min_p <= alpha:
        return f"cannot reject: {r.nonzero} non-zero pairs (min p = {r.min_p:.2g})"
    if r.p_holm <= alpha:
        return "better" if r.diff > 0 else "worse"
    return "no difference detected"


def mcnemar(b: int, c: int) -> dict[str, float]:
    """McNemar's test on the discordant items of two classifiers scored on the same items.

    ``b``: items only the first gets right, ``c``: only the second. Two-sided exact
    p (binomial, ``statsmodels``' ``mcnemar(exact=True)``) and the mid-p
    (Fagerland, Lydersen & Laake, 2013: the exact p minus the point probability of
    the observed count), which keeps the size closer to alpha.
    """
    n, k = b + c, min(b, c)
    if n == 0:
        return {"b": b, "c": c, "p": 1.0, "mid_p": 1.0}
    exact = min(1.0, 2.0 * float(stats.binom.cdf(k, n, 0.5)))
    mid = min(1.0, exact - float(stats.binom.pmf(k, n, 0.5))) if b != c else 1.0
    return {"b": b, "c": c, "p": exact, "mid_p": mid}


def item_discordance(runs: pd.DataFrame, histories: dict[str, Any], control: str
                     ) -> pd.DataFrame:
    """Per (method, task, seed): items right only for the method (``b``) and only for the
    ``control`` (``c``), from the per-item outcomes of each run's selected evaluation point,
    when both runs scored the same items (``test_items`` hashes agree); summed over the
    targets of a task group. ``histories``: ``job_id`` -> that record's history.
    """
    from xbench.predictions import correct_at

    rows = []
    ok = runs[runs["test_items"].notna()] if "test_items" in runs else runs.iloc[0:0]
    base = {(r.task, r.seed): r for r in ok[ok["method"] == control].itertuples()}
    for r in ok[ok["method"] != control].itertuples():
        other = base.get((r.task, r.seed))
        if other is None or other.test_items != r.test_items:
            continue
        b = c = n = 0
        var_item = 0.0
        domains = json.loads(r.test_items)
        for domain in domains:
            mine = correct_at(histories.get(r.job_id) or [], r.step, domain)
            theirs = correct_at(histories.get(other.job_id) or [], other.step, domain)
            if mine is None or theirs is None or len(mine) != len(theirs) or not len(mine):
                break
            bd = int(np.sum((mine == 1) & (theirs == 0)))
            cd = int(np.sum((mine == 0) & (theirs == 1)))
            b, c, n = b + bd, c + cd, n + len(mine)
            var_item += item_variance(bd, cd, len(mine)) / len(domains) ** 2
        else:
            rows.append({"method": r.method, "task": r.task, "task_group": r.task_group,
                         "seed": r.seed, "b": b, "c": c, "n": n, "var_item": var_item,
                         "targets": 1})
    columns = ["method", "task", "task_group", "seed", "b", "c", "n", "var_item", "targets"]
    out = pd.DataFrame(rows, columns=columns)
    if len(out):
        out["targets"] = out.groupby(["method", "task_group", "seed"])["task"].transform("count")
        out["var_item"] = out["var_item"] / out["targets"] ** 2  # of the mean over targets
        out = out.groupby(["method", "task_group", "seed"], as_index=False).agg(
            b=("b", "sum"), c=("c", "sum"), n=("n", "sum"), var_item=("var_item", "sum"),
            targets=("targets", "first"))
    return out


def item_variance(b: int, c: int, n: int) -> float:
    """Variance, from test-item sampling alone, of the accuracy difference of two fixed
    models scored on the same ``n`` items with ``b`` and ``c`` discordant ones (the paired
    multinomial variance: ``((b + c) / n - ((b - c) / n) ** 2) / n``)."""
    return ((b + c) / n - ((b - c) / n) ** 2) / n


def items_needed(difference: float, sd: float, var_item: float, seeds: int, items: int,
                 alpha: float = 0.05, power: float = POWER) -> float:
    """Test items per target that would let ``seeds`` paired seeds detect ``difference``.

    The per-seed difference's variance ``sd ** 2`` splits into the item-sampling part
    ``var_item`` (measured from the discordant items at ``items`` items) and the rest
    (training and split), which more items do not shrink; with ``k`` times the items the
    variance is ``sd ** 2 - var_item * (1 - 1 / k)``. NaN when it cannot be estimated; inf
    when no number of items suffices (the training part alone is too large).
    """
    from statsmodels.stats.power import TTestPower

    if seeds < 2 or not sd > 0 or not difference > 0 or not math.isfinite(var_item):
        return math.nan
    effect = TTestPower().solve_power(effect_size=None, nobs=seeds, alpha=alpha, power=power,
                                      alternative="two-sided")
    allowed = (difference / effect) ** 2           # the largest variance that still detects it
    rest = max(sd ** 2 - var_item, 0.0)
    if allowed <= rest:
        return math.inf
    if allowed >= sd ** 2:
        return float(items)
    k = var_item / (allowed - rest)
    return float(math.ceil(k * items))




def min_detectable_difference(sd: float, n: int, alpha: float = 0.05,
                              power: float = POWER) -> float:
    """The smallest true mean paired difference that a two-sided paired t-test over ``n``
    seeds detects with probability ``power`` at level ``alpha``, given the standard
    deviation ``sd`` of the per-seed differences (noncentral t, ``statsmodels``
    ``TTestPower``). NaN when it cannot be estimated (n < 2, or no measured variance)."""
    if n < 2 or not sd > 0:
        return math.nan
    return _detectable_effect(int(n), alpha, power) * sd


@functools.lru_cache(maxsize=None)
def _detectable_effect(n: int, alpha: float, power: float) -> float:
    """The standardised effect (difference / sd) of :func:`min_detectable_difference`:
    solved once per (n, alpha, power), not once per column."""
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                          alternative="two-sided"))


def seeds_needed(difference: float, sd: float, alpha: float = 0.05,
                 power: float = POWER) -> float:
    """How many paired seeds a two-sided paired t-test needs to detect ``difference``
    with ``power`` (rounded up; NaN without a measured variance)."""
    from statsmodels.stats.power import TTestPower

    if not sd > 0 or not difference > 0:
        return math.nan
    n = TTestPower().solve_power(effect_size=difference / sd, nobs=None, alpha=alpha,
                                 power=power, alternative="two-sided")
    return float(max(2, math.ceil(n)))


def difference_sd(runs: pd.DataFrame, control: str, task: str) -> tuple[float, int]:
    """(pooled sd, typical n) of the per-seed differences method - control on one task.

    Pooled over every method paired with the control: the square root of the mean of the
    per-method variances of the differences (ddof=1), and the median number of pairs.
    """
    return difference_sds(runs, control, [task])[task]


def difference_sds(runs: pd.DataFrame, control: str, tasks: list[str]
                   ) -> dict[str, tuple[float, int]]:
    """:func:`difference_sd` of each of ``tasks``, from one grouping of the runs."""
    # one row per (task, seed), one column per method: a method's runs of a seed averaged
    table = runs[runs["task"].isin(tasks)].groupby(["task", "seed", "method"])[
        "acc_target"].mean().unstack("method")
    out = {}
    for task in tasks:
        if control not in table.columns or task not in table.index.get_level_values(0):
            out[task] = (math.nan, 0)
            continue
        mine = table.loc[task]
        variances, counts = [], []
        for method in mine.columns:
            if method == control:
                continue
            d = (mine[method] - mine[control]).dropna().to_numpy(float)
            if len(d) >= 2:
                variances.append(float(np.var(d, ddof=1)))
                counts.append(len(d))
        out[task] = ((float(math.sqrt(np.mean(variances))), int(np.median(counts)))
                     if variances else (math.nan, 0))
    return out


def pareto_front(accuracy: Iterable[float], speed: Iterable[float]) -> list[bool]:
    """True for points no other point dominates (>= on both, > on one; higher is better).

    Points with a missing value are never on the front.
    """
    acc = np.asarray(list(accuracy), dtype=float)
    spd = np.asarray(list(speed), dtype=float)
    valid = ~(np.isnan(acc) | np.isnan(spd))
    front = []
    for i in range(len(acc)):
        if not valid[i]:
            front.append(False)
            continue
        dominated = valid & (acc >= acc[i]) & (spd >= spd[i]) & ((acc > acc[i]) | (spd > spd[i]))
        front.append(not dominated.any())
    return front
