"""Plan: suite x tasks x targets x methods x seeds -> jobs, each with a stable ``job_id``.

A job's identity is a hash of its canonical configuration (task, version,
options, target, protocol, method, resolved hyper-parameters, seed, budget,
and the adaptation stream under ``tta``): no data paths (a task's
``location_options``), hostnames, times or suite names, so the same experiment
has the same id wherever and whenever it runs. A task read from a data folder
adds the fingerprint of that folder's content (``Task.fingerprint``) instead
of its path: the same data moved keeps its ids, other data under the same path
gets new ones (and so runs again into the same results folder).

The data split follows the seed (DomainBed's trial seed): a job's task option
``data_seed`` is its ``seed`` unless the suite pins it (``options = { data_seed
= 0 }``), so seeds replicate the split and test sampling as well as training.
A method runs only where it applies: under a protocol it declares, with at
least ``min_sources(protocol)`` source domains; the plan lists every
(method, task, reason) it skipped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from typing import Any, Iterable

from xbench.errors import ConfigError, UnknownNameError
from xbench.harness.suite import ALL_METHODS, Suite
from xbench.hparams import sample_hparams
from xbench.registry import METHODS, create_method, load_task

PRECISIONS = ("fp32", "bf16", "fp16")  # as xbench.harness.precision (which imports torch)


@dataclasses.dataclass(frozen=True)
class Job:
    """One (task, target, protocol, method, hyper-parameters, seed) run."""

    suite: str
    task: str
    task_version: str
    task_options: dict[str, Any]
    target: tuple[str, ...]
    protocol: str
    method: str
    hparams: dict[str, Any]
    seed: int
    budget: dict[str, Any]  # Budget fields, plus ``stage_steps``: {stage: steps}
    episodes: dict[str, int] | None = None  # the few-shot spec, only under ``fewshot``
    stream: dict[str, Any] | None = None  # the adaptation stream, only under ``tta``
    trial: int = 0  # hyper-parameter sample: 0 = defaults (a label, not part of the identity)
    holdout: tuple[str, ...] = ()  # leave-one-domain-out: source domains kept out of training
    location_options: tuple[str, ...] = ()  # task options kept out of the identity (data paths)
    precision: str = "fp32"  # autocast applied by the runner (fp32, bf16, fp16; never "auto")
    timeout_s: float | None = None  # per-job time limit (None/0: none); not part of the identity
    data_fingerprint: str | None = None  # the content of a data folder (Task.fingerprint)

    def config(self) -> dict[str, Any]:
        """The canonical configuration that defines this job (and its id)."""
        options = {k: v for k, v in self.task_options.items()
                   if k not in self.location_options}
        config = {"task": self.task, "task_version": self.task_version,
                  "task_options": options, "target": list(self.target),
                  "protocol": self.protocol, "method": self.method, "hparams": self.hparams,
                  "seed": self.seed, "budget": self.budget}
        if self.episodes is not None:
            config["episodes"] = self.episodes
        if self.stream is not None:
            config["stream"] = self.stream
        if self.holdout:
            config["holdout"] = list(self.holdout)
        if self.precision != "fp32":  # fp32 ids stay those of records made before precision
            config["precision"] = self.precision
        if self.data_fingerprint is not None:  # tasks without a data folder keep their ids
            config["data_fingerprint"] = self.data_fingerprint
        return config

    @property
    def job_id(self) -> str:
        return config_hash(self.config())

    def label(self) -> str:
        """Short human-readable name for progress lines."""
        holdout = f"-{'+'.join(self.holdout)}" if self.holdout else ""
        return (f"{self.method}@{self.task}->{'+'.join(self.target)}{holdout}"
                f"#s{self.seed}t{self.trial}")


def config_hash(config: dict[str, Any]) -> str:
    """A 16-hex-digit SHA-256 of the config in canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Plan:
    """The jobs of a run, and the (method, task, reason) triples skipped as not applicable."""

    jobs: list[Job]
    not_applicable: list[tuple[str, str, str]]


