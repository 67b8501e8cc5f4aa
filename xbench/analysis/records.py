"""Reading records for analysis: one row per job, and the labels shown for methods and tasks.

This module is the analysis layer's only door to the record files
(:mod:`xbench.store` parses them); nothing here imports the harness.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import warnings
from typing import Any, Iterator

import numpy as np
import pandas as pd

from xbench.errors import RecordsError
from xbench.analysis import index as _index
from xbench.analysis import sweep as _sweep
from xbench.store import load_records, record_files


@contextlib.contextmanager
def bulk_analysis() -> Iterator[None]:
    """What reading and analysing 100,000 records needs of Python and pandas (also a
    decorator), restored as it was on exit:

    * the cyclic garbage collector paused. Reading them makes millions of dicts, lists and
      lazy cells, none in a reference cycle (reference counting frees them), and the
      collector's repeated passes over them were a third of ``compare``'s time;
    * strings in the frames made meanwhile held as Python objects (``future.infer_string``
      off), pandas' default before 3.0. A report makes thousands of small frames, and on
      them pandas 3's pyarrow-backed ``str`` dtype cost a fifth of its time in per-operation
      overhead (the same tables either way; ``benchmarks/README.md``). pandas 4 removes the
      option: strings then stay ``str``, which changes the speed only.
    """
    enabled = gc.isenabled()
    gc.disable()
    infer = _set_infer_string(False)
    try:
        yield
    finally:
        if infer:
            _set_infer_string(True)
        if enabled:
            gc.enable()


def _set_infer_string(value: bool) -> bool:
    """Set pandas' ``future.infer_string`` (deprecated in pandas 3, absent before 2.1 and
    from 4.0); whether it was on before."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            before = bool(pd.get_option("future.infer_string"))
            pd.set_option("future.infer_string", value)
        except (KeyError, AttributeError):  # pandas.errors.OptionError: no such option
            return False
    return before


def load_results(*paths: str | os.PathLike, problems: list[str] | None = None) -> pd.DataFrame:
    """One row per job from results folders or record files (latest record per job).

    Broken lines and invalid records are skipped; their descriptions are appended
    to ``problems`` when a list is given, else issued as warnings.
    """
    df, found, _ = read_results(*paths)
    if problems is not None:
        problems.extend(found)
    else:
        for problem in found:
            warnings.warn(problem, stacklevel=2)
    return df


def read_results(*paths: str | os.PathLike) -> tuple[pd.DataFrame, list[str], int]:
    """:func:`load_results`' frame, the notes on what was skipped (one per broken line or
    invalid record, naming file, line and field; then the count of invalid records) and
    the number of records skipped as invalid."""
    if not paths:
        raise RecordsError("no results given; pass one or more --out folders of `xbench run`")
    columns = ["job_id", "suite", "task", "task_version", "target", "protocol", "method",
               "method_origin", "hparams", "seed", "trial", "holdout", "status", "error"]
    indexed = _index.load_frame(record_files(paths), _flatten)  # None: read the JSONL
    if indexed is not None:
        df, found = indexed
        invalid = _index.invalid_count(found)
    else:
        result = load_records(paths)
        found, invalid = result.problems, result.invalid
        rows = [_flatten(r) for r in result.records]
        df = pd.DataFrame(rows, columns=None if rows else columns)
    if df.empty:
        return (pd.DataFrame(columns=columns) if not len(df.columns) else df), found, invalid
    df["method_label"] = _method_labels(df)
    df["task_label"] = _task_labels(df)
    df["task_group"] = _task_labels(df, across_targets=True)
    return df, found, invalid


