"""Reading records for analysis: one row per job, and the labels shown for methods and tasks.

This module is the analysis layer's only door to the record files
(:mod:`xbench.store` parses them); nothing here imports the harness.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import pandas as pd

from xbench.errors import RecordsError
from xbench.store import load_records



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
               "method_origin", "hparams", "seed", "trial", "holdout", "status", "error"]
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
    domains = set(metrics.get("domains") or {})
    row["n_sources"] = len(domains - set(record.get("target") or [])) if domains else None
    row["hparams"] = json.dumps(record.get("hparams", {}), sort_keys=True)
    row["trial"] = int(record.get("trial") or 0)
    row["holdout"] = tuple(record.get("holdout") or ())
    row["oracle"] = bool(record.get("oracle", False))
    row["transductive"] = bool(record.get("transductive", False))
    for key in ("acc_target", "acc_target_worst", "acc_source_val", "selection",
                "selected_step"):
        row[key] = metrics.get(key)
    row["by_selection"] = metrics.get("by_selection") or {}
    row["history"] = metrics.get("history") or []
    row["episodes"] = metrics.get("episodes")
    for name, chosen in row["by_selection"].items():
        row[f"acc_target@{name}"] = chosen.get("acc_target")
        row[f"acc_target_worst@{name}"] = chosen.get("acc_target_worst")
    for key in ("train_samples_per_s", "infer_samples_per_s", "latency_ms", "peak_mem_mb",
                "peak_mem_kind", "params", "wall_s", "train_s", "eval_s"):
        row[key] = cost.get(key)
    for key in ("device_name", "torch", "python", "threads", "git_sha", "git_dirty", "xbench"):
        row[key] = env.get(key)
    return row


def _method_labels(df: pd.DataFrame) -> pd.Series:
    """``erm``, or ``erm{lr=1e-07}`` when one method ran with several default-trial configs.

    Only trial-0 (default hyper-parameter) main runs are compared: the trials of
    a random search are one sweep and share the method's name.
    """
    labels = df["method"].copy()
    for method, group in df.groupby("method"):
        defaults = group[group["trial"] == 0]
        configs = defaults["hparams"].unique()
        if len(configs) < 2:
            continue
        parsed = {c: json.loads(c) for c in configs}
        keys = sorted({k for p in parsed.values() for k in p
                       if len({json.dumps(q.get(k)) for q in parsed.values()}) > 1})
        for config, values in parsed.items():
            suffix = ",".join(f"{k}={values.get(k)}" for k in keys)
            mask = (df["method"] == method) & (df["hparams"] == config) & (df["trial"] == 0)
            labels[mask] = f"{method}{{{suffix}}}"
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
