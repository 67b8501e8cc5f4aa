"""Model selection across a sweep: one chosen run per (task, target, protocol, method, seed).

A *sweep* is every trial (``trial`` 0 = default hyper-parameters, 1..N =
random-search samples) of one (task, target, protocol, method, seed). Each
trial's main run (``holdout == []``) already chose a checkpoint of its own
(``metrics.by_selection``, see :mod:`xbench.harness.checkpoints`); this module
chooses the trial, in two strictly separated steps:

1. :func:`decide` sees a *view* of each record from which every target test
   accuracy has been removed (:func:`visible`), and returns which run and
   which evaluation step were chosen;
2. :func:`score` -- the final scorer, the only reader of target test labels --
   reads the chosen run's target test accuracy at that step.

Selection methods (a table always names the one it shows):

* ``training_domain``: the trial with the best source validation accuracy at
  its own ``training_domain`` checkpoint;
* ``leave_one_domain_out``: the trial whose auxiliary runs (each trained
  without one source domain, ``holdout``) have the best mean held-out
  validation accuracy at one evaluation step; that trial's main run is
  reported at that step. A trial without holdout runs makes the cell missing
  (with a warning); there is no fall-back to another method;
* ``last``: the last step of each trial; the trial with the best source
  validation accuracy there;
* ``oracle``: target *validation* accuracy (checkpoint and trial). Labelled
  ORACLE wherever it appears and never mixed with the others;
* ``target_entropy`` / ``target_im``: label-free validators for UDA (lowest
  mean target prediction entropy / highest information maximisation on the
  unlabeled target validation inputs); other protocols show them as n/a.

With a single trial every method reduces to the run's own checkpoint choice.
Ties between trials go to the lowest trial number.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from xbench.errors import ConfigError

SELECTIONS = ("training_domain", "leave_one_domain_out", "last", "oracle", "target_entropy",
              "target_im")
DEFAULT = "training_domain"
#: the selections each run already applied to its own checkpoints (``metrics.by_selection``)
CHECKPOINT_SELECTIONS = tuple(s for s in SELECTIONS if s != "leave_one_domain_out")
ORACLES = frozenset({"oracle"})
LABEL_FREE = frozenset({"target_entropy", "target_im"})
#: protocols whose training may read unlabeled target inputs (label-free validators apply)
UNLABELED_TARGET_PROTOCOLS = frozenset({"uda"})
DESCRIPTIONS = {
    "training_domain": "source-domain validation accuracy (checkpoint and trial)",
    "leave_one_domain_out": "mean held-out-source-domain validation accuracy of runs trained "
                            "without that domain (trial and step)",
    "last": "last step; trial by source validation accuracy at the last step",
    "oracle": "ORACLE: target-domain validation accuracy (reads target labels; not comparable "
              "with the other selections)",
    "target_entropy": "label-free: lowest mean prediction entropy on unlabeled target "
                      "validation inputs (UDA only)",
    "target_im": "label-free: highest information maximisation on unlabeled target validation "
                 "inputs (UDA only)",
}


def check_name(selection: str) -> str:
    """``selection`` if it is a selection method, else a one-line ConfigError."""
    if selection not in SELECTIONS:
        raise ConfigError(f"--selection {selection}: unknown; choose one of "
                          f"{', '.join(SELECTIONS)} or all")
    return selection


def is_oracle(selection: str) -> bool:
    return selection in ORACLES


@dataclasses.dataclass
class Decision:
    """What :func:`decide` chose for one sweep: a main run and one of its evaluation steps."""

    job_id: str
    trial: int
    step: int
    criterion: float  # the selection score of the chosen trial (nan with one trial)
    trials: int


@dataclasses.dataclass
class Selected:
    """The outcome of one selection method over a set of records."""

    selection: str
    runs: pd.DataFrame                    # one row per chosen sweep, with target test scores
    incomplete: dict[tuple[str, str], str]  # (method, task) -> why the cell is missing
    not_applicable: set[tuple[str, str]]  # (method, task) pairs this selection does not apply to

    @property
    def warnings(self) -> list[str]:
        return [f"{m} on {t}: {why}; cell shown as missing and left out of averages and ranks"
                for (m, t), why in sorted(self.incomplete.items())]


# --------------------------------------------------------------------------- the view


def visible(row: dict[str, Any]) -> dict[str, Any]:
    """What a selection decision may read of a run: everything but target test accuracies.

    Kept: job id, trial, holdout, target names, protocol, the step and source
    validation accuracy of each in-run choice, and the evaluation history with
    every (target domain, test) entry removed.
    """
    target = set(_targets(row))
    history = row.get("history")  # may be lazy (analysis.index): read only if a decision needs it
    return {
        "job_id": row["job_id"], "trial": _trial(row), "holdout": tuple(row.get("holdout") or ()),
        "target": tuple(_targets(row)), "protocol": row.get("protocol"),
        "by_selection": {name: {k: v for k, v in (choice or {}).items()
                                if k in ("step", "acc_source_val")}
                         for name, choice in (row.get("by_selection") or {}).items()},
        "history": _Deferred(lambda: [
            {"step": p.get("step"), "label_free": p.get("label_free") or {},
             "acc": {d: {s: v for s, v in splits.items() if not (d in target and s == "test")}
                     for d, splits in (p.get("acc") or {}).items()}}
            for p in (history or [])]),
    }


class _Deferred(collections.abc.Sequence):
    """A list computed on first use (a view's history is built only when a decision reads it)."""

    def __init__(self, make: Callable[[], list]):
        self._make, self._value = make, None

    def _get(self) -> list:
        if self._value is None:
            self._value = self._make()
        return self._value

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, item: Any) -> Any:
        return self._get()[item]

    def __eq__(self, other: object) -> bool:
        return self._get() == (list(other) if isinstance(other, collections.abc.Sequence)
                               else other)


