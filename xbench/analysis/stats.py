"""Statistics over chosen runs: per-cell intervals, ties, ranks, IQM, paired comparisons, Pareto.

Everything scipy.stats or pandas provides is taken from them:

* per (method, task): mean, std (ddof=1), n and the 95% Student-t interval
  half-width (``scipy.stats.sem`` x ``scipy.stats.t.ppf``);
* few-shot: the same over the fixed evaluation episodes (each episode's
  accuracy averaged over seeds first, so the interval is over episodes);
* across tasks: mean accuracy, average rank (``DataFrame.rank``), IQM
  (``scipy.stats.trim_mean(x, 0.25)`` over every (task, seed) score) with a
  stratified bootstrap 95% interval (``scipy.stats.bootstrap`` given one
  sample per task, so seeds are resampled within each task; fixed RNG seed),
  and the worst task;
* Friedman test (``scipy.stats.friedmanchisquare``) and the Nemenyi critical
  difference, its q from ``scipy.stats.studentized_range``;
* pairwise: probability of improvement (Mann-Whitney U / (n m) per task,
  averaged over tasks, as rliable) and a paired Wilcoxon signed-rank test over
  shared (task, seed) pairs (``scipy.stats.wilcoxon``).

Ties: a cell whose 95% interval overlaps the best cell's interval is *tied*
with it; the best and its ties form the top group, marked together.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean, standard deviation (ddof=1), n and the Student-t CI half-width."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci": math.nan}
    if n == 1:
        return {"mean": float(x[0]), "std": math.nan, "n": 1, "ci": math.nan}
    half = float(stats.sem(x, ddof=1) * stats.t.ppf(0.5 + confidence / 2, n - 1))
    return {"mean": float(x.mean()), "std": float(np.std(x, ddof=1)), "n": n, "ci": half}


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
    groups = {key: (g["acc_target"].to_numpy(float), g["acc_target_worst"].to_numpy(float))
              for key, g in runs.groupby(["method", "task"])} if not runs.empty else {}
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
        for task, group in out[ranked].groupby("task"):
            out.loc[group.index, flag] = top_group(group[column], group[ci])
    return out


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
    """Few-shot cells: mean and 95% CI over the fixed evaluation episodes.

    Each episode's accuracy is first averaged over the seeds (every seed is
    scored on the same hashed list); runs whose list differs are reported.
    """
    rows = []
    few = runs[runs["episodes"].notna()]
    for (method, task), group in few.groupby(["method", "task"], sort=True):
        hashes = {e["hash"] for e in group["episodes"]}
        lengths = {len(e["acc"]) for e in group["episodes"]}
        if len(hashes) > 1 or len(lengths) > 1:
            rows.append({"method": method, "task": task, "mean": math.nan, "ci": math.nan,
                         "episodes": 0, "seeds": len(group),
                         "problem": "seeds were scored on different episode lists"})
            continue
        per_episode = np.mean([e["acc"] for e in group["episodes"]], axis=0)
        summary = mean_ci(per_episode)
        rows.append({"method": method, "task": task, "mean": summary["mean"],
                     "ci": summary["ci"], "episodes": summary["n"], "seeds": len(group),
                     "problem": ""})
    return pd.DataFrame(rows, columns=["method", "task", "mean", "ci", "episodes", "seeds",
                                       "problem"])


# --------------------------------------------------------------------------- across tasks


def average_ranks(table: pd.DataFrame) -> pd.Series:
    """Mean over tasks of each method's rank (1 = best; ties share the average rank).

    ``table``: methods x tasks, complete (no NaN).
    """
    return table.rank(axis=0, ascending=False, method="average").mean(axis=1)


def iqm(values: Iterable[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    return float(stats.trim_mean(np.asarray(list(values), dtype=float), 0.25))


def stratified_bootstrap(per_task: list[np.ndarray], statistic: str = "iqm",
                         confidence: float = CONFIDENCE, n_resamples: int = BOOTSTRAP_RESAMPLES,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(point, low, high) with seeds resampled within each task (one bootstrap sample per task).

    ``iqm``: interquartile mean of every (task, seed) score pooled (rliable);
    ``mean``: mean over tasks of each task's mean over seeds. A task with a
    single seed cannot be resampled: the interval is then NaN.
    """
    def fn(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        if statistic == "iqm":
            return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)
        return np.mean([np.mean(s, axis=axis) for s in samples], axis=0)

    per_task = [np.asarray(x, dtype=float) for x in per_task]
    pooled = np.concatenate(per_task)
    point = float(fn(*per_task))
    if any(len(x) < 2 for x in per_task):
        return point, math.nan, math.nan
    if np.ptp(pooled) == 0:
        return point, point, point
    result = stats.bootstrap(tuple(per_task), fn, vectorized=True, paired=False,
                             confidence_level=confidence, n_resamples=n_resamples,
                             method="percentile",
                             rng=np.random.default_rng(seed))
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)


AGGREGATE_COLUMNS = ["method", "mean", "mean_lo", "mean_hi", "rank", "iqm", "iqm_lo", "iqm_hi",
                     "worst", "tasks", "complete", "oracle", "top"]


