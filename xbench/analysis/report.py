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

from xbench.analysis import stats, sweep
from xbench.analysis.records import load_results  # noqa: F401  (public: re-exported)
from xbench.analysis.stats import mean_ci  # noqa: F401  (public: re-exported)
from xbench.errors import ConfigError, RecordsError

FORMATS = ("md", "csv", "latex", "html")
MISSING = "—"
NOT_APPLICABLE = "n/a"
ORACLE_MARK = " [ORACLE]"
TOP_LEGEND = ("marked: the best, and every cell whose 95% CI overlaps the best's (tied); "
              "oracle rows and missing cells are never ranked")


def _not_applicable(df: pd.DataFrame, method_label: str, task_label: str) -> str | None:
    """Why a registered method cannot run on a task (too few source domains), if it cannot."""
    from xbench.registry import METHODS

    names = df.loc[df["method_label"] == method_label, "method"].unique()
    sources = df.loc[df["task_label"] == task_label, "n_sources"].dropna() \
        if "n_sources" in df else pd.Series(dtype=float)
    if len(names) != 1 or sources.empty or names[0] not in METHODS:
        return None
    need = METHODS.get(names[0]).min_source_domains
    have = int(sources.max())
    if isinstance(need, int) and have < need:
        return f"not applicable: {names[0]} needs {need} source domains, the task has {have}"
    return None


# --------------------------------------------------------------------------- analysis


@dataclasses.dataclass
class Analysis:
    """One selection method applied to a set of records, with its statistics."""

    selection: str
    protocol: str
    selected: sweep.Selected
    cells: pd.DataFrame          # per (method, task), see stats.cells
    aggregate: pd.DataFrame      # per method, see stats.aggregate
    friedman: dict[str, Any]
    pairwise: pd.DataFrame
    episodes: pd.DataFrame
    tasks: list[str]
    methods: list[str]           # display order: ranked, then unranked, then oracle rows
    warnings: list[str]

    @property
    def runs(self) -> pd.DataFrame:
        return self.selected.runs

    @property
    def oracle(self) -> bool:
        return sweep.is_oracle(self.selection)


def analyse(df: pd.DataFrame, selection: str = sweep.DEFAULT,
            protocol: str | None = None) -> Analysis:
    """Apply ``selection`` to the records of one ``protocol`` in ``df``; every statistic.

    Tasks of different protocols (dg, uda, fewshot, ...) are separate leaderboards: a
    method is averaged and ranked over the tasks of one protocol.
    """
    sweep.check_name(selection)
    if protocol is not None:
        df = df[df["protocol"] == protocol]
    else:
        protocol = "+".join(sorted(map(str, df["protocol"].dropna().unique())))
    selected = sweep.select(df, selection)
    oracle = df.groupby("method_label")["oracle"].any().to_dict() if "oracle" in df else {}
    cells = stats.cells(selected.runs, selected.incomplete, selected.not_applicable, oracle)
    # (method, task) pairs a method never ran on are missing too
    notes = list(selected.warnings)
    tasks = sorted(cells.loc[cells["status"] != "n/a", "task"].unique())
    for method in sorted(cells["method"].unique()):
        have = set(cells.loc[cells["method"] == method, "task"])
        absent = [t for t in tasks if t not in have]
        if absent and len(tasks) > 1:
            why = [f"{t} ({_not_applicable(df, method, t) or 'not run'})" for t in absent]
            notes.append(f"{method}: no result for {', '.join(why)}; its average is left out "
                         f"rather than taken over fewer tasks")
    aggregate = stats.aggregate(cells, selected.runs) if not cells.empty else \
        pd.DataFrame(columns=stats.AGGREGATE_COLUMNS)
    ranked = aggregate[aggregate["complete"] & ~aggregate["oracle"]]
    order_ranked = ranked.sort_values(["mean", "method"], ascending=[False, True])["method"]
    rest = aggregate[~aggregate["method"].isin(order_ranked) & ~aggregate["oracle"]]["method"]
    oracles = aggregate[aggregate["oracle"]]["method"]
    methods = [*order_ranked, *sorted(rest), *sorted(oracles)]
    friedman = stats.friedman_nemenyi(stats.wide(cells).reindex(columns=tasks)
                                      .loc[list(order_ranked)]) if len(order_ranked) else {}
    pairwise = pd.DataFrame(columns=stats.PAIRWISE_COLUMNS)
    if len(order_ranked) > 1:
        leader = ranked.sort_values(["rank", "mean", "method"],
                                    ascending=[True, False, True])["method"].iloc[0]
        pairwise = stats.pairwise_vs(selected.runs, leader, list(order_ranked), tasks)
    return Analysis(selection=selection, protocol=protocol, selected=selected, cells=cells,
                    aggregate=aggregate,
                    friedman=friedman, pairwise=pairwise,
                    episodes=stats.episodes(selected.runs), tasks=tasks, methods=methods,
                    warnings=notes)