def _targets(row: dict[str, Any]) -> list[str]:
    target = row.get("target")
    if isinstance(target, str):
        return [t for t in target.split("+") if t]
    return list(target or [])


def _trial(row: dict[str, Any]) -> int:
    trial = row.get("trial")
    if type(trial) is int:
        return trial
    return 0 if trial is None or (isinstance(trial, float) and math.isnan(trial)) else int(trial)


# --------------------------------------------------------------------------- decisions


class _Missing(Exception):
    """A sweep cannot be decided (missing information); the message says why."""


def _point(view: dict[str, Any], step: int) -> dict[str, Any]:
    for p in view["history"]:
        if p["step"] == step:
            return p
    raise _Missing(f"run {view['job_id']} has no evaluation history at step {step}")


def _in_run(view: dict[str, Any], name: str) -> dict[str, Any]:
    choice = view["by_selection"].get(name)
    if not choice or choice.get("step") is None:
        raise _Missing(f"run {view['job_id']} recorded no '{name}' checkpoint choice")
    return choice


def _source_val(view: dict[str, Any], name: str) -> float:
    value = _in_run(view, name).get("acc_source_val")
    if value is None:
        raise _Missing(f"run {view['job_id']} recorded no source validation accuracy")
    return float(value)


def _target_mean(view: dict[str, Any], step: int, read: Callable[[dict, str], float]) -> float:
    point = _point(view, step)
    try:
        return float(np.mean([read(point, d) for d in view["target"]]))
    except (KeyError, TypeError):
        raise _Missing(f"run {view['job_id']} lacks target validation scores at step "
                       f"{step}") from None


def _criterion(view: dict[str, Any], name: str, step: int) -> float:
    """Higher is better: the number trials of one sweep are compared on."""
    if name in ("training_domain", "last"):
        return _source_val(view, name)
    if name == "oracle":
        return _target_mean(view, step, lambda p, d: p["acc"][d]["val"])
    if name == "target_entropy":
        return -_target_mean(view, step, lambda p, d: p["label_free"][d]["entropy"])
    if name == "target_im":
        return _target_mean(view, step, lambda p, d: p["label_free"][d]["im"])
    raise AssertionError(name)


def _lodo_trial(main: dict[str, Any], holdouts: list[dict[str, Any]]) -> tuple[int, float]:
    """(step, mean held-out validation accuracy) of the best step common to the holdout runs."""
    per_step: dict[int, list[float]] = {}
    for view in holdouts:
        for p in view["history"]:
            try:
                value = float(np.mean([p["acc"][d]["val"] for d in view["holdout"]]))
            except (KeyError, TypeError):
                raise _Missing(f"holdout run {view['job_id']} lacks validation accuracy of "
                               f"held-out domain(s) {', '.join(view['holdout'])}") from None
            per_step.setdefault(p["step"], []).append(value)
    main_steps = {p["step"] for p in main["history"]}
    common = sorted(s for s, values in per_step.items()
                    if len(values) == len(holdouts) and s in main_steps)
    if not common:
        raise _Missing(f"trial {main['trial']}: its holdout runs and main run share no "
                       f"evaluation step")
    scores = [float(np.mean(per_step[s])) for s in common]
    best = int(np.argmax(scores))
    return common[best], scores[best]


