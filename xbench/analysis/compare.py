"""Regression gate: compare the records of two runs (BASE and NEW), metric by metric.

What is compared with what
--------------------------
Runs are matched by their *benchmark*: the comparability key
(:func:`xbench.analysis.records.comparability_key`: task, task version, the
task's identity options, target domains, protocol, budget, precision, TTA
stream) plus the method -- **not** by seed and, by default, **not** by
hyper-parameters. Cost metrics are matched with ``comparability_key(record,
cost=True)``, which adds the device. BASE and NEW are meant to be the same
suite run by two versions of the code; a changed default (or a ``--set
erm.lr=1e-7`` that simulates a broken change) is exactly what the gate must
catch, so when each side holds one configuration of a benchmark the two are
compared and the differing hyper-parameters are reported as a configuration
change next to the result. Only when a side holds *several* configurations of
the same benchmark (a sweep) are configurations matched exactly; the
unmatched ones are listed as new (only in NEW) or missing (only in BASE).

When a change counts
--------------------
Every metric has a direction (accuracies and throughputs: higher is better;
latency and memory: lower is better), a **threshold** (the non-inferiority
margin: absolute for accuracies, default 1 accuracy point; relative for the
others, default 10%) and a **drop to detect** (default 3 accuracy points,
30% otherwise; ``--detect acc_target=3``): the drop the gate must be able to
see. The statistics are in :mod:`xbench.analysis.gate_stats`; the unit of
replication is the trained model, so every test takes one value per run:

* accuracy and memory: NEW - BASE over seeds, paired when both sides ran
  exactly the same seeds, Welch otherwise. **regression**: NEW is
  significantly worse than BASE moved by the threshold (one-sided t-test of
  H1 "mean difference < -threshold" at ``significance``); noise of the size of
  the threshold is not flagged however many seeds were run. **same**: within
  the threshold, or shown non-inferior (H1 "mean difference > -threshold").
  **underpowered (needs N seeds)**: otherwise, when the smallest drop the test
  detects with 80% power (threshold + the noncentral-t detectable excess, from
  the measured variance and the runs both sides have) is larger than the drop
  to detect -- never "no regression". A zero-variance difference or a side
  with one run is "needs more seeds", never a p-value of ~0.
* timing (throughput, latency): one statistic per run (the median of its
  timing blocks), never the pooled samples of several runs (blocks within a
  run are autocorrelated); a one-sided Mann-Whitney U test on the per-run
  statistics at ``timing_significance`` (default 0.002, as asv) against BASE
  moved by the larger of the threshold and the measured run-to-run
  spread. With too few runs for that level the verdict is "underpowered
  (needs N runs)"; benchmarks declared unstable (``unstable`` patterns) are
  shown but never gated. Re-time on one machine, interleaved, with
  ``xbench bench`` (:mod:`xbench.analysis.bench`).

The same tests in the other direction find improvements (not a failure).
``fdr=True`` adjusts the accuracy p-values of all comparisons with
Benjamini-Hochberg (``scipy.stats.false_discovery_control``).

Nothing lost passes
-------------------
A BASE benchmark missing in NEW, fewer successful seeds in NEW than in BASE,
or failed jobs in NEW make the comparison **incomplete** (exit code 4,
``ExitCode.INCOMPLETE``), each named in the output; ``allow_missing=True``
lists them without failing. Exit-code precedence: 1 (a regression, a
behaviour change under ``exact``, or an underpowered benchmark under
``require_power``) wins over 4, because it is a verdict on data that is
there; the incomplete items are listed either way.

Exact mode
----------
CPU runs with fixed seeds are bit-reproducible, so for commits meant to
change nothing ``exact=True`` compares each matched job (same benchmark,
seed, trial and holdout) field by field: ``acc_target``,
``acc_target_worst``, ``acc_source_val``, per-domain accuracies, the selected
step, the selection and ``by_selection`` (and per-item outcomes when records
carry them). Any difference is **behaviour changed** (exit 1); identical runs
pass. No statistics are run in this mode.

Cost metrics are compared only between runs on the same device name (a
warning names the devices, and ``force_cost=True`` compares them anyway);
different torch versions or thread counts are warned about.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import fnmatch
import itertools
import json
import math
import operator
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats
from tabulate import tabulate

from xbench.analysis import gate_stats
from xbench.analysis.gate_stats import TIMING_SIGNIFICANCE
from xbench.analysis.records import KEY_COLUMNS, bulk_analysis, key_labels, run_fields
from xbench.analysis.sweep import CHECKPOINT_SELECTIONS
from xbench.errors import ExitCode, NothingToCompareError, UsageError
from xbench.store import load_records

DEFAULT_METRICS = ("acc_target", "train_samples_per_s", "infer_samples_per_s", "latency_ms",
                   "peak_mem_mb")
DEFAULT_SIGNIFICANCE = 0.05
#: What matches two runs: the comparability key's columns and the method.
KEY = (*KEY_COLUMNS, "method")
#: Index of the method in a ``KEY`` tuple.
METHOD = len(KEY_COLUMNS)
#: The drop the gate must be able to detect, per metric kind (accuracy: points as a fraction).
DEFAULT_DETECT = {"accuracy": 0.03, "memory": 0.30, "timing": 0.30}
#: Output formats of :func:`render`.
FORMATS = ("text", "md", "github-action-benchmark", "bencher")


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
    def detect(self) -> float:
        """The default drop the gate must be able to detect (``DEFAULT_DETECT``)."""
        return DEFAULT_DETECT[self.kind]

    @property
    def relative(self) -> bool:
        return self.kind != "accuracy"

    @property
    def is_cost(self) -> bool:
        return self.kind != "accuracy"

    def value(self, record: dict[str, Any]) -> float | None:
        node: Any = record
        for part in self.path:
            node = node.get(part) if isinstance(node, Mapping) else None
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

    def run_value(self, record: dict[str, Any]) -> float | None:
        """One statistic per run: the value (accuracy, memory) or the median of the run's
        timing blocks (timing); ``None`` when the run has none."""
        if self.kind == "timing":
            samples = self.samples(record)
            return gate_stats.run_timing(samples) if samples else None
        return self.value(record)

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


def get_metric(name: str, flag: str = "--metric") -> Metric:
    """The metric called ``name``; an unknown name is a usage error (naming ``flag``) with
    suggestions."""
    if name in METRICS:
        return METRICS[name]
    close = difflib.get_close_matches(name, list(METRICS), n=3)
    hint = f"Did you mean: {', '.join(close)}? " if close else ""
    raise UsageError(f"{flag} {name}: unknown metric. {hint}Known: {', '.join(METRICS)}")


def parse_thresholds(items: Iterable[str], flag: str = "--threshold") -> dict[str, float]:
    """``["acc_target=2", "latency_ms=20%"]`` -> ``{"acc_target": 0.02, "latency_ms": 0.2}``.

    Accuracy thresholds are in accuracy points, the others in percent (a ``pt``
    or ``%`` suffix is accepted).
    """
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"{flag} {item}: expected NAME=VALUE, e.g. "
                             f"{flag} acc_target=2 or {flag} latency_ms=20%")
        metric = get_metric(name, flag)
        text = raw.strip().removesuffix("%" if metric.relative else "pt").strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            unit = "percent, e.g. 20%" if metric.relative else "accuracy points, e.g. 2"
            raise UsageError(f"{flag} {item}: the value must be a non-negative number in "
                             f"{unit}")
        out[name] = value / 100.0
    return out


# -- the test -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Verdict:
    """The outcome of comparing one metric between two groups of runs.

    ``status``: ``regression``, ``improvement``, ``~`` (beyond the threshold,
    not significant, but powered), ``same`` (within the threshold, or shown
    non-inferior), ``underpowered`` (the test could not see the drop to detect:
    ``needs`` seeds or runs per side would), ``unstable`` (timing of a declared
    unstable benchmark: shown, never gated) or ``n/a`` (no values).
    ``change``: NEW - BASE (accuracy, a fraction) or NEW / BASE - 1 (others).
    ``detectable``: the smallest drop the test detects with 80% power, in the
    units of ``change`` (accuracy and memory; ``nan`` for timing).
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
    detectable: float = math.nan
    needs: int | None = None
    p_noninferior: float = math.nan
    threshold: float = math.nan
    new_low: float = math.nan
    new_high: float = math.nan


