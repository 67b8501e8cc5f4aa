"""Records -> pandas -> tables (Markdown, CSV, LaTeX).

Accuracy cells are the mean over seeds of ``acc_target`` with the half-width
of its 95% Student-t confidence interval (``ddof=1``) and the number of
seeds. A method missing a task gets no average (shown as missing, with a
warning) rather than an average over fewer tasks.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats
from tabulate import tabulate

from xbench.errors import ConfigError, RecordsError
from xbench.harness import selection as selection_methods
from xbench.store import load_records

FORMATS = ("md", "csv", "latex")
MISSING = "—"


def load_results(*paths: str | os.PathLike, problems: list[str] | None = None) -> pd.DataFrame:
    """One row per job from results folders or record files (latest record per job).

    Broken lines are skipped; their descriptions are appended to ``problems``
    when a list is given, else issued as warnings.
    """
    if not paths:
        raise RecordsError("no results given; pass one or more --out folders of `xbench run`")
    result = load_records(paths)
    if problems is not None:
        problems.extend(result.problems)
    else:
        for problem in result.problems:
            warnings.warn(problem, stacklevel=2)
    rows = [_flatten(r) for r in result.records]
    columns = ["job_id", "suite", "task", "task_version", "target", "protocol", "method",
               "method_origin", "hparams", "seed", "status", "error"]
    df = pd.DataFrame(rows, columns=None if rows else columns)
    if not rows:
        return df
    df["method_label"] = _method_labels(df)
    df["task_label"] = _task_labels(df)
    return df


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    metrics = record.get("metrics") or {}
    cost = record.get("cost") or {}
    env = record.get("env") or {}
    row = {key: record.get(key) for key in ("job_id", "suite", "task", "task_version",
                                            "protocol", "method", "method_origin", "seed",
                                            "status", "error", "time")}
    row["target"] = "+".join(record.get("target") or [])
    row["hparams"] = json.dumps(record.get("hparams", {}), sort_keys=True)
    for key in ("acc_target", "acc_target_worst", "acc_source_val", "selection",
                "selected_step"):
        row[key] = metrics.get(key)
    for name, chosen in (metrics.get("by_selection") or {}).items():
        row[f"acc_target@{name}"] = chosen.get("acc_target")
        row[f"acc_target_worst@{name}"] = chosen.get("acc_target_worst")
    for key in ("train_samples_per_s", "infer_samples_per_s", "latency_ms", "peak_mem_mb",
                "peak_mem_kind", "params", "wall_s", "train_s", "eval_s"):
        row[key] = cost.get(key)
    for key in ("device_name", "torch", "threads", "git_sha", "git_dirty", "xbench"):
        row[key] = env.get(key)
    return row


def _method_labels(df: pd.DataFrame) -> pd.Series:
    """``erm``, or ``erm{lr=1e-07}`` when one method ran with several hyper-parameter sets."""
    labels = df["method"].copy()
    for method, group in df.groupby("method"):
        configs = group["hparams"].unique()
        if len(configs) < 2:
            continue
        parsed = {c: json.loads(c) for c in configs}
        keys = sorted({k for p in parsed.values() for k in p
                       if len({json.dumps(q.get(k)) for q in parsed.values()}) > 1})
        for config, values in parsed.items():
            suffix = ",".join(f"{k}={values.get(k)}" for k in keys)
            labels[(df["method"] == method) & (df["hparams"] == config)] = f"{method}{{{suffix}}}"
    return labels


def _task_labels(df: pd.DataFrame) -> pd.Series:
    """``task``, or ``task:target`` when a task ran with several targets or protocols."""
    labels = df["task"].copy()
    for task, group in df.groupby("task"):
        variants = group[["target", "protocol"]].drop_duplicates()
        if len(variants) < 2:
            continue
        many_protocols = group["protocol"].nunique() > 1
        for idx, row in group.iterrows():
            label = f"{task}:{row['target']}"
            labels[idx] = f"{label}/{row['protocol']}" if many_protocols else label
    return labels


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation (ddof=1), n and the Student-t CI half-width."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci": math.nan}
    if n == 1:
        return {"mean": float(x[0]), "std": math.nan, "n": 1, "ci": math.nan}
    sem = stats.sem(x, ddof=1)
    half = float(sem * stats.t.ppf(0.5 + confidence / 2, n - 1))
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)), "n": n, "ci": half}


def accuracy_summary(df: pd.DataFrame, metric: str = "acc_target") -> pd.DataFrame:
    """Long table: one row per (method, task) with mean, std, n and CI of ``metric``."""
    ok = df[df["status"] == "ok"]
    rows = []
    for (method, task), group in ok.groupby(["method_label", "task_label"], sort=False):
        rows.append({"method": method, "task": task, **mean_ci(group[metric])})
    return pd.DataFrame(rows, columns=["method", "task", "mean", "std", "n", "ci"])


def _metric_for(selection: str) -> str:
    if selection not in selection_methods.SELECTORS:
        raise ConfigError(f"--selection {selection}: unknown; choose one of "
                          f"{', '.join(selection_methods.SELECTORS)}")
    return f"acc_target@{selection}"


def accuracy_table(df: pd.DataFrame, fmt: str = "md",
                   selection: str = selection_methods.DEFAULT) -> str:
    """Methods x tasks (+ average) of target accuracy, mean ± 95% CI (n)."""
    summary = accuracy_summary(df, _metric_for(selection))
    tasks = sorted(summary["task"].unique())
    if fmt == "csv":
        out = summary.copy()
        out.insert(2, "selection", selection)
        return out.to_csv(index=False)
    by_method: dict[str, dict[str, Any]] = {}
    averages: dict[str, float] = {}
    for method, group in summary.groupby("method"):
        cells = {row.task: row for row in group.itertuples()}
        by_method[method] = {t: _cell(cells.get(t)) for t in tasks}
        if all(t in cells and not math.isnan(cells[t].mean) for t in tasks):
            averages[method] = float(np.mean([cells[t].mean for t in tasks]))
        elif len(tasks) > 1:
            missing = [t for t in tasks if t not in cells]
            warnings.warn(f"{method}: no result for {', '.join(missing)}; its average is left "
                          f"out rather than taken over fewer tasks", stacklevel=2)
    order = sorted(by_method, key=lambda m: (-averages.get(m, -1.0), m))
    headers = ["method", *tasks] + (["average"] if len(tasks) > 1 else [])
    rows = []
    for method in order:
        row = [method, *[by_method[method][t] for t in tasks]]
        if len(tasks) > 1:
            row.append(f"{100 * averages[method]:.1f}" if method in averages else MISSING)
        rows.append(row)
    title = (f"Target accuracy (acc_target, %): mean ± 95% CI half-width (Student t, ddof=1) "
             f"over seeds, (n) seeds; model selection: {selection}"
             + (" (ORACLE: reads target validation labels)" if selection in
                selection_methods.ORACLES else ""))
    return _render(title, headers, rows, fmt)


def _cell(row: Any) -> str:
    if row is None or row.n == 0:
        return MISSING
    if row.n == 1:
        return f"{100 * row.mean:.1f} (1)"
    return f"{100 * row.mean:.1f} ± {100 * row.ci:.1f} ({row.n})"


def cost_table(df: pd.DataFrame, fmt: str = "md") -> str:
    """Per method and device: median train/inference samples/s, latency, peak memory, params."""
    ok = df[df["status"] == "ok"]
    columns = {"train_samples_per_s": "train samples/s", "infer_samples_per_s": "infer samples/s",
               "latency_ms": "latency ms", "peak_mem_mb": "peak mem MiB", "params": "params"}
    grouped = ok.groupby(["method_label", "device_name"], sort=True)
    table = grouped[list(columns)].median()
    table["jobs"] = grouped.size()
    table = table.reset_index().rename(columns={"method_label": "method", "device_name": "device",
                                                **columns})
    if fmt == "csv":
        return table.to_csv(index=False)
    rows = [[r["method"], r["device"], *[_num(r[c]) for c in columns.values()], r["jobs"]]
            for _, r in table.iterrows()]
    headers = ["method", "device", *columns.values(), "jobs"]
    return _render("Cost: median over each method's jobs (compare within one device only)",
                   headers, rows, fmt)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _render(title: str, headers: list[str], rows: list[list[Any]], fmt: str) -> str:
    if fmt == "latex":
        body = tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True)
        return f"% {title}\n{body}\n"
    body = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    return f"{title}\n\n{body}\n"


def failures(df: pd.DataFrame) -> list[str]:
    """One line per failed job: method, task, seed and error."""
    failed = df[df["status"] != "ok"]
    return [f"{r.method} on {r.task_label} (seed {r.seed}): {r.error}"
            for r in failed.itertuples()]


def report(*paths: str | os.PathLike, fmt: str = "md",
           selection: str = selection_methods.DEFAULT) -> str:
    """The full report (accuracy and cost tables) for results folders or record files."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    df = load_results(*paths)
    if df.empty or not (df["status"] == "ok").any():
        raise RecordsError(f"no successful job records in {', '.join(map(str, paths))}")
    parts = [accuracy_table(df, fmt, selection), cost_table(df, fmt)]
    fails = failures(df)
    if fails and fmt != "csv":
        parts.append("Failed jobs (not in the tables):\n" + "\n".join(f"- {f}" for f in fails)
                     + "\n")
    return "\n".join(parts)