def decide(selection: str, mains: list[dict[str, Any]],
           holdouts: dict[int, list[dict[str, Any]]] | None = None) -> Decision:
    """Choose a main run and a step among the trials of one sweep.

    ``mains`` and ``holdouts`` (trial -> holdout runs) must be :func:`visible`
    views: this function never sees a target test accuracy.
    """
    if not mains:
        raise _Missing("no successful run")
    candidates = []
    for view in sorted(mains, key=lambda v: v["trial"]):
        if selection == "leave_one_domain_out":
            runs = (holdouts or {}).get(view["trial"], [])
            step, crit = _lodo_trial(view, runs)
        else:
            step = int(_in_run(view, selection)["step"])
            crit = _criterion(view, selection, step) if len(mains) > 1 else math.nan
        candidates.append((view, step, crit))
    if len(candidates) == 1:
        view, step, crit = candidates[0]
    else:
        # max over trials; on ties the first (lowest trial number) wins
        view, step, crit = max(candidates, key=lambda c: (c[2], -c[0]["trial"]))
    return Decision(job_id=view["job_id"], trial=view["trial"], step=int(step),
                    criterion=float(crit), trials=len(mains))


def checkpoint_criteria(row: dict[str, Any]) -> dict[str, tuple[int | None, float | None]]:
    """``{selection: (step, criterion)}`` of every checkpoint selection, computed from the
    run's :func:`visible` view exactly as :func:`decide` computes them (the step of the
    run's own choice, and :func:`_criterion` at that step); ``None`` where :func:`decide`
    would stop on it (then :func:`select` decides that sweep through :func:`decide`, which
    says why).

    ``xbench.analysis.records._flatten`` stores them as light columns (``step@NAME``,
    ``criterion@NAME``), so choosing among trials by the oracle or a label-free validator
    does not read every run's evaluation history again.
    """
    view = visible(row)
    out: dict[str, tuple[int | None, float | None]] = {}
    for name in CHECKPOINT_SELECTIONS:
        try:
            step = int(_in_run(view, name)["step"])
        except Exception:  # noqa: BLE001 - decide() meets the same problem and reports it
            out[name] = (None, None)
            continue
        try:
            criterion = _criterion(view, name, step)
        except Exception:  # noqa: BLE001 - as above
            criterion = None
        out[name] = (step, criterion)
    return out


# --------------------------------------------------------------------------- the scorer


def score(row: dict[str, Any], selection: str, decision: Decision,
          choice: dict[str, Any] | None = None) -> dict[str, Any]:
    """The final scorer: target test accuracy of the chosen run at the chosen step.

    ``choice``: the run's own ``selection`` checkpoint (step, target accuracies) when the
    caller has it (:func:`select` reads the ``step@`` / ``acc_target@`` columns), else it
    is read from the record's ``by_selection``."""
    target = _targets(row)
    step = decision.step
    if choice is None:
        choice = (row.get("by_selection") or {}).get(selection) or {}
    from_choice = choice.get("step") == step and choice.get("acc_target") is not None
    domains: dict[str, float] = {}
    point = None
    # one target: its accuracy is acc_target (the history is read only when needed: for
    # several targets, or a few-shot run's episodes at the chosen step)
    if not (from_choice and len(target) == 1) or row.get("episodes"):
        point = next((p for p in (row.get("history") or []) if p.get("step") == step), None)
        if point is not None:
            domains = {d: float(point["acc"][d]["test"]) for d in target
                       if d in point.get("acc", {}) and point["acc"][d].get("test") is not None}
    if from_choice:
        acc, worst = float(choice["acc_target"]), choice.get("acc_target_worst")
        worst = float(worst) if worst is not None else acc
    elif len(domains) == len(target) and domains:
        acc, worst = float(np.mean(list(domains.values()))), float(min(domains.values()))
    else:
        raise _Missing(f"run {row['job_id']} has no target test accuracy at step {step}")
    if not domains and len(target) == 1:
        domains = {target[0]: acc}
    metrics_episodes = row.get("episodes") or None
    episodes = None
    if point is not None and point.get("episode_accs"):
        episodes = {"acc": list(point["episode_accs"]),
                    "hash": (metrics_episodes or {}).get("hash")}
    elif metrics_episodes and row.get("selected_step") == step and metrics_episodes.get("acc"):
        episodes = {"acc": list(metrics_episodes["acc"]), "hash": metrics_episodes.get("hash")}
    return {"acc_target": acc, "acc_target_worst": worst, "domain_acc": domains,
            "episodes": episodes}


