"""Records -> pandas -> tables (Markdown, LaTeX, CSV, HTML) under every model-selection method.

``load_results`` flattens records into one row per job. ``analyse`` applies
one selection method across sweeps (:mod:`xbench.analysis.sweep`) and computes the
statistics (:mod:`xbench.analysis.stats`); the table builders turn an analysis into
``Table`` objects, rendered by one renderer per format.

Every accuracy table names its selection method (ORACLE ones say so); an
incomplete (method, task) cell is shown as missing, left out of averages and
ranks, with a warning; the best cell of a task and every cell whose 95% CI
overlaps it are marked together (bold in Markdown, ``\\textbf`` in LaTeX,
class ``top`` in HTML); oracle methods (records with ``oracle: true``) are
listed apart and never ranked; cost is ranked only within one device unless
pooling across devices is asked for explicitly.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from xbench.analysis import agreement, curves, stats, sweep
from xbench.analysis.records import display_path, load_results  # noqa: F401  (re-exported)
from xbench.analysis.records import bulk_analysis, read_results
from xbench.analysis.stats import mean_ci  # noqa: F401  (public: re-exported)
from xbench.errors import ConfigError, RecordsError

FORMATS = ("md", "csv", "latex", "html")
MISSING = "—"
NOT_APPLICABLE = "n/a"
ORACLE_MARK = " [ORACLE]"
TOP_LEGEND = ("marked: the methods the data cannot rule out as the best of the column -- "
              "a method is unmarked when another is significantly better (one-sided t-test "
              "over seeds, paired when both ran the same seeds, i.e. the same data split and "
              "test items, Welch otherwise; alpha = 0.05 shared over the column, Bonferroni), "
              "so a best method is marked with >= 95% confidence; a mark in a column with a "
              "large MDD is blindness, not equality; oracle rows and missing cells are never "
              "ranked")


def _not_applicable(df: pd.DataFrame, absent: list[tuple[str, str]]
                    ) -> dict[tuple[str, str], str | None]:
    """For each (method label, task label) a method never ran on: why the registered method
    cannot run on the task (too few source domains), or ``None`` (not run)."""
    if not absent:
        return {}
    names = df.groupby("method_label")["method"].unique()
    protocol = df.groupby("task_label")["protocol"].first()
    sources = df.groupby("task_label")["n_sources"].max() if "n_sources" in df else \
        pd.Series(dtype=float)
    needs = method_needs([(str(n), str(protocol[t])) for m, t in absent for n in names[m]])
    out: dict[tuple[str, str], str | None] = {}
    for method, task in absent:
        out[method, task] = None
        if len(names[method]) != 1 or pd.isna(sources.get(task, math.nan)):
            continue
        name, under, have = str(names[method][0]), str(protocol[task]), int(sources[task])
        need = needs.get((name, under))
        if isinstance(need, int) and have < need:
            out[method, task] = (f"not applicable: {name} needs {need} source domains under "
                                 f"{under}, the task has {have}")
    return out


def _needs_from_registry(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int | None]:
    from xbench.registry import METHODS

    out: dict[tuple[str, str], int | None] = {}
    for name, protocol in pairs:
        if name not in METHODS:
            out[name, protocol] = None
            continue
        cls = METHODS.get(name)
        need = cls.min_sources(protocol) if hasattr(cls, "min_sources") \
            else cls.min_source_domains
        out[name, protocol] = need if isinstance(need, int) else None
    return out


def _method_code_fingerprint() -> str | None:
    """A fingerprint of the code that defines the registered methods, found without
    importing it: the built-in ``xbench.methods`` files (path, size, mtime) and each
    ``xbench.methods`` entry point (name, target, distribution and version, and its module
    file's size and mtime). ``None`` when it cannot be told (then nothing is cached)."""
    import hashlib
    import importlib.metadata
    import importlib.util
    from pathlib import Path

    import xbench
    from xbench.registry import AUTOLOAD_ENV

    h = hashlib.sha256(f"{xbench.__version__}|{os.environ.get(AUTOLOAD_ENV, '')}".encode())
    try:
        files = sorted((Path(xbench.__file__).parent / "methods").rglob("*.py"))
        for f in files:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        if os.environ.get(AUTOLOAD_ENV, "") in ("", "0"):
            for ep in sorted(importlib.metadata.entry_points(group="xbench.methods"),
                             key=lambda e: (e.name, e.value)):
                dist = getattr(ep, "dist", None)
                h.update(f"{ep.name}|{ep.value}|{dist.name if dist else ''}|"
                         f"{dist.version if dist else ''}".encode())
                parts = ep.value.split(":")[0].strip().split(".")
                spec = importlib.util.find_spec(parts[0])  # a top-level name: imports nothing
                if spec is None or spec.origin is None:
                    return None
                path = Path(spec.origin)
                if len(parts) > 1:
                    path = path.parent.joinpath(*parts[1:])
                    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
                st = path.stat()
                h.update(f"|{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    except (OSError, ValueError, ImportError):
        return None
    return h.hexdigest()


def method_needs(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int | None]:
    """``(method, protocol) -> min_source_domains`` (``None``: not a registered method, or no
    integer need).

    Answering means importing the methods (and torch: seconds and most of a GB), so the
    answers are cached in ``$XBENCH_CACHE_DIR`` (default ``~/.cache/xbench``), keyed by a
    fingerprint of the methods' code (:func:`_method_code_fingerprint`); a changed method
    file, plugin or version is a miss. The registry is asked directly when it is already
    loaded in this process (a script or test may have registered methods of its own), with
    ``XBENCH_NO_INDEX`` set, or when the cache cannot be read or written.
    """
    import sys

    from xbench.registry import METHODS

    pairs = list(dict.fromkeys(pairs))
    loaded = "xbench.methods" in sys.modules or bool(getattr(METHODS, "_entries", None))
    if loaded or os.environ.get("XBENCH_NO_INDEX", "") not in ("", "0"):
        return _needs_from_registry(pairs)
    if all(pair in _NEEDS for pair in pairs):  # asked before in this process
        return {pair: _NEEDS[pair] for pair in pairs}
    key = _method_code_fingerprint()
    if key is None:
        return _needs_from_registry(pairs)
    folder = os.environ.get("XBENCH_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "xbench")
    # one file per fingerprint: checkouts of other code (a main tree and a worktree, other
    # engineers' runs) do not evict each other's answers and import torch on every switch
    path = os.path.join(folder, f"method-needs-{key[:16]}.json")
    try:
        with open(path) as f:
            cache = json.load(f)
        if not isinstance(cache, dict) or cache.get("key") != key:
            cache = {}
    except (OSError, ValueError):
        cache = {}
    known = cache.get("needs") or {}
    out = {(n, p): known[f"{n}|{p}"] for n, p in pairs if f"{n}|{p}" in known}
    todo = [pair for pair in pairs if pair not in out]
    if todo:
        out.update(_needs_from_registry(todo))
        known.update({f"{n}|{p}": out[n, p] for n, p in todo})
        try:
            os.makedirs(folder, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"key": key, "needs": known}, f)
            os.replace(tmp, path)
        except OSError:
            pass
    _NEEDS.update(out)
    return out


_NEEDS: dict[tuple[str, str], int | None] = {}


# --------------------------------------------------------------------------- analysis


#: What the methods of each protocol's tables may see: every caption says it.
PROTOCOL_SEES = {
    "dg": "domain generalisation: trained on labelled source domains only; no target data "
          "before the test",
    "uda": "unsupervised domain adaptation: labelled source domains and unlabelled target "
           "training inputs",
    "tta": "test-time adaptation: trained as DG, then adapts on the unlabelled target TEST "
           "inputs as they stream in; never compare with DG rows",
    "fewshot": "few-shot: trained on source classes; adapts to each test episode's labelled "
               "support set",
    "paired": "cross-modality: trained on labelled source-modality data and unlabelled "
              "index-aligned pairs",
}
#: The control every pairwise test is against, fixed in advance (``--control`` overrides):
#: ERM, and for few-shot the fine-tuning baseline (Chen et al., 2019, "A Closer Look at
#: Few-shot Classification").
DEFAULT_CONTROL = "erm"
DEFAULT_CONTROLS = {"fewshot": "finetune"}


@dataclasses.dataclass
class Analysis:
    """One selection method applied to the records of one protocol, with its statistics."""

    selection: str
    protocol: str
    selected: sweep.Selected
    cells: pd.DataFrame          # per (method, task), see stats.cells
    aggregate: pd.DataFrame      # per method over the common tasks, see stats.aggregate
    friedman: dict[str, Any]
    pairwise: pd.DataFrame       # each method against ``control``
    episodes: pd.DataFrame
    tasks: list[str]
    common: list[str]            # the tasks every method can run on (averaged and ranked)
    methods: list[str]           # display order: ranked, then unranked, then oracle rows
    control: str | None
    columns: dict[str, dict[str, Any]]  # per task: test size, chance, all-at-chance flag
    warnings: list[str]
    power: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def runs(self) -> pd.DataFrame:
        return self.selected.runs

    @property
    def oracle(self) -> bool:
        return sweep.is_oracle(self.selection)

    @property
    def single_trial(self) -> bool:
        """Every cell is one trial per seed: default hyper-parameters, no sweep."""
        return self.runs.empty or int(self.runs["trials"].max()) <= 1

    @property
    def split_follows_seed(self) -> bool:
        """Seeds of one cell drew their own data split (the interval covers split and test
        sampling), rather than sharing one ``data_seed``."""
        if self.runs.empty or self.runs["data_seed"].isna().all():
            return False
        per_cell = self.runs.groupby(["method", "task"])["data_seed"].nunique()
        return bool((per_cell > 1).all())


#: the columns of the records :func:`analyse` reads beyond those selection reads
_ANALYSIS_COLUMNS = ("n_sources", "task_group")


def analyse(df: pd.DataFrame, selection: str = sweep.DEFAULT, protocol: str | None = None,
            control: str | None = None, per_target: bool = False,
            prepared: sweep.Prepared | None = None) -> Analysis:
    """Apply ``selection`` to the records of one ``protocol`` in ``df``; every statistic.

    Tasks of different protocols (dg, tta, uda, fewshot, ...) are separate
    leaderboards. Across-task numbers are over the tasks every method can run on
    (:func:`stats.common_tasks`); pairwise tests are against ``control`` (default
    ``erm``), chosen before looking at the results, never against the best-ranked.
    A task run with several targets is one column, its seeds' accuracies averaged
    over the targets (:func:`stats.mean_over_targets`); ``per_target`` keeps a
    column per target instead. ``prepared``: :func:`sweep.prepare` of the protocol's
    records, shared by the selections of one report.
    """
    sweep.check_name(selection)
    if protocol is not None and not (df["protocol"] == protocol).all():
        df = df[df["protocol"] == protocol]
        prepared = None  # it was made for the whole frame
    else:
        protocol = "+".join(sorted(map(str, df["protocol"].dropna().unique())))
    selected = sweep.select(df, selection, prepared)
    control = control or DEFAULT_CONTROLS.get(protocol, DEFAULT_CONTROL)
    items = _item_level(selected.runs, df, control)
    if not per_target and "task_group" in df:
        selected, df = _fold_targets(selected, df)
    oracle = df.groupby("method_label")["oracle"].any().to_dict() if "oracle" in df else {}
    notes = list(selected.warnings)
    # (method, task) pairs a method never ran on: not applicable (one rule for every
    # method), or missing (not run)
    seen = set(zip(selected.runs["method"], selected.runs["task"])) | set(selected.incomplete)
    methods_seen = sorted(set(df.loc[df["status"] == "ok", "method_label"].unique()) |
                          {m for m, _ in seen})
    tasks_seen = sorted(set(df["task_label"].unique()))
    not_applicable = set(selected.not_applicable)
    absent_of = {m: [t for t in tasks_seen if (m, t) not in seen] for m in methods_seen}
    reasons = _not_applicable(df, [(m, t) for m, ts in absent_of.items() for t in ts])
    not_applicable |= {cell for cell, why in reasons.items() if why}
    for method in methods_seen:
        if absent_of[method] and len(tasks_seen) > 1:
            notes.append(f"{method}: no result for " + ", ".join(
                f"{t} ({reasons[method, t] or 'not run'})" for t in absent_of[method]))
    cells = stats.cells(selected.runs, selected.incomplete, not_applicable, oracle)
    tasks = [t for t in tasks_seen if t in set(cells["task"])]
    common = stats.common_tasks(cells) if len(cells) else []
    for task in tasks:
        if task not in common:
            notes.append(f"{task}: left out of every across-task number (not every method "
                         f"can run on it); its column still shows each method that did")
    columns = _columns(selected.runs, cells, tasks)
    chance = {t: c["chance"] for t, c in columns.items() if c["chance"] is not None}
    aggregate = stats.aggregate(cells, selected.runs, chance) if not cells.empty else \
        pd.DataFrame(columns=stats.AGGREGATE_COLUMNS)
    ranked = aggregate[aggregate["complete"] & ~aggregate["oracle"]]
    order_ranked = ranked.sort_values(["mean", "method"], ascending=[False, True])["method"]
    rest = aggregate[~aggregate["method"].isin(order_ranked) & ~aggregate["oracle"]]["method"]
    oracles = aggregate[aggregate["oracle"]]["method"]
    methods = [*order_ranked, *sorted(rest), *sorted(oracles)]
    friedman = stats.friedman_nemenyi(stats.wide(cells).reindex(columns=common)
                                      .loc[list(order_ranked)]) if len(order_ranked) else {}
    pairwise = pd.DataFrame(columns=stats.PAIRWISE_COLUMNS)
    ranked_methods = [m for m in methods if m not in set(oracles)]
    if control in ranked_methods and len(ranked_methods) > 1:
        ok = cells[cells["status"] == "ok"]
        complete = set(zip(ok["method"], ok["task"]))
        runs = selected.runs[np.array([cell in complete for cell in
                                       zip(selected.runs["method"], selected.runs["task"])],
                                      dtype=bool)]
        pairwise = stats.pairwise_vs_control(runs, control, ranked_methods, common)
        pairwise = _with_item_level(pairwise, items, per_target, common)
    elif len(ranked_methods) > 1:
        notes.append(f"no pairwise tests: the control '{control}' has no results under "
                     f"protocol {protocol} (choose one with --control)")
        control = None
    power = {}
    if not pairwise.empty:
        spread = stats.difference_sds(selected.runs, control, tasks)
        for task in tasks:
            sd, n = spread[task]
            power[task] = {"sd": sd, "n": n, "mdd": stats.min_detectable_difference(sd, n)}
            mine = items[items["task_group"] == task] if not per_target else items.iloc[0:0]
            if len(mine):  # per-item outcomes: how much of the variance is item sampling
                power[task].update(var_item=float(mine["var_item"].mean()),
                                   items=int(round(float((mine["n"] / mine["targets"]).median()))))
    return Analysis(selection=selection, protocol=protocol, selected=selected, cells=cells,
                    aggregate=aggregate, friedman=friedman, pairwise=pairwise,
                    episodes=stats.episodes(selected.runs), tasks=tasks, common=common,
                    methods=methods, control=control if not pairwise.empty else None,
                    columns=columns, warnings=notes, power=power)


def _item_level(runs: pd.DataFrame, df: pd.DataFrame, control: str) -> pd.DataFrame:
    """Per (method, task, seed): McNemar counts against the control on identical test items
    (:func:`stats.item_discordance`), where both records keep per-item outcomes."""
    if runs.empty or "test_items" not in runs or runs["test_items"].isna().all():
        return pd.DataFrame(columns=["method", "task_group", "seed", "b", "c", "n"])
    wanted = set(runs["job_id"])
    chosen = df[df["job_id"].isin(wanted)]  # not every row: 100,000 at DomainBed's scale
    histories = dict(zip(chosen["job_id"], chosen["history"]))
    return stats.item_discordance(runs, histories, control)


def _with_item_level(pairwise: pd.DataFrame, items: pd.DataFrame, per_target: bool,
                     tasks: list[str]) -> pd.DataFrame:
    """``item_pairs``: (task, seed) pairs of the row scored on identical items;
    ``item_differ``: how many of them differ beyond item noise (McNemar mid-p < 0.05)."""
    out = pairwise.copy()
    out["item_pairs"], out["item_differ"] = 0, 0
    if items.empty or per_target:
        return out
    items = items[items["task_group"].isin(tasks)]
    for i, row in out.iterrows():
        mine = items[items["method"] == row["method"]]
        out.at[i, "item_pairs"] = len(mine)
        out.at[i, "item_differ"] = int(sum(stats.mcnemar(int(b), int(c))["mid_p"] < 0.05
                                           for b, c in zip(mine["b"], mine["c"])))
    return out


def _fold_targets(selected: sweep.Selected, df: pd.DataFrame
                  ) -> tuple[sweep.Selected, pd.DataFrame]:
    """The selection and the records with each task's targets folded into one column."""
    pairs = df[["task_label", "task_group"]].drop_duplicates()
    group_of = dict(zip(pairs["task_label"], pairs["task_group"]))
    runs, problems = stats.mean_over_targets(selected.runs)
    incomplete: dict[tuple[str, str], str] = {}
    for (method, task), why in [*selected.incomplete.items(), *problems.items()]:
        key = (method, group_of.get(task, task))
        incomplete[key] = f"{incomplete[key]}; {why}" if key in incomplete else why
    not_applicable = {(m, group_of.get(t, t)) for m, t in selected.not_applicable}
    folded = dataclasses.replace(selected, runs=runs, incomplete=incomplete,
                                 not_applicable=not_applicable)
    return folded, df.assign(task_label=df["task_group"])


def _columns(runs: pd.DataFrame, cells: pd.DataFrame, tasks: list[str]) -> dict[str, dict]:
    """Per task: target test size and chance level (from the records), and whether every
    ranked method is at or below chance there."""
    # each task's runs by position, each column's present values once (a sub-frame per
    # task cost a tenth of an analysis)
    where = runs.groupby("task").indices if not runs.empty else {}

    def present(column: str) -> tuple[np.ndarray, np.ndarray]:
        if column not in runs:
            return np.array([], dtype=object), np.zeros(len(runs), dtype=bool)
        return runs[column].to_numpy(dtype=object), runs[column].notna().to_numpy()

    (size, has_size), (chance_of, has_chance), (n_targets, has_targets) = (
        present(c) for c in ("test_size", "chance", "n_targets"))
    ranked = cells[(cells["status"] == "ok") & ~cells["oracle"]]
    means_of: dict[str, list[float]] = {}
    for task, mean in zip(ranked["task"], ranked["mean"]):
        means_of.setdefault(task, []).append(mean)
    out = {}
    for task in tasks:
        mine = where.get(task, np.array([], dtype=np.int64))
        sizes = sorted({int(v) for v in size[mine[has_size[mine]]]})
        chances = sorted({float(v) for v in chance_of[mine[has_chance[mine]]]})
        chance = chances[-1] if chances else None
        means = means_of.get(task, [])
        at_chance = bool(chance is not None and len(means) and
                         all(m <= chance + 1e-9 for m in means))
        targets = n_targets[mine[has_targets[mine]]]
        out[task] = {"test_size": sizes, "chance": chance, "at_chance": at_chance,
                     "targets": int(max(targets)) if len(targets) else 1}
    return out


def plan(df: pd.DataFrame, selection: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(selection, protocol) pairs to analyse, and a note for each pair left out and why.

    ``selection`` is one selection method or ``all``. Label-free validators
    apply to UDA only; leave-one-domain-out needs holdout runs in the protocol.
    """
    names = list(sweep.SELECTIONS) if selection == "all" else [sweep.check_name(selection)]
    protocols = sorted(map(str, df.loc[df["status"] == "ok", "protocol"].dropna().unique()))
    pairs, skipped = [], []
    light = df[[c for c in ("protocol", "holdout") if c in df.columns]]
    subs = {protocol: light[light["protocol"] == protocol] for protocol in protocols}
    for name in names:
        for protocol in protocols:
            sub = subs[protocol]
            if not sweep.applies(name, protocol):
                skipped.append(f"{name} under protocol {protocol}: label-free validators "
                               f"apply to UDA tasks only")
            elif not sweep.supported(sub, name):
                skipped.append(f"{name} under protocol {protocol}: no leave-one-domain-out "
                               f"(holdout) runs in these records")
            else:
                pairs.append((name, protocol))
    if not pairs:
        raise RecordsError(f"--selection {selection}: applies to none of these records "
                           f"({'; '.join(skipped)})")
    return pairs, skipped


# --------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Cell:
    """One displayed cell: its text, a sort key, and marks (``top``, ``oracle``, ``front``)."""

    text: str
    value: float | str | None = None
    marks: frozenset[str] = frozenset()
    html: str | None = None  # already-escaped HTML shown instead of ``text`` (HTML only)

    def __str__(self) -> str:
        return self.text


@dataclasses.dataclass
class Table:
    """A titled table with display rows, notes and a long-form data frame for CSV."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    data: pd.DataFrame
    notes: list[str] = dataclasses.field(default_factory=list)


def _pct(value: Any, digits: int = 1) -> str:
    return MISSING if value is None or _nan(value) else f"{100 * value:.{digits}f}"


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _mean_ci_text(mean: float, ci: float, n: int) -> str:
    if n == 0 or _nan(mean):
        return MISSING
    if n == 1 or _nan(ci):
        return f"{100 * mean:.1f} ({n})"
    return f"{100 * mean:.1f} ± {100 * ci:.1f} ({n})"


def _method_cell(method: str, oracle: bool) -> Cell:
    return Cell(method + (ORACLE_MARK if oracle else ""), method,
                frozenset({"oracle"}) if oracle else frozenset())


def _selection_title(a: Analysis) -> str:
    text = f"model selection: {a.selection}"
    if sweep.is_oracle(a.selection):
        text += " (ORACLE: reads target validation labels)"
    sees = PROTOCOL_SEES.get(a.protocol, "a protocol xbench does not describe")
    hparams = ("default hyper-parameters (no sweep)" if a.single_trial
               else "trials chosen by the selection method")
    return f"{text}; protocol {a.protocol} ({sees}); {hparams}"


def _interval_words(a: Analysis) -> str:
    """What the ± is over, said in the caption."""
    if a.split_follows_seed:
        return ("95% CI half-width (Student t, ddof=1) over seeds; each seed draws its own "
                "data split, so it covers training, split and test sampling")
    return ("95% CI half-width (Student t, ddof=1) over seeds; the seeds share one data split "
            "and test set, so it covers training randomness only, not test sampling")


def _task_header(a: Analysis, task: str) -> str:
    """``task (n=2000, chance 10%)``: the target test size and chance level of a column."""
    column = a.columns.get(task) or {}
    parts = []
    sizes = column.get("test_size") or []
    targets = column.get("targets") or 1
    if targets > 1:
        parts.append(f"{targets} targets")
    if sizes:
        parts.append("n=" + "/".join(str(s) for s in sizes) + (" each" if targets > 1 else ""))
    if column.get("chance") is not None:
        parts.append(f"chance {100 * column['chance']:.0f}%")
    flag = " ≤CHANCE" if column.get("at_chance") else ""
    return f"{task} ({', '.join(parts)}){flag}" if parts else task + flag


def accuracy_table_of(a: Analysis, worst: bool = False) -> Table:
    """Methods x tasks (+ average) of target accuracy (or worst-domain accuracy)."""
    mean_col, ci_col, top_col = (("worst_mean", "worst_ci", "worst_top") if worst
                                 else ("mean", "ci", "top"))
    by_key = {(r.method, r.task): r for r in a.cells.itertuples()}
    agg = a.aggregate.set_index("method")
    multi = len(a.tasks) > 1
    headers = ["method", *[_task_header(a, t) for t in a.tasks]] + (
        ["average" if not worst else "worst task"] if multi else [])
    rows = []
    for method in a.methods:
        oracle = bool(agg.loc[method, "oracle"])
        row = [_method_cell(method, oracle)]
        if a.protocol == "tta" and method == a.control:
            row[0] = Cell(f"{method} (reference: no adaptation)", method)
        for task in a.tasks:
            cell = by_key.get((method, task))
            if cell is None or cell.status == "incomplete":
                row.append(Cell(MISSING, None, frozenset({"missing"})))
            elif cell.status == "n/a":
                row.append(Cell(NOT_APPLICABLE, None, frozenset({"missing"})))
            else:
                marks = {"top"} if getattr(cell, top_col) else set()
                row.append(Cell(_mean_ci_text(getattr(cell, mean_col), getattr(cell, ci_col),
                                              cell.n), getattr(cell, mean_col), frozenset(marks)))
        if multi:
            value = agg.loc[method, "worst" if worst else "mean"]
            row.append(Cell(_pct(value), None if _nan(value) else value))
        rows.append(row)
    what = ("Worst-domain accuracy (acc_target_worst, %: the lowest target domain of each job; "
            "'worst task': the lowest task mean)" if worst
            else "Target accuracy (acc_target, %)")
    title = f"{what}: mean ± {_interval_words(a)}; (n) seeds; {_selection_title(a)}"
    data = a.cells.copy()
    data.insert(2, "selection", a.selection)
    if worst:
        data = data[["method", "task", "selection", "worst_mean", "worst_ci", "n", "status",
                     "oracle", "worst_top"]]
    else:
        data = data[["method", "task", "selection", "mean", "std", "n", "ci", "status",
                     "oracle", "top"]]
    notes = [TOP_LEGEND] if rows else []
    if a.power and not worst:
        row = [Cell(f"MDD vs {a.control}", None, frozenset({"power"}))]
        for task in a.tasks:
            mdd = (a.power.get(task) or {}).get("mdd", math.nan)
            row.append(Cell(MISSING if _nan(mdd) else f"{100 * mdd:.1f}",
                            None if _nan(mdd) else mdd, frozenset({"power"})))
        rows.append(row + ([Cell("")] if multi else []))
        notes.append(f"MDD vs {a.control}: the smallest true difference from the control "
                     f"(points) a two-sided paired t-test over the seeds shown would detect "
                     f"with 80% power at alpha = 0.05, from the measured variance of the "
                     f"per-seed differences (pooled over methods). A tie in a column whose MDD "
                     f"is larger than the difference you care about means the table is blind "
                     f"there, not that the methods are equal.")
    if multi:
        notes.append(_average_note(a))
    blind = [t for t in a.tasks if (a.columns.get(t) or {}).get("at_chance")]
    if blind:
        notes.append(f"≤CHANCE: every method is at or below chance on {', '.join(blind)}; "
                     f"that column ranks nothing")
    folded = "n_targets" in a.runs and (a.runs["n_targets"].fillna(1) > 1).any()
    if worst and folded:
        notes.append("a task run with several targets (each domain held out in turn): its "
                     "worst-domain accuracy is each seed's worst target")
    elif worst and all(len(str(t).split("+")) == 1 for t in a.runs["target"]):
        notes.append("every job here has a single target domain, so its worst-domain accuracy "
                     "is its target accuracy; the 'worst task' column is the WILDS-style worst "
                     "group across tasks")
    return Table("worst" if worst else "accuracy", title, headers, rows, data, notes)


def _average_note(a: Analysis) -> str:
    left_out = [t for t in a.tasks if t not in a.common]
    text = (f"average: mean over the {len(a.common)} task(s) every method can run on"
            + (f" (left out for everybody: {', '.join(left_out)})" if left_out else "")
            + "; a method missing one of them has no average")
    return text


def aggregate_table_of(a: Analysis) -> Table:
    """Across the common tasks: mean ± t-interval, average rank, IQM (from 10 tasks), worst."""
    rows = []
    agg = a.aggregate.set_index("method")
    show_iqm = agg["iqm"].notna().any()
    for method in a.methods:
        r = agg.loc[method]
        mean_text = MISSING if _nan(r["mean"]) else (
            f"{100 * r['mean']:.1f}" + ("" if _nan(r["ci"]) else f" ± {100 * r['ci']:.1f}"))
        rank = r["rank"]
        row = [_method_cell(method, bool(r["oracle"])),
               Cell(mean_text, None if _nan(r["mean"]) else r["mean"],
                    frozenset({"top"}) if r["top"] else frozenset()),
               Cell(MISSING if _nan(rank) else f"{rank:.2f}", None if _nan(rank) else rank)]
        if show_iqm:
            row.append(Cell(MISSING if _nan(r["iqm"]) else
                            f"{r['iqm']:.3f} [{r['iqm_lo']:.3f}, {r['iqm_hi']:.3f}]",
                            None if _nan(r["iqm"]) else r["iqm"]))
        row += [Cell(_pct(r["worst"]), None if _nan(r["worst"]) else r["worst"]),
                Cell(f"{int(r['tasks'])}/{len(a.common)}", int(r["tasks"]))]
        rows.append(row)
    notes = [f"mean: over the common tasks of each task's mean over seeds; ± 95% Student-t "
             f"half-width, variance summed over tasks, Welch-Satterthwaite degrees of freedom "
             f"(over one task: that cell's t-interval); marked: the best mean and every mean "
             f"whose interval overlaps it. Rank: average over tasks (1 = best) among complete, "
             f"non-oracle methods.", _average_note(a)]
    if show_iqm:
        notes.append(f"IQM: interquartile mean of chance-normalised scores ((acc - chance) / "
                     f"(1 - chance)) over every (task, seed); CI: stratified bootstrap over "
                     f"seeds within tasks, {stats.BOOTSTRAP_RESAMPLES} resamples, percentile")
    else:
        notes.append(f"IQM not shown: {len(a.common)} task(s), fewer than "
                     f"{stats.IQM_MIN_TASKS} (a 25% trim would drop whole tasks)")
    f = a.friedman
    if f and not _nan(f.get("statistic", math.nan)):
        notes.append(f"Friedman test over {f['k']} methods x {f['n']} tasks: chi2 = "
                     f"{f['statistic']:.2f}, p = {f['pvalue']:.3g}; Iman-Davenport F"
                     f"{f['f_df']} = {f['f']:.2f}, p = {f['f_pvalue']:.3g}; Nemenyi critical "
                     f"difference of average ranks (alpha = {f['alpha']}): {f['cd']:.2f}")
    elif f:
        notes.append(f"Friedman/Nemenyi: needs at least 3 complete methods and 2 tasks "
                     f"(have {f['k']} and {f['n']})")
    title = (f"Across tasks: mean ± 95% CI, average rank, worst task (%); "
             f"{_selection_title(a)}")
    data = a.aggregate.copy()
    data.insert(1, "selection", a.selection)
    headers = ["method", "mean ± CI", "avg rank", *(["IQM [CI]"] if show_iqm else []),
               "worst task", "tasks"]
    return Table("aggregate", title, headers, rows, data, notes)


def pairwise_table_of(a: Analysis) -> Table:
    """Each method against the control: mean difference, P(improvement), signed-rank p."""
    rows = []
    for r in a.pairwise.itertuples():
        def p_text(value: float) -> str:
            return MISSING if _nan(value) else f"{value:.3g}"

        rows.append([Cell(r.method, r.method),
                     Cell(MISSING if _nan(r.diff) else f"{100 * r.diff:+.1f}", r.diff),
                     Cell(_pct(r.p_improvement, 0), r.p_improvement),
                     Cell(f"{r.pairs} ({r.nonzero} non-zero)", r.pairs),
                     Cell(p_text(r.p), r.p), Cell(p_text(r.p_holm), r.p_holm),
                     Cell(p_text(r.min_p), r.min_p), Cell(r.verdict, r.verdict,
                                                          frozenset({"top"}) if r.verdict in
                                                          ("better",) else frozenset())])
    tests = ", ".join(sorted(set(a.pairwise["test"]) - {"none"})) or "none"
    item_pairs = int(a.pairwise["item_pairs"].sum()) if "item_pairs" in a.pairwise else 0
    same_items = ("every pair scored the same test items (item hashes checked), so each "
                  "difference is free of test-sampling noise between the two methods; "
                  "'models differ': pairs whose two trained models differ beyond item noise "
                  "(McNemar mid-p < 0.05 on the discordant items) -- a description, not the "
                  "test: pooling McNemar over seeds would treat trained models as fixed and "
                  "reject on seed noise; "
                  if item_pairs else "")
    title = (f"Pairwise against the control '{a.control}' (fixed in advance, not the "
             f"best-ranked): mean difference method - control (points) over paired (task, "
             f"seed) runs of the common tasks (the unit of replication is the trained model: "
             f"one per seed); {same_items}P(method > control) in % (Mann-Whitney U / nm per "
             f"task, averaged); two-sided Wilcoxon signed-rank p over the pairs ({tests}), "
             f"Holm-adjusted over the {len(a.pairwise)} comparisons of this table; 'min p': "
             f"the smallest p the exact test can reach with that many non-zero pairs; "
             f"{_selection_title(a)}")
    data = a.pairwise.copy()
    data.insert(2, "selection", a.selection)
    headers = ["method", "diff vs control", "P(method > control) %", "pairs", "p", "p (Holm)",
               "min p", "verdict (α = 0.05)"]
    if item_pairs:
        headers.insert(4, "models differ (same items)")
        for row, r in zip(rows, a.pairwise.itertuples()):
            text = f"{r.item_differ}/{r.item_pairs}" if r.item_pairs else MISSING
            row.insert(4, Cell(text, r.item_differ))
    return Table("pairwise", title, headers, rows, data)


def episodes_table_of(a: Analysis) -> Table:
    """Few-shot: accuracy over seeds (the unit), with the within-seed episode spread beside."""
    rows = []
    for r in a.episodes.itertuples():
        rows.append([Cell(r.method, r.method), Cell(r.task, r.task),
                     Cell(_mean_ci_text(r.mean, r.ci, r.seeds), None if _nan(r.mean) else r.mean),
                     Cell(MISSING if _nan(r.episodes) else str(int(r.episodes)), r.episodes),
                     Cell(MISSING if _nan(r.within) else f"± {100 * r.within:.1f}", r.within)])
    title = (f"Few-shot: accuracy (%) mean ± 95% CI over seeds (the trained model is the unit; "
             f"each seed's accuracy is its mean over the fixed test episodes), (n) seeds; "
             f"'within seed': mean 95% half-width over one seed's episodes (test sampling "
             f"alone, for reference: episodes are reused across seeds and never treated as "
             f"independent replicates); {_selection_title(a)}")
    data = a.episodes.copy()
    data.insert(2, "selection", a.selection)
    return Table("episodes", title, ["method", "task", "mean ± CI (seeds)", "episodes per seed",
                                     "within seed"], rows, data)


COST_COLUMNS = {"train_samples_per_s": "train samples/s", "infer_samples_per_s": "infer samples/s",
                "latency_ms": "latency ms", "peak_mem_mb": "peak mem MiB", "params": "params"}


def _cost_frame(df: pd.DataFrame, across_devices: bool) -> pd.DataFrame:
    """Median cost per (method, device) -- or per method when pooled across devices."""
    ok = df[df["status"] == "ok"]
    if "holdout" in ok:
        ok = ok[ok["holdout"].map(len) == 0]
    keys = ["method_label"] if across_devices else ["method_label", "device_name"]
    grouped = ok.groupby(keys, sort=True, dropna=False)
    table = grouped[list(COST_COLUMNS)].median()
    table["jobs"] = grouped.size()
    table = table.reset_index().rename(columns={"method_label": "method",
                                                "device_name": "device"})
    if across_devices:
        table["device"] = ok.groupby("method_label")["device_name"].agg(
            lambda d: ", ".join(sorted(set(map(str, d))))).reindex(table["method"]).to_numpy()
    oracle = ok.groupby("method_label")["oracle"].first() if "oracle" in ok else {}
    table["oracle"] = table["method"].map(lambda m: bool(oracle.get(m, False)))
    table["rank"] = math.nan
    ranked = ~table["oracle"]
    scope = [None] if across_devices else table["device"].unique()
    for device in scope:
        mask = ranked & ((table["device"] == device) if device is not None else True)
        table.loc[mask, "rank"] = table.loc[mask, "train_samples_per_s"].rank(
            ascending=False, method="min")
    return table


def cost_table_of(df: pd.DataFrame, across_devices: bool = False) -> Table:
    table = _cost_frame(df, across_devices)
    devices = df.loc[df["status"] == "ok", "device_name"].dropna().unique()
    rows = []
    for r in table.itertuples():
        values = [getattr(r, c) for c in COST_COLUMNS]
        rows.append([_method_cell(r.method, r.oracle), Cell(str(r.device), str(r.device)),
                     *[Cell(_num(v), None if v is None or _nan(v) else v) for v in values],
                     Cell(MISSING if _nan(r.rank) else f"{int(r.rank)}",
                          None if _nan(r.rank) else r.rank),
                     Cell(str(r.jobs), r.jobs)])
    if across_devices:
        title = (f"Cost: median over each method's jobs, POOLED ACROSS {len(devices)} DEVICES "
                 f"(--cost-across-devices; throughput of different devices is not comparable)")
    else:
        title = ("Cost: median over each method's jobs per device; ranked by train samples/s "
                 "within one device only")
    notes = []
    if len(devices) > 1 and not across_devices:
        notes.append(f"{len(devices)} devices: cost is ranked within each device only; pass "
                     f"--cost-across-devices to pool them")
    headers = ["method", "device", *COST_COLUMNS.values(), "speed rank", "jobs"]
    return Table("cost", title, headers, rows, table, notes)


def pareto_frame(a: Analysis, across_devices: bool = False) -> pd.DataFrame:
    """Per device: each ranked method's mean accuracy and median cost, and the Pareto front."""
    runs = a.runs[~a.runs["oracle"]].copy() if not a.runs.empty else a.runs
    agg = a.aggregate.set_index("method")
    if across_devices and not runs.empty:
        runs["device_name"] = "all devices (pooled)"
    rows = []
    # each (device, method)'s median cost, from one grouping (not a sub-frame per group)
    costs = runs[list(COST_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    medians = costs.groupby([runs["device_name"], runs["method"]], sort=True).median() \
        if not runs.empty else costs
    for (device, method), cost in zip(medians.index, medians.to_dict("records")):
        acc = agg.loc[method, "mean"] if method in agg.index else math.nan
        rows.append({"device": device, "method": method, "accuracy": acc,
                     "accuracy_ci": agg.loc[method, "ci"] if method in agg.index else math.nan,
                     **cost})
    out = pd.DataFrame(rows, columns=["device", "method", "accuracy", "accuracy_ci",
                                      *COST_COLUMNS])
    out["front"] = False
    for device, group in out.groupby("device"):
        out.loc[group.index, "front"] = stats.pareto_front(group["accuracy"],
                                                           group["train_samples_per_s"])
    return out


def pareto_table_of(a: Analysis, across_devices: bool = False) -> Table:
    frame = pareto_frame(a, across_devices)
    frame = frame.sort_values(["device", "accuracy"], ascending=[True, False])
    rows = []
    for r in frame.itertuples():
        rows.append([Cell(r.method, r.method), Cell(str(r.device), str(r.device)),
                     Cell(_pct(r.accuracy), None if _nan(r.accuracy) else r.accuracy),
                     *[Cell(_num(getattr(r, c)), getattr(r, c)) for c in
                       ("train_samples_per_s", "infer_samples_per_s", "params")],
                     Cell("yes" if r.front else "", int(r.front),
                          frozenset({"top", "front"}) if r.front else frozenset())])
    title = (f"Accuracy vs cost: mean target accuracy across tasks (%) and median cost of the "
             f"chosen runs; 'yes' = Pareto-optimal (no method is at least as accurate and as "
             f"fast in training, and better in one), within one device; "
             f"{_selection_title(a)}")
    notes = ["methods without a complete set of tasks have no average and are never on the "
             "front; oracle rows are left out"]
    data = frame.copy()
    data.insert(2, "selection", a.selection)
    return Table("pareto", title, ["method", "device", "accuracy", "train samples/s",
                                   "infer samples/s", "params", "Pareto"], rows, data, notes)


def runs_table_of(a: Analysis) -> Table:
    """Provenance: every chosen run, its trial, step, job id, commit and environment."""
    rows = []
    data = a.runs.drop(columns=["domain_acc", "episodes"], errors="ignore")
    for r in a.runs.sort_values(["method", "task", "seed"]).itertuples():
        sha = (r.git_sha or "")[:10] + ("+dirty" if r.git_dirty else "") if r.git_sha else MISSING
        env = f"xbench {r.xbench}, torch {r.torch}, python {r.python}"
        rows.append([_method_cell(r.method, r.oracle), Cell(r.task, r.task),
                     Cell(str(r.seed), r.seed),
                     Cell(f"{r.trial} of {r.trials}", r.trial), Cell(str(r.step), r.step),
                     Cell(_pct(r.acc_target), r.acc_target), Cell(r.job_id, r.job_id),
                     Cell(sha, sha), Cell(str(r.device_name), str(r.device_name)),
                     Cell(env, env), Cell(r.selection, r.selection)])
    title = f"Chosen runs (provenance); {_selection_title(a)}"
    return Table("runs", title, ["method", "task", "seed", "trial", "step", "acc %", "job id",
                                 "commit", "device", "environment", "selection"], rows, data)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


# --------------------------------------------------------------------------- renderers


def render(table: Table, fmt: str) -> str:
    """``table`` as Markdown, LaTeX, CSV or an HTML fragment."""
    if fmt == "csv":
        return table.data.to_csv(index=False)
    if fmt == "html":
        return render_html(table)
    if fmt == "latex":
        return _render_latex(table)
    def md(text: str) -> str:  # a '|' in a name would end the cell
        return str(text).replace("|", "\\|")

    rows = [[f"**{md(c.text)}**" if "top" in c.marks and c.text else md(c.text) for c in row]
            for row in table.rows]
    body = tabulate(rows, headers=[md(h) for h in table.headers], tablefmt="github",
                    disable_numparse=True)
    notes = "".join(f"\n{n}\n" for n in table.notes)
    return f"{table.title}\n\n{body}\n{notes}"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    text = " ".join(str(text).splitlines())  # a line break in a record string stays a space
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text).replace("±", r"$\pm$")


def latex_comment(text: str) -> str:
    """``text`` as ``%`` comment lines: every line of it commented, special characters escaped."""
    return "\n".join(f"% {latex_escape(line)}".rstrip() for line in
                     (str(text).splitlines() or [""]))


def _render_latex(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = latex_escape(c.text)
        return f"\\textbf{{{text}}}" if "top" in c.marks and c.text else text

    lines = [latex_comment(table.title),
             "\\begin{tabular}{l" + "r" * (len(table.headers) - 1) + "}",
             "\\toprule", " & ".join(latex_escape(h) for h in table.headers) + r" \\",
             "\\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [latex_comment(n) for n in table.notes]
    return "\n".join(lines) + "\n"


def render_html(table: Table, table_id: str | None = None) -> str:
    """An HTML ``<table>`` (sortable by the page's script); every string is escaped."""
    esc = html.escape
    tid = table_id or table.key
    head = "".join(f'<th scope="col" data-col="{i}">{esc(h)}</th>'
                   for i, h in enumerate(table.headers))
    body = []
    for row in table.rows:
        tds = []
        for c in row:
            classes = " ".join(sorted(c.marks))
            value = c.value
            attr = ""
            if isinstance(value, (int, float, np.integer, np.floating)) and not (
                    isinstance(value, (float, np.floating)) and math.isnan(value)):
                attr = f' data-v="{float(value)!r}"'
            cls = f' class="{esc(classes)}"' if classes else ""
            content = c.html if c.html is not None else esc(c.text)
            tds.append(f"<td{cls}{attr}>{content}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in table.notes)
    return (f'<table class="xb" id="{esc(tid)}"><caption>{esc(table.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}")


# --------------------------------------------------------------------------- entry points


def accuracy_table(df: pd.DataFrame, fmt: str = "md", selection: str = sweep.DEFAULT) -> str:
    """Methods x tasks (+ average) of target accuracy, mean ± 95% CI (n), under ``selection``
    (one table per protocol)."""
    pairs, _ = plan(df, selection)
    analyses = [analyse(df, name, protocol) for name, protocol in pairs]
    for note in dict.fromkeys(n for a in analyses for n in a.warnings):
        warnings.warn(note, stacklevel=2)
    if fmt == "csv":
        return pd.concat([accuracy_table_of(a).data for a in analyses]).to_csv(index=False)
    return "\n".join(render(accuracy_table_of(a), fmt) for a in analyses)


def cost_table(df: pd.DataFrame, fmt: str = "md", across_devices: bool = False) -> str:
    """Per method and device: median train/inference samples/s, latency, peak memory, params."""
    return render(cost_table_of(df, across_devices), fmt)


def failures(df: pd.DataFrame) -> list[str]:
    """One line per failed job: method, task, seed and error."""
    failed = df[df["status"] != "ok"]
    return [f"{r.method} on {r.task_label} (seed {r.seed}"
            + (f", trial {r.trial}" if r.trial else "")
            + (f", holdout {'+'.join(r.holdout)}" if r.holdout else "") + f"): {r.error}"
            for r in failed.itertuples()]


@dataclasses.dataclass
class Report:
    """Everything a report shows: one analysis per selection method, the cost table, notes."""

    analyses: list[Analysis]
    cost: Table
    skipped: list[str]        # (selection, protocol) pairs left out, and why
    failures: list[str]
    warnings: list[str]
    across_devices: bool
    invalid: int = 0          # records skipped as invalid on read (each warned about)
    problems: list[str] = dataclasses.field(default_factory=list)  # those warnings
    frame: pd.DataFrame | None = None  # the records read (one row per job)

    def tables(self, a: Analysis) -> list[Table]:
        out = [accuracy_table_of(a), accuracy_table_of(a, worst=True), aggregate_table_of(a),
               pareto_table_of(a, self.across_devices)]
        if not a.pairwise.empty:
            out.insert(3, pairwise_table_of(a))
        if not a.episodes.empty:
            out.insert(2, episodes_table_of(a))
        return out


def build(*paths: str | os.PathLike, selection: str = "all",
          cost_across_devices: bool = False, df: pd.DataFrame | None = None,
          control: str | None = None, per_target: bool = False) -> Report:
    """Load records and analyse them under one selection method or ``all``.

    The notes on broken lines and invalid records are kept in ``Report.problems``
    (and their count in ``Report.invalid``), not warned about: the caller says them."""
    with bulk_analysis():  # many objects and small frames: see its docstring
        problems: list[str] = []
        invalid = 0
        if df is None:
            df, problems, invalid = read_results(*paths)
        if df.empty or not (df["status"] == "ok").any():
            for problem in problems:  # why there is nothing to show
                warnings.warn(problem, stacklevel=2)
            raise RecordsError(f"no successful job records in {', '.join(map(str, paths))}"
                               + (f" ({invalid} record{'s' if invalid != 1 else ''} skipped as "
                                  f"invalid, see the warnings)" if invalid else ""))
        pairs, skipped = plan(df, selection)
        # each protocol's records, only the columns an analysis reads (a copy of every column
        # of 100,000 records per protocol was the largest cost of a report at that scale)
        columns = [*sweep.columns_read(df.columns),
                   *(c for c in _ANALYSIS_COLUMNS if c in df.columns)]
        light = df[list(dict.fromkeys(columns))]
        by_protocol = {p: light[df["protocol"] == p] for p in dict.fromkeys(p for _, p in pairs)}
        prepared = {p: sweep.prepare(frame) for p, frame in by_protocol.items()}
        analyses = [analyse(by_protocol[protocol], name, protocol, control, per_target,
                            prepared[protocol])
                    for name, protocol in pairs]
        seen: dict[str, None] = {}
        for a in analyses:
            for note in a.warnings:
                seen.setdefault(note, None)
        return Report(analyses=analyses, cost=cost_table_of(df, cost_across_devices),
                      skipped=skipped, failures=failures(df), warnings=list(seen),
                      across_devices=cost_across_devices, invalid=invalid, problems=problems,
                      frame=df)


def report(*paths: str | os.PathLike, fmt: str = "md", selection: str = "all",
           cost_across_devices: bool = False, plots: str | os.PathLike | None = None,
           command: str | None = None, control: str | None = None,
           power: float | None = None, per_target: bool = False,
           curves_of: str | None = None, agree_with: list[str] | None = None) -> str:
    """The full report for results folders or record files, under ``selection`` (or all).

    Warnings (broken lines and invalid records, each naming file, line and field;
    missing cells, incomplete sweeps) are issued once each, the notes also listed at
    the end; the header line counts failed jobs and records skipped as invalid; ``plots``
    writes PNGs there (see :mod:`xbench.analysis.plots`); ``curves_of`` (a method) adds its
    learning curves and whether they plateaued (:mod:`xbench.analysis.curves`);
    ``agree_with`` (other results folders) adds Kendall's tau between their control-relative
    scores and these (:mod:`xbench.analysis.agreement`).
    ``command``, when given, heads the Markdown / LaTeX output ("generated by
    ..., do not edit by hand"), so a committed leaderboard says how to rebuild it.
    """
    with bulk_analysis():  # many objects and small frames: see its docstring
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
        rep = build(*paths, selection=selection, cost_across_devices=cost_across_devices,
                    control=control, per_target=per_target)
        for note in [*rep.problems, *rep.warnings]:  # broken lines and invalid records first
            warnings.warn(note, stacklevel=2)
        if plots is not None:
            from xbench.analysis import plots as plotting

            plotting.write(rep, plots)
        if fmt == "html":
            from xbench.analysis import site as publish

            return publish.page(rep, title="xbench report", embed_plots=False, command=command,
                                sources=[display_path(p) for p in paths])
        if fmt == "csv":
            frames = [accuracy_table_of(a).data for a in rep.analyses]
            return pd.concat(frames, ignore_index=True).to_csv(index=False) + "\n" + \
                rep.cost.data.to_csv(index=False)
        parts = []
        rendered: set[int] = set()  # indices of rendered tables (their comments are escaped)
        if command:
            note = f"generated by `{command}`; do not edit by hand, run the command again"
            parts.append(f"<!-- {note} -->\n" if fmt == "md" else f"% {note}\n")
        shown = ", ".join(dict.fromkeys(a.selection for a in rep.analyses))
        protocols = ", ".join(dict.fromkeys(a.protocol for a in rep.analyses))
        parts.append(("" if fmt == "md" else "% ") +
                     f"Records: {', '.join(display_path(p) for p in paths)}; "
                     f"selection methods: {shown}; protocols: {protocols}; "
                     f"{len(rep.failures)} failed jobs{invalid_note(rep.invalid)}\n")
        current = None
        for a in rep.analyses:
            if a.selection != current:
                current = a.selection
                header = (f"## Model selection: {a.selection} — "
                          f"{sweep.DESCRIPTIONS[a.selection]}\n")
                parts.append(header if fmt == "md" else f"% {header[3:]}")
            parts.append(f"### Protocol: {a.protocol}\n" if fmt == "md"
                         else f"% Protocol: {a.protocol}\n")
            for t in rep.tables(a):
                rendered.add(len(parts))
                parts.append(render(t, fmt))
            if power is not None:
                parts.append(power_text(a, power, comment="" if fmt == "md" else "% "))
        parts.append("## Cost" if fmt == "md" else "% Cost")
        rendered.add(len(parts))
        parts.append(render(rep.cost, fmt))
        if curves_of:
            rendered.add(len(parts))
            parts.append(render(curves_table_of(rep.frame, curves_of), fmt))
        if agree_with:
            other = build(*agree_with, selection=sweep.DEFAULT, control=control)
            rendered.add(len(parts))
            parts.append(render(agreement_table_of(rep, other, paths, agree_with), fmt))
        comment = "" if fmt == "md" else "% "
        for note in rep.skipped:
            parts.append(f"{comment}Not shown: selection {note}")
        if rep.warnings:
            parts.append(f"{comment}Notes (missing cells, tasks left out of averages, tests not "
                         f"run):\n"
                         + "\n".join(f"{comment}- {w}" for w in rep.warnings) + "\n")
        if rep.failures:
            parts.append(f"{comment}Failed jobs (not in the tables):\n"
                         + "\n".join(f"{comment}- {f}" for f in rep.failures) + "\n")
        if fmt == "latex":  # a line break inside a record string must not end a comment
            parts = [p if i in rendered else
                     "\n".join(latex_comment(line[2:] if line.startswith("% ") else line)
                               for line in p.splitlines()) + "\n" * p.endswith("\n")
                     for i, p in enumerate(parts)]
        return "\n".join(parts)


def curves_table_of(df: pd.DataFrame, method: str) -> Table:
    """``method``'s source-validation learning curve per task and whether it plateaued."""
    table = curves.plateau(curves.learning_curves(df, method))
    rows = [[Cell(f"{r.task}" + (f" ({r.protocol})" if r.protocol != "dg" else "")),
             Cell(" · ".join(f"{step}: {100 * acc:.1f}" for step, acc in r.curve.items())),
             Cell(curves.verdict(r._asdict()))]
            for r in table.itertuples(index=False)]
    return Table(key="curves", title=f"Learning curves of {method}: source-validation accuracy "
                 f"(%) at each evaluation step, mean over seeds (each seed averaged over its "
                 f"targets); the gain over the last evaluation interval, with a 95% t "
                 f"interval over seeds (the unit is a trained model); 'still rising' when the "
                 f"whole interval is above 0",
                 headers=["task", "step: accuracy", "last interval"], rows=rows,
                 data=table.drop(columns=["curve"]),
                 notes=[] if rows else [f"no evaluation history of {method} in these records"])


def agreement_table_of(rep: Report, other: Report, paths: Any, other_paths: Any) -> Table:
    """Kendall's tau between two reports' control-relative scores, with the scores."""
    mine = agreement.relative_scores(rep.analyses)
    theirs = agreement.relative_scores(other.analyses)
    result = agreement.kendall(theirs, mine)
    here = ", ".join(display_path(p) for p in paths)
    there = ", ".join(display_path(p) for p in other_paths)
    pairs = result["pairs"].sort_values(["protocol", "score_b"], ascending=[True, False])
    rows = [[Cell(r.method), Cell(r.protocol), Cell(f"{100 * r.score_a:+.1f}"),
             Cell(f"{100 * r.score_b:+.1f}")] for r in pairs.itertuples(index=False)]
    if result["n"] >= 2:
        line = (f"Kendall tau-b = {result['tau']:.2f} (two-sided p = {result['p']:.2g}, "
                f"{result['n']} methods); {100 * result['same_sign']:.0f}% are on the same side "
                f"of the control in both. With so few methods only a large tau is evidence.")
    else:
        line = "fewer than 2 methods in both: no rank correlation"
    return Table(key="agreement",
                 title=f"Agreement of {there} with {here}: each method's accuracy minus the "
                       f"control's, in points, averaged over each suite's own tasks of the "
                       f"protocol (training-domain selection)",
                 headers=["method", "protocol", there, here], rows=rows,
                 data=pairs, notes=[line])


def invalid_note(invalid: int) -> str:
    """``"; 2 records skipped as invalid"`` for the header line; empty when none were."""
    if not invalid:
        return ""
    return f"; {invalid} record{'s' if invalid != 1 else ''} skipped as invalid"


def power_text(a: Analysis, points: float, comment: str = "") -> str:
    """How many seeds each task would need to detect a ``points`` difference from the control."""
    if not a.power:
        return f"{comment}Power: no control in these records (pass --control)\n"
    lines = [f"{comment}Seeds needed to detect a {points:g}-point difference from {a.control} "
             f"(two-sided paired t-test over seeds, 80% power, alpha = 0.05; from the measured "
             f"variance of per-seed differences):"]
    for task in a.tasks:
        p = a.power.get(task) or {}
        need = stats.seeds_needed(points / 100, p.get("sd", math.nan))
        line = f"{comment}- {task}: " + (
            "cannot tell (no measured variance of the differences)" if _nan(need)
            else f"{int(need)} seeds (have {p.get('n', 0)}; MDD now "
                 f"{100 * p['mdd']:.1f} points)" if not _nan(p.get("mdd", math.nan))
            else f"{int(need)} seeds (have {p.get('n', 0)})")
        if "var_item" in p and p.get("n", 0) >= 2:
            share = p["var_item"] / p["sd"] ** 2 if p.get("sd", 0) > 0 else math.nan
            items = stats.items_needed(points / 100, p["sd"], p["var_item"], p["n"], p["items"])
            line += (f"; item sampling is {100 * share:.0f}% of that variance, so with "
                     f"{p['n']} seeds " + (
                         "no number of test items suffices" if items == math.inf
                         else "it cannot tell" if _nan(items)
                         else f"{int(items):,} test items per target would do "
                              f"(have {p['items']:,})"))
        lines.append(line)
    return "\n".join(lines) + "\n"


def domain_matrix(a: Analysis) -> pd.DataFrame:
    """Methods x (task / target domain): mean target test accuracy over seeds (complete cells)."""
    rows = []
    bad = {(m, t) for m, t in a.selected.incomplete}
    for r in a.runs.itertuples():
        if (r.method, r.task) in bad:
            continue
        domains = r.domain_acc or {}
        for domain, acc in domains.items():
            column = r.task if len(domains) == 1 else f"{r.task}/{domain}"
            rows.append({"method": r.method, "column": column, "acc": acc})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).pivot_table(index="method", columns="column", values="acc",
                                           aggfunc="mean")
    order = [m for m in a.methods if m in frame.index]
    return frame.reindex(order)
