"""``xbench bench BASE NEW``: re-time selected jobs of two code versions, A/B interleaved.

Timing recorded by two separate ``xbench run`` invocations is not comparable
on a shared or noisy machine: the load changes between them, and a 30% swing
from a neighbour's job looks like a regression. asv's remedy, used here, is to
time both versions **on the same machine, interleaved**, several times, and
judge on one statistic per run:

* ``BASE`` and ``NEW`` are each a source tree -- a folder holding
  ``xbench/__init__.py`` -- or a git ref of the current repository, checked out
  into a temporary detached worktree (``git worktree add --detach``) that is
  removed afterwards. Re-timing two *results folders* would re-run the code of
  whichever tree is installed, so refs/trees are what is compared.
* Each repeat runs the selected jobs once per side in a fresh process
  (``python -m xbench.cli run SUITE --methods ... --tasks ... --seeds ...``
  with ``PYTHONPATH`` set to that tree), in ABBA order (A B, B A, A B, ...) so
  a drift of the machine's load hits both sides alike.
* Every run contributes one statistic per timing metric: the median of its
  timing blocks (:meth:`xbench.analysis.compare.Metric.run_value`). Run i of
  NEW is paired with run i of BASE (adjacent in time): the per-pair ratios
  NEW / BASE cancel the machine's drift, which unpaired per-run values do not
  (on a loaded machine runs scatter by 20-40%, pairs by a few percent). The
  ratios are judged with an exact one-sided Wilcoxon signed-rank test at
  ``timing_significance`` (0.002, as asv) against the larger of the threshold
  and the pairs' measured spread
  (:func:`xbench.analysis.gate_stats.interleaved_test`). Nine repeats are the
  fewest at which 0.002 is reachable (2^-9 = 0.00195).
* Benchmarks matching the suite's ``timing_unstable`` patterns (or
  ``--unstable``) are shown and never gated.

:func:`interleave` is the engine; it takes any two callables, so the
statistics are testable without training a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from xbench.analysis import gate_stats
from xbench.analysis.compare import METRICS, Metric, Verdict, get_metric
from xbench.analysis.gate_stats import TIMING_SIGNIFICANCE
from xbench.errors import ExitCode, UsageError

#: Timing metrics timed by default.
DEFAULT_METRICS = ("train_samples_per_s", "infer_samples_per_s", "latency_ms")
#: Repeats per side by default (9 pairs reach 0.002 only if every pair agrees; 12 allow
#: two dissenting pairs).
DEFAULT_REPEATS = 12

#: One run of one side: {benchmark: {metric: per-run statistic}}.
RunResult = dict[str, dict[str, float]]


@dataclasses.dataclass
class BenchRow:
    benchmark: str
    metric: Metric
    verdict: Verdict


@dataclasses.dataclass
class BenchResult:
    rows: list[BenchRow]
    order: list[str]
    repeats: int

    @property
    def regressed(self) -> bool:
        return any(r.verdict.status == "regression" for r in self.rows)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILURES if self.regressed else ExitCode.OK


def abba(repeats: int) -> list[str]:
    """The side order: A B, B A, A B, ... (``repeats`` runs of each side)."""
    order: list[str] = []
    for i in range(repeats):
        order += ["A", "B"] if i % 2 == 0 else ["B", "A"]
    return order


def interleave(run_a: Callable[[int], RunResult], run_b: Callable[[int], RunResult], *,
               repeats: int = DEFAULT_REPEATS, metrics: Sequence[str] = DEFAULT_METRICS,
               thresholds: dict[str, float] | None = None,
               timing_significance: float = TIMING_SIGNIFICANCE,
               unstable: Sequence[str] = ()) -> BenchResult:
    """Run ``run_a`` (BASE) and ``run_b`` (NEW) ``repeats`` times each in ABBA order and
    compare their per-run statistics, benchmark by benchmark and metric by metric."""
    if repeats < 1:
        raise UsageError(f"--repeats {repeats}: give at least 1 (6 or more to reach 0.002)")
    chosen = [get_metric(m) for m in metrics]
    for metric in chosen:
        if metric.kind != "timing":
            raise UsageError(f"--metric {metric.name}: bench re-times timing metrics only "
                             f"({', '.join(m for m in METRICS if METRICS[m].kind == 'timing')})")
    thresholds = thresholds or {}
    runs: dict[str, list[RunResult]] = {"A": [], "B": []}
    order = abba(repeats)
    counters = {"A": 0, "B": 0}
    for side in order:
        runner = run_a if side == "A" else run_b
        runs[side].append(runner(counters[side]))
        counters[side] += 1
    rows = []
    benchmarks = sorted({b for result in runs["A"] + runs["B"] for b in result})
    for benchmark in benchmarks:
        shaky = any(fnmatch.fnmatchcase(benchmark, p)
                    or fnmatch.fnmatchcase(benchmark.rsplit("/", 1)[-1], p) for p in unstable)
        for metric in chosen:
            pairs = [(a[benchmark][metric.name], b[benchmark][metric.name])
                     for a, b in zip(runs["A"], runs["B"])
                     if metric.name in a.get(benchmark, {}) and metric.name in b.get(benchmark, {})]
            if pairs:
                rows.append(BenchRow(benchmark, metric, judge_pairs(
                    metric, [p[0] for p in pairs], [p[1] for p in pairs],
                    thresholds.get(metric.name, metric.threshold), timing_significance, shaky)))
    return BenchResult(rows, order, repeats)


def judge_pairs(metric: Metric, base: list[float], new: list[float], threshold: float,
                alpha: float, unstable: bool = False) -> Verdict:
    """Interleaved runs, paired by repeat: a regression when the NEW/BASE ratios are
    significantly (signed-rank, ``alpha``) worse than the larger of ``threshold`` and
    the pairs' measured spread."""
    p, change, spread = gate_stats.interleaved_test(base, new, threshold,
                                                    metric.higher_is_better)
    used = max(threshold, gate_stats.SPREAD_FACTOR * spread)
    if used > threshold:
        p, change, _ = gate_stats.interleaved_test(base, new, used, metric.higher_is_better)
    worse = (change < 0) == metric.higher_is_better and change != 0
    goodness = change if metric.higher_is_better else -change
    common = dict(base=float(np.median(base)), new=float(np.median(new)), change=change,
                  n_base=len(base), n_new=len(new), worse=worse, threshold=used,
                  test="signed-rank (interleaved pairs)")
    note = f"pair spread {100 * spread:.1f}%"
    if unstable:
        return Verdict("unstable", p=p, note="declared unstable: not gated", **common)
    if 2.0 ** -len(base) >= alpha:
        needs = gate_stats.pairs_needed_for(alpha)
        status = "underpowered" if abs(goodness) > used else "same"
        return Verdict(status, p=p, needs=needs, note=f"needs {needs} repeats for {alpha:g}",
                       **common)
    if p < alpha:
        return Verdict("regression", p=p, note=note, **common)
    return Verdict("same" if abs(goodness) <= used else "~", p=p, note=note, **common)