# --------------------------------------------------------------------------- over records


def applies(selection: str, protocol: str) -> bool:
    """Label-free validators apply only where training may read unlabeled target inputs."""
    return selection not in LABEL_FREE or protocol in UNLABELED_TARGET_PROTOCOLS


def supported(df: pd.DataFrame, selection: str) -> bool:
    """True when at least one record could be scored under ``selection``."""
    if df.empty:
        return False
    if selection == "leave_one_domain_out":
        return bool((df["holdout"].map(len) > 0).any())
    if selection in LABEL_FREE:
        return bool(df["protocol"].isin(UNLABELED_TARGET_PROTOCOLS).any())
    return True


@dataclasses.dataclass
class Sweep:
    """The trials of one (cell, seed): its successful main runs by trial (``ok``), its
    holdout runs, and ``problem``: why it cannot be decided whatever the selection (a
    failed or missing trial, several runs of one trial), else ``None``."""

    cell: tuple[str, str]
    seed: Any
    ok: dict[int, dict[str, Any]]
    aux: list[dict[str, Any]]
    problem: str | None


@dataclasses.dataclass
class Prepared:
    """What every selection method reads of one frame, converted and grouped once (a report
    applies up to six selections to the same records): the sweeps of each (method, task)
    cell in seed order, their runs as dicts of the sweep-grouping columns (:func:`select`
    adds the other columns it reads to the rows it reads, in place), and the flat arrays
    :func:`select` decides the checkpoint selections from (``sweep_of``: which sweep of
    ``sweeps`` each successful main run belongs to, by its ``positions`` row and ``trials``).
    """

    sweeps: list[Sweep]
    cells: dict[tuple[str, str], list[Sweep]]
    protocols: dict[tuple[str, str], Any]
    holdouts: dict[tuple[str, str], set[tuple[str, ...]]]
    sweep_of: np.ndarray
    positions: np.ndarray
    trials: np.ndarray


def prepare(df: pd.DataFrame) -> Prepared:
    """:class:`Prepared` for ``df`` (pass it to every :func:`select` over the same frame)."""
    # the columns that group runs into sweeps, as plain Python values (one vectorised
    # conversion per column; pandas' to_dict boxes every value of every column); the other
    # columns of _SELECT_COLUMNS are read only for the runs a decision or the scorer reads
    # (:func:`_complete`)
    records = _dicts(df, [c for c in df.columns if c in _GROUP_COLUMNS])
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    aux_by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for position, r in enumerate(records):
        r["_position"] = position
        r["trial"] = _trial(r)
        into = aux_by_cell if r["holdout"] else by_cell
        into.setdefault((r["method_label"], r["task_label"]), []).append(r)
    sweeps: list[Sweep] = []
    cells: dict[tuple[str, str], list[Sweep]] = {}
    for cell, cell_rows in by_cell.items():
        expected = {r["trial"] for r in cell_rows}
        by_seed: dict[Any, list[dict[str, Any]]] = {}
        for r in cell_rows:
            by_seed.setdefault(r["seed"], []).append(r)
        aux_by_seed: dict[Any, list[dict[str, Any]]] = {}
        for r in aux_by_cell.get(cell, []):
            aux_by_seed.setdefault(r["seed"], []).append(r)
        for seed in sorted(by_seed):
            ok = {r["trial"]: r for r in by_seed[seed] if r["status"] == "ok"}
            sweep = Sweep(cell, seed, ok, aux_by_seed.get(seed, []),
                          _problem(by_seed[seed], ok, expected))
            sweeps.append(sweep)
            cells.setdefault(cell, []).append(sweep)
    decidable = [(i, r) for i, s in enumerate(sweeps) if s.problem is None
                 for _, r in sorted(s.ok.items())]
    return Prepared(sweeps=sweeps, cells=cells,
                    protocols={c: rows[0]["protocol"] for c, rows in by_cell.items()},
                    holdouts={c: {tuple(r["holdout"]) for r in rows}
                              for c, rows in aux_by_cell.items()},
                    sweep_of=np.array([i for i, _ in decidable], dtype=np.int64),
                    positions=np.array([r["_position"] for _, r in decidable], dtype=np.int64),
                    trials=np.array([r["trial"] for _, r in decidable], dtype=np.int64))