def _values(values: Mapping[Any, float] | Sequence[float]) -> np.ndarray:
    return np.asarray(list(values.values()) if isinstance(values, Mapping) else list(values),
                      dtype=float)


def _interval(values: np.ndarray, metric: Metric) -> tuple[float, float]:
    """NEW's spread for exports: 95% t-interval of the mean (per-run values), or the range
    of the per-run statistics (timing)."""
    if len(values) < 2:
        return math.nan, math.nan
    if metric.kind == "timing":
        return float(np.min(values)), float(np.max(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1)
                 / math.sqrt(len(values)))
    centre = float(np.mean(values))
    return centre - half, centre + half


def assess(metric: Metric, base_values: Mapping[Any, float] | Sequence[float],
           new_values: Mapping[Any, float] | Sequence[float], *,
           threshold: float | None = None, significance: float = DEFAULT_SIGNIFICANCE,
           paired: bool = False, detect: float | None = None,
           timing_significance: float = TIMING_SIGNIFICANCE, unstable: bool = False
           ) -> Verdict:
    """Compare one metric: direction, threshold, significance and power.

    ``base_values``/``new_values`` hold one value per run; with ``paired`` they
    are ``{seed: value}`` mappings over the same seeds (accuracy and memory).
    Timing values are per-run statistics (:meth:`Metric.run_value`).
    """
    threshold = metric.threshold if threshold is None else threshold
    detect = metric.detect if detect is None else detect
    if paired and not isinstance(base_values, Mapping) and len(base_values) == len(new_values):
        base_values, new_values = dict(enumerate(base_values)), dict(enumerate(new_values))
    base, new = _values(base_values), _values(new_values)
    if len(base) == 0 or len(new) == 0:
        return Verdict("n/a", math.nan, math.nan, math.nan, math.nan, "", len(base), len(new),
                       False, "no values on one side")
    if metric.kind == "timing":
        return _assess_timing(metric, base, new, threshold, timing_significance, unstable)
    b, n = float(np.mean(base)), float(np.mean(new))
    if metric.relative:
        change = n / b - 1.0 if b != 0 else (0.0 if n == 0 else math.inf)
    else:
        change = n - b
    goodness = change if metric.higher_is_better else -change
    worse = goodness < 0
    low, high = _interval(new, metric)
    common = dict(base=b, new=n, change=change, n_base=len(base), n_new=len(new), worse=worse,
                  threshold=threshold, new_low=low, new_high=high)
    pairs = (paired and isinstance(base_values, Mapping) and isinstance(new_values, Mapping)
             and len(base_values) >= 2 and set(base_values) == set(new_values))
    if pairs:
        identical = all(base_values[s] == new_values[s] for s in base_values)
    else:
        identical = bool(np.all(base == base[0]) and np.all(new == base[0]))
    if identical:
        return Verdict("same", p=math.nan, test="", note="identical", detectable=0.0, **common)
    scale = abs(b) if metric.relative and b else 1.0
    ev = gate_stats.evidence(base_values if pairs else base, new_values if pairs else new,
                             higher_is_better=metric.higher_is_better, scale=scale)
    if not ev.testable:
        why = ("zero variance of the differences" if ev.n_base >= 2 and ev.n_new >= 2
               else "fewer than 2 runs on a side")
        status = "same" if abs(goodness) <= threshold else "underpowered"
        note = (f"within the threshold; not testable ({why})" if status == "same"
                else f"needs more seeds: {why}, no test possible")
        return Verdict(status, p=math.nan, test=ev.test, note=note, detectable=math.inf,
                       **common)
    t_margin = (ev.mean + threshold) / ev.se
    p_regression = float(stats.t.cdf(t_margin, ev.df))    # H1: mean < -threshold
    p_noninferior = float(stats.t.sf(t_margin, ev.df))    # H1: mean > -threshold
    p_improvement = float(stats.t.sf((ev.mean - threshold) / ev.se, ev.df))
    detectable = threshold + gate_stats.minimum_detectable_drop(ev.se, ev.df, significance)
    p = p_regression if worse else p_improvement
    needs = None
    underpowered = detectable > detect
    if underpowered and detect > threshold:
        needs = gate_stats.seeds_needed(ev.sd, detect - threshold, significance,
                                        paired=ev.paired)
    if p_regression < significance:
        status, note = "regression", ""
    elif p_improvement < significance:
        status, note = "improvement", ""
    elif p_noninferior < significance:
        status, note = "same", "shown non-inferior"
    elif underpowered:
        status = "underpowered"
        note = (f"needs {needs} seeds" if needs else
                f"needs more than {gate_stats.MAX_SEEDS} seeds" if detect > threshold else
                "the drop to detect is not above the threshold")
    else:
        status = "same" if abs(goodness) <= threshold else "~"
        note = ""
    return Verdict(status, p=p, test=ev.test, note=note, detectable=detectable, needs=needs,
                   p_noninferior=p_noninferior, **common)


