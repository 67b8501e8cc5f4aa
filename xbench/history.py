"""A metric across commits, with the commits where it stepped marked.

Records carry ``env.git_sha`` (and ``git_dirty``) and ``time``. ``history``
groups the successful runs of each (task, method) -- and, for cost metrics,
each device -- by commit (a dirty tree is its own group, shown ``sha+``),
orders the groups by their earliest record time and shows the metric per
commit: the mean over runs for accuracy and memory, the median of the pooled
raw timing samples for throughput and latency.

Step detection
--------------
Binary segmentation (in the spirit of asv's step detection, which fits a
piecewise-constant model): within a segment of consecutive commits, every
boundary is tried, splitting the segment's runs into the commits before and
after it; each split is judged with the same gate as ``xbench compare``
(:func:`xbench.compare.assess`: beyond the metric's threshold *and*
significant -- Welch's t-test over runs, or Mann-Whitney U on raw timing
samples -- against the threshold-moved earlier side). The boundary with the
smallest p-value is a step when that p-value is below ``significance``
divided by the number of boundaries tried (Bonferroni, since the best of
many boundaries is chosen); the search then recurses into both halves. Unlike
comparing neighbouring commits only, pooling whole segments detects a step
even with a single run per commit, and the threshold keeps noise of the size
of the threshold from ever being marked.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from xbench.compare import (DEFAULT_SIGNIFICANCE, KEY, Metric, Verdict, assess, get_metric,
                            runs_frame, sweep_label, task_labels)
from xbench.errors import NothingToCompareError, UsageError
from xbench.store import load_records


@dataclasses.dataclass
class Point:
    """One commit of a series: its runs' values (or pooled timing samples)."""

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


def _values(metric: Metric, group: pd.DataFrame) -> list[float]:
    if metric.kind == "timing":
        return [v for r in group.record for v in metric.samples(r)]
    return [v for v in (metric.value(r) for r in group.record) if v is not None]


def detect_steps(points: Sequence[Point], metric: Metric, *, threshold: float | None = None,
                 significance: float = DEFAULT_SIGNIFICANCE) -> dict[int, Verdict]:
    """Binary segmentation of ``points`` with the compare gate (see the module docstring)."""
    steps: dict[int, Verdict] = {}

    def segment(lo: int, hi: int) -> None:
        if hi - lo < 2:
            return
        candidates = range(lo + 1, hi)
        level = significance / len(candidates)
        best: tuple[float, int, Verdict] | None = None
        for i in candidates:
            before = [v for p in points[lo:i] for v in p.values]
            after = [v for p in points[i:hi] for v in p.values]
            verdict = assess(metric, before, after, threshold=threshold, significance=level)
            if verdict.status in ("regression", "improvement") and (
                    best is None or verdict.p < best[0]):
                best = (verdict.p, i, verdict)
        if best is None:
            return
        _, i, verdict = best
        steps[i] = verdict
        segment(lo, i)
        segment(i, hi)

    segment(0, len(points))
    return dict(sorted(steps.items()))


def history(paths: Sequence[str], *, metric: str = "acc_target", task: str | None = None,
            method: str | None = None, threshold: float | None = None,
            significance: float = DEFAULT_SIGNIFICANCE) -> list[Series]:
    """The series of ``metric`` per (task, method) across commits in ``paths``."""
    if not 0 < significance < 1:
        raise UsageError(f"--significance {significance}: must be between 0 and 1, e.g. 0.05")
    chosen = get_metric(metric)
    runs = runs_frame(load_records(paths).records)
    if not runs.empty:
        runs = runs[runs.status == "ok"]
    if task and not runs.empty:
        runs = runs[[fnmatch.fnmatchcase(str(t), task) for t in runs.task]]
    if method and not runs.empty:
        runs = runs[[fnmatch.fnmatchcase(str(m), method) for m in runs.method]]
    if runs.empty:
        what = " ".join(f"--{k} {v}" for k, v in (("task", task), ("method", method)) if v)
        raise NothingToCompareError(f"no successful runs in {', '.join(map(str, paths))}"
                                    + (f" match {what}" if what else ""))
    runs = runs.assign(commit=[_commit(sha, dirty) for sha, dirty in
                               zip(runs.git_sha, runs.git_dirty)])
    labels = task_labels(list(runs.groupby(list(KEY), dropna=False).groups))
    out: list[Series] = []
    for key, group in runs.groupby(list(KEY), sort=True, dropna=False):
        configs = list(group.config.unique())
        # several configurations within one commit is a sweep: one series per configuration
        split = group.groupby("commit").config.nunique().max() > 1
        by_config = group.groupby("config") if split else [(None, group)]
        for config, sub in by_config:
            label = key[5] + (sweep_label(config, configs) if split else "")
            devices = sub.groupby("device_name", dropna=False) if chosen.is_cost else [(None, sub)]
            for device, series_runs in devices:
                points = _points(chosen, series_runs)
                if not points:
                    continue
                steps = detect_steps(points, chosen, threshold=threshold,
                                     significance=significance)
                out.append(Series(labels[key[:5]], label, device, chosen, points, steps))
    if not out:
        raise NothingToCompareError(f"the selected runs have no values of {metric}")
    return out


def _commit(sha: Any, dirty: Any) -> str:
    if not isinstance(sha, str) or not sha:
        return "(no git)"
    return sha[:10] + ("+" if dirty else "")


def _points(metric: Metric, runs: pd.DataFrame) -> list[Point]:
    points = []
    for commit, group in runs.groupby("commit"):
        values = _values(metric, group)
        if not values:
            continue
        centre = float(np.median(values) if metric.kind == "timing" else np.mean(values))
        points.append(Point(commit, str(group.time.min()), len(group), values, centre))
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
    parts.append(f"{n_steps} step(s) found in {len(series)} series (binary segmentation, "
                 f"compare's threshold + significance test, Bonferroni over boundaries).")
    return "\n\n".join(parts) + "\n"