def aggregate(cell_table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Across tasks, per method: mean accuracy, average rank, IQM [95% CI], worst task.

    Only methods with every task complete get numbers (never an average over
    fewer tasks); ranks are among the ranked (non-oracle) complete methods.
    """
    tasks = sorted(cell_table.loc[cell_table["status"] != "n/a", "task"].unique())
    means = wide(cell_table).reindex(columns=tasks)
    oracle_of = cell_table.groupby("method")["oracle"].first()
    scores = {key: g["acc_target"].to_numpy(dtype=float)
              for key, g in runs.groupby(["method", "task"])} if not runs.empty else {}
    rows = []
    for method in sorted(cell_table["method"].unique()):
        relevant = cell_table[(cell_table["method"] == method) & (cell_table["status"] != "n/a")]
        have = relevant[relevant["status"] == "ok"]["task"].tolist()
        complete = len(have) == len(tasks) and len(tasks) > 0
        row = {"method": method, "tasks": len(have), "complete": complete,
               "oracle": bool(oracle_of.get(method, False)), "top": False}
        for key in ("mean", "mean_lo", "mean_hi", "rank", "iqm", "iqm_lo", "iqm_hi", "worst"):
            row[key] = math.nan
        if complete:
            per_task = [scores[method, t] for t in tasks]
            row["mean"] = float(means.loc[method].mean())
            _, row["mean_lo"], row["mean_hi"] = stratified_bootstrap(per_task, "mean")
            row["iqm"], row["iqm_lo"], row["iqm_hi"] = stratified_bootstrap(per_task, "iqm")
            row["worst"] = float(means.loc[method].min())
        rows.append(row)
    out = pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)
    ranked = out["complete"] & ~out["oracle"]
    if ranked.any():
        ranks = average_ranks(means.loc[out.loc[ranked, "method"]])
        out.loc[ranked, "rank"] = out.loc[ranked, "method"].map(ranks).to_numpy()
        group = out[ranked]
        lo, hi = group["iqm_lo"].fillna(group["iqm"]), group["iqm_hi"].fillna(group["iqm"])
        best = group["iqm"].idxmax()
        out.loc[group.index, "top"] = hi >= lo[best]
    return out


def friedman_nemenyi(table: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Friedman test over methods (rows) x tasks (columns) and the Nemenyi critical difference.

    CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha = studentized_range.ppf(1 - alpha, k, inf)
    / sqrt(2) (Demsar, 2006). Needs at least 3 methods and 2 tasks, else NaNs.
    """
    k, n = table.shape
    out = {"k": k, "n": n, "statistic": math.nan, "pvalue": math.nan, "cd": math.nan,
           "alpha": alpha}
    if k < 3 or n < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.friedmanchisquare(*[table.loc[m].to_numpy(dtype=float)
                                           for m in table.index])
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    out.update(statistic=float(result.statistic), pvalue=float(result.pvalue),
               cd=float(q * math.sqrt(k * (k + 1) / (6.0 * n))))
    return out


def probability_of_improvement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """P(a > b): per task the Mann-Whitney U of a's scores over b's / (n m), mean over tasks."""
    shared = [t for t in a if t in b and len(a[t]) and len(b[t])]
    if not shared:
        return math.nan
    values = [stats.mannwhitneyu(a[t], b[t]).statistic / (len(a[t]) * len(b[t]))
              for t in shared]
    return float(np.mean(values))


def paired_wilcoxon(pairs: list[tuple[float, float]]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test over paired scores (NaN if < 2)."""
    if len(pairs) < 2:
        return math.nan
    a, b = np.asarray(pairs, dtype=float).T
    if np.all(a == b):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.wilcoxon(a, b).pvalue)


PAIRWISE_COLUMNS = ["method", "versus", "p_improvement", "pairs", "wilcoxon_p", "episodes",
                    "episodes_p"]


def pairwise_vs(runs: pd.DataFrame, leader: str, methods: list[str],
                tasks: list[str]) -> pd.DataFrame:
    """``leader`` against each other method: P(leader > method), paired Wilcoxon over shared
    (task, seed) pairs, and for few-shot a paired t-test over shared episodes."""
    def scores(method: str) -> dict[str, pd.Series]:
        sub = runs[(runs["method"] == method) & runs["task"].isin(tasks)]
        return {t: g.set_index("seed")["acc_target"] for t, g in sub.groupby("task")}

    lead = scores(leader)
    rows = []
    for method in methods:
        if method == leader:
            continue
        other = scores(method)
        pairs = [(lead[t][s], other[t][s]) for t in lead if t in other
                 for s in lead[t].index.intersection(other[t].index)]
        ep_a, ep_b = _shared_episodes(runs, leader, method, tasks)
        episodes_p = math.nan
        if len(ep_a) >= 2 and not np.all(ep_a == ep_b):
            episodes_p = float(stats.ttest_rel(ep_a, ep_b).pvalue)
        elif len(ep_a) >= 2:
            episodes_p = 1.0
        rows.append({"method": method, "versus": leader,
                     "p_improvement": probability_of_improvement(
                         {t: v.to_numpy() for t, v in lead.items()},
                         {t: v.to_numpy() for t, v in other.items()}),
                     "pairs": len(pairs), "wilcoxon_p": paired_wilcoxon(pairs),
                     "episodes": len(ep_a), "episodes_p": episodes_p})
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)


def _shared_episodes(runs: pd.DataFrame, a: str, b: str,
                     tasks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracies of a and b on shared (task, seed, episode list)."""
    xs: list[float] = []
    ys: list[float] = []
    few = runs[runs["episodes"].notna() & runs["task"].isin(tasks)]
    left = {(r.task, r.seed): r.episodes for r in few[few["method"] == a].itertuples()}
    for r in few[few["method"] == b].itertuples():
        mine = left.get((r.task, r.seed))
        if mine and mine["hash"] == r.episodes["hash"] and len(mine["acc"]) == len(
                r.episodes["acc"]):
            xs.extend(mine["acc"])
            ys.extend(r.episodes["acc"])
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


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