def _assess_timing(metric: Metric, base: np.ndarray, new: np.ndarray, threshold: float,
                   alpha: float, unstable: bool) -> Verdict:
    """Per-run timing statistics: Mann-Whitney U at ``alpha`` against BASE moved by the larger
    of the threshold and ``SPREAD_FACTOR`` x the measured run-to-run spread."""
    b, n = float(np.median(base)), float(np.median(new))
    change = n / b - 1.0 if b else (0.0 if n == 0 else math.inf)
    goodness = change if metric.higher_is_better else -change
    worse = goodness < 0
    spread = max(gate_stats.timing_spread(base), gate_stats.timing_spread(new))
    used = max(threshold, gate_stats.SPREAD_FACTOR * spread)
    low, high = _interval(new, metric)
    common = dict(base=b, new=n, change=change, n_base=len(base), n_new=len(new), worse=worse,
                  threshold=used, new_low=low, new_high=high, test="Mann-Whitney U (per run)")
    spread_note = f"run-to-run spread {100 * spread:.1f}%" if spread else ""
    if unstable:
        return Verdict("unstable", p=math.nan, note="declared unstable: not gated", **common)
    if abs(goodness) <= used:
        return Verdict("same", p=math.nan, note=spread_note, **common)
    p, _ = gate_stats.timing_test(base, new, used, metric.higher_is_better ^ (not worse))
    if gate_stats.min_mannwhitney_p(len(base), len(new)) >= alpha:
        needs = gate_stats.runs_needed_for(alpha)
        return Verdict("underpowered", p=p, needs=needs,
                       note=f"needs {needs} runs a side for alpha {alpha:g}", **common)
    if p < alpha:
        status = "regression" if worse else "improvement"
    else:
        status = "~"
    return Verdict(status, p=p, note=spread_note, **common)


def decide(verdict: Verdict, significance: float) -> Verdict:
    """Re-decide a regression/improvement from an adjusted p-value (``fdr``)."""
    if verdict.status not in ("regression", "improvement"):
        return verdict
    if math.isfinite(verdict.p) and verdict.p < significance:
        return verdict
    return dataclasses.replace(verdict, status="~")


# -- records -> runs ----------------------------------------------------------------------------

def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def runs_of_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per record: the matching key, configuration, seed, status and environment
    (:func:`xbench.analysis.records.run_fields`) and, as ``record``, the record."""
    return [{**run_fields(r), "record": r} for r in records]


def load_side(paths: Sequence[str], side: str, exact: bool = False
              ) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of one side (record files or run folders, as :func:`runs_of_records`) and
    any broken-line notes.

    From the index when it can be used: each run's fields and, as its ``record``, only
    what a comparison reads of it (:func:`xbench.analysis.records.run_record`: the
    accuracies, the cost with each timing sample list reduced to the run's median block).
    ``exact`` compares every metric field (per-episode accuracies and per-item outcomes
    included): whole records from the JSONL."""
    if not paths:
        raise UsageError(f"{side}: give a record file or a run folder")
    from xbench.analysis import index
    from xbench.analysis.records import _flatten

    runs = None if exact else index.load_runs(paths, _flatten)
    if runs is not None:
        return runs[0], [f"{side}: {p}" for p in runs[1]]
    result = load_records(paths)
    return runs_of_records(result.records), [f"{side}: {p}" for p in result.problems]


def config_difference(base: str, new: str) -> str:
    """``lr 0.001 -> 1e-07, wd 0 -> 0.1`` for two canonical configurations (hyper-parameters;
    the budget is part of the comparability key, so runs with another budget never match)."""
    a, b = json.loads(base)["hparams"], json.loads(new)["hparams"]
    parts = []
    for key in sorted(set(a) | set(b)):
        old, now = a.get(key, "—"), b.get(key, "—")
        if old != now:
            parts.append(f"{key} {old} -> {now}")
    return ", ".join(parts)


