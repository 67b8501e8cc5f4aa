"""Regression gate: compare the records of two runs (BASE and NEW), metric by metric.

What is compared with what
--------------------------
Runs are matched by their *benchmark*: (task, task version, task options,
target domains, protocol, method) -- **not** by seed and, by default, **not**
by hyper-parameters or budget. BASE and NEW are meant to be the same suite run
by two versions of the code; a changed default (or a ``--set erm.lr=1e-7``
that simulates a broken change) is exactly what the gate must catch, so when
each side holds one configuration of a benchmark the two are compared and the
differing hyper-parameters/budget are reported as a configuration change next
to the result. Only when a side holds *several* configurations of the same
benchmark (a sweep) are configurations matched exactly; the unmatched ones are
listed as new (only in NEW) or missing (only in BASE).

When a change counts
--------------------
Every metric has a direction (accuracies and throughputs: higher is better;
latency and memory: lower is better) and a threshold: absolute for accuracies
(default 1 accuracy point), relative for the others (default 10% for
throughput, latency and peak memory; peak memory per job is one number per
run, exact on CUDA and dominated by the interpreter's resident set on the
CPU, so 10% catches a real growth without flagging allocator noise).

A change is a **regression** only when it is worse than the threshold *and*
significantly so: the p-value is that of a one-sided test of "NEW is no worse
than BASE moved by the threshold" (a non-inferiority test), so noise of the
size of the threshold is not flagged however many seeds were run:

* accuracy and memory: one value per run (seed); a paired t-test
  (``scipy.stats.ttest_rel``) when both sides ran exactly the same seeds,
  otherwise Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``);
* timing (throughput, latency): Mann-Whitney U (``scipy.stats.mannwhitneyu``)
  on the raw timing samples the runner keeps (``cost.<metric>_samples``),
  pooled over the runs of each side; the value shown is their median.

Worse than the threshold but not significant (or too few runs to test) is
shown as ``~`` and does not fail the gate; the same test in the other
direction finds improvements. Equal values on both sides (deterministic CPU
accuracy with the same seeds) are "no change", never a test on zero variance.
``fdr=True`` adjusts the p-values of all comparisons with Benjamini-Hochberg
(``scipy.stats.false_discovery_control``) for suites with many methods.

A benchmark whose runs failed in NEW but not in BASE is a regression too.

Cost metrics are compared only between runs on the same device name (a
warning names the devices, and ``force_cost=True`` compares them anyway);
different torch versions or thread counts are warned about.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from tabulate import tabulate

from xbench.errors import ExitCode, NothingToCompareError, UsageError
from xbench.analysis.sweep import CHECKPOINT_SELECTIONS
from xbench.store import load_records

DEFAULT_METRICS = ("acc_target", "train_samples_per_s", "infer_samples_per_s", "latency_ms",
                   "peak_mem_mb")
DEFAULT_SIGNIFICANCE = 0.05
KEY = ("task", "task_version", "task_options", "target", "protocol", "method")


# -- metrics ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Metric:
    """A comparable quantity of a record: where it lives, its direction and its threshold.

    ``kind`` is ``accuracy`` (absolute threshold, a fraction: 0.01 = 1 point),
    ``timing`` (relative threshold, raw samples) or ``memory`` (relative).
    """

    name: str
    kind: str
    higher_is_better: bool
    threshold: float
    path: tuple[str, ...]

    @property
    def relative(self) -> bool:
        return self.kind != "accuracy"

    @property
    def is_cost(self) -> bool:
        return self.kind != "accuracy"

    def value(self, record: dict[str, Any]) -> float | None:
        node: Any = record
        for part in self.path:
            node = node.get(part) if isinstance(node, dict) else None
        return float(node) if isinstance(node, (int, float)) and math.isfinite(node) else None

    def samples(self, record: dict[str, Any]) -> list[float]:
        """Raw timing samples of one run (the run's single value when it kept none)."""
        if self.kind == "timing":
            raw = (record.get("cost") or {}).get(f"{self.name}_samples") or []
            raw = [float(v) for v in raw if isinstance(v, (int, float)) and math.isfinite(v)]
            if raw:
                return raw
        value = self.value(record)
        return [] if value is None else [value]

    def format_threshold(self, threshold: float) -> str:
        return f"{threshold * 100:g}%" if self.relative else f"{threshold * 100:g} pt"

    def format_value(self, value: float) -> str:
        if value is None or not math.isfinite(value):
            return "—"
        if self.kind == "accuracy":
            return f"{100 * value:.1f}"
        if self.name == "latency_ms":
            return f"{value:.3g} ms"
        if self.kind == "memory":
            return f"{value:,.0f} MiB"
        return f"{value:,.0f}/s" if abs(value) >= 100 else f"{value:.3g}/s"

    def format_change(self, change: float) -> str:
        if change is None or not math.isfinite(change):
            return "—"
        return f"{100 * change:+.1f}%" if self.relative else f"{100 * change:+.1f} pt"


def _metrics() -> dict[str, Metric]:
    table = {}
    for name in ("acc_target", "acc_target_worst", "acc_source_val"):
        table[name] = Metric(name, "accuracy", True, 0.01, ("metrics", name))
        for selection in CHECKPOINT_SELECTIONS:
            if name != "acc_source_val":
                table[f"{name}@{selection}"] = Metric(
                    f"{name}@{selection}", "accuracy", True, 0.01,
                    ("metrics", "by_selection", selection, name))
    for name in ("train_samples_per_s", "infer_samples_per_s"):
        table[name] = Metric(name, "timing", True, 0.10, ("cost", name))
    table["latency_ms"] = Metric("latency_ms", "timing", False, 0.10, ("cost", "latency_ms"))
    table["peak_mem_mb"] = Metric("peak_mem_mb", "memory", False, 0.10, ("cost", "peak_mem_mb"))
    return table


METRICS: dict[str, Metric] = _metrics()


def get_metric(name: str) -> Metric:
    """The metric called ``name``; an unknown name is a usage error with suggestions."""
    if name in METRICS:
        return METRICS[name]
    close = difflib.get_close_matches(name, list(METRICS), n=3)
    hint = f"Did you mean: {', '.join(close)}? " if close else ""
    raise UsageError(f"--metric {name}: unknown metric. {hint}Known: {', '.join(METRICS)}")


def parse_thresholds(items: Iterable[str]) -> dict[str, float]:
    """``["acc_target=2", "latency_ms=20%"]`` -> ``{"acc_target": 0.02, "latency_ms": 0.2}``.

    Accuracy thresholds are in accuracy points, the others in percent (a ``pt``
    or ``%`` suffix is accepted).
    """
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--threshold {item}: expected NAME=VALUE, e.g. "
                             f"--threshold acc_target=2 or --threshold latency_ms=20%")
        metric = get_metric(name)
        text = raw.strip().removesuffix("%" if metric.relative else "pt").strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            unit = "percent, e.g. 20%" if metric.relative else "accuracy points, e.g. 2"
            raise UsageError(f"--threshold {item}: the value must be a non-negative number in "
                             f"{unit}")
        out[name] = value / 100.0
    return out