def display_path(path: str | os.PathLike) -> str:
    """A path as published: relative to the working directory when inside it, else only its
    last two parts -- never an absolute local path."""
    from pathlib import Path

    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(*p.parts[-2:])) if len(p.parts) > 2 else p.name


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    metrics = record.get("metrics") or {}
    cost = record.get("cost") or {}
    env = record.get("env") or {}
    row = {key: record.get(key) for key in ("job_id", "suite", "task", "task_version",
                                            "method", "method_origin", "seed", "status",
                                            "error", "time")}
    key = comparability_key(record)
    row.update(zip(KEY_COLUMNS, key))
    row["comparable"] = "|".join(key)
    domains = set(metrics.get("domains") or {})
    row["n_sources"] = len(domains - set(record.get("target") or [])) if domains else None
    row["hparams"] = json.dumps(record.get("hparams", {}), sort_keys=True)
    budget = record.get("budget") or {}
    stage_steps = budget.get("stage_steps") or {}
    custom = any(n != budget.get("steps") for n in stage_steps.values())  # not the default
    row["method_config"] = json.dumps({**(record.get("hparams") or {}),
                                       **({"stage_steps": stage_steps} if custom else {})},
                                      sort_keys=True)
    row["chance"] = record.get("chance")
    row["test_size"] = metrics.get("test_size")
    items = metrics.get("test_items")
    row["test_items"] = json.dumps(items, sort_keys=True) if isinstance(items, dict) else None
    row["data_seed"] = (record.get("task_options") or {}).get("data_seed")
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
    criteria = _sweep.checkpoint_criteria({**row, "target": record.get("target"),
                                           "trial": row["trial"], "protocol": row["protocol"]})
    for name, (step, criterion) in criteria.items():
        row[f"step@{name}"], row[f"criterion@{name}"] = step, criterion
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
    """``erm``, or ``erm{lr=1e-07}`` when one method ran with several default-trial configs
    (hyper-parameters, and a staged method's ``stage_steps``).

    Only trial-0 (default hyper-parameter) main runs are compared: the trials of
    a random search are one sweep and share the method's name.
    """
    labels = df["method"].copy()
    defaults = df[df["trial"] == 0]
    several = defaults.groupby("method")["method_config"].nunique()
    for method in several.index[several > 1]:  # the others keep their name
        configs = defaults.loc[defaults["method"] == method, "method_config"].unique()
        parsed = {c: json.loads(c) for c in configs}
        keys = sorted({k for p in parsed.values() for k in p
                       if len({json.dumps(q.get(k)) for q in parsed.values()}) > 1})
        for config, values in parsed.items():
            suffix = ",".join(f"{k}={_short(values.get(k))}" for k in keys)
            mask = (df["method"] == method) & (df["method_config"] == config) & \
                (df["trial"] == 0)
            labels[mask] = f"{method}{{{suffix}}}"
    return labels


def _task_labels(df: pd.DataFrame, across_targets: bool = False) -> pd.Series:
    """One label per comparability key of a task (within a protocol).

    ``task`` when every record of the task shares one key; otherwise the parts of
    the key that differ are appended: ``task:target``, ``task@v2``,
    ``task[resolution=32]``, ``task[steps=300]``, ``task[bf16]``, ``task[tta batch 16,
    continual]``. Records are pooled into one cell only when their labels agree.
    ``across_targets``: the key without its target, so the runs of one task with
    each domain held out in turn share a label (the report's mean over targets).
    """
    labels = df["task"].astype(str).copy()
    parts = [c for c in KEY_COLUMNS if not (across_targets and c == "target")]
    # the key as one number per row (the key's parts are strings; a row-wise ``agg`` boxed
    # every value of 100,000 rows: seconds)
    key = df.groupby(parts, dropna=False, sort=False).ngroup().to_numpy()
    out = labels.to_numpy(dtype=object, copy=True)  # written below
    # positions, not sub-frames: a sub-frame of 100,000 records per task costs seconds
    for where in df.groupby(["task", "protocol"], dropna=False).indices.values():
        codes, first = np.unique(key[where], return_index=True)
        if len(codes) < 2:
            continue
        varying = [c for c in parts[1:] if c != "protocol"
                   and df[c].take(where).nunique() > 1]
        for code, position in zip(codes, where[first]):
            row = df.iloc[position]
            out[where[key[where] == code]] = row["task"] + "".join(
                _describe(column, row[column]) for column in varying)
    return pd.Series(out, index=df.index, dtype=labels.dtype)