def sweep_label(config: str, others: Iterable[str]) -> str:
    """``{lr=0.001}``: the hyper-parameters in which ``config`` differs from ``others``."""
    mine = json.loads(config)["hparams"]
    theirs = [json.loads(c)["hparams"] for c in others if c != config]
    keys = sorted({k for t in theirs for k in set(t) | set(mine) if t.get(k) != mine.get(k)})
    return "{" + ",".join(f"{k}={mine.get(k)}" for k in keys) + "}" if keys else ""


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a JSON value that is equal exactly when the values are
    (``==``), so values can be counted instead of compared pairwise."""
    if isinstance(value, dict):
        return ("dict", frozenset((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    return value


def sweep_labels(configs: Iterable[str]) -> dict[str, str]:
    """:func:`sweep_label` of every configuration of ``configs`` against the others, each
    parsed once: linear in the number of configurations (a 20-trial sweep over 48 seeds has
    ~1,000 per benchmark, and label by label that was ~1,000,000 ``json.loads``)."""
    configs = list(dict.fromkeys(configs))
    if len(configs) < 2:
        return {c: "" for c in configs}
    hparams = [c["hparams"] for c in json.loads("[" + ",".join(configs) + "]")]
    keys = sorted({k for h in hparams for k in h})
    # scalar values are counted as they are; lists and objects frozen (hashable)
    flat = not any(isinstance(v, (dict, list)) for h in hparams for v in h.values())
    columns = {k: list(map(dict.get, hparams, itertools.repeat(k))) if flat
               else [_frozen(h.get(k)) for h in hparams] for k in keys}
    try:
        counts = {k: collections.Counter(column) for k, column in columns.items()}
    except TypeError:  # an unhashable value: the pairwise way
        return {c: sweep_label(c, configs) for c in configs}
    if any(isinstance(v, float) and v != v for c in counts.values() for v in c):
        return {c: sweep_label(c, configs) for c in configs}  # NaN is not equal to itself
    # a key is shown for a configuration when some other one differs from it there;
    # never for a key all configurations share
    shown = [k for k in keys if len(counts[k]) > 1]
    out = {}
    for i, (config, mine) in enumerate(zip(configs, hparams)):
        differ = [k for k in shown if counts[k][columns[k][i]] < len(configs)]
        out[config] = "{" + ",".join(f"{k}={mine.get(k)}" for k in differ) + "}" \
            if differ else ""
    return out


def task_labels(keys: Iterable[tuple]) -> dict[tuple, str]:
    """Labels of the comparability keys (``KEY`` tuples, method left out): ``task``, plus the
    key parts that tell it apart from other keys of the same task
    (:func:`xbench.analysis.records.key_labels`)."""
    return key_labels(k[:METHOD] for k in keys)


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
    """Everything ``xbench compare`` found, before rendering.

    ``incomplete``: what NEW lost (``{"task", "method", "problem"}``): a BASE
    benchmark missing in NEW, fewer successful seeds, failed jobs.
    ``changed``: under ``exact``, the matched jobs whose metrics differ.
    """

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
    incomplete: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    changed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    identical: int = 0
    exact: bool = False
    allow_missing: bool = False
    require_power: bool = False
    timing_significance: float = TIMING_SIGNIFICANCE

    def by_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.verdict.status == status]

    @property
    def regressed(self) -> bool:
        """A regression, a behaviour change (exact) or, with ``require_power``, an
        underpowered benchmark: exit code 1."""
        return bool(self.by_status("regression") or self.changed
                    or (self.require_power and self.by_status("underpowered")))

    @property
    def exit_code(self) -> ExitCode:
        """1 (regression) wins over 4 (incomplete); see the module docstring."""
        if self.regressed:
            return ExitCode.FAILURES
        if self.incomplete and not self.allow_missing:
            return ExitCode.INCOMPLETE
        return ExitCode.OK


def _describe(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values})) or "unknown"


def _environment_warnings(base: list[dict[str, Any]], new: list[dict[str, Any]]
                          ) -> list[str]:
    out = []
    for column, what in (("device_name", "devices"), ("torch", "torch versions"),
                         ("threads", "thread counts")):
        a, b = ({r[column] for r in runs if r[column] is not None} for runs in (base, new))
        if a != b:
            extra = ("; cost metrics are compared only between runs on the same device "
                     "(--force-cost compares them anyway)" if column == "device_name" else "")
            out.append(f"BASE and NEW ran on different {what}: BASE {_describe(a)}, "
                       f"NEW {_describe(b)}{extra}")
    return out


def _seeds(runs: Iterable[dict[str, Any]]) -> list:
    return sorted({r["seed"] for r in runs}, key=str)


def _error(runs: list[dict[str, Any]]) -> str:
    text = str(runs[0]["error"] or "failed") if runs else ""
    return text if len(text) <= 80 else text[:77] + "..."


@bulk_analysis()
def compare(base_paths: Sequence[str], new_paths: Sequence[str], *,
            metrics: Sequence[str] | None = None, thresholds: dict[str, float] | None = None,
            significance: float = DEFAULT_SIGNIFICANCE, force_cost: bool = False,
            fdr: bool = False, detect: dict[str, float] | None = None,
            allow_missing: bool = False, require_power: bool = False, exact: bool = False,
            timing_significance: float = TIMING_SIGNIFICANCE,
            unstable: Sequence[str] = (), window: int | None = None) -> Comparison:
    """Compare the records under ``base_paths`` with those under ``new_paths``.

    ``detect``: the drop to detect per metric (as ``thresholds``); ``unstable``:
    fnmatch patterns over ``method`` or ``task/method`` whose timing is shown but
    not gated. ``window``: BASE is a history of runs (several commits); accuracy
    and memory are compared with its newest commit, timing with every run of its
    newest ``window`` commits (one statistic per run), so the timing baseline
    spans the run-to-run spread of the machine rather than one sitting. Raises ``NothingToCompareError`` when no benchmark has successful
    runs on both sides and nothing was lost (or every comparison was skipped).
    """
    for name, level in (("--significance", significance),
                        ("--timing-significance", timing_significance)):
        if not 0 < level < 1:
            raise UsageError(f"{name} {level}: must be between 0 and 1, e.g. 0.05")
    chosen = [get_metric(m) for m in dict.fromkeys(metrics or DEFAULT_METRICS)]
    if exact:
        chosen = [m for m in chosen if not m.is_cost] or [METRICS["acc_target"]]
    thresholds, detect = dict(thresholds or {}), dict(detect or {})
    for name in [*thresholds, *detect]:
        get_metric(name)
    if window is None:
        base, notes = load_side(base_paths, "BASE", exact)
    else:  # every commit's runs, not only the latest record per job
        from xbench.analysis.history import load_history

        base, notes = runs_of_records(load_history(base_paths)), []
    new, new_notes = load_side(new_paths, "NEW", exact)
    notes += new_notes
    for side, runs, paths in (("BASE", base, base_paths), ("NEW", new, new_paths)):
        if not runs:
            raise NothingToCompareError(f"{side} ({', '.join(map(str, paths))}) holds no "
                                        f"records; nothing to compare")
    timing_groups = None
    if window is not None:
        base, timing_base, note = _window(base, window)
        timing_groups = _by_benchmark(timing_base)
        notes.append(note)
    notes += _environment_warnings([r for r in base if r["status"] == "ok"],
                                   [r for r in new if r["status"] == "ok"])

    base_groups, new_groups = _by_benchmark(base), _by_benchmark(new)
    labels = task_labels([*base_groups, *new_groups])
    rows: list[Row] = []
    failures, only_new, only_base, changes, incomplete, changed = [], [], [], [], [], []
    matched = skipped_cost = identical = 0

    def listing(task: str, runs: list[dict], method_label: str) -> dict[str, Any]:
        ok = [r["status"] for r in runs].count("ok")
        return {"task": task, "method": method_label, "runs": ok, "failed": len(runs) - ok,
                "seeds": ",".join(str(s) for s in _seeds(runs))}

    def lost(task: str, method: str, problem: str) -> None:
        incomplete.append({"task": task, "method": method, "problem": problem})

    for key in sorted(set(base_groups) | set(new_groups), key=str):
        method, task = key[METHOD], labels[key[:METHOD]]
        b_group, n_group = base_groups.get(key), new_groups.get(key)
        if b_group is None or n_group is None:
            target, group = (only_new, n_group) if b_group is None else (only_base, b_group)
            config_labels = sweep_labels(group)
            for config, runs in group.items():
                label = method + config_labels[config]
                target.append(listing(task, runs, label))
                if b_group is None:
                    failed = [r for r in runs if r["status"] != "ok"]
                    if failed:
                        lost(task, label, f"{len(failed)} failed job(s) in NEW: "
                                          f"{_error(failed)}")
                elif any(r["status"] == "ok" for r in runs):
                    lost(task, label, "missing in NEW")
            continue
        if len(b_group) == 1 and len(n_group) == 1:
            (b_config,), (n_config,) = b_group, n_group
            pairs = [(b_config, n_config, method)]
            if b_config != n_config:
                changes.append({"task": task, "method": method,
                                "change": config_difference(b_config, n_config)})
        else:  # a sweep on at least one side: configurations must match exactly
            all_configs = list(dict.fromkeys([*b_group, *n_group]))
            config_labels = sweep_labels(all_configs)
            pairs = []
            for config in all_configs:
                label = method + config_labels[config]
                if config in b_group and config in n_group:
                    pairs.append((config, config, label))
                elif config in n_group:
                    only_new.append(listing(task, n_group[config], label))
                else:
                    only_base.append(listing(task, b_group[config], label))
                    if any(r["status"] == "ok" for r in b_group[config]):
                        lost(task, label, "missing in NEW")
        for b_config, n_config, label in pairs:
            b_runs, n_runs = b_group[b_config], n_group[n_config]
            b_ok = [r for r in b_runs if r["status"] == "ok"]
            n_ok = [r for r in n_runs if r["status"] == "ok"]
            n_failed = [r for r in n_runs if r["status"] != "ok"]
            if n_failed:
                failures.append({"task": task, "method": label,
                                 "base": f"{len(b_ok)}/{len(b_runs)} ok",
                                 "new": f"{len(n_ok)}/{len(n_runs)} ok",
                                 "error": _error(n_failed)})
                lost(task, label, f"{len(n_failed)} failed job(s) in NEW: {_error(n_failed)}")
            b_seeds, n_seeds = _seeds(b_ok), _seeds(n_ok)
            if len(n_seeds) < len(b_seeds):
                gone = [s for s in b_seeds if s not in n_seeds]
                lost(task, label, f"fewer successful seeds in NEW: {len(n_seeds)} < BASE "
                                  f"{len(b_seeds)} (missing seed(s) "
                                  f"{', '.join(map(str, gone))})")
            if not b_ok or not n_ok:
                continue
            matched += 1
            if exact:
                same, differences = _exact(b_ok, n_ok, b_config, n_config)
                identical += same
                changed += [{"task": task, "method": label, **d} for d in differences]
                continue
            # cost: only runs whose comparability_key(record, cost=True) -- the device --
            # appears on both sides (all runs with force_cost)
            common = {r["cost_key"] for r in b_ok} & {r["cost_key"] for r in n_ok}
            b_cost = b_ok if force_cost else [r for r in b_ok if r["cost_key"] in common]
            n_cost = n_ok if force_cost else [r for r in n_ok if r["cost_key"] in common]
            is_unstable = any(fnmatch.fnmatchcase(method, p)
                              or fnmatch.fnmatchcase(f"{task}/{method}", p) for p in unstable)
            for metric in chosen:
                if metric.is_cost and not (b_cost and n_cost):
                    skipped_cost += 1
                    continue
                b_use, n_use = (b_cost, n_cost) if metric.is_cost else (b_ok, n_ok)
                if metric.kind == "timing" and timing_groups is not None:
                    b_use = [r for r in timing_groups.get(key, {}).get(b_config, [])
                             if r["status"] == "ok" and (force_cost or r["cost_key"] in common)]
                verdict = _assess_runs(metric, b_use, n_use, thresholds.get(metric.name),
                                       significance, detect.get(metric.name),
                                       timing_significance, is_unstable)
                if verdict.status != "n/a":
                    rows.append(Row(task, label, metric, verdict.threshold, verdict))
    if fdr:
        _adjust_fdr(rows, significance)
    unread = [m.name for m in chosen if m.kind == "accuracy" and matched
              and not any(r.metric.name == m.name for r in rows)]
    if unread and not exact:  # never "no regression" on cost alone when accuracy was asked
        raise NothingToCompareError(
            f"the accuracy metric {', '.join(unread)} cannot be read on both sides of any "
            f"matched benchmark; check the records (see the warnings above) or pass --metric")
    if not matched and not failures:
        raise NothingToCompareError(
            f"no benchmark has successful runs in both BASE and NEW (matched by the "
            f"comparability key and method); BASE has {_benchmarks(base)}; NEW has "
            f"{_benchmarks(new)}")
    if not rows and not incomplete and not exact:
        why = (" (cost metrics are not compared across devices; pass --force-cost)"
               if skipped_cost else "")
        raise NothingToCompareError(f"the matched runs have no values of "
                                    f"{', '.join(m.name for m in chosen)} to compare{why}")
    if skipped_cost:
        notes.append(f"{skipped_cost} cost comparison(s) skipped: the runs used different devices")
    return Comparison(rows=rows, failures=failures, new=only_new, missing=only_base,
                      config_changes=changes, warnings=notes, significance=significance,
                      metrics=chosen, n_base=len(base), n_new=len(new), matched=matched,
                      skipped_cost=skipped_cost, incomplete=incomplete, changed=changed,
                      identical=identical, exact=exact, allow_missing=allow_missing,
                      require_power=require_power, timing_significance=timing_significance)


def _window(base: list[dict[str, Any]], size: int
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(runs of BASE's newest commit, runs of its newest ``size`` commits, a note).

    Commits are ordered by their newest record time; records without a git SHA count
    as one commit."""
    if size < 1:
        raise UsageError(f"--window {size}: must be 1 or more (commits of BASE to time against)")
    def sha(run: dict[str, Any]) -> str:
        return "(no git sha)" if run["git_sha"] is None else str(run["git_sha"])

    newest_time: dict[str, str] = {}
    for run in base:
        newest_time[sha(run)] = max(newest_time.get(sha(run), run["time"]), run["time"])
    order = sorted(sorted(newest_time), key=newest_time.__getitem__)
    newest, kept = order[-1], set(order[-size:])
    latest = [r for r in base if sha(r) == newest]
    recent = [r for r in base if sha(r) in kept]
    note = (f"BASE window: accuracy and memory against commit {newest[:12]} ({len(latest)} "
            f"runs); timing against {len(recent)} runs of the newest {len(kept)} of "
            f"{len(order)} commits")
    return latest, recent, note