def plan(df: pd.DataFrame, selection: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(selection, protocol) pairs to analyse, and a note for each pair left out and why.

    ``selection`` is one selection method or ``all``. Label-free validators
    apply to UDA only; leave-one-domain-out needs holdout runs in the protocol.
    """
    names = list(sweep.SELECTIONS) if selection == "all" else [sweep.check_name(selection)]
    protocols = sorted(map(str, df.loc[df["status"] == "ok", "protocol"].dropna().unique()))
    pairs, skipped = [], []
    for name in names:
        for protocol in protocols:
            sub = df[df["protocol"] == protocol]
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
    return f"{text}; protocol: {a.protocol}"


def accuracy_table_of(a: Analysis, worst: bool = False) -> Table:
    """Methods x tasks (+ average) of target accuracy (or worst-domain accuracy)."""
    mean_col, ci_col, top_col = (("worst_mean", "worst_ci", "worst_top") if worst
                                 else ("mean", "ci", "top"))
    by_key = {(r.method, r.task): r for r in a.cells.itertuples()}
    agg = a.aggregate.set_index("method")
    multi = len(a.tasks) > 1
    headers = ["method", *a.tasks] + (["average" if not worst else "worst task"] if multi else [])
    rows = []
    for method in a.methods:
        oracle = bool(agg.loc[method, "oracle"])
        row = [_method_cell(method, oracle)]
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
    title = (f"{what}: mean ± 95% CI half-width (Student t, ddof=1) over seeds, (n) seeds; "
             f"{_selection_title(a)}")
    data = a.cells.copy()
    data.insert(2, "selection", a.selection)
    if worst:
        data = data[["method", "task", "selection", "worst_mean", "worst_ci", "n", "status",
                     "oracle", "worst_top"]]
    else:
        data = data[["method", "task", "selection", "mean", "std", "n", "ci", "status",
                     "oracle", "top"]]
    notes = [TOP_LEGEND] if rows else []
    if worst and all(len(str(t).split("+")) == 1 for t in a.runs["target"]):
        notes.append("every job here has a single target domain, so its worst-domain accuracy "
                     "is its target accuracy; the 'worst task' column is the WILDS-style worst "
                     "group across tasks")
    return Table("worst" if worst else "accuracy", title, headers, rows, data, notes)


def aggregate_table_of(a: Analysis) -> Table:
    """Across tasks: mean, average rank, IQM [95% stratified bootstrap CI], worst task."""
    rows = []
    agg = a.aggregate.set_index("method")
    for method in a.methods:
        r = agg.loc[method]
        iqm_text = MISSING if _nan(r["iqm"]) else (
            f"{100 * r['iqm']:.1f} [{_pct(r['iqm_lo'])}, {_pct(r['iqm_hi'])}]")
        mean_text = MISSING if _nan(r["mean"]) else (
            f"{100 * r['mean']:.1f} [{_pct(r['mean_lo'])}, {_pct(r['mean_hi'])}]")
        rank = r["rank"]
        rows.append([_method_cell(method, bool(r["oracle"])),
                     Cell(mean_text, None if _nan(r["mean"]) else r["mean"]),
                     Cell(MISSING if _nan(rank) else f"{rank:.2f}", None if _nan(rank) else rank),
                     Cell(iqm_text, None if _nan(r["iqm"]) else r["iqm"],
                          frozenset({"top"}) if r["top"] else frozenset()),
                     Cell(_pct(r["worst"]), None if _nan(r["worst"]) else r["worst"]),
                     Cell(f"{int(r['tasks'])}/{len(a.tasks)}", int(r["tasks"]))])
    notes = [f"IQM: interquartile mean over every (task, seed) score; CI: stratified bootstrap "
             f"(seeds resampled within each task), {stats.BOOTSTRAP_RESAMPLES} resamples, "
             f"percentile, RNG seed {stats.BOOTSTRAP_SEED}; marked: best IQM and every IQM whose "
             f"CI overlaps it. Rank: average over tasks (1 = best) among complete, non-oracle "
             f"methods."]
    f = a.friedman
    if f and not _nan(f.get("statistic", math.nan)):
        notes.append(f"Friedman test over {f['k']} methods x {f['n']} tasks: chi2 = "
                     f"{f['statistic']:.2f}, p = {f['pvalue']:.3g}; Nemenyi critical difference "
                     f"of average ranks (alpha = {f['alpha']}): {f['cd']:.2f}")
    elif f:
        notes.append(f"Friedman/Nemenyi: needs at least 3 complete methods and 2 tasks "
                     f"(have {f['k']} and {f['n']})")
    title = f"Across tasks: mean [95% CI], average rank, IQM [95% CI], worst task (%); " \
            f"{_selection_title(a)}"
    data = a.aggregate.copy()
    data.insert(1, "selection", a.selection)
    return Table("aggregate", title, ["method", "mean [CI]", "avg rank", "IQM [CI]",
                                      "worst task", "tasks"], rows, data, notes)


def pairwise_table_of(a: Analysis) -> Table:
    rows = []
    for r in a.pairwise.itertuples():
        rows.append([Cell(r.versus, r.versus), Cell(r.method, r.method),
                     Cell(_pct(r.p_improvement, 0) if not _nan(r.p_improvement) else MISSING,
                          r.p_improvement),
                     Cell(str(r.pairs), r.pairs),
                     Cell(MISSING if _nan(r.wilcoxon_p) else f"{r.wilcoxon_p:.3g}", r.wilcoxon_p),
                     Cell(str(r.episodes), r.episodes),
                     Cell(MISSING if _nan(r.episodes_p) else f"{r.episodes_p:.3g}",
                          r.episodes_p)])
    title = (f"Pairwise, best-ranked method against each other: P(improvement) in % (Mann-Whitney "
             f"U / nm per task, averaged over tasks), paired Wilcoxon signed-rank p over shared "
             f"(task, seed) pairs, paired t-test p over shared few-shot episodes; "
             f"{_selection_title(a)}")
    data = a.pairwise.copy()
    data.insert(2, "selection", a.selection)
    return Table("pairwise", title, ["best", "method", "P(best > method) %", "seed pairs",
                                     "Wilcoxon p", "episodes", "episodes t-test p"], rows, data)


def episodes_table_of(a: Analysis) -> Table:
    rows = []
    for r in a.episodes.itertuples():
        text = MISSING if r.episodes == 0 else f"{100 * r.mean:.1f} ± {_pct(r.ci)}"
        rows.append([Cell(r.method, r.method), Cell(r.task, r.task),
                     Cell(text, None if _nan(r.mean) else r.mean),
                     Cell(str(r.episodes), r.episodes), Cell(str(r.seeds), r.seeds),
                     Cell(r.problem, r.problem)])
    title = (f"Few-shot: accuracy (%) mean ± 95% CI over the fixed evaluation episodes (each "
             f"episode averaged over seeds); {_selection_title(a)}")
    data = a.episodes.copy()
    data.insert(2, "selection", a.selection)
    return Table("episodes", title, ["method", "task", "mean ± CI", "episodes", "seeds", "note"],
                 rows, data)


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
    for (device, method), group in runs.groupby(["device_name", "method"], sort=True):
        acc = agg.loc[method, "mean"] if method in agg.index else math.nan
        rows.append({"device": device, "method": method, "accuracy": acc,
                     "accuracy_lo": agg.loc[method, "mean_lo"] if method in agg.index else
                     math.nan,
                     "accuracy_hi": agg.loc[method, "mean_hi"] if method in agg.index else
                     math.nan,
                     **{c: group[c].median() for c in COST_COLUMNS}})
    out = pd.DataFrame(rows, columns=["device", "method", "accuracy", "accuracy_lo",
                                      "accuracy_hi", *COST_COLUMNS])
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

    def tables(self, a: Analysis) -> list[Table]:
        out = [accuracy_table_of(a), accuracy_table_of(a, worst=True), aggregate_table_of(a),
               pareto_table_of(a, self.across_devices)]
        if not a.pairwise.empty:
            out.insert(3, pairwise_table_of(a))
        if not a.episodes.empty:
            out.insert(2, episodes_table_of(a))
        return out


def build(*paths: str | os.PathLike, selection: str = "all",
          cost_across_devices: bool = False, df: pd.DataFrame | None = None) -> Report:
    """Load records and analyse them under one selection method or ``all``."""
    if df is None:
        df = load_results(*paths)
    if df.empty or not (df["status"] == "ok").any():
        raise RecordsError(f"no successful job records in {', '.join(map(str, paths))}")
    pairs, skipped = plan(df, selection)
    analyses = [analyse(df, name, protocol) for name, protocol in pairs]
    seen: dict[str, None] = {}
    for a in analyses:
        for note in a.warnings:
            seen.setdefault(note, None)
    return Report(analyses=analyses, cost=cost_table_of(df, cost_across_devices),
                  skipped=skipped, failures=failures(df), warnings=list(seen),
                  across_devices=cost_across_devices)


def report(*paths: str | os.PathLike, fmt: str = "md", selection: str = "all",
           cost_across_devices: bool = False, plots: str | os.PathLike | None = None,
           command: str | None = None) -> str:
    """The full report for results folders or record files, under ``selection`` (or all).

    Warnings (missing cells, incomplete sweeps) are issued once each and
    listed at the end; ``plots`` writes PNGs there (see :mod:`xbench.analysis.plots`).
    ``command``, when given, heads the Markdown / LaTeX output ("generated by
    ..., do not edit by hand"), so a committed leaderboard says how to rebuild it.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    rep = build(*paths, selection=selection, cost_across_devices=cost_across_devices)
    for note in rep.warnings:
        warnings.warn(note, stacklevel=2)
    if plots is not None:
        from xbench.analysis import plots as plotting

        plotting.write(rep, plots)
    if fmt == "html":
        from xbench.analysis import site as publish

        return publish.page(rep, title="xbench report", embed_plots=False, command=command,
                            sources=[str(p) for p in paths])
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
    parts.append(("" if fmt == "md" else "% ") + f"Records: {', '.join(map(str, paths))}; "
                 f"selection methods: {shown}; protocols: {protocols}; "
                 f"{len(rep.failures)} failed jobs\n")
    current = None
    for a in rep.analyses:
        if a.selection != current:
            current = a.selection
            header = f"## Model selection: {a.selection} — {sweep.DESCRIPTIONS[a.selection]}\n"
            parts.append(header if fmt == "md" else f"% {header[3:]}")
        parts.append(f"### Protocol: {a.protocol}\n" if fmt == "md"
                     else f"% Protocol: {a.protocol}\n")
        for t in rep.tables(a):
            rendered.add(len(parts))
            parts.append(render(t, fmt))
    parts.append("## Cost" if fmt == "md" else "% Cost")
    rendered.add(len(parts))
    parts.append(render(rep.cost, fmt))
    comment = "" if fmt == "md" else "% "
    for note in rep.skipped:
        parts.append(f"{comment}Not shown: selection {note}")
    if rep.warnings:
        parts.append(f"{comment}Missing cells (left out of averages and ranks):\n"
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