def _problem(sweep: list[dict[str, Any]], ok: dict[int, dict[str, Any]],
             expected: set[int]) -> str | None:
    """Why a sweep cannot be decided by any selection (``None`` when it can)."""
    dupes = sorted({r["trial"] for r in sweep if r["status"] == "ok"
                    and ok[r["trial"]]["job_id"] != r["job_id"]})
    if dupes:
        return f"several different runs of trial(s) {_join(dupes)}; cannot tell which to report"
    missing = sorted(expected - set(ok))
    if missing and len(expected) == 1:
        return "no successful run (the job failed)"
    if missing:
        return (f"trial(s) {_join(missing)} of {len(expected)} failed or not run "
                f"(incomplete sweep)")
    return None


def select(df: pd.DataFrame, selection: str, prepared: Prepared | None = None) -> Selected:
    """Apply ``selection`` to every sweep of ``df`` (the frame of :func:`xbench.load_results`);
    ``prepared``: :func:`prepare` of the same ``df``, shared between selections."""
    check_name(selection)
    prepared = prepared or prepare(df)
    rows: list[tuple[dict[str, Any], Decision, dict[str, Any]]] = []
    incomplete: dict[tuple[str, str], list[str]] = {}
    not_applicable: set[tuple[str, str]] = set()
    quick = _decide_from_columns(df, selection, prepared)
    choice_of = _choices(df, selection)
    columns = [c for c in df.columns if c in _SELECT_COLUMNS and c not in _GROUP_COLUMNS
               and "@" not in c]
    decided: list[tuple[int, tuple[str, str], Sweep, Decision]] = []
    problems: list[tuple[int, tuple[str, str], str]] = []  # (order, cell, why)
    order = 0
    for cell, sweeps in prepared.cells.items():
        if not applies(selection, prepared.protocols[cell]):
            not_applicable.add(cell)
            continue
        incomplete[cell] = []
        for sweep in sweeps:
            order += 1
            if sweep.problem is not None:
                problems.append((order, cell, f"seed {sweep.seed}: {sweep.problem}"))
                continue
            decision = quick.get(id(sweep))
            if decision is None:  # from the runs' views (reads what the columns lacked)
                _complete(df, [*sweep.ok.values(), *sweep.aux], columns)
                try:
                    decision = _decide_sweep(sweep, selection, prepared)
                except _Missing as exc:
                    problems.append((order, cell, f"seed {sweep.seed}: {exc}"))
                    continue
            decided.append((order, cell, sweep, decision))
    _complete(df, [sweep.ok[d.trial] for _, _, sweep, d in decided], columns)
    for order, cell, sweep, decision in decided:
        chosen = sweep.ok[decision.trial]
        try:
            scored = score(chosen, selection, decision, choice_of(chosen["_position"]))
        except _Missing as exc:
            problems.append((order, cell, f"seed {sweep.seed}: {exc}"))
            continue
        rows.append((chosen, decision, scored))
    for _, cell, why in sorted(problems, key=lambda p: p[0]):  # in seed order, per cell
        incomplete[cell].append(why)
    runs = _runs_frame(rows, selection)
    return Selected(selection=selection, runs=runs,
                    incomplete={c: _by_reason(p) for c, p in incomplete.items() if p},
                    not_applicable=not_applicable)