# -- the test -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Verdict:
    """The outcome of comparing one metric between two groups of runs.

    ``status``: ``regression``, ``improvement``, ``~`` (beyond the threshold,
    not significant), ``same`` (within the threshold) or ``n/a`` (no values).
    ``change``: NEW - BASE (accuracy, a fraction) or NEW / BASE - 1 (others).
    """

    status: str
    base: float
    new: float
    change: float
    p: float
    test: str
    n_base: int
    n_new: int
    worse: bool
    note: str = ""


def _boundary(values: np.ndarray, metric: Metric, threshold: float, alternative: str
              ) -> np.ndarray:
    """BASE moved by the threshold in the direction of ``alternative``."""
    sign = -1.0 if alternative == "less" else 1.0
    if metric.relative:
        return values * (1.0 + sign * threshold)
    return values + sign * threshold


def _run_test(metric: Metric, base: np.ndarray, new: np.ndarray, threshold: float,
              alternative: str, paired: bool) -> tuple[float, str, str]:
    """p-value, test name and a note for H1: NEW beyond the moved BASE (``alternative``)."""
    bound = _boundary(base, metric, threshold, alternative)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy's inf/nan is right
        if metric.kind == "timing":
            result = stats.mannwhitneyu(new, bound, alternative=alternative)
            return float(result.pvalue), "Mann-Whitney U", ""
        if paired:
            if len(new) < 2:
                return math.nan, "paired t", "one seed: cannot test"
            return float(stats.ttest_rel(new, bound, alternative=alternative).pvalue), \
                "paired t", ""
        if len(new) < 2 or len(base) < 2:
            return math.nan, "Welch t", "fewer than 2 runs on a side: cannot test"
        result = stats.ttest_ind(new, bound, equal_var=False, alternative=alternative)
        return float(result.pvalue), "Welch t", ""