def key_labels(keys) -> dict[tuple, str]:
    """A label per comparability key (:func:`comparability_key`, first
    ``len(KEY_COLUMNS)`` entries): ``task``, with the key parts that tell it from
    other keys of the same task and protocol appended, as in the report's columns
    (``task:target``, ``task@v2``, ``task[resolution=32]``, ``/protocol`` when a
    task runs under several protocols)."""
    keys = list(dict.fromkeys(tuple(k[:len(KEY_COLUMNS)]) for k in keys))
    labels = {}
    for key in keys:
        task, protocol = key[0], key[4]
        same_task = [k for k in keys if k[0] == task]
        same = [k for k in same_task if k[4] == protocol]
        label = str(task)
        for i, column in enumerate(KEY_COLUMNS[1:], start=1):
            if column != "protocol" and len({k[i] for k in same}) > 1:
                label += _describe(column, key[i])
        if len({k[4] for k in same_task}) > 1:
            label += f"/{protocol}"
        labels[key] = label
    return labels


def _describe(column: str, value: str) -> str:
    """The label part that tells one key value of ``column`` from another."""
    if column == "target":
        return f":{value}"
    if column == "task_version":
        return f"@v{value}"
    if column == "precision":
        return f"[{value}]"
    parsed = json.loads(value)
    if column == "stream":
        return "[no stream]" if parsed is None else \
            f"[tta batch {parsed.get('batch_size')}, {parsed.get('mode')}]"
    return "[" + ",".join(f"{k}={_short(v)}" for k, v in sorted(parsed.items())) + "]"


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) \
        else str(value)


# --------------------------------------------------------------------------- comparability

#: Task options that say where data lives, not what it is (records older than
#: ``task_identity`` are read with these left out).
LOCATION_OPTIONS = frozenset({"root", "cache_dir"})
#: Task options that are replicates, not identity: the split follows the seed.
REPLICATE_OPTIONS = frozenset({"data_seed"})
#: Budget keys that are not the task's: evaluation chunking, and each stage's steps of a
#: staged method (a per-method setting: it tells two configurations of one method apart, in
#: the method's label, like a hyper-parameter, see :func:`_method_labels`).
BUDGET_IGNORED = frozenset({"eval_batch_size", "stage_steps"})
#: The columns of the comparability key, in order (see :func:`comparability_key`).
KEY_COLUMNS = ("task", "task_version", "identity", "target", "protocol", "budget_key",
               "precision", "stream")


def comparability_key(record: dict[str, Any], cost: bool = False) -> tuple:
    """What must agree for two records to be pooled into one cell (or matched by compare).

    Task, task version, the task's identity options (location options such as
    ``root`` and the replicate option ``data_seed`` left out; for data read from disk
    the fingerprint of its content, ``data_fingerprint``), target domains,
    protocol, budget (steps, batch size, evaluation schedule, per-stage steps),
    precision and, for test-time adaptation, the adaptation stream. ``cost=True``
    adds the device name: cost is comparable only on one device. Method,
    hyper-parameters and seed are *not* part of it: they are what a table compares
    or replicates over.
    """
    key = (str(record.get("task")), str(record.get("task_version")),
           _canonical(task_identity(record)), "+".join(record.get("target") or []),
           protocol_of(record), _canonical(budget_identity(record)),
           str(record.get("precision") or "fp32"), _canonical(record.get("stream")))
    if cost:
        key += (str((record.get("env") or {}).get("device_name")),)
    return key


def task_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The task options that identify the data (``task_identity`` when the record has it)."""
    identity = record.get("task_identity")
    if not isinstance(identity, dict):
        identity = {k: v for k, v in (record.get("task_options") or {}).items()
                    if k not in LOCATION_OPTIONS}
    return {k: v for k, v in identity.items() if k not in REPLICATE_OPTIONS}


def budget_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The budget keys that change what is learned (not the evaluation chunk size)."""
    return {k: v for k, v in (record.get("budget") or {}).items() if k not in BUDGET_IGNORED}