def _complete(df: pd.DataFrame, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Add ``columns`` of ``df`` to the :func:`prepare` rows that lack them (in place: a
    run chosen under one selection is often chosen under the next)."""
    lacking = [r for r in rows if "_complete" not in r]
    for r, more in zip(lacking, _dicts(df, columns, [r["_position"] for r in lacking])):
        r.update(more, _complete=True)


def _choices(df: pd.DataFrame, selection: str) -> Callable[[int], dict[str, Any] | None]:
    """Row position -> the run's own ``selection`` checkpoint from the light columns
    (``step@``, ``acc_target@``, ``acc_target_worst@``; what ``by_selection`` holds, without
    reading it), or ``None`` where the frame lacks them."""
    names = [f"{k}@{selection}" for k in ("step", "acc_target", "acc_target_worst")]
    if not all(n in df.columns for n in names):
        return lambda position: None
    step, acc, worst = (df[n].to_numpy(dtype=float) for n in names)

    def choice(position: int) -> dict[str, Any]:
        return {"step": None if math.isnan(step[position]) else int(step[position]),
                "acc_target": None if math.isnan(acc[position]) else float(acc[position]),
                "acc_target_worst": None if math.isnan(worst[position])
                else float(worst[position])}
    return choice


def _decide_sweep(sweep: Sweep, selection: str, prepared: Prepared) -> Decision:
    """:func:`decide` over the views of one sweep (and its holdout runs for
    leave-one-domain-out); raises :class:`_Missing` with the reason it cannot."""
    views = [visible(r) for r in sweep.ok.values()]
    holdout_views: dict[int, list[dict[str, Any]]] = {}
    if selection == "leave_one_domain_out":
        expected = prepared.holdouts.get(sweep.cell, set())
        lacking = []
        for trial in sorted(sweep.ok):
            runs = [r for r in sweep.aux if r["trial"] == trial and r["status"] == "ok"]
            if not expected or {tuple(r["holdout"]) for r in runs} != expected:
                lacking.append(trial)
            holdout_views[trial] = [visible(r) for r in runs]
        if lacking:
            what = ("no leave-one-domain-out (holdout) runs" if not expected
                    else "missing or failed holdout runs")
            raise _Missing(f"{what} for trial(s) {_join(lacking)}")
    return decide(selection, views, holdout_views)


def _decide_from_columns(df: pd.DataFrame, selection: str,
                         prepared: Prepared) -> dict[int, Decision]:
    """:func:`decide` for every decidable sweep at once, from the precomputed ``step@`` /
    ``criterion@`` columns of its main runs (:func:`checkpoint_criteria`), by ``id`` of the
    :class:`Sweep`: the same choice (the best criterion, ties to the lowest trial; with one
    trial its own checkpoint), without building views. A sweep with a missing value is left
    out: :func:`decide` must say why. Leave-one-domain-out reads histories: never here."""
    names = (f"step@{selection}", f"criterion@{selection}")
    if selection == "leave_one_domain_out" or not all(n in df.columns for n in names) \
            or not len(prepared.positions):
        return {}
    step = df[names[0]].to_numpy(dtype=float)[prepared.positions]
    criterion = df[names[1]].to_numpy(dtype=float)[prepared.positions]
    sweep_of, n = prepared.sweep_of, len(prepared.sweeps)
    trials = np.bincount(sweep_of, minlength=n)
    several = trials[sweep_of] > 1
    missing = np.isnan(step) | (several & np.isnan(criterion))
    lacking = np.bincount(sweep_of, weights=missing, minlength=n) > 0
    # the best criterion first, then the lowest trial (lexsort: last key is the primary)
    order = np.lexsort((prepared.trials, -np.nan_to_num(criterion, nan=-np.inf), sweep_of))
    first = order[np.r_[True, sweep_of[order][1:] != sweep_of[order][:-1]]]
    # the chosen rows' values as Python numbers (indexing numpy arrays one element at a
    # time in the loop below cost more than the rest of the function)
    of = sweep_of[first].tolist()
    trial_of, step_of = prepared.trials[first].tolist(), step[first].tolist()
    criterion_of, several_of = criterion[first].tolist(), several[first].tolist()
    lacking_of, trials_of = lacking[sweep_of[first]].tolist(), trials[sweep_of[first]].tolist()
    out = {}
    for i in range(len(of)):
        if lacking_of[i]:
            continue
        sweep = prepared.sweeps[of[i]]
        run = sweep.ok[trial_of[i]]
        out[id(sweep)] = Decision(job_id=run["job_id"], trial=trial_of[i], step=int(step_of[i]),
                                  criterion=criterion_of[i] if several_of[i] else math.nan,
                                  trials=trials_of[i])
    return out


def _by_reason(problems: list[str]) -> str:
    """``["seed 0: x", "seed 1: x", "seed 2: y"]`` -> ``"seeds 0, 1: x; seed 2: y"``."""
    reasons: dict[str, list[str]] = {}
    for problem in problems:
        seed, _, reason = problem.partition(": ")
        reasons.setdefault(reason, []).append(seed.removeprefix("seed "))
    return "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: {reason}"
                     for reason, seeds in reasons.items())


def _dicts(df: pd.DataFrame, columns: list[str],
           positions: list[int] | None = None) -> list[dict[str, Any]]:
    """``df[columns].to_dict("records")`` (of the rows at ``positions`` only, when given):
    the same Python values (``astype(object)`` boxes as ``to_dict`` does), converted a
    column at a time (``df.iloc[positions]`` would take every column)."""
    index = None if positions is None else np.asarray(positions, dtype=np.int64)
    values = [(df[c] if index is None else df[c].take(index)).to_numpy(dtype=object)
              for c in columns]
    return [dict(zip(columns, row)) for row in zip(*values)] if columns else \
        [{} for _ in range(len(df) if index is None else len(index))]


#: the columns :func:`prepare` reads of every row (to group runs into sweeps) ...
_GROUP_COLUMNS = frozenset({
    "job_id", "trial", "holdout", "protocol", "method_label", "task_label", "seed", "status"})
#: ... and all the columns of the frame that :func:`select` reads (the rest only for the
#: runs a decision from views or the scorer reads)
_SELECT_COLUMNS = frozenset({
    "job_id", "trial", "holdout", "target", "protocol", "by_selection", "history", "episodes",
    "selected_step", "method_label", "task_label", "method", "task", "seed", "status", "oracle",
    "transductive", "hparams", "device_name", "train_samples_per_s", "infer_samples_per_s",
    "latency_ms", "peak_mem_mb", "params", "git_sha", "git_dirty", "xbench", "torch", "python",
    "method_origin", "chance", "test_size", "data_seed", "task_group", "test_items",
    *(f"{kind}@{name}" for kind in ("step", "criterion", "acc_target", "acc_target_worst")
      for name in CHECKPOINT_SELECTIONS)})


def columns_read(columns: Iterable[str]) -> list[str]:
    """Those of ``columns`` that :func:`prepare` and :func:`select` read (a caller may pass
    a frame of only these: the others are never looked at)."""
    return [c for c in columns if c in _SELECT_COLUMNS]

RUN_COLUMNS = ["method", "method_name", "task", "task_name", "target", "protocol", "seed",
               "selection", "trial", "trials", "step", "criterion", "acc_target",
               "acc_target_worst", "domain_acc", "episodes", "oracle", "transductive", "job_id",
               "hparams", "device_name", "train_samples_per_s", "infer_samples_per_s",
               "latency_ms", "peak_mem_mb", "params", "git_sha", "git_dirty", "xbench", "torch",
               "python", "method_origin", "chance", "test_size", "data_seed", "task_group",
               "test_items"]


#: the columns of :func:`_runs_frame` taken from the chosen run as they are
_CHOSEN_FIELDS = ("target", "protocol", "seed", "hparams", "device_name",
                  "train_samples_per_s", "infer_samples_per_s", "latency_ms", "peak_mem_mb",
                  "params", "git_sha", "git_dirty", "xbench", "torch", "python",
                  "method_origin", "chance", "test_size", "data_seed", "task_group",
                  "test_items")


def _runs_frame(rows: list[tuple[dict[str, Any], Decision, dict[str, Any]]],
                selection: str) -> pd.DataFrame:
    """``Selected.runs``: a row per (chosen run, decision, scored), made column by column
    (a dict per run, then a frame of them, was a third of a selection's time)."""
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS)
    chosen = [c for c, _, _ in rows]
    decisions = [d for _, d, _ in rows]
    scored = [s for _, _, s in rows]
    data: dict[str, list[Any]] = {
        "method": [r["method_label"] for r in chosen],
        "method_name": [r["method"] for r in chosen],
        "task": [r["task_label"] for r in chosen], "task_name": [r["task"] for r in chosen],
        "selection": [selection] * len(rows),
        "trial": [d.trial for d in decisions], "trials": [d.trials for d in decisions],
        "step": [d.step for d in decisions], "criterion": [d.criterion for d in decisions],
        "job_id": [d.job_id for d in decisions],
        "oracle": [bool(r.get("oracle")) for r in chosen],
        "transductive": [bool(r.get("transductive")) for r in chosen]}
    for key in ("acc_target", "acc_target_worst", "domain_acc", "episodes"):
        data[key] = [s[key] for s in scored]
    for key in _CHOSEN_FIELDS:
        data[key] = [r.get(key) for r in chosen]
    return pd.DataFrame({c: data[c] for c in RUN_COLUMNS}, columns=RUN_COLUMNS)


def _join(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)