# -- running xbench from a source tree ----------------------------------------------------------

def _is_tree(path: Path) -> bool:
    return (path / "xbench" / "__init__.py").is_file()


@contextlib.contextmanager
def source_tree(ref: str, workdir: Path, name: str) -> Iterator[Path]:
    """``ref`` as a source tree: a folder holding ``xbench/``, or a git ref checked out into
    a temporary detached worktree (removed on exit)."""
    path = Path(ref)
    if path.is_dir():
        if not _is_tree(path):
            raise UsageError(f"{ref}: not an xbench source tree (no xbench/__init__.py); give "
                             f"a source folder or a git ref")
        yield path.resolve()
        return
    repo = Path(__file__).resolve().parent.parent
    check = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                            f"{ref}^{{commit}}"], capture_output=True, text=True)
    if check.returncode != 0:
        raise UsageError(f"{ref}: neither a source folder nor a git ref of {repo}")
    target = workdir / name
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet",
                    str(target), check.stdout.strip()], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(target)],
                       capture_output=True)


def job_runner(tree: Path, suite: str, workdir: Path, *, methods: str | None,
               tasks: str | None, seeds: str, metrics: Sequence[str], label: str
               ) -> Callable[[int], RunResult]:
    """A callable that runs the selected jobs of ``suite`` with the code in ``tree`` (a fresh
    process and results folder per call) and returns each job's per-run timing statistics."""
    chosen = [get_metric(m) for m in metrics]
    if Path(suite).is_file():  # a suite file: the subprocess runs in ``tree``
        suite = str(Path(suite).resolve())

    def run(index: int) -> RunResult:
        out = workdir / f"{label}-{index}"
        argv = [sys.executable, "-m", "xbench.cli", "run", suite, "--out", str(out),
                "--seeds", seeds, "--quiet", "--threads", "1"]
        if methods:
            argv += ["--methods", methods]
        if tasks:
            argv += ["--tasks", tasks]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UsageError(f"bench: `xbench run` in {tree} failed ({done.returncode}): "
                             f"{tail[0]}")
        result: RunResult = {}
        with open(out / "records.jsonl", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if record.get("status") != "ok":
                    continue
                name = f"{record['task']}:{'+'.join(record.get('target') or [])}/" \
                       f"{record['method']}" + (f"#seed{record['seed']}"
                                                 if "," in seeds else "")
                values = {m.name: v for m in chosen if (v := m.run_value(record)) is not None}
                result[name] = values
        return result

    return run


def bench(base_ref: str, new_ref: str, *, suite: str = "gate", methods: str | None = "erm",
          tasks: str | None = None, seeds: str = "0", repeats: int = DEFAULT_REPEATS,
          metrics: Sequence[str] = DEFAULT_METRICS, thresholds: dict[str, float] | None = None,
          timing_significance: float = TIMING_SIGNIFICANCE,
          unstable: Sequence[str] = ()) -> BenchResult:
    """Re-time the selected jobs of ``suite`` with the code of ``base_ref`` and ``new_ref``,
    interleaved (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="xbench-bench-") as tmp:
        workdir = Path(tmp)
        with source_tree(base_ref, workdir, "base") as a, \
                source_tree(new_ref, workdir, "new") as b:
            kw = dict(methods=methods, tasks=tasks, seeds=seeds, metrics=metrics)
            return interleave(job_runner(a, suite, workdir, label="A", **kw),
                              job_runner(b, suite, workdir, label="B", **kw),
                              repeats=repeats, metrics=metrics, thresholds=thresholds,
                              timing_significance=timing_significance, unstable=unstable)


def render(result: BenchResult, fmt: str = "text") -> str:
    """One line per benchmark and metric: BASE and NEW medians over runs, change, threshold
    used, p, verdict."""
    from tabulate import tabulate

    rows = []
    for r in result.rows:
        v, m = r.verdict, r.metric
        rows.append([r.benchmark, m.name, m.format_value(v.base), m.format_value(v.new),
                     m.format_change(v.change), m.format_threshold(v.threshold),
                     "—" if v.p != v.p else f"{v.p:.2g}", f"{v.n_base}/{v.n_new}", v.status,
                     v.note])
    regressions = sum(r.verdict.status == "regression" for r in result.rows)
    head = (f"xbench bench: {'REGRESSION' if regressions else 'no regression'} — "
            f"{regressions} regressed of {len(result.rows)}; {result.repeats} interleaved "
            f"runs a side ({''.join(result.order[:4])}...), one statistic per run")
    table = tabulate(rows, headers=["benchmark", "metric", "BASE", "NEW", "change",
                                    "threshold", "p", "runs", "verdict", "note"],
                     tablefmt="github" if fmt == "md" else "simple", disable_numparse=True)
    return f"{head}\n\n{table}\n"