def _benchmarks(runs: list[dict[str, Any]]) -> str:
    names = sorted({f"{r['method']}@{r['task']}->{r['target']}" for r in runs
                    if r["status"] == "ok"})
    if not names:
        return "no successful runs"
    shown = ", ".join(names[:6])
    return shown + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")


def _by_benchmark(runs: list[dict[str, Any]]) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    """benchmark key -> configuration -> its runs, in record order."""
    out: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    key_of = operator.itemgetter(*KEY)
    for run in runs:
        out.setdefault(key_of(run), {}).setdefault(run["config"], []).append(run)
    return out


def _assess_runs(metric: Metric, base: list[dict[str, Any]], new: list[dict[str, Any]],
                 threshold: float | None, significance: float, detect: float | None = None,
                 timing_significance: float = TIMING_SIGNIFICANCE, unstable: bool = False
                 ) -> Verdict:
    """One metric over matched runs, one value per run (the median of its timing blocks for
    timing), paired by seed when both sides have values for exactly the same seeds."""
    b_runs = [(r["seed"], v) for r in base if (v := metric.run_value(r["record"])) is not None]
    n_runs = [(r["seed"], v) for r in new if (v := metric.run_value(r["record"])) is not None]
    b_seeds, n_seeds = [s for s, _ in b_runs], [s for s, _ in n_runs]
    paired = (metric.kind != "timing" and len(b_seeds) >= 2
              and len(set(b_seeds)) == len(b_seeds) and len(set(n_seeds)) == len(n_seeds)
              and set(b_seeds) == set(n_seeds))
    if paired:
        return assess(metric, dict(b_runs), dict(n_runs), threshold=threshold,
                      significance=significance, paired=True, detect=detect)
    return assess(metric, [v for _, v in b_runs], [v for _, v in n_runs], threshold=threshold,
                  significance=significance, detect=detect,
                  timing_significance=timing_significance, unstable=unstable)