def protocol_of(record: dict[str, Any]) -> str:
    """The record's protocol; a transductive record filed under ``dg`` (before the ``tta``
    protocol existed) is test-time adaptation and is read as ``tta``."""
    protocol = str(record.get("protocol"))
    return "tta" if protocol == "dg" and record.get("transductive") else protocol


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


#: What ``compare`` and ``history`` read of a record (``Metric.path``s): its metrics, of each
#: checkpoint selection's scores in ``by_selection``, and its cost (and ``NAME_samples``).
RUN_METRIC_FIELDS = ("acc_target", "acc_target_worst", "acc_source_val", "by_selection")
RUN_SELECTION_FIELDS = ("acc_target", "acc_target_worst")
RUN_COST_FIELDS = ("train_samples_per_s", "infer_samples_per_s", "latency_ms", "peak_mem_mb")


#: The fields of :func:`run_fields` other than ``cost_key`` (the key and the device name),
#: in its order: what the index stores of a run.
RUN_FIELDS = (*KEY_COLUMNS, "method", "config", "seed", "status", "error", "device_name",
              "torch", "threads", "git_sha", "git_dirty", "time")


def run_fields(record: dict[str, Any]) -> dict[str, Any]:
    """What :func:`xbench.analysis.compare.runs_of_records` makes of a record, less the record
    itself: the matching key, configuration, seed, status and environment."""
    env = record.get("env") or {}
    row = dict(zip(KEY_COLUMNS, comparability_key(record)))
    row.update({
        "method": str(record.get("method")),
        "config": _canonical({"hparams": record.get("hparams") or {}}),
        "cost_key": comparability_key(record, cost=True),
        "seed": record.get("seed"), "status": record.get("status"), "error": record.get("error"),
        "device_name": env.get("device_name"), "torch": env.get("torch"),
        "threads": env.get("threads"), "git_sha": env.get("git_sha"),
        "git_dirty": env.get("git_dirty"), "time": record.get("time") or ""})
    return row


def run_record(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record that ``compare`` (not ``--exact``) and ``history`` read of a run
    (``Metric.value``, ``Metric.run_value``): the accuracies (``RUN_METRIC_FIELDS``; of
    ``by_selection`` each selection's ``RUN_SELECTION_FIELDS``), the cost metrics
    (``RUN_COST_FIELDS``) with each raw timing sample list reduced to the run's statistic
    (the median of its finite blocks, what ``Metric.run_value`` takes of it: the median of
    one value is that value), trial and holdout."""
    import math

    metrics = record.get("metrics")
    cost = record.get("cost")
    out: dict[str, Any] = {k: record[k] for k in ("trial", "holdout") if k in record}
    if isinstance(metrics, dict):
        out["metrics"] = {k: metrics[k] for k in RUN_METRIC_FIELDS if k in metrics}
        chosen = out["metrics"].get("by_selection")
        if isinstance(chosen, dict):
            out["metrics"]["by_selection"] = {
                name: ({k: v[k] for k in RUN_SELECTION_FIELDS if k in v}
                       if isinstance(v, dict) else v) for name, v in chosen.items()}
    elif metrics is not None:
        out["metrics"] = metrics
    if isinstance(cost, dict):
        cost = {k: v for k, v in cost.items()
                if k in RUN_COST_FIELDS or k.removesuffix("_samples") in RUN_COST_FIELDS}
        for key, raw in cost.items():
            if key.endswith("_samples") and isinstance(raw, list):
                values = [float(v) for v in raw
                          if isinstance(v, (int, float)) and math.isfinite(v)]
                cost[key] = [float(np.median(values))] if values else []
    if cost is not None:
        out["cost"] = cost
    return out