def assess(metric: Metric, base_values: Sequence[float], new_values: Sequence[float], *,
           threshold: float | None = None, significance: float = DEFAULT_SIGNIFICANCE,
           paired: bool = False) -> Verdict:
    """Compare one metric: direction, threshold and significance.

    ``base_values``/``new_values`` are one value per run (accuracy, memory; for
    ``paired``, aligned by seed) or the pooled raw samples (timing).
    """
    threshold = metric.threshold if threshold is None else threshold
    base = np.asarray(base_values, dtype=float)
    new = np.asarray(new_values, dtype=float)
    if len(base) == 0 or len(new) == 0:
        return Verdict("n/a", math.nan, math.nan, math.nan, math.nan, "", len(base), len(new),
                       False, "no values on one side")
    centre = np.median if metric.kind == "timing" else np.mean
    b, n = float(centre(base)), float(centre(new))
    if metric.relative:
        change = n / b - 1.0 if b != 0 else (0.0 if n == 0 else math.inf)
    else:
        change = n - b
    goodness = change if metric.higher_is_better else -change
    worse = goodness < 0
    if math.isclose(b, n, rel_tol=1e-9, abs_tol=1e-12) or abs(goodness) <= threshold:
        return Verdict("same", b, n, change, math.nan, "", len(base), len(new), worse)
    # H1 for a regression: NEW is below (higher-is-better) / above (lower) the moved BASE.
    alternative = "less" if worse == metric.higher_is_better else "greater"
    p, test, note = _run_test(metric, base, new, threshold, alternative, paired)
    verdict = Verdict("~", b, n, change, p, test, len(base), len(new), worse, note)
    return decide(verdict, significance)


def decide(verdict: Verdict, significance: float) -> Verdict:
    """Set ``status`` of a beyond-threshold verdict from its p-value."""
    if verdict.status in ("same", "n/a"):
        return verdict
    significant = math.isfinite(verdict.p) and verdict.p < significance
    status = ("regression" if verdict.worse else "improvement") if significant else "~"
    return dataclasses.replace(verdict, status=status)


# -- records -> runs ----------------------------------------------------------------------------