def _adjust_fdr(rows: list[Row], significance: float) -> None:
    """Benjamini-Hochberg over the accuracy and memory comparisons (untested ones count with
    p = 1); timing keeps its own, stricter level."""
    tested = [r for r in rows if r.metric.kind != "timing"]
    if not tested:
        return
    ps = np.array([r.verdict.p if math.isfinite(r.verdict.p) else 1.0 for r in tested])
    adjusted = stats.false_discovery_control(ps, method="bh")
    for row, q in zip(tested, adjusted):
        if math.isfinite(row.verdict.p):
            row.verdict = decide(dataclasses.replace(row.verdict, p=float(q)), significance)


# -- exact mode ---------------------------------------------------------------------------------

#: The metrics an exact comparison checks, field by field.
EXACT_FIELDS = ("acc_target", "acc_target_worst", "acc_source_val", "domains", "selected_step",
                "selection", "by_selection", "item_correct", "episodes")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value, key=str):
            out.update(_flat(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    metrics = record.get("metrics") or {}
    return _flat({k: metrics[k] for k in EXACT_FIELDS if k in metrics})


def _job(run: dict[str, Any]) -> tuple:
    record = run["record"]
    return (str(run["seed"]), int(record.get("trial") or 0),
            tuple(record.get("holdout") or ()))


def _exact(base: list[dict[str, Any]], new: list[dict[str, Any]], b_config: str,
           n_config: str) -> tuple[int, list[dict[str, str]]]:
    """(identical jobs, differences) between the matched jobs of one benchmark."""
    out = []
    if b_config != n_config:
        out.append({"job": "all", "field": "hparams",
                    "change": config_difference(b_config, n_config)})
    b_jobs = {_job(r): r for r in base}
    n_jobs = {_job(r): r for r in new}
    same = 0
    for job in sorted(set(b_jobs) & set(n_jobs), key=str):
        a, b = _fingerprint(b_jobs[job]["record"]), _fingerprint(n_jobs[job]["record"])
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        name = f"seed {job[0]}" + (f" trial {job[1]}" if job[1] else "") + \
            (f" holdout {'+'.join(job[2])}" if job[2] else "")
        if not diff:
            same += 1
            continue
        first = diff[0]
        more = f" (+{len(diff) - 1} more field(s))" if len(diff) > 1 else ""
        out.append({"job": name, "field": first,
                    "change": f"{_short(a.get(first))} -> {_short(b.get(first))}{more}"})
    return same, out


def _short(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# -- rendering ----------------------------------------------------------------------------------

def _p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "<1e-6" if p < 1e-6 else f"{p:.2g}"


def _n(verdict: Verdict, metric: Metric) -> str:
    return f"{verdict.n_base}/{verdict.n_new} runs"


def _detectable(row: Row) -> str:
    v = row.verdict
    if row.metric.kind == "timing" or not math.isfinite(v.detectable):
        return "—" if row.metric.kind == "timing" else "∞"
    return row.metric.format_change(-v.detectable).lstrip("-")


def _metric_rows(rows: list[Row], with_direction: bool = False) -> list[list[str]]:
    out = []
    for r in sorted(rows, key=lambda r: (r.task, r.method, r.metric.name)):
        v = r.verdict
        line = [r.task, r.method, r.metric.name, r.metric.format_value(v.base),
                r.metric.format_value(v.new), r.metric.format_change(v.change),
                r.metric.format_threshold(r.threshold), _detectable(r), _p(v.p), v.test,
                _n(v, r.metric)]
        if with_direction:
            line.insert(3, "worse" if v.worse else "better")
            line.append(v.note)
        out.append(line)
    return out


#: How many new / missing benchmarks are listed without ``--all`` (all are counted).
LISTED = 50


def render(result: Comparison, fmt: str = "text", show_all: bool = False) -> str:
    """The comparison as text (``text``), Markdown for a pull-request comment (``md``), or
    JSON for a regression tracker (``github-action-benchmark``, ``bencher``).

    ``show_all`` adds the comparisons within the threshold, and lists every new and missing
    benchmark (else the first :data:`LISTED` of each; a sweep compared with a small baseline
    has tens of thousands).
    """
    if fmt == "github-action-benchmark":
        return json.dumps(github_action_benchmark(result), indent=2) + "\n"
    if fmt == "bencher":
        return json.dumps(bencher_metric_format(result), indent=2, sort_keys=True) + "\n"
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
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
    weak = result.by_status("underpowered")
    shaky = result.by_status("unstable")
    code = result.exit_code
    verdict = {ExitCode.FAILURES: "BEHAVIOUR CHANGED" if result.changed and not regressions
               else "REGRESSION", ExitCode.INCOMPLETE: "INCOMPLETE",
               ExitCode.OK: "no regression"}[code]
    if code == ExitCode.FAILURES and not regressions and not result.changed:
        verdict = "UNDERPOWERED (--require-power)"
    if result.exact:
        head = (f"xbench compare --exact: {verdict} — {len(result.changed)} difference(s), "
                f"{result.identical} identical job(s); {result.matched} benchmark(s) matched, "
                f"{len(result.incomplete)} incomplete, {len(result.new)} new")
    else:
        head = (f"xbench compare: {verdict} — {len(regressions)} regressed, "
                f"{len(weak)} underpowered, {len(unsure)} ~ (beyond threshold, not "
                f"significant), {len(improvements)} improved, {len(same)} unchanged; "
                f"{result.matched} benchmark(s) matched, {len(result.incomplete)} incomplete, "
                f"{len(result.new)} new; significance {result.significance:g}")
    parts.append(f"**{head}**" if md else head)
    for note in result.warnings:
        parts.append(f"> warning: {note}" if md else f"warning: {note}")
    headers = ["task", "method", "metric", "BASE", "NEW", "change", "threshold",
               "detectable", "p", "test", "n (BASE/NEW)"]
    section(f"Regressions ({len(regressions)})", headers, _metric_rows(regressions))
    section(f"Behaviour changed ({len(result.changed)}; --exact: any difference fails)",
            ["task", "method", "job", "field", "BASE -> NEW"],
            [[c["task"], c["method"], c["job"], c["field"], c["change"]]
             for c in result.changed])
    allowed = " (allowed by --allow-missing)" if result.allow_missing else ""
    section(f"Incomplete: NEW lost data ({len(result.incomplete)}){allowed}",
            ["task", "method", "problem"],
            [[i["task"], i["method"], i["problem"]] for i in result.incomplete])
    fails = " (a failure with --require-power)" if result.require_power else \
        " (not a failure; --require-power makes it one)"
    section(f"Underpowered: cannot see the drop to detect ({len(weak)}){fails}",
            [*headers[:3], "direction", *headers[3:], "note"], _metric_rows(weak, True))
    section(f"~ Beyond the threshold but not significant ({len(unsure)}; not a failure)",
            [*headers[:3], "direction", *headers[3:], "note"], _metric_rows(unsure, True))
    section(f"Improvements ({len(improvements)})", headers, _metric_rows(improvements))
    section(f"Unstable timing, not gated ({len(shaky)})",
            [*headers[:3], "direction", *headers[3:], "note"], _metric_rows(shaky, True))
    if show_all:
        section(f"Unchanged: within the threshold or shown non-inferior ({len(same)})",
                headers, _metric_rows(same))
    side_headers = ["task", "method", "ok runs", "failed", "seeds"]
    for title, side in (("New: only in NEW", result.new),
                        ("Missing: only in BASE", result.missing)):
        shown = side if show_all else side[:LISTED]
        section(f"{title} ({len(side)})", side_headers, [list(r.values()) for r in shown])
        if len(shown) < len(side):
            parts.append(f"... and {len(side) - len(shown)} more (--all lists every one)")
    section(f"Configuration changes ({len(result.config_changes)})",
            ["task", "method", "BASE -> NEW"],
            [[c["task"], c["method"], c["change"]] for c in result.config_changes])
    thresholds = ", ".join(f"{m.name} {'higher' if m.higher_is_better else 'lower'} is better"
                           for m in result.metrics)
    if result.exact:
        legend = (f"Metrics: every field of {', '.join(EXACT_FIELDS)} of each matched job "
                  f"(seed, trial, holdout) must be identical.")
    else:
        legend = (f"Metrics: {thresholds}. A regression is significantly worse than BASE "
                  f"moved by the threshold (one-sided paired/Welch t over seeds; timing: "
                  f"Mann-Whitney U on per-run medians at {result.timing_significance:g}, "
                  f"threshold at least the run-to-run spread). 'detectable': the "
                  f"smallest drop seen with 80% power at this significance.")
    legend += (" Exit codes: 0 pass, 1 regression (or behaviour changed / underpowered with "
               "--require-power), 4 incomplete (1 wins over 4).")
    parts.append(("_" if md else "") + legend + ("_" if md else ""))
    return "\n\n".join(parts) + "\n"


# -- exports ------------------------------------------------------------------------------------

def _unit(metric: Metric) -> tuple[str, float]:
    """(unit, factor) of a metric in exports: accuracies in percent."""
    if metric.kind == "accuracy":
        return "%", 100.0
    if metric.name == "latency_ms":
        return "ms", 1.0
    if metric.kind == "memory":
        return "MiB", 1.0
    return "samples/s", 1.0


def _export_rows(result: Comparison) -> list[Row]:
    return sorted(result.rows, key=lambda r: (r.task, r.method, r.metric.name))


def github_action_benchmark(result: Comparison) -> list[dict[str, Any]]:
    """NEW's values in github-action-benchmark's custom JSON (``tool: customBiggerIsBetter``
    or ``customSmallerIsBetter``): a list of ``{name, unit, value, range?, extra?}``.

    The action reads one direction per file; ``name`` carries the metric and
    ``extra`` the direction, BASE, the change and the gate's verdict, so split by
    direction (``jq``) when feeding the action.
    """
    out = []
    for row in _export_rows(result):
        v, metric = row.verdict, row.metric
        unit, factor = _unit(metric)
        entry: dict[str, Any] = {"name": f"{row.task}/{row.method}/{metric.name}",
                                 "unit": unit, "value": round(v.new * factor, 6)}
        if math.isfinite(v.new_low) and math.isfinite(v.new_high):
            half = (v.new_high - v.new_low) / 2 * factor
            entry["range"] = f"± {half:.4g}"
        entry["extra"] = (f"{'higher' if metric.higher_is_better else 'lower'} is better; "
                          f"BASE {metric.format_value(v.base)}; change "
                          f"{metric.format_change(v.change)}; verdict {v.status}"
                          + (f" ({v.note})" if v.note else "")
                          + f"; n {v.n_base}/{v.n_new} runs")
        out.append(entry)
    return out


def bencher_metric_format(result: Comparison) -> dict[str, dict[str, dict[str, float]]]:
    """NEW's values in Bencher Metric Format:
    ``{benchmark: {measure: {value, lower_value?, upper_value?}}}``; the benchmark is
    ``task/method``, the measure the metric name (accuracies in percent)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in _export_rows(result):
        v, metric = row.verdict, row.metric
        _, factor = _unit(metric)
        measure: dict[str, float] = {"value": v.new * factor}
        if math.isfinite(v.new_low) and math.isfinite(v.new_high):
            measure["lower_value"] = v.new_low * factor
            measure["upper_value"] = v.new_high * factor
        out.setdefault(f"{row.task}/{row.method}", {})[metric.name] = measure
    return out
