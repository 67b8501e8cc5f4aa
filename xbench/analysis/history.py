"""A metric across commits, with the commits where it stepped marked.

Records carry ``env.git_sha`` (and ``git_dirty``) and ``time``; the run
folders of several commits (or one file that collects them) are read
together, keeping each job once per commit. ``history``
groups the successful runs of each benchmark -- comparability key
(:func:`xbench.analysis.records.comparability_key`) and method; for cost
metrics ``comparability_key(record, cost=True)``, which adds the device -- by commit (a dirty tree is its own group, shown ``sha+``),
orders the groups by their earliest record time and shows the metric per
commit: the mean over runs for accuracy and memory, the median over runs of
each run's timing statistic (the median of its timing blocks) for throughput
and latency -- runs, not the blocks within a run, are the replicates.

Step detection
--------------
Least-squares binary segmentation pruned by the compare gate, in the spirit
of asv's piecewise-constant step fit. Proposal: a segment of consecutive
commits is split at the boundary that minimises the within-segment sum of
squares of its runs' values, recursively, while the
two sides differ by more than the metric's threshold. Pruning: each proposed
step is tested between its neighbouring segments with the same gate as
``xbench compare`` (:func:`xbench.analysis.compare.assess`: beyond the threshold *and*
significant -- Welch's t-test over runs, Mann-Whitney U on per-run timing
statistics at the timing level -- against the threshold-moved earlier side) at ``significance``
divided by the number of boundaries (Bonferroni: the data chose where to
look); the weakest failing step is dropped and the rest re-tested until every
step left passes. Pooling whole segments finds a step even with one run per
commit, and noise of the size of the threshold is never marked.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xbench.analysis.compare import (DEFAULT_SIGNIFICANCE, KEY, METHOD, Metric, Verdict, assess,
                                     get_metric, sweep_labels, task_labels)
from xbench.analysis.gate_stats import TIMING_SIGNIFICANCE
from xbench.analysis.records import bulk_analysis
from xbench.errors import NothingToCompareError, UsageError
from xbench.store import read_records, record_files, supersedes


@dataclasses.dataclass
class Point:
    """One commit of a series: one value per run (timing: each run's median block)."""

    commit: str
    time: str
    runs: int
    values: list[float]
    value: float


@dataclasses.dataclass
class Series:
    """A metric of one (task, method[, device]) across commits, and the steps found in it."""

    task: str
    method: str
    device: str | None
    metric: Metric
    points: list[Point]
    steps: dict[int, Verdict]  # index of the first commit after the step -> its verdict


def _values(metric: Metric, group: list[dict[str, Any]]) -> list[float]:
    """One value per run (timing: the median of the run's blocks, never pooled blocks)."""
    return [v for v in (metric.run_value(r["record"]) for r in group) if v is not None]


def _groups(runs: list[dict[str, Any]], column: str) -> list[tuple[Any, list[dict[str, Any]]]]:
    """``runs`` grouped by ``column``, groups in sorted order, runs in their order (as a
    pandas ``groupby(column)``)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r[column], []).append(r)
    return sorted(groups.items(), key=lambda item: item[0])


def _pooled(points: Sequence[Point], lo: int, hi: int) -> list[float]:
    return [v for p in points[lo:hi] for v in p.values]


def _sse(values: list[float]) -> float:
    return float(np.var(values) * len(values)) if values else 0.0


def detect_steps(points: Sequence[Point], metric: Metric, *, threshold: float | None = None,
                 significance: float = DEFAULT_SIGNIFICANCE) -> dict[int, Verdict]:
    """Steps in ``points``: least-squares binary segmentation, pruned by the compare gate.

    Returns ``{index of the first commit after a step: verdict of that step}``.
    """
    if len(points) < 2:
        return {}

    def check(lo: int, mid: int, hi: int, level: float) -> Verdict:
        return assess(metric, _pooled(points, lo, mid), _pooled(points, mid, hi),
                      threshold=threshold, significance=level,
                      timing_significance=min(level, TIMING_SIGNIFICANCE))

    # 1. propose: split each segment where the within-segment sum of squares is smallest,
    #    as long as the two sides differ by more than the threshold.
    proposed: list[int] = []

    def propose(lo: int, hi: int) -> None:
        # both sides need two values for a test (one run a side is not testable)
        candidates = [i for i in range(lo + 1, hi)
                      if len(_pooled(points, lo, i)) >= 2 and len(_pooled(points, i, hi)) >= 2]
        if not candidates:
            return
        best = min(candidates, key=lambda i: _sse(_pooled(points, lo, i))
                   + _sse(_pooled(points, i, hi)))
        if check(lo, best, hi, significance).status == "same":
            return
        proposed.append(best)
        propose(lo, best)
        propose(best, hi)

    propose(0, len(points))
    # 2. prune: test each proposed step between its neighbouring segments (threshold and
    #    significance, Bonferroni over the boundaries the data could have chosen);
    #    drop the weakest failing one and re-test until every step left passes.
    level = significance / (len(points) - 1)
    bounds = sorted(proposed)
    while bounds:
        edges = [0, *bounds, len(points)]
        verdicts = [check(edges[j - 1], edges[j], edges[j + 1], level)
                    for j in range(1, len(edges) - 1)]
        failing = [j for j, v in enumerate(verdicts) if v.status not in ("regression",
                                                                          "improvement")]
        if not failing:
            return dict(zip(bounds, verdicts))
        weakest = max(failing, key=lambda j: (verdicts[j].p if math.isfinite(verdicts[j].p)
                                              else math.inf))
        del bounds[weakest]
    return {}


@bulk_analysis()
def history(paths: Sequence[str], *, metric: str = "acc_target", task: str | None = None,
            method: str | None = None, threshold: float | None = None,
            significance: float = DEFAULT_SIGNIFICANCE) -> list[Series]:
    """The series of ``metric`` per (task, method) across commits in ``paths``."""
    if not 0 < significance < 1:
        raise UsageError(f"--significance {significance}: must be between 0 and 1, e.g. 0.05")
    chosen = get_metric(metric)
    # the successful runs asked for, filtered before anything is made of them; grouped in
    # plain Python (a 20-trial sweep over 48 seeds is ~1,000 series per benchmark, and a
    # pandas groupby per series cost more than the rest)
    def keep(r: dict[str, Any]) -> bool:
        return (r["status"] == "ok"
                and (not task or fnmatch.fnmatchcase(str(r["task"]), task))
                and (not method or fnmatch.fnmatchcase(str(r["method"]), method)))

    runs = load_history_runs(paths, keep)
    if not runs:
        what = " ".join(f"--{k} {v}" for k, v in (("task", task), ("method", method)) if v)
        raise NothingToCompareError(f"no successful runs in {', '.join(map(str, paths))}"
                                    + (f" match {what}" if what else ""))
    by_key: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        r["commit"] = _commit(r["git_sha"], r["git_dirty"])
        by_key.setdefault(tuple(r[c] for c in KEY), []).append(r)
    labels = task_labels(sorted(by_key))
    out: list[Series] = []
    for key in sorted(by_key):
        group = by_key[key]
        configs = list(dict.fromkeys(r["config"] for r in group))
        # several configurations within one commit is a sweep: one series per configuration
        per_commit: dict[str, set[str]] = {}
        for r in group:
            per_commit.setdefault(r["commit"], set()).add(r["config"])
        split = max(len(c) for c in per_commit.values()) > 1
        by_config = _groups(group, "config") if split else [(None, group)]
        config_labels = sweep_labels(configs) if split else {}
        for config, sub in by_config:
            label = key[METHOD] + (config_labels[config] if split else "")
            # cost: one series per comparability_key(record, cost=True), i.e. per device
            devices = _groups(sub, "cost_key") if chosen.is_cost else [(None, sub)]
            for cost_key, series_runs in devices:
                device = cost_key[-1] if cost_key is not None else None
                points = _points(chosen, series_runs)
                if not points:
                    continue
                steps = detect_steps(points, chosen, threshold=threshold,
                                     significance=significance)
                out.append(Series(labels[key[:METHOD]], label, device, chosen, points, steps))
    if not out:
        raise NothingToCompareError(f"the selected runs have no values of {metric}")
    return out


def load_history(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Records of every commit in ``paths``.

    A job keeps its ``job_id`` across commits (the id hashes the experiment,
    not the code), so unlike :func:`xbench.store.load_records` the latest record
    wins per (``job_id``, commit, dirty flag, device), an ``ok`` one beating a failed one.
    """
    chosen: dict[tuple, dict[str, Any]] = {}
    from xbench.analysis import index
    from xbench.analysis.records import _flatten

    problems: list[str] = []
    files: dict[Path, Path] = {}
    for p in record_files(paths):  # each file once, named as the user named it
        files.setdefault(p.resolve(), p)
    for file in files.values():
        indexed = index.records_of(file, _flatten)  # records without their eval history
        if indexed is None:
            result = read_records(file)
            indexed = result.records, result.problems
        problems += indexed[1]
        for r in indexed[0]:
            env = r.get("env") or {}
            key = (r["job_id"], env.get("git_sha"), env.get("git_dirty"),
                   env.get("device_name"))
            if supersedes(r, chosen.get(key)):
                chosen[key] = r
    for problem in index.with_invalid_count(problems):  # one warning each, then the count
        warnings.warn(problem, stacklevel=2)
    return list(chosen.values())


def load_history_runs(paths: Sequence[str], keep: Any = None) -> list[dict[str, Any]]:
    """The runs of :func:`load_history`'s records (the same records chosen the same way)
    that ``keep`` (given the run's fields) keeps, each its run fields
    (:func:`xbench.analysis.records.run_fields`) and ``record``: from the index, only what a
    run's value is read from (:func:`xbench.analysis.records.run_record`), and only for
    the runs kept (the choice and ``keep`` read only the index's ``WHO`` columns), else the
    whole record."""
    from xbench.analysis import index
    from xbench.analysis.records import _flatten, run_fields

    chosen: dict[tuple, dict[str, Any]] = {}
    tokens: dict[int, Any] = {}
    problems: list[str] = []
    files: dict[Path, Path] = {}
    for p in record_files(paths):  # each file once, named as the user named it
        files.setdefault(p.resolve(), p)
    for number, file in enumerate(files.values()):
        indexed = index.run_keys_of(file, _flatten)
        if indexed is not None:
            runs = indexed[0]
            tokens[number] = indexed[2]
            problems += indexed[1]
            for run in runs:
                run["_file"] = number
        else:
            result = read_records(file)
            problems += result.problems
            runs = [{**run_fields(r), "job_id": r["job_id"], "record": r}
                    for r in result.records]
        for run in runs:
            key = (run["job_id"], run["git_sha"], run["git_dirty"], run["device_name"])
            if supersedes(run, chosen.get(key)):
                chosen[key] = run
    for problem in index.with_invalid_count(problems):  # one warning each, then the count
        warnings.warn(problem, stacklevel=2)
    out = [run for run in chosen.values() if keep is None or keep(run)]
    # the kept runs of indexed files, read from the index at their positions
    wanted: dict[int, list[int]] = {}
    for run in out:
        if "_file" in run:
            wanted.setdefault(run["_file"], []).append(run["_position"])
    read: dict[tuple[int, int], dict[str, Any]] = {}
    for number, positions in wanted.items():
        positions = sorted(positions)
        got = index.runs_at(tokens[number], positions)
        if got is None:  # the index went away under us: read the records again
            return load_history_runs_from_records(paths, keep)
        for position, (fields, lite) in zip(positions, got):
            fields["record"] = lite
            read[number, position] = fields
    runs = [read[run["_file"], run["_position"]] if "_file" in run else run for run in out]
    for run in runs:
        run.pop("job_id", None)
    return runs


def load_history_runs_from_records(paths: Sequence[str], keep: Any = None
                                   ) -> list[dict[str, Any]]:
    """:func:`load_history_runs` from the records of :func:`load_history` (the JSONL)."""
    from xbench.analysis.records import run_fields

    runs = [{**run_fields(r), "record": r} for r in load_history(paths)]
    return [run for run in runs if keep is None or keep(run)]


def _commit(sha: Any, dirty: Any) -> str:
    if not isinstance(sha, str) or not sha:
        return "(no git)"
    return sha[:10] + ("+" if dirty else "")


def _points(metric: Metric, runs: list[dict[str, Any]]) -> list[Point]:
    points = []
    for commit, group in _groups(runs, "commit"):
        values = _values(metric, group)
        if not values:
            continue
        centre = float(np.median(values) if metric.kind == "timing" else np.mean(values))
        points.append(Point(commit, str(min(r["time"] for r in group)), len(group), values,
                            centre))
    return sorted(points, key=lambda p: p.time)


def render(series: list[Series], fmt: str = "text") -> str:
    """One table per series: commit, time, runs, value, change from the previous commit, step."""
    from tabulate import tabulate

    md = fmt == "md"
    parts = []
    n_steps = sum(len(s.steps) for s in series)
    for s in series:
        metric = s.metric
        direction = "higher" if metric.higher_is_better else "lower"
        title = (f"{s.task} / {s.method}" + (f" on {s.device}" if s.device else "")
                 + f": {metric.name} ({direction} is better)")
        rows = []
        for i, point in enumerate(s.points):
            previous = s.points[i - 1].value if i else math.nan
            change = (point.value / previous - 1 if metric.relative and previous
                      else point.value - previous)
            mark = ""
            if i in s.steps:
                v = s.steps[i]
                kind = "WORSE" if v.worse else "better"
                mark = (f"<- step {kind}: {metric.format_value(v.base)} -> "
                        f"{metric.format_value(v.new)} ({metric.format_change(v.change)}, "
                        f"p={v.p:.2g})")
            rows.append([point.commit, point.time, point.runs, metric.format_value(point.value),
                         metric.format_change(change) if i else "", mark])
        parts.append(f"### {title}" if md else title)
        parts.append(tabulate(rows, headers=["commit", "time", "runs", metric.name,
                                             "vs previous", "step"],
                              tablefmt="github" if md else "simple", disable_numparse=True))
    parts.append(f"{n_steps} step(s) found in {len(series)} series (least-squares binary "
                 f"segmentation pruned by compare's threshold + significance test, Bonferroni "
                 f"over boundaries; p shown uncorrected).")
    return "\n\n".join(parts) + "\n"