def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def runs_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: the matching key, configuration, seed, status and environment."""
    rows = []
    for r in records:
        env = r.get("env") or {}
        rows.append({
            "task": r.get("task"), "task_version": str(r.get("task_version")),
            "task_options": _canonical(r.get("task_options") or {}),
            "target": "+".join(r.get("target") or []), "protocol": r.get("protocol"),
            "method": r.get("method"),
            "config": _canonical({"hparams": r.get("hparams") or {},
                                  "budget": r.get("budget") or {}}),
            "seed": r.get("seed"), "status": r.get("status"), "error": r.get("error"),
            "device_name": env.get("device_name"), "torch": env.get("torch"),
            "threads": env.get("threads"), "git_sha": env.get("git_sha"),
            "git_dirty": env.get("git_dirty"), "time": r.get("time") or "", "record": r})
    columns = [*KEY, "config", "seed", "status", "error", "device_name", "torch", "threads",
               "git_sha", "git_dirty", "time", "record"]
    return pd.DataFrame(rows, columns=columns)


def load_side(paths: Sequence[str], side: str) -> tuple[pd.DataFrame, list[str]]:
    """The runs of one side (record files or run folders) and any broken-line notes."""
    if not paths:
        raise UsageError(f"{side}: give a record file or a run folder")
    from xbench.analysis import index
    from xbench.analysis.records import _flatten

    result = index.load_records(paths, _flatten) or load_records(paths)  # index: no history
    return runs_frame(result.records), [f"{side}: {p}" for p in result.problems]


def config_difference(base: str, new: str) -> str:
    """``lr 0.001 -> 1e-07, budget.steps 200 -> 100`` for two canonical configurations."""
    a, b = json.loads(base), json.loads(new)
    parts = []
    for section in ("hparams", "budget"):
        prefix = "" if section == "hparams" else "budget."
        for key in sorted(set(a[section]) | set(b[section])):
            old, now = a[section].get(key, "—"), b[section].get(key, "—")
            if old != now:
                parts.append(f"{prefix}{key} {old} -> {now}")
    return ", ".join(parts)


def sweep_label(config: str, others: Iterable[str]) -> str:
    """``{lr=0.001}``: the hyper-parameters in which ``config`` differs from ``others``."""
    mine = json.loads(config)["hparams"]
    theirs = [json.loads(c)["hparams"] for c in others if c != config]
    keys = sorted({k for t in theirs for k in set(t) | set(mine) if t.get(k) != mine.get(k)})
    return "{" + ",".join(f"{k}={mine.get(k)}" for k in keys) + "}" if keys else ""


def task_labels(keys: Iterable[tuple]) -> dict[tuple, str]:
    """``task``, plus ``:target``/``/protocol``/``@vN`` only where a task needs telling apart."""
    keys = list(dict.fromkeys(k[:5] for k in keys))
    labels = {}
    for key in keys:
        task, version, options, target, protocol = key
        same_task = [k for k in keys if k[0] == task]
        label = task
        if len({k[3] for k in same_task}) > 1:
            label += f":{target}"
        if len({k[4] for k in same_task}) > 1:
            label += f"/{protocol}"
        if len({k[1] for k in same_task}) > 1:
            label += f"@v{version}"
        if len({k[2] for k in same_task}) > 1:
            label += f"[{options}]"
        labels[key] = label
    return labels


# -- the comparison -----------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    """One metric of one matched benchmark."""

    task: str
    method: str
    metric: Metric
    threshold: float
    verdict: Verdict


@dataclasses.dataclass
class Comparison:
    """Everything ``xbench compare`` found, before rendering."""

    rows: list[Row]
    failures: list[dict[str, Any]]
    new: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    config_changes: list[dict[str, Any]]
    warnings: list[str]
    significance: float
    metrics: list[Metric]
    n_base: int
    n_new: int
    matched: int
    skipped_cost: int

    def by_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.verdict.status == status]

    @property
    def regressed(self) -> bool:
        return bool(self.by_status("regression") or self.failures)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILURES if self.regressed else ExitCode.OK


def _describe(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values})) or "unknown"


def _environment_warnings(base: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    out = []
    for column, what in (("device_name", "devices"), ("torch", "torch versions"),
                         ("threads", "thread counts")):
        a, b = set(base[column].dropna()), set(new[column].dropna())
        if a != b:
            extra = ("; cost metrics are compared only between runs on the same device "
                     "(--force-cost compares them anyway)" if column == "device_name" else "")
            out.append(f"BASE and NEW ran on different {what}: BASE {_describe(a)}, "
                       f"NEW {_describe(b)}{extra}")
    return out


def compare(base_paths: Sequence[str], new_paths: Sequence[str], *,
            metrics: Sequence[str] | None = None, thresholds: dict[str, float] | None = None,
            significance: float = DEFAULT_SIGNIFICANCE, force_cost: bool = False,
            fdr: bool = False) -> Comparison:
    """Compare the records under ``base_paths`` with those under ``new_paths``.

    Raises ``NothingToCompareError`` when no benchmark has successful runs on
    both sides (or every comparison was skipped).
    """
    if not 0 < significance < 1:
        raise UsageError(f"--significance {significance}: must be between 0 and 1, e.g. 0.05")
    chosen = [get_metric(m) for m in dict.fromkeys(metrics or DEFAULT_METRICS)]
    thresholds = dict(thresholds or {})
    for name in thresholds:
        get_metric(name)
    base, notes = load_side(base_paths, "BASE")
    new, new_notes = load_side(new_paths, "NEW")
    notes += new_notes
    for side, df, paths in (("BASE", base, base_paths), ("NEW", new, new_paths)):
        if df.empty:
            raise NothingToCompareError(f"{side} ({', '.join(map(str, paths))}) holds no "
                                        f"records; nothing to compare")
    notes += _environment_warnings(base[base.status == "ok"], new[new.status == "ok"])

    base_groups, new_groups = _by_benchmark(base), _by_benchmark(new)
    labels = task_labels([*base_groups, *new_groups])
    rows: list[Row] = []
    failures, only_new, only_base, changes = [], [], [], []
    matched = skipped_cost = 0

    def listing(key: tuple, runs: list[dict], method_label: str) -> dict[str, Any]:
        return {"task": labels[key[:5]], "method": method_label,
                "runs": sum(r["status"] == "ok" for r in runs),
                "failed": sum(r["status"] != "ok" for r in runs),
                "seeds": ",".join(str(s) for s in sorted({r["seed"] for r in runs}, key=str))}

    for key in sorted(set(base_groups) | set(new_groups), key=str):
        method, task = key[5], labels[key[:5]]
        b_group, n_group = base_groups.get(key), new_groups.get(key)
        if b_group is None or n_group is None:
            target, group = (only_new, n_group) if b_group is None else (only_base, b_group)
            configs = list(group)
            for config, runs in group.items():
                target.append(listing(key, runs, method + sweep_label(config, configs)))
            continue
        if len(b_group) == 1 and len(n_group) == 1:
            (b_config,), (n_config,) = b_group, n_group
            pairs = [(b_config, n_config, method)]
            if b_config != n_config:
                changes.append({"task": task, "method": method,
                                "change": config_difference(b_config, n_config)})
        else:  # a sweep on at least one side: configurations must match exactly
            all_configs = list(dict.fromkeys([*b_group, *n_group]))
            pairs = []
            for config in all_configs:
                label = method + sweep_label(config, all_configs)
                if config in b_group and config in n_group:
                    pairs.append((config, config, label))
                elif config in n_group:
                    only_new.append(listing(key, n_group[config], label))
                else:
                    only_base.append(listing(key, b_group[config], label))
        for b_config, n_config, label in pairs:
            b_runs, n_runs = b_group[b_config], n_group[n_config]
            b_ok = [r for r in b_runs if r["status"] == "ok"]
            n_ok = [r for r in n_runs if r["status"] == "ok"]
            n_failed = [r for r in n_runs if r["status"] != "ok"]
            ok_seeds = {r["seed"] for r in b_ok}
            if any(r["seed"] in ok_seeds for r in n_failed) or (n_failed and not n_ok and b_ok):
                failures.append({"task": task, "method": label,
                                 "base": f"{len(b_ok)}/{len(b_runs)} ok",
                                 "new": f"{len(n_ok)}/{len(n_runs)} ok",
                                 "error": str(n_failed[0]["error"])})
            if not b_ok or not n_ok:
                continue
            matched += 1
            same_device = ({r["device_name"] for r in b_ok} == {r["device_name"] for r in n_ok})
            for metric in chosen:
                if metric.is_cost and not same_device and not force_cost:
                    skipped_cost += 1
                    continue
                verdict = _assess_runs(metric, b_ok, n_ok, thresholds.get(metric.name),
                                       significance)
                if verdict.status != "n/a":
                    rows.append(Row(task, label, metric,
                                    thresholds.get(metric.name, metric.threshold), verdict))
    if fdr:
        _adjust_fdr(rows, significance)
    if not matched and not failures:
        raise NothingToCompareError(
            f"no benchmark has successful runs in both BASE and NEW (matched by task, target, "
            f"protocol and method); BASE has {_benchmarks(base)}; NEW has {_benchmarks(new)}")
    if not rows and not failures:
        why = (" (cost metrics are not compared across devices; pass --force-cost)"
               if skipped_cost else "")
        raise NothingToCompareError(f"the matched runs have no values of "
                                    f"{', '.join(m.name for m in chosen)} to compare{why}")
    if skipped_cost:
        notes.append(f"{skipped_cost} cost comparison(s) skipped: the runs used different devices")
    return Comparison(rows=rows, failures=failures, new=only_new, missing=only_base,
                      config_changes=changes, warnings=notes, significance=significance,
                      metrics=chosen, n_base=len(base), n_new=len(new), matched=matched,
                      skipped_cost=skipped_cost)


def _benchmarks(df: pd.DataFrame) -> str:
    ok = df[df.status == "ok"]
    names = sorted({f"{r.method}@{r.task}->{r.target}" for r in ok.itertuples()})
    if not names:
        return "no successful runs"
    shown = ", ".join(names[:6])
    return shown + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")


def _by_benchmark(runs: pd.DataFrame) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    """benchmark key -> configuration -> its runs (as dicts), in record order."""
    out: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for key, group in runs.groupby(list(KEY), sort=True, dropna=False):
        configs: dict[str, list[dict[str, Any]]] = {}
        for run in group.to_dict("records"):
            configs.setdefault(run["config"], []).append(run)
        out[key] = configs
    return out


def _assess_runs(metric: Metric, base: list[dict[str, Any]], new: list[dict[str, Any]],
                 threshold: float | None, significance: float) -> Verdict:
    """One metric over matched runs: pooled raw samples (timing) or one value per run,
    paired by seed when both sides have values for exactly the same (distinct) seeds."""
    if metric.kind == "timing":
        b = [v for r in base for v in metric.samples(r["record"])]
        n = [v for r in new for v in metric.samples(r["record"])]
        return assess(metric, b, n, threshold=threshold, significance=significance)
    b_runs = [(r["seed"], v) for r in base if (v := metric.value(r["record"])) is not None]
    n_runs = [(r["seed"], v) for r in new if (v := metric.value(r["record"])) is not None]
    b_seeds, n_seeds = [s for s, _ in b_runs], [s for s, _ in n_runs]
    paired = (len(b_seeds) >= 2 and len(set(b_seeds)) == len(b_seeds)
              and len(set(n_seeds)) == len(n_seeds) and set(b_seeds) == set(n_seeds))
    if paired:
        b_runs = sorted(b_runs, key=lambda pair: str(pair[0]))
        n_runs = sorted(n_runs, key=lambda pair: str(pair[0]))
    b, n = [v for _, v in b_runs], [v for _, v in n_runs]
    return assess(metric, b, n, threshold=threshold, significance=significance, paired=paired)


def _adjust_fdr(rows: list[Row], significance: float) -> None:
    """Benjamini-Hochberg over every comparison (within-threshold ones count with p = 1)."""
    if not rows:
        return
    ps = np.array([r.verdict.p if math.isfinite(r.verdict.p) else 1.0 for r in rows])
    adjusted = stats.false_discovery_control(ps, method="bh")
    for row, q in zip(rows, adjusted):
        if math.isfinite(row.verdict.p):
            row.verdict = decide(dataclasses.replace(row.verdict, p=float(q)), significance)


# -- rendering ----------------------------------------------------------------------------------

def _p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "<1e-6" if p < 1e-6 else f"{p:.2g}"


def _n(verdict: Verdict, metric: Metric) -> str:
    unit = "samples" if metric.kind == "timing" else "runs"
    return f"{verdict.n_base}/{verdict.n_new} {unit}"


def _metric_rows(rows: list[Row], with_direction: bool = False) -> list[list[str]]:
    out = []
    for r in sorted(rows, key=lambda r: (r.task, r.method, r.metric.name)):
        v = r.verdict
        line = [r.task, r.method, r.metric.name, r.metric.format_value(v.base),
                r.metric.format_value(v.new), r.metric.format_change(v.change),
                r.metric.format_threshold(r.threshold), _p(v.p), v.test, _n(v, r.metric)]
        if with_direction:
            line.insert(3, "worse" if v.worse else "better")
            line.append(v.note)
        out.append(line)
    return out


def render(result: Comparison, fmt: str = "text", show_all: bool = False) -> str:
    """The comparison as text (``text``) or Markdown for a pull-request comment (``md``).

    ``show_all`` adds the comparisons within the threshold.
    """
    md = fmt == "md"
    table_format = "github" if md else "simple"
    parts: list[str] = []

    def section(title: str, headers: list[str], rows: list[list[Any]]) -> None:
        if not rows:
            return
        parts.append(f"### {title}" if md else f"{title}\n{'-' * len(title)}")
        parts.append(tabulate(rows, headers=headers, tablefmt=table_format,
                              disable_numparse=True))

    regressions = result.by_status("regression")
    unsure = result.by_status("~")
    improvements = result.by_status("improvement")
    same = result.by_status("same")
    verdict = "REGRESSION" if result.regressed else "no regression"
    head = (f"xbench compare: {verdict} — {len(regressions) + len(result.failures)} regressed, "
            f"{len(unsure)} ~ (beyond threshold, not significant), {len(improvements)} improved, "
            f"{len(same)} unchanged; {result.matched} benchmark(s) matched, "
            f"{len(result.new)} new, {len(result.missing)} missing; "
            f"significance {result.significance:g}")
    parts.append(f"**{head}**" if md else head)
    for note in result.warnings:
        parts.append(f"> warning: {note}" if md else f"warning: {note}")
    headers = ["task", "method", "metric", "BASE", "NEW", "change", "threshold", "p", "test",
               "n (BASE/NEW)"]
    section(f"Regressions ({len(regressions)})", headers, _metric_rows(regressions))
    section(f"Failing in NEW ({len(result.failures)})", ["task", "method", "BASE", "NEW", "error"],
            [[f["task"], f["method"], f["base"], f["new"], f["error"]] for f in result.failures])
    section(f"~ Beyond the threshold but not significant ({len(unsure)}; not a failure)",
            [*headers[:3], "direction", *headers[3:], "note"], _metric_rows(unsure, True))
    section(f"Improvements ({len(improvements)})", headers, _metric_rows(improvements))
    if show_all:
        section(f"Unchanged: within the threshold ({len(same)})", headers, _metric_rows(same))
    side_headers = ["task", "method", "ok runs", "failed", "seeds"]
    section(f"New: only in NEW ({len(result.new)})", side_headers,
            [list(r.values()) for r in result.new])
    section(f"Missing: only in BASE ({len(result.missing)})", side_headers,
            [list(r.values()) for r in result.missing])
    section(f"Configuration changes ({len(result.config_changes)})",
            ["task", "method", "BASE -> NEW"],
            [[c["task"], c["method"], c["change"]] for c in result.config_changes])
    thresholds = ", ".join(f"{m.name} {'higher' if m.higher_is_better else 'lower'} is better"
                           for m in result.metrics)
    parts.append(("_" if md else "") + f"Metrics: {thresholds}. A regression is worse than its "
                 f"threshold and significant (one-sided test against BASE moved by the "
                 f"threshold: paired/Welch t over seeds, Mann-Whitney U on raw timing samples)."
                 + ("_" if md else ""))
    return "\n\n".join(parts) + "\n"

