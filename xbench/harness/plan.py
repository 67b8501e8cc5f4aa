"""Plan: suite x tasks x targets x methods x seeds -> jobs, each with a stable ``job_id``.

A job's identity is a hash of its canonical configuration (task, version,
options, target, protocol, method, resolved hyper-parameters, seed, budget):
no data paths (a task's ``location_options``), hostnames, times or suite
names, so the same experiment has the same id wherever and whenever it runs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from typing import Any, Iterable

from xbench.errors import ConfigError, UnknownNameError
from xbench.harness.suite import Suite
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
    budget: dict[str, int]
    episodes: dict[str, int] | None = None  # the few-shot spec, only under ``fewshot``
    trial: int = 0  # hyper-parameter sample: 0 = defaults (a label, not part of the identity)
    holdout: tuple[str, ...] = ()  # leave-one-domain-out: source domains kept out of training
    location_options: tuple[str, ...] = ()  # task options kept out of the identity (data paths)
    precision: str = "fp32"  # autocast applied by the runner (fp32, bf16, fp16; never "auto")

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
        if self.holdout:
            config["holdout"] = list(self.holdout)
        if self.precision != "fp32":  # fp32 ids stay those of records made before precision
            config["precision"] = self.precision
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
        raise ConfigError(f"no registered method matches {patterns}; see `xbench list methods`")
    return names


def build_plan(suite: Suite, *, methods: list[str] | None = None, tasks: list[str] | None = None,
               seeds: list[int] | None = None,
               overrides: dict[str, dict[str, Any]] | None = None,
               hparam_samples: int | None = None,
               leave_one_domain_out: bool | None = None,
               precision: str | None = None) -> Plan:
    """Expand ``suite`` (optionally narrowed by CLI filters) into jobs.

    Each method runs with its defaults (trial 0) and ``hparam_samples`` random
    draws from its ``search_space`` (trials 1..N), drawn per hyper-parameter
    name so methods sharing a name get identical values; suite and ``--set``
    values always win over draws. With ``leave_one_domain_out``, every job
    also gets one auxiliary job per source domain, trained without it.
    ``precision`` (else the suite's) must already be resolved (not ``auto``;
    see :func:`xbench.harness.precision.resolve_precision`).
    """
    from xbench.tasks.base import EpisodeSpec  # imports torch; plan's other helpers do not

    samples = suite.hparam_samples if hparam_samples is None else hparam_samples
    if samples < 0:
        raise ConfigError(f"--hparam-samples {samples}: must be 0 (defaults only) or more")
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
    jobs: list[Job] = []
    skipped: list[tuple[str, str, str]] = []
    for entry in entries:
        task = load_task(entry.name, **entry.options)
        protocol = entry.protocol or task.protocols[0]
        if protocol not in task.protocols:
            raise ConfigError(f"{suite.path}: task '{entry.name}' does not support protocol "
                              f"'{protocol}'; it supports: {', '.join(task.protocols)}")
        budget = task.budget.replace(**{**suite.budget, **entry.budget})
        episodes = None
        if protocol == "fewshot":
            episodes = dataclasses.asdict(EpisodeSpec.from_options(entry.episodes))
        elif entry.episodes:
            raise ConfigError(f"{suite.path}: task '{entry.name}' sets {sorted(entry.episodes)} "
                              f"but runs protocol '{protocol}'; few-shot keys need "
                              f"protocol = \"fewshot\"")
        if entry.all_targets:
            targets = [(d,) for d in task.domains]
        else:
            targets = entry.targets or [task.default_target]
        for target in targets:
            task.check_target(target)
        for name in method_names:
            if entry.methods is not None and not any(fnmatch.fnmatchcase(name, p)
                                                     for p in entry.methods):
                continue
            cls = METHODS.get(name)
            if protocol not in cls.protocols:
                skipped.append((name, entry.name, f"does not support protocol '{protocol}'"))
                continue
            for trial in range(samples + 1):
                drawn = sample_hparams(cls.search_space, trial, suite.sweep_seed)
                resolved = create_method(name, **{**drawn, **hparams.get(name, {})}).get_params()
                for target in targets:
                    sources = [d for d in task.domains if d not in target]
                    if len(sources) - (1 if lodo else 0) < cls.min_source_domains:
                        skipped.append((name, f"{entry.name}->{'+'.join(target)}",
                                        f"needs {cls.min_source_domains} source domains"))
                        continue
                    holdouts = [()] + ([(d,) for d in sources] if lodo else [])
                    if lodo and len(sources) < 2:
                        raise ConfigError(f"{suite.path}: leave_one_domain_out needs at least 2 "
                                          f"source domains; task '{entry.name}' with target "
                                          f"{list(target)} has {len(sources)}")
                    for seed in (seeds if seeds is not None else suite.seeds):
                        for holdout in holdouts:
                            jobs.append(Job(
                                suite=suite.name, task=entry.name,
                                task_version=str(task.version), task_options=task.options(),
                                target=target, protocol=protocol, method=name,
                                hparams=resolved, seed=int(seed),
                                budget=dataclasses.asdict(budget), episodes=episodes,
                                trial=trial, holdout=holdout,
                                location_options=type(task).location_options,
                                precision=precision))
    unique: dict[str, Job] = {}
    for job in jobs:  # e.g. a method with no search space: every trial is the default
        unique.setdefault(job.job_id, job)
    jobs = list(unique.values())
    if not jobs:
        raise ConfigError(f"suite '{suite.name}' with these filters plans no job; every selected "
                          f"method is inapplicable to the selected tasks' protocols")
    return Plan(jobs=jobs, not_applicable=skipped)


def _merge_hparams(from_suite: dict[str, dict[str, Any]], from_cli: dict[str, dict[str, Any]],
                   method_names: list[str], where: str) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for source, table in ((where, from_suite), ("--set", from_cli)):
        for method, values in table.items():
            if method not in METHODS:
                METHODS.entry(method)  # did-you-mean error
            if method not in method_names and source == "--set":
                raise ConfigError(f"--set {method}.*: method '{method}' is not in this run; "
                                  f"it runs: {', '.join(method_names)}")
            merged.setdefault(method, {}).update(values)
    return merged