def split_patterns(values: Iterable[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if values is None:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def select_methods(patterns: list[str], exclude: list[str]) -> list[str]:
    """Registered methods matching ``patterns``; a plain name that matches nothing is an error."""
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?[") and pattern not in METHODS:
            METHODS.entry(pattern)  # raises the did-you-mean error
    names = METHODS.list(patterns, exclude=exclude)
    if not names:
        if exclude and METHODS.list(patterns):
            raise ConfigError(f"every method matching {patterns} is excluded by "
                              f"exclude_methods {exclude}; nothing would run")
        raise ConfigError(f"no registered method matches {patterns}; see `xbench list methods`")
    return names


def build_plan(suite: Suite, *, methods: list[str] | None = None, tasks: list[str] | None = None,
               seeds: list[int] | None = None,
               overrides: dict[str, dict[str, Any]] | None = None,
               hparam_samples: int | None = None,
               leave_one_domain_out: bool | None = None,
               precision: str | None = None,
               timeout_s: float | None = None) -> Plan:
    """Expand ``suite`` (optionally narrowed by CLI filters) into jobs.

    Each method runs with its defaults (trial 0) and ``hparam_samples`` random
    draws from its ``search_space`` (trials 1..N), drawn per hyper-parameter
    name so methods sharing a name get identical values; suite and ``--set``
    values always win over draws. With ``leave_one_domain_out``, every job
    also gets one auxiliary job per source domain, trained without it.
    ``precision`` (else the suite's) must already be resolved (not ``auto``;
    see :func:`xbench.harness.precision.resolve_precision`).
    """
    timeout = suite.timeout_s if timeout_s is None else timeout_s
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or \
            not timeout >= 0 or timeout == float("inf"):
        raise ConfigError(f"timeout {timeout!r}: give a number of seconds (0 = no limit)")
    from xbench.tasks.base import EpisodeSpec, Stream, task_protocols  # imports torch
    samples = suite.hparam_samples if hparam_samples is None else hparam_samples
    if samples < 0:
        where = f"{suite.path}: 'hparam_samples'" if hparam_samples is None else \
            "--hparam-samples"
        raise ConfigError(f"{where} {samples}: must be 0 (defaults only) or more")
    lodo = suite.leave_one_domain_out if leave_one_domain_out is None else leave_one_domain_out
    precision = precision or suite.precision
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}': plan a resolved precision, one of "
                          f"{', '.join(PRECISIONS)}")
    method_names = select_methods(methods or suite.methods,
                                  [] if methods else suite.exclude_methods)
    entries = suite.tasks
    if tasks:
        entries = [t for t in suite.tasks if any(fnmatch.fnmatchcase(t.name, p) for p in tasks)]
        if not entries:
            raise UnknownNameError(f"no task of suite '{suite.name}' matches {tasks}; its tasks "
                                   f"are: {', '.join(dict.fromkeys(t.name for t in suite.tasks))}")
    hparams = _merge_hparams(suite.hparams, overrides or {}, method_names, suite.path)
    _check_stage_names(suite.stage_steps, f"{suite.path}: [budget] stage_steps")
    jobs: list[tuple[int, int, Job]] = []  # (entry, data_seed, job): one task's data together
    skipped: list[tuple[str, str, str]] = []
    for index, entry in enumerate(entries):
        try:
            task = load_task(entry.name, **entry.options)
        except ConfigError as exc:
            raise ConfigError(f"{suite.path}: {exc}") from None
        try:
            fingerprint = task.fingerprint()
        except OSError as exc:
            raise ConfigError(f"{suite.path}: task '{entry.name}': cannot read its data to "
                              f"fingerprint it ({exc})") from None
        protocols = task_protocols(task)
        protocol = entry.protocol or protocols[0]
        if protocol not in protocols:
            raise ConfigError(f"{suite.path}: task '{entry.name}' does not support protocol "
                              f"'{protocol}'; it supports: {', '.join(protocols)}")
        budget = task.budget.replace(**{**suite.budget, **entry.budget})
        episodes = None
        if protocol == "fewshot":
            spec = EpisodeSpec.from_options(entry.episodes)
            episodes = dataclasses.asdict(spec)
            if "batch_size" in entry.budget:
                raise ConfigError(f"{suite.path}: task '{entry.name}' sets batch_size under "
                                  f"protocol 'fewshot', where a step's labelled images are one "
                                  f"episode's (ways x (shots + queries)); remove it")
            # Every few-shot method sees one episode's worth of labelled images per step.
            budget = budget.replace(batch_size=spec.ways * (spec.shots + spec.queries))
        elif entry.episodes:
            raise ConfigError(f"{suite.path}: task '{entry.name}' sets {sorted(entry.episodes)} "
                              f"but runs protocol '{protocol}'; few-shot keys need "
                              f"protocol = \"fewshot\"")
        stream = dataclasses.asdict(entry.stream or Stream()) if protocol == "tta" else None
        if entry.all_targets:
            targets = [(d,) for d in task.domains]
        else:
            targets = entry.targets or [task.default_target]
        for target in targets:
            task.check_target(target)
        entry_methods = [n for n in method_names if entry.methods is None
                         or any(fnmatch.fnmatchcase(n, p) for p in entry.methods)]
        _check_stage_names(entry.stage_steps, f"{suite.path}: task '{entry.name}' stage_steps")
        stage_override = {**suite.stage_steps, **entry.stage_steps}
        pinned = "data_seed" in entry.options or "data_seed" not in task.options()
        for name in entry_methods:
            cls = METHODS.get(name)
            if protocol not in cls.protocols:
                skipped.append((name, f"{entry.name} [{protocol}]",
                                f"does not support protocol '{protocol}'"))
                continue
            need = cls.min_sources(protocol)
            runnable = []
            for target in targets:
                sources = [d for d in task.domains if d not in target]
                if len(sources) - (1 if lodo else 0) < need:
                    skipped.append((name, f"{entry.name}->{'+'.join(target)} [{protocol}]",
                                    f"needs {need} source domains under {protocol}, has "
                                    f"{len(sources) - (1 if lodo else 0)}"))
                    continue
                if lodo and len(sources) < 2:
                    raise ConfigError(f"{suite.path}: leave_one_domain_out needs at least 2 "
                                      f"source domains; task '{entry.name}' with target "
                                      f"{list(target)} has {len(sources)}")
                runnable.append((target, sources))
            for trial in range(samples + 1):
                drawn = sample_hparams(cls.search_space, trial, suite.sweep_seed)
                method = create_method(name, **{**drawn, **hparams.get(name, {})})
                resolved = method.get_params()
                stages = {stage: stage_override.get(stage, steps)
                          for stage, steps in method.stage_steps(budget.steps).items()}
                job_budget = {**dataclasses.asdict(budget), "stage_steps": stages}
                for target, sources in runnable:
                    holdouts = [()] + ([(d,) for d in sources] if lodo else [])
                    for seed in (seeds if seeds is not None else entry.seeds or suite.seeds):
                        options = task.options()
                        if not pinned:
                            options["data_seed"] = int(seed)
                        for holdout in holdouts:
                            jobs.append((index, options.get("data_seed", 0), Job(
                                suite=suite.name, task=entry.name,
                                task_version=str(task.version), task_options=options,
                                target=target, protocol=protocol, method=name,
                                hparams=resolved, seed=int(seed), budget=job_budget,
                                episodes=episodes, stream=stream, trial=trial, holdout=holdout,
                                location_options=type(task).location_options,
                                precision=precision, timeout_s=float(timeout) or None,
                                data_fingerprint=fingerprint)))
    jobs.sort(key=lambda item: (item[0], str(item[1])))  # stable: consecutive jobs share data
    unique: dict[str, Job] = {}
    for _, _, job in jobs:  # e.g. a method with no search space: every trial is the default
        unique.setdefault(job.job_id, job)
    planned = list(unique.values())
    if not planned:
        raise ConfigError(f"suite '{suite.name}' with these filters plans no job; every selected "
                          f"method is inapplicable to the selected tasks' protocols")
    return Plan(jobs=planned, not_applicable=skipped)


def _check_stage_names(stage_steps: dict[str, int], where: str) -> None:
    """Every stage named in ``stage_steps`` is a stage of some registered method (a typo is
    an error; a stage of a method this run leaves out is not)."""
    stages = {stage for name in METHODS.list() for stage in METHODS.get(name).stages}
    for stage in stage_steps:
        if stage not in stages:
            raise ConfigError(f"{where}: no registered method has a stage '{stage}'; the "
                              f"stages are: {', '.join(sorted(stages))}")


def _merge_hparams(from_suite: dict[str, dict[str, Any]], from_cli: dict[str, dict[str, Any]],
                   method_names: list[str], where: str) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    shared = from_suite.get(ALL_METHODS, {})
    for key in shared:
        if not any(key in METHODS.get(m).hparam_names() for m in METHODS.list()):
            raise ConfigError(f"{where}: [hparams.\"*\"] sets '{key}', which no registered "
                              f"method takes")
        for method in (m for m in method_names if key in METHODS.get(m).hparam_names()):
            merged.setdefault(method, {})[key] = shared[key]
    from_suite = {k: v for k, v in from_suite.items() if k != ALL_METHODS}
    for source, table in ((where, from_suite), ("--set", from_cli)):
        for method, values in table.items():
            if method not in METHODS:
                METHODS.entry(method)  # did-you-mean error
            if method not in method_names and source == "--set":
                raise ConfigError(f"--set {method}.*: method '{method}' is not in this run; "
                                  f"it runs: {', '.join(method_names)}")
            merged.setdefault(method, {}).update(values)
    return merged

