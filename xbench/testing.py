"""The conformance suite for methods: ``xbench check`` and ``xbench.testing``.

Modelled on scikit-learn's ``check_estimator`` / ``parametrize_with_checks``.
Each check is a small function with a readable name that runs one clause of
the method contract (``xbench/methods/base.py``) on a tiny synthetic task on
the CPU and ends ``passed``, ``failed`` (with the reason) or ``skipped`` (with
the reason: a check that does not apply is never silently passed).

Checking a method
-----------------
From the command line (one line per method and check, then a summary; exit
code 0 when every check passes, 1 when one fails, 2 for a name or pattern
that matches no registered method)::

    xbench check                 # every registered method, plugins included
    xbench check erm             # one method
    xbench check 'dann*' --checks 'predict_*,same_seed_same_result'

From Python::

    from xbench.testing import check_method
    for result in check_method("erm"):       # a registered name, a class or an instance
        print(result.status, result.id, result.reason)

From a plugin author's own pytest file (one test per method and check, with
ids such as ``my_method-predict_is_pure``)::

    from xbench.testing import parametrize_with_checks
    from my_plugin import MyMethod

    @parametrize_with_checks([MyMethod])
    def test_xbench_contract(method, check):
        check(method)

Passing an instance (``MyMethod(lr=0.1)``) checks it with those
hyper-parameters instead of the defaults. The checks are listed by
``CHECKS`` (name and one-line summary each); the task they run on is
``CheckBlobs``: Gaussian class blobs in a few shifted domains, as flat
vectors or as 1x8x8 images, a dozen samples per split. A method that
supports only ``fewshot`` is checked on ``CheckFewShotBlobs`` (novel classes
in the target domain; ``predict_episode`` on a fixed 2-way 1-shot episode
stands in for ``predict``), one that supports only ``paired`` on
``CheckPairedBlobs`` (index-aligned vectors and 1-D signals; predictions on
the signals).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import inspect
import math
import os
import random
import re
import time
import traceback
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from xbench.errors import UsageError, XbenchError
from xbench.methods.base import NEEDS, Batch, Episode, Method
from xbench.tasks.base import PROTOCOLS, Budget, EpisodeSpec, Split, Stream, Task, TaskInfo

__all__ = ["CHECKS", "Check", "CheckBlobs", "CheckFewShotBlobs", "CheckPairedBlobs",
           "CheckResult", "check_method", "iter_checks",
           "parametrize_with_checks", "run_check", "select_checks", "state_snapshot"]

CPU = torch.device("cpu")
#: Name under which ``CheckBlobs`` is registered while ``run_job_is_ok`` runs (its few-shot and
#: paired siblings go by their own ``registered_name``).
CHECK_TASK = "xbench_check_blobs"
#: Updates a training check runs (at least two per stage for staged methods).
STEPS = 3
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


# -- the tiny task ------------------------------------------------------------------------------
class CheckBlobs(Task):
    """Gaussian class blobs in a few domains, each shifted further (the checks' tiny CPU task).

    ``n_domains`` domains ``d0 .. d{n-1}``; the last one is the target by
    default. Inputs are flat 6-D vectors, or 1x8x8 images with ``images=True``.
    Every domain has ``n_per_split`` samples in each of train, val and test.
    """

    registered_name = CHECK_TASK
    version = "1"
    kind = "cross_domain"
    protocols = ("dg", "uda")
    num_classes = 3
    budget = Budget(steps=6, batch_size=8, eval_every=3, eval_batch_size=16)

    def __init__(self, *, data_seed: int = 0, n_domains: int = 4, images: bool = False,
                 n_per_split: int = 12):
        super().__init__(data_seed=data_seed)
        self.n_domains = int(n_domains)
        self.images = bool(images)
        self.n_per_split = int(n_per_split)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(f"d{i}" for i in range(self.n_domains))

    @property
    def default_target(self) -> tuple[str, ...]:
        return (self.domains[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 8, 8) if self.images else (6,)

    def build(self) -> dict[str, dict[str, Split]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        dim = math.prod(self.input_shape)
        centers = torch.randn(self.num_classes, dim, generator=generator) * 2.0
        n = 3 * self.n_per_split
        data = {}
        for i, domain in enumerate(self.domains):
            shift = torch.randn(dim, generator=generator) * 0.75 * i
            y = (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=generator)]
            x = centers[y] + shift + torch.randn(n, dim, generator=generator)
            x = x.reshape(n, *self.input_shape)
            k = self.n_per_split
            data[domain] = {"train": Split(x[:k], y[:k]), "val": Split(x[k:2 * k], y[k:2 * k]),
                            "test": Split(x[2 * k:], y[2 * k:])}
        return data


#: The few-shot protocol the checks pose: 2-way 1-shot episodes with 3 queries per class.
EPISODES = EpisodeSpec(ways=2, shots=1, queries=3, test_episodes=4, val_episodes=2)


class CheckFewShotBlobs(CheckBlobs):
    """``CheckBlobs`` as a few-shot class split (the checks' ``fewshot`` task).

    The source domains hold the ``num_classes`` base classes; the last domain
    (the target) holds as many other classes, disjoint from them. Labels are
    local (``0 .. num_classes-1`` within a domain) and ``domain_classes`` names
    the global classes behind them, as in ``digits_fewshot``. Each split holds
    every class equally often (4 times with the default 12 samples), so
    ``EPISODES`` can be drawn from any split.
    """

    registered_name = "xbench_check_fewshot_blobs"
    kind = "cross_task"
    protocols = ("fewshot",)

    @property
    def domain_classes(self) -> dict[str, tuple[str, ...]]:
        """Global classes behind each domain's local labels: base for sources, novel for the
        last domain."""
        c = self.num_classes
        base, novel = tuple(map(str, range(c))), tuple(map(str, range(c, 2 * c)))
        return {d: novel if d == self.domains[-1] else base for d in self.domains}

    def build(self) -> dict[str, dict[str, Split]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        dim, k, c = math.prod(self.input_shape), self.n_per_split, self.num_classes
        centers = torch.randn(2 * c, dim, generator=generator) * 2.0
        data = {}
        for i, domain in enumerate(self.domains):
            classes = torch.tensor([int(g) for g in self.domain_classes[domain]])
            shift = torch.randn(dim, generator=generator) * 0.75 * i
            data[domain] = {}
            for split in ("train", "val", "test"):
                y = (torch.arange(k) % c)[torch.randperm(k, generator=generator)]
                x = centers[classes[y]] + shift + torch.randn(k, dim, generator=generator)
                data[domain][split] = Split(x.reshape(k, *self.input_shape), y)
        return data


class CheckPairedBlobs(CheckBlobs):
    """``CheckBlobs`` seen in two modalities, index-aligned (the checks' ``paired`` task).

    Every domain holds the same instances (row i of a split is one instance in
    each domain, ``paired``): the source domains as flat 6-D vectors (1x8x8
    images with ``images=True``), each shifted further; the last domain (the
    target) as a 1-D signal of shape ``SIGNAL``, a fixed random projection of
    the instance plus noise. The two modalities' input shapes differ.
    """

    registered_name = "xbench_check_paired_blobs"
    kind = "cross_modality"
    protocols = ("paired",)
    paired = True
    #: Input shape of the target modality: one channel of length 16.
    SIGNAL = (1, 16)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        target = self.domains[-1]
        return {d: self.SIGNAL if d == target else tuple(self.input_shape) for d in self.domains}

    def build(self) -> dict[str, dict[str, Split]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        dim, k, c = math.prod(self.input_shape), self.n_per_split, self.num_classes
        n, length = 3 * k, math.prod(self.SIGNAL)
        centers = torch.randn(c, dim, generator=generator) * 2.0
        projection = torch.randn(dim, length, generator=generator) / math.sqrt(dim)
        y = (torch.arange(n) % c)[torch.randperm(n, generator=generator)]
        z = centers[y] + torch.randn(n, dim, generator=generator)
        data = {}
        for i, domain in enumerate(self.domains):
            if i == self.n_domains - 1:
                x = z @ projection + 0.1 * torch.randn(n, length, generator=generator)
                x = x.reshape(n, *self.SIGNAL)
            else:
                shift = torch.randn(dim, generator=generator) * 0.75 * i
                x = (z + shift + 0.3 * torch.randn(n, dim, generator=generator))
                x = x.reshape(n, *self.input_shape)
            data[domain] = {"train": Split(x[:k], y[:k]), "val": Split(x[k:2 * k], y[k:2 * k]),
                            "test": Split(x[2 * k:], y[2 * k:])}
        return data


#: The check task posing each protocol.
_TASKS: dict[str, type[CheckBlobs]] = {"dg": CheckBlobs, "uda": CheckBlobs, "tta": CheckBlobs,
                                       "fewshot": CheckFewShotBlobs, "paired": CheckPairedBlobs}


# -- results and the check registry -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one method."""

    method: str
    name: str
    status: str  # "passed" | "failed" | "skipped"
    reason: str
    seconds: float

    @property
    def id(self) -> str:
        """``method-check``, e.g. ``erm-predict_is_pure``."""
        return f"{self.method}-{self.name}"

    @property
    def ok(self) -> bool:
        """True unless the check failed."""
        return self.status != FAILED


class CheckFailed(Exception):
    """Raised inside a check: the method breaks the contract (message: why)."""


class CheckSkipped(Exception):
    """Raised inside a check: the check does not apply to this method (message: why)."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One conformance check. Calling it on a method raises unless the check passes.

    ``check(method)`` is what a ``parametrize_with_checks`` test calls: it
    raises ``AssertionError`` with the reason on failure and calls
    ``pytest.skip`` with the reason when the check does not apply.
    """

    name: str
    func: Callable[["_Subject"], str]
    summary: str

    def __call__(self, method: Any) -> None:
        result = run_check(method, self)
        if result.status == FAILED:
            raise AssertionError(f"{result.id}: {result.reason}")
        if result.status == SKIPPED:
            import pytest

            pytest.skip(result.reason)

    def __repr__(self) -> str:
        return self.name


#: Every check, in the order they run (cheap declarations first, a full job last).
CHECKS: list[Check] = []


def _check(func: Callable[["_Subject"], str]) -> Callable[["_Subject"], str]:
    doc = (func.__doc__ or "").strip().splitlines()
    CHECKS.append(Check(func.__name__.removeprefix("check_"), func, doc[0] if doc else ""))
    return func


def select_checks(patterns: Iterable[str] | None = None) -> list[Check]:
    """The checks whose names match any fnmatch pattern (all of them for ``None``)."""
    if patterns is None:
        return list(CHECKS)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [c.name for c in CHECKS]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"no check matches '{pattern}'; the checks are: {', '.join(names)}")
    return [c for c in CHECKS if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


# -- what is being checked ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Subject:
    """A method class, the name it is shown under and the hyper-parameters it is built with."""

    cls: type
    name: str
    hparams: dict[str, Any]

    def new(self) -> Method:
        return _call(f"{self.cls.__name__}(**hparams)", self.cls, **self.hparams)


def _registered_name(cls: type) -> str | None:
    from xbench.registry import METHODS

    name = getattr(cls, "registered_name", "")
    try:
        if name and name in METHODS and METHODS.entry(name).target is cls:
            return name
    except XbenchError:
        return None
    return None


def _subject(method: Any) -> _Subject:
    """Resolve a registered name, a ``Method`` subclass or an instance."""
    from xbench.registry import METHODS

    if isinstance(method, _Subject):
        return method
    if isinstance(method, str):
        cls, name, hparams = METHODS.get(method), method, {}
    elif isinstance(method, type):
        cls, name, hparams = method, None, {}
    elif isinstance(method, Method):
        cls, name, hparams = type(method), None, dict(method.get_params())
    else:
        raise TypeError(f"check a method by registered name, class or instance, "
                        f"not {type(method).__name__}")
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{name or cls!r} is not a subclass of xbench.Method "
                        f"({getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', cls)})")
    name = name or _registered_name(cls) or cls.__name__
    defaults = cls.default_hparams()
    changed = [f"{k}={v!r}" for k, v in hparams.items() if k not in defaults
               or not _same(v, defaults[k])]
    if changed:  # an instance with its own hyper-parameters, e.g. erm(lr=0.1)
        name = f"{name}({','.join(changed)})"
    return _Subject(cls, name, hparams)


# -- running checks -----------------------------------------------------------------------------
#: Longest a single check may run before it fails as hanging (seconds).
CHECK_TIMEOUT_S = 600.0


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: the check task's tensors are tiny, and on a busy machine
    a second thread only adds synchronisation (it made the suite ~20x slower on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_check(method: Any, check: Check | str) -> CheckResult:
    """Run one check (by ``Check`` or name) on a method (name, class or instance)."""
    subject = _subject(method)
    if isinstance(check, str):
        matches = [c for c in CHECKS if c.name == check]
        if not matches:
            raise UsageError(f"unknown check '{check}'; the checks are: "
                             f"{', '.join(c.name for c in CHECKS)}")
        check = matches[0]
    from xbench.harness.isolation import Guard, preserved_global_state

    start = time.perf_counter()
    # Global state (dtype, RNGs, threads, grad mode) is restored after every check, and a
    # method's SystemExit or own KeyboardInterrupt is a failure, so one method cannot break
    # the checks of the next; the user's Ctrl-C still stops `xbench check`.
    guard = Guard(CHECK_TIMEOUT_S)
    with preserved_global_state(), _one_thread(), torch.enable_grad():
        with guard:
            try:
                note = check.func(subject)
                status, reason = PASSED, note or ""
            except CheckSkipped as exc:
                status, reason = SKIPPED, str(exc)
            except CheckFailed as exc:
                status, reason = FAILED, str(exc)
            except Exception as exc:  # noqa: BLE001 - anything the method raises is a failure
                status, reason = FAILED, f"raised {_describe_exception(exc)}"
    if guard.error is not None:
        status, reason = FAILED, f"raised {guard.error}"
    return CheckResult(subject.name, check.name, status, reason, time.perf_counter() - start)


def iter_checks(method: Any, checks: Iterable[Check] | None = None) -> Iterator[CheckResult]:
    """Yield each check's result as it finishes.

    A method that cannot even be loaded (a broken plugin) yields one failed
    ``load`` result instead of raising, so a run over many methods goes on.
    """
    from xbench.errors import PluginError

    start = time.perf_counter()
    try:
        subject = _subject(method)
    except (PluginError, TypeError) as exc:
        if not isinstance(method, str):  # a wrong argument, not a broken registry entry
            raise
        yield CheckResult(method, "load", FAILED, str(exc), time.perf_counter() - start)
        return
    for check in (CHECKS if checks is None else checks):
        yield run_check(subject, check)


def check_method(method: Any, checks: Iterable[str] | None = None) -> list[CheckResult]:
    """Run every check (or those matching the fnmatch patterns ``checks``) on ``method``.

    ``method`` is a registered name, a ``Method`` subclass, or an instance
    (whose hyper-parameters are used instead of the defaults).
    """
    return list(iter_checks(method, select_checks(checks)))


def parametrize_with_checks(methods: Iterable[Any], checks: Iterable[str] | None = None) -> Any:
    """A ``pytest.mark.parametrize`` over every (method, check) pair (ids: ``erm-predict_is_pure``).

    Use it on a test taking ``method`` and ``check`` that calls ``check(method)``::

        @parametrize_with_checks(["erm", MyMethod])
        def test_xbench_contract(method, check):
            check(method)
    """
    import pytest

    selected = select_checks(checks)
    params = []
    for method in methods:
        name = _subject(method).name  # resolves now: an unknown name fails at collection
        for check in selected:
            params.append(pytest.param(method, check, id=f"{name}-{check.name}"))
    return pytest.mark.parametrize("method, check", params)


# -- helpers the checks share -------------------------------------------------------------------
def _describe_exception(exc: BaseException) -> str:
    """``Type: first line of message (at file.py:12 in func)`` for the innermost non-torch frame."""
    message = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
    if len(text) > 300:
        text = text[:297] + "..."
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.abspath(__file__)
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if path != here and not path.startswith(torch_dir):
            return f"{text} (at {os.path.basename(path)}:{frame.lineno} in {frame.name})"
    return text


def _call(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call method code; an exception becomes a failure that says which call raised."""
    try:
        return func(*args, **kwargs)
    except (CheckFailed, CheckSkipped):
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{what} raised {_describe_exception(exc)}") from exc


@dataclasses.dataclass
class _Setting:
    """Task data, protocol and the ``TaskInfo`` a method is set up with (``spec``: few-shot)."""

    task: CheckBlobs
    data: dict[str, dict[str, Split]]
    info: TaskInfo
    protocol: str
    spec: EpisodeSpec | None = None

    def probe(self, n: int = 12) -> torch.Tensor:
        """``n`` target test inputs, ready for ``predict``."""
        target = self.info.target_domains[0]
        return self.task.prepare(self.data[target]["test"].x[:n])

    @functools.cached_property
    def episode(self) -> Episode:
        """A fixed ``EPISODES`` episode from the target test split (few-shot only)."""
        from xbench.harness.episodes import as_episode, fixed_episodes

        split = self.data[self.info.target_domains[0]]["test"]
        index = fixed_episodes(split, self.spec, 1, "xbench-check")[0]
        return as_episode(split, index, self.task.prepare)

    @property
    def call(self) -> str:
        """The prediction the runner scores under this protocol."""
        return "predict" if self.spec is None else "predict_episode"

    @property
    def num_outputs(self) -> int:
        """Logits per input: the task's classes, or the episode's ways."""
        return self.info.num_classes if self.spec is None else self.spec.ways

    def inputs(self, n: int = 12) -> torch.Tensor:
        """What a check predicts on: ``n`` target test inputs, or the fixed episode's queries."""
        return self.probe(n) if self.spec is None else self.episode.query_x

    def scores(self, method: Method, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` as the runner asks for them: ``predict(x)`` without gradients, or
        ``predict_episode`` with the fixed episode's support set and queries ``x``."""
        if self.spec is None:
            return _predict(method, x)
        episode = self.episode
        out = _call("predict_episode", method.predict_episode, episode.support_x,
                    episode.support_y, x)
        return out.detach() if isinstance(out, torch.Tensor) else out

    def sampler(self, cls: type, seed: int = 0) -> Any:
        from xbench.harness.sampling import training_sampler

        return training_sampler(cls, self.info, self.data, seed=seed, prepare=self.task.prepare,
                                episodes=self.spec)


def _protocols(cls: type) -> list[str]:
    return [p for p in cls.protocols if p in _TASKS]


def _main_protocol(cls: type) -> str:
    supported = _protocols(cls)
    if not supported:
        raise CheckSkipped(f"supports only protocol(s) {', '.join(cls.protocols)}; the check tasks "
                           f"pose {', '.join(_TASKS)}")
    return supported[0]


def _task(cls: type, protocol: str, *, images: bool = False,
          n_domains: int | None = None) -> CheckBlobs:
    """The check task posing ``protocol``, with enough source domains for ``cls``."""
    return _TASKS[protocol](n_domains=n_domains or _n_domains(cls, protocol), images=images)


def _setting(cls: type, protocol: str | None = None, *, images: bool = False,
             n_sources: int | None = None) -> _Setting:
    """The check task for ``cls``: enough source domains for it, target the last domain.

    With ``n_sources`` the first ``n_sources`` domains are sources and the
    rest are targets (under ``fewshot`` and ``paired``, one target: the novel
    classes or the other modality).
    """
    protocol = protocol or _main_protocol(cls)
    pair = protocol in ("fewshot", "paired")
    task = _task(cls, protocol, images=images,
                 n_domains=n_sources + 1 if pair and n_sources is not None else None)
    target = task.default_target if n_sources is None else task.domains[n_sources:]
    info = task.info(tuple(target), protocol, task.budget)
    return _Setting(task, task.build(), info, protocol,
                    EPISODES if protocol == "fewshot" else None)


def _min_sources(cls: type, protocol: str) -> int:
    """``cls.min_sources(protocol)``, or 1 where the declaration is malformed."""
    try:
        need = cls.min_sources(protocol)
    except Exception:  # noqa: BLE001 - check_declarations_are_valid reports it
        return 1
    return need if isinstance(need, int) and not isinstance(need, bool) and need >= 1 else 1


def _n_domains(cls: type, protocol: str = "dg") -> int:
    """One more than the method's ``min_sources(protocol)``, and at least four domains (three
    sources) under dg, uda and tta, two (base and novel classes, or two modalities) otherwise."""
    least = 2 if protocol in ("fewshot", "paired") else 4
    return max(least, _min_sources(cls, protocol) + 1)


def _fresh(subject: _Subject, setting: _Setting, seed: int = 0) -> Method:
    """A new instance, seeded and set up on the CPU like the runner does."""
    from xbench.harness.runner import seed_everything

    seed_everything(seed)
    method = subject.new()
    _call("setup", method.setup, setting.info, CPU)
    method.train(True)
    return method


def _train(method: Method, sampler: Any, steps: int = STEPS,
           transform: Callable[[Batch], Batch] | None = None) -> list[dict[str, Any]]:
    """Run ``steps`` updates across the method's stages as the runner does; return the logs."""
    schedule = _call("stage_steps", method.stage_steps, steps)
    if not isinstance(schedule, dict) or not all(stage in schedule for stage in method.stages):
        raise CheckFailed(f"stage_steps({steps}) returned {schedule!r}; expected a step count "
                          f"for each of the stages {tuple(method.stages)}")
    logs = []
    step = 0
    for stage in method.stages:
        _call(f"begin_stage({stage!r})", method.begin_stage, stage)
        for _ in range(schedule[stage]):
            batch = sampler.sample(step, stage)
            if transform is not None:
                batch = transform(batch)
            logs.append(_call(f"update (stage {stage!r}, step {step})", method.update, batch))
            step += 1
    return logs


def _steps(cls: type) -> int:
    return max(STEPS, 2 * len(cls.stages))


@contextlib.contextmanager
def _eval_mode(method: Method) -> Iterator[None]:
    method.train(False)
    try:
        yield
    finally:
        method.train(True)


def _predict(method: Method, x: torch.Tensor) -> torch.Tensor:
    """``predict`` as the runner calls it: evaluation mode, no gradients."""
    with torch.no_grad():
        return _call("predict", method.predict, x)


def _trained(subject: _Subject, setting: _Setting | None = None, seed: int = 0
             ) -> tuple[Method, _Setting]:
    setting = setting or _setting(subject.cls)
    method = _fresh(subject, setting, seed)
    _train(method, setting.sampler(subject.cls, seed), _steps(subject.cls))
    return method, setting


def _needs(cls: type, what: str) -> bool:
    return what in cls.needs


def _check_logs(logs: Any, where: str) -> None:
    if not isinstance(logs, dict):
        raise CheckFailed(f"{where}: update returned {type(logs).__name__}, not a dict of floats")
    if not logs:
        raise CheckFailed(f"{where}: update returned an empty dict; return at least the loss "
                          f"(the runner detects divergence from it)")
    for key, value in logs.items():
        if not isinstance(key, str):
            raise CheckFailed(f"{where}: update returned key {key!r}; keys must be strings")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckFailed(f"{where}: update returned {key}={_short(value)} of type "
                              f"{type(value).__qualname__}; return Python floats "
                              f"(tensor.item() or float(...))")
        if not math.isfinite(value):
            raise CheckFailed(f"{where}: update returned {key}={value}")


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _check_logits(out: Any, n: int, num_classes: int, x: torch.Tensor, where: str,
                  call: str = "predict") -> None:
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{where}: {call} returned {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != (n, num_classes):
        raise CheckFailed(f"{where}: {call} returned shape {tuple(out.shape)} for {n} input(s); "
                          f"expected ({n}, {num_classes}) logits")
    if not out.is_floating_point():
        raise CheckFailed(f"{where}: {call} returned dtype {out.dtype}; logits are floats")
    if out.device != x.device:
        raise CheckFailed(f"{where}: {call} returned logits on {out.device} for inputs on "
                          f"{x.device}")
    if not torch.isfinite(out).all():
        raise CheckFailed(f"{where}: {call} returned non-finite logits")


def _check_scores(out: Any, setting: _Setting, x: torch.Tensor, where: str) -> None:
    """``_check_logits`` for what ``setting.scores`` returned on ``x``."""
    _check_logits(out, len(x), setting.num_outputs, x, where, setting.call)


# -- state snapshots ----------------------------------------------------------------------------
_PLAIN = (int, float, str, bool, complex, bytes, type(None))


def state_snapshot(method: Any) -> dict[str, Any]:
    """Every piece of an instance's state, flattened: ``{path: copied value}``.

    Covers parameters (and their gradients), buffers (batch-norm running
    statistics included) and plain attributes of every module, optimizer
    state, tensors, random generators and plain values, in containers and
    plain objects held by the instance. Two snapshots compare with ``_diff``.
    """
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for name, value in vars(method).items():
        _snap(name, value, out, seen, 0)
    return out


def _snap(key: str, value: Any, out: dict[str, Any], seen: set[int], depth: int) -> None:
    if isinstance(value, torch.Tensor):
        out[key] = value.detach().clone()
        if value.grad is not None:
            out[f"{key}.grad"] = value.grad.detach().clone()
        return
    if isinstance(value, _PLAIN):
        out[key] = value
        return
    if id(value) in seen or depth > 6:
        return
    seen.add(id(value))
    if isinstance(value, nn.Module):
        for name, p in value.named_parameters():
            _snap(f"{key}.{name}", p, out, seen, depth + 1)
        for name, b in value.named_buffers():
            out[f"{key}.{name}"] = b.detach().clone()
        for mod_name, module in value.named_modules():
            for attr, v in vars(module).items():
                if not attr.startswith("_") and attr != "training" and isinstance(v, _PLAIN):
                    out[f"{key}.{mod_name}.{attr}".replace("..", ".")] = v
    elif isinstance(value, torch.optim.Optimizer):
        _snap(f"{key}.<state_dict>", value.state_dict(), out, seen, depth + 1)
    elif isinstance(value, torch.Generator):
        out[key] = value.get_state()
    elif isinstance(value, np.random.Generator):
        out[key] = repr(value.bit_generator.state)
    elif isinstance(value, random.Random):
        out[key] = value.getstate()
    elif isinstance(value, np.ndarray):
        out[key] = value.copy()
    elif isinstance(value, dict):
        for k, v in value.items():
            _snap(f"{key}[{k!r}]", v, out, seen, depth + 1)
    elif isinstance(value, (list, tuple)):
        out[f"{key}.<len>"] = len(value)
        for i, v in enumerate(value):
            _snap(f"{key}[{i}]", v, out, seen, depth + 1)
    elif isinstance(value, (set, frozenset)):
        out[key] = sorted(repr(v) for v in value)
    elif hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        for k, v in vars(value).items():
            _snap(f"{key}.{k}", v, out, seen, depth + 1)
    else:
        out[key] = f"<{type(value).__qualname__}>"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.is_floating_point() or a.is_complex():
            return bool(((a == b) | (a.isnan() & b.isnan())).all())
        return torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an odd __eq__
        return repr(a) == repr(b)


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Paths that were added, removed or changed between two snapshots."""
    changed = [k for k in before if k in after and not _same(before[k], after[k])]
    added = [f"+{k}" for k in after if k not in before]
    removed = [f"-{k}" for k in before if k not in after]
    return changed + added + removed


def _names(paths: list[str], limit: int = 4) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _rng_state() -> tuple[Any, ...]:
    _, keys, position, *_ = np.random.get_state()
    return torch.get_rng_state(), (keys.copy(), position), random.getstate()


def _rng_changed(before: tuple[Any, ...], after: tuple[Any, ...]) -> list[str]:
    names = ["torch", "numpy", "random"]
    same = [_same(before[0], after[0]),
            _same(before[1][0], after[1][0]) and before[1][1] == after[1][1],
            before[2] == after[2]]
    return [n for n, ok in zip(names, same) if not ok]


def _learned_state(method: Method) -> dict[str, torch.Tensor]:
    """Parameters, plus tensors held outside modules (e.g. prototypes); not module buffers,
    which any training-mode forward pass updates."""
    out = _parameters(method)
    for attr, value in vars(method).items():
        if isinstance(value, torch.Tensor):
            out[attr] = value.detach().clone()
    return out


def _parameters(method: Method) -> dict[str, torch.Tensor]:
    out = {}
    for attr, module in method.modules().items():
        for name, p in module.named_parameters():
            out[f"{attr}.{name}"] = p.detach().clone()
    return out


# -- the checks ---------------------------------------------------------------------------------
_SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


@_check
def check_declarations_are_valid(s: _Subject) -> str:
    """protocols, needs, stages, min_source_domains and tags are well-formed and consistent."""
    cls = s.cls
    problems = []
    protocols = cls.protocols
    if not isinstance(protocols, (tuple, list)) or not protocols \
            or not all(isinstance(p, str) for p in protocols):
        problems.append(f"protocols must be a non-empty tuple of names, got {protocols!r}")
    elif set(protocols) - set(PROTOCOLS):
        problems.append(f"unknown protocol(s) {sorted(set(protocols) - set(PROTOCOLS))}; "
                        f"known: {', '.join(PROTOCOLS)}")
    needs = cls.needs
    if not isinstance(needs, (set, frozenset)) or set(needs) - set(NEEDS):
        problems.append(f"needs must be a frozenset of {', '.join(NEEDS)}, got {needs!r}")
    else:
        if needs & {"target_unlabeled", "target_labeled"} and "uda" not in protocols:
            problems.append(f"needs {sorted(needs & {'target_unlabeled', 'target_labeled'})} but "
                            f"protocols {tuple(protocols)} lack 'uda', the only protocol that "
                            f"hands out target data")
        if "target_labeled" in needs and "oracle" not in cls.tags:
            problems.append("needs 'target_labeled' but is not tagged 'oracle'; only oracle rows "
                            "may train on target labels")
        for need, protocol in (("episodes", "fewshot"), ("pairs", "paired")):
            if need in needs and isinstance(protocols, (tuple, list)) \
                    and protocol not in protocols:
                problems.append(f"needs '{need}' but protocols {tuple(protocols)} lack "
                                f"'{protocol}', the only protocol that hands them out")
        if "test_time" in needs and isinstance(protocols, (tuple, list)) \
                and set(protocols) != {"tta"}:
            problems.append(f"needs 'test_time' but declares protocols {tuple(protocols)}; a "
                            f"method that adapts on target test batches declares protocols = "
                            f"('tta',) only, so it is never ranked against methods that do not")
    if isinstance(protocols, (tuple, list)) and "fewshot" in protocols \
            and not callable(getattr(cls, "predict_episode", None)):
        problems.append("supports protocol 'fewshot' but has no predict_episode(support_x, "
                        "support_y, query_x); the runner scores few-shot jobs with it")
    stages = cls.stages
    if not isinstance(stages, (tuple, list)) or not stages \
            or not all(isinstance(x, str) and x for x in stages) or len(set(stages)) != len(stages):
        problems.append(f"stages must be a non-empty tuple of distinct names, got {stages!r}")
    msd = cls.min_source_domains
    counts = list(msd.values()) if isinstance(msd, dict) else [msd]
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts) or (
            isinstance(msd, dict) and not set(msd) <= set(PROTOCOLS)):
        problems.append(f"min_source_domains must be an integer >= 1 or {{protocol: integer}}, "
                        f"got {msd!r}")
    stage_needs = cls.stage_needs
    if not isinstance(stage_needs, dict) or any(
            stage not in (stages or ()) or not isinstance(v, (set, frozenset))
            or not set(v) <= set(needs) for stage, v in stage_needs.items()):
        problems.append(f"stage_needs must map stages to subsets of needs, got {stage_needs!r}")
    if not isinstance(cls.search_space, dict):
        problems.append(f"search_space must be a dict, got {type(cls.search_space).__name__}")
    if cls.adapt is not Method.adapt and isinstance(needs, (set, frozenset)) \
            and "test_time" not in needs:
        problems.append("overrides adapt() but does not declare needs 'test_time'; the runner "
                        "only calls adapt for methods that do")
    if not (cls.__doc__ or "").strip():
        problems.append("has no docstring; `xbench list methods` shows its first line "
                        "(say what the method does and name its paper)")
    registered = _registered_name(cls)
    if registered is not None and not _SNAKE.fullmatch(registered):
        problems.append(f"registered name '{registered}' is not lower snake_case")
    if problems:
        raise CheckFailed("; ".join(problems))
    return (f"protocols {','.join(protocols)}; needs {','.join(sorted(needs)) or '-'}; "
            f"stages {','.join(stages)}; min_source_domains {msd}")


@_check
def check_init_stores_only_hparams(s: _Subject) -> str:
    """__init__ only stores its hyper-parameters: vars(method) == get_params(), nothing built."""
    rng = _rng_state()
    method = s.new()
    drawn = _rng_changed(rng, _rng_state())
    if drawn:
        raise CheckFailed(f"__init__ drew from the global {'/'.join(drawn)} random generator "
                          f"(it built something); build networks and state in setup()")
    state = dict(vars(method))
    built = [f"{k} ({type(v).__name__})" for k, v in state.items()
             if isinstance(v, (torch.Tensor, nn.Module, torch.optim.Optimizer, np.ndarray))]
    if built:
        raise CheckFailed(f"__init__ built {_names(built)}; build them in setup()")
    params = _call("get_params", method.get_params)
    extra = sorted(set(state) - set(params))
    if extra:
        raise CheckFailed(f"__init__ set attribute(s) {extra} that are not hyper-parameters; "
                          f"set them in setup()")
    missing = sorted(set(params) - set(state))
    if missing:
        raise CheckFailed(f"__init__ did not store hyper-parameter(s) {missing} as attributes "
                          f"of the same name")
    differ = [k for k in params if state[k] is not params[k] and not _same(state[k], params[k])]
    if differ:
        raise CheckFailed(f"get_params() disagrees with the stored attributes for {differ}")
    return f"stores {len(params)} hyper-parameter(s): {', '.join(params) or '(none)'}"


@_check
def check_hparams_have_defaults(s: _Subject) -> str:
    """Every hyper-parameter is keyword-only with a plain default (no *args/**kwargs)."""
    init = s.cls.__init__
    if init is object.__init__:
        return "no __init__: no hyper-parameters"
    params = list(inspect.signature(init).parameters.values())[1:]  # after self
    problems = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            stars = "*" if p.kind is p.VAR_POSITIONAL else "**"
            problems.append(f"__init__ takes {stars}{p.name}; name every hyper-parameter as a "
                            f"keyword-only argument with a default so get_params sees it")
        elif p.kind is not p.KEYWORD_ONLY:
            problems.append(f"'{p.name}' must be keyword-only (def __init__(self, *, ...))")
        elif p.default is p.empty:
            problems.append(f"'{p.name}' has no default")
        elif not _plain_value(p.default):
            problems.append(f"default of '{p.name}' is a {type(p.default).__name__}; use plain "
                            f"values (bool, int, float, str, None or tuples of them) that job "
                            f"ids and records can hold")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{len(params)} keyword-only hyper-parameter(s) with defaults"


def _plain_value(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain_value(v) for v in value)
    return isinstance(value, (bool, int, float, str, type(None)))


def _alternatives(s: _Subject, params: dict[str, Any]) -> dict[str, Any]:
    """For each hyper-parameter, a valid value different from the current one (where guessable)."""
    from xbench.hparams import sample_hparams

    out: dict[str, Any] = {}
    space = s.cls.search_space if isinstance(s.cls.search_space, dict) else {}
    for trial in range(1, 8):
        for key, value in sample_hparams(space, trial, seed=0).items():
            if key in params and key not in out and not _same(value, params[key]):
                out[key] = value
    for key, value in params.items():
        if key in out:
            continue
        if isinstance(value, bool):
            out[key] = not value
        elif isinstance(value, int):
            out[key] = value + 1
        elif isinstance(value, float):
            out[key] = value / 2 if value else 0.5
    return out


@_check
def check_get_params_round_trips(s: _Subject) -> str:
    """cls(**m.get_params()).get_params() == m.get_params(); values kept; unknown keys rejected."""
    method = s.new()
    params = _call("get_params", method.get_params)
    names = s.cls.hparam_names()
    if sorted(params) != sorted(names):
        raise CheckFailed(f"get_params() returns keys {sorted(params)} but __init__ takes "
                          f"{sorted(names)}")
    again = _call("cls(**get_params())", s.cls, **params).get_params()
    if not all(k in again and _same(again[k], v) for k, v in params.items()):
        raise CheckFailed(f"cls(**get_params()).get_params() gave {again}, not {params}")
    alternatives = _alternatives(s, params)
    changed = _call("cls(**other values)", s.cls, **{**params, **alternatives}).get_params()
    ignored = [f"{k} (passed {v!r}, got {changed.get(k)!r})" for k, v in alternatives.items()
               if not _same(changed.get(k), v)]
    if ignored:
        raise CheckFailed(f"__init__ ignores the value passed for {', '.join(ignored)}")
    from_hparams = _call("from_hparams(get_params())", s.cls.from_hparams, params).get_params()
    if not all(_same(from_hparams.get(k), v) for k, v in params.items()):
        raise CheckFailed(f"from_hparams(get_params()) gave {from_hparams}, not {params}")
    bogus = "xbench_check_no_such_hparam"
    try:
        s.cls.from_hparams({**params, bogus: 1})
    except XbenchError as exc:
        if bogus not in str(exc):
            raise CheckFailed(f"from_hparams rejected an unknown key without naming it: {exc}")
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"from_hparams with an unknown key raised {_describe_exception(exc)}, "
                          f"not a ConfigError naming the key") from exc
    else:
        raise CheckFailed(f"from_hparams accepted the unknown hyper-parameter '{bogus}'")
    return f"round-trips {len(params)} hyper-parameter(s); {len(alternatives)} changed and kept"


@_check
def check_search_space_matches_hparams(s: _Subject) -> str:
    """Every search_space key is a hyper-parameter; draws fall inside the declared ranges."""
    from xbench.hparams import sample_hparams

    space = s.cls.search_space
    if not isinstance(space, dict):
        raise CheckFailed(f"search_space must be a dict, got {type(space).__name__}")
    if not space:
        raise CheckSkipped("empty search_space: nothing to sweep")
    defaults = s.cls.default_hparams()
    unknown = sorted(set(space) - set(defaults))
    if unknown:
        raise CheckFailed(f"search_space key(s) {unknown} are not hyper-parameters of __init__ "
                          f"({', '.join(defaults) or 'none'})")
    for key, dist in space.items():
        if not callable(getattr(dist, "sample", None)):
            raise CheckFailed(f"search_space['{key}'] = {dist!r} has no sample(rng) method; use "
                              f"xbench.hparams (LogUniform, Uniform, IntUniform, Choice)")
        low, high = getattr(dist, "low", None), getattr(dist, "high", None)
        if low is not None and high is not None and not low <= high:
            raise CheckFailed(f"search_space['{key}'] = {dist!r}: low > high")
        if type(dist).__name__ == "LogUniform" and low is not None and low <= 0:
            raise CheckFailed(f"search_space['{key}'] = {dist!r}: a log-uniform range needs "
                              f"low > 0")
    draws = 20
    for trial in range(1, draws + 1):
        values = sample_hparams(space, trial, seed=0)
        for key, value in values.items():
            where = f"search_space['{key}'] drew {value!r} (trial {trial})"
            dist, default = space[key], defaults[key]
            low, high = getattr(dist, "low", None), getattr(dist, "high", None)
            if low is not None and high is not None and isinstance(value, (int, float)) and not (
                    low <= value <= high or math.isclose(value, low, rel_tol=1e-9)
                    or math.isclose(value, high, rel_tol=1e-9)):
                raise CheckFailed(f"{where}, outside its range [{low}, {high}]")
            options = getattr(dist, "options", None)
            if options is not None and value not in options:
                raise CheckFailed(f"{where}, not one of its options {options!r}")
            if not _compatible(value, default):
                raise CheckFailed(f"{where}, a {type(value).__name__}, but the default "
                                  f"{default!r} is a {type(default).__name__}")
        method = _call(f"from_hparams(draw {trial})", s.cls.from_hparams, values)
        got = method.get_params()
        if not all(_same(got[k], v) for k, v in values.items()):
            raise CheckFailed(f"from_hparams({values}) gave get_params() {got}")
    return f"{len(space)} key(s), {draws} draws inside their ranges"


def _compatible(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _hidden_modules(value: Any, path: str, depth: int = 0) -> list[str]:
    """Paths of modules or bare parameters inside containers/objects (not module attributes)."""
    if depth > 3:
        return []
    if isinstance(value, nn.Module):
        return [path] if depth > 0 else []
    if isinstance(value, torch.Tensor):
        return [path] if value.requires_grad else []
    items: Iterable[tuple[str, Any]] = ()
    if isinstance(value, dict):
        items = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    out: list[str] = []
    for p, v in items:
        out += _hidden_modules(v, p, depth + 1)
    return out


def _visibility_problems(method: Method) -> list[str]:
    modules = method.modules()
    visible_params = {id(p) for m in modules.values() for p in m.parameters()}
    problems = []
    for attr, value in vars(method).items():
        if isinstance(value, nn.Module):
            continue
        if isinstance(value, torch.Tensor) and value.requires_grad:
            problems.append(f"attribute '{attr}' is a bare trainable tensor outside any "
                            f"nn.Module (parameter counts and state snapshots miss it); "
                            f"keep it in a module")
            continue
        hidden = _hidden_modules(value, attr, 1)
        if hidden:
            problems.append(f"{_names(hidden)} hide module(s) or parameter(s) in a plain "
                            f"container; use nn.ModuleList/ModuleDict/ParameterList so "
                            f"train()/eval() and parameter counts see them")
        if isinstance(value, torch.optim.Optimizer):
            stray = sum(1 for g in value.param_groups for p in g["params"]
                        if id(p) not in visible_params)
            if stray:
                problems.append(f"optimizer '{attr}' steps {stray} parameter(s) that belong to no "
                                f"nn.Module attribute of the method")
    return problems


@_check
def check_modules_are_visible(s: _Subject) -> str:
    """Networks are nn.Module attributes (not hidden in lists/dicts); optimizers step only them."""
    setting = _setting(s.cls)
    method = _fresh(s, setting)
    problems = _visibility_problems(method)
    if not problems:
        _train(method, setting.sampler(s.cls), _steps(s.cls))
        problems = [f"after training, {p}" for p in _visibility_problems(method)]
    if problems:
        raise CheckFailed("; ".join(problems))
    modules = method.modules()
    if not modules:
        raise CheckFailed("setup built no nn.Module attribute; the runner cannot count its "
                          "parameters or switch it to evaluation mode")
    return (f"module attribute(s) {', '.join(modules)}, "
            f"{method.parameter_count()} parameters")


@_check
def check_update_returns_finite_floats(s: _Subject) -> str:
    """update returns a non-empty dict of finite Python floats, at every step."""
    setting = _setting(s.cls)
    method = _fresh(s, setting)
    logs = _train(method, setting.sampler(s.cls), _steps(s.cls))
    for step, entry in enumerate(logs):
        _check_logs(entry, f"step {step}")
    return f"{len(logs)} updates; keys: {', '.join(logs[-1])}"


@_check
def check_update_changes_parameters(s: _Subject) -> str:
    """Training updates parameters and changes the predictions."""
    setting = _setting(s.cls)
    method = _fresh(s, setting)
    x = setting.inputs()
    try:
        with _eval_mode(method):
            before_logits = setting.scores(method, x).clone()
    except CheckFailed:  # a staged method may build its predictor in a later stage
        before_logits = None
    before = _parameters(method)
    if not before and not method.modules():
        raise CheckFailed("has no nn.Module attribute with parameters to train")
    logs = _train(method, setting.sampler(s.cls), _steps(s.cls))
    after = _parameters(method)
    changed = _diff(before, after)
    if not changed:
        raise CheckFailed(f"{len(logs)} updates changed none of its {len(before)} parameter "
                          f"tensors (is the optimizer stepping them?)")
    if before_logits is not None:
        with _eval_mode(method):
            after_logits = setting.scores(method, x)
        if _same(before_logits, after_logits):
            raise CheckFailed(f"{len(logs)} updates changed parameters ({_names(changed, 2)}) "
                              f"but not the predictions ({setting.call})")
    return f"{len(changed)} of {len(after)} parameter tensors changed in {len(logs)} updates"


@_check
def check_training_keeps_hparams(s: _Subject) -> str:
    """setup and update leave get_params() unchanged (schedules live in other attributes)."""
    setting = _setting(s.cls)
    method = s.new()
    before = dict(method.get_params())
    _call("setup", method.setup, setting.info, CPU)
    method.train(True)
    _train(method, setting.sampler(s.cls), _steps(s.cls))
    after = method.get_params()
    changed = [f"{k}: {before[k]!r} -> {after.get(k)!r}" for k in before
               if not _same(before[k], after.get(k))]
    if changed:
        raise CheckFailed(f"training changed hyper-parameter(s) {', '.join(changed)}; records "
                          f"report get_params(), so keep schedules in separate attributes")
    return "get_params() unchanged by setup and update"


@_check
def check_predict_returns_logits(s: _Subject) -> str:
    """predict returns finite float logits of shape (n, num_classes), for n = 1 and n = 7.

    Few-shot: predict_episode returns (queries, ways) logits, for 1 and for all
    queries of an episode.
    """
    method, setting = _trained(s)
    x = setting.inputs()
    with _eval_mode(method):
        for n in (1, min(7, len(x))):
            _check_scores(setting.scores(method, x[:n]), setting, x[:n], f"n={n}")
    if setting.spec is not None:
        return (f"predict_episode: (queries, {setting.num_outputs}) float logits for a "
                f"{setting.spec.ways}-way {setting.spec.shots}-shot episode")
    shape = tuple(x.shape[1:])
    return f"(n, {setting.info.num_classes}) float logits for target inputs of shape {shape}"


@_check
def check_predict_is_pure(s: _Subject) -> str:
    """predict changes no state: parameters, buffers (BN statistics), optimizer, RNGs all equal.

    Few-shot: predict_episode, which adapts to the support set without keeping anything.
    """
    method, setting = _trained(s)
    x = setting.inputs()
    call = setting.call
    with _eval_mode(method):
        before, rng = state_snapshot(method), _rng_state()
        first = setting.scores(method, x)
        changed = _diff(before, state_snapshot(method))
        drawn = _rng_changed(rng, _rng_state())
        second = setting.scores(method, x)
    if changed:
        where = "; adapt to the support set on copies" if setting.spec is not None else ""
        raise CheckFailed(f"{call} (evaluation mode) changed {_names(changed)}{where}")
    if drawn:
        raise CheckFailed(f"{call} drew from the global {'/'.join(drawn)} random generator, so "
                          f"evaluating would change the training that follows")
    if not _same(first, second):
        raise CheckFailed(f"two {call} calls on the same inputs gave different logits")
    return f"{call}: {len(before)} state entries and the global RNGs unchanged"


@_check
def check_predict_is_per_sample(s: _Subject) -> str:
    """A row's logits do not depend on the rest of its batch (no hidden test-time adaptation).

    Few-shot: a query's logits depend on the support set, by design, but not on
    the other queries.
    """
    method, setting = _trained(s)
    x = setting.inputs()
    with _eval_mode(method):
        full = setting.scores(method, x[:8])
        part = setting.scores(method, x[:3])
        single = setting.scores(method, x[5:6])
    gap = max((full[:3] - part).abs().max().item(), (full[5:6] - single).abs().max().item())
    agree = (torch.allclose(full[:3], part, rtol=1e-4, atol=1e-5)
             and torch.allclose(full[5:6], single, rtol=1e-4, atol=1e-5))
    if not agree and setting.spec is not None:
        raise CheckFailed(f"with the same support set, a query's logits change with the other "
                          f"queries (by up to {gap:.3g}); predict_episode must score each query "
                          f"on its own (no statistics of the query set)")
    if not agree:
        raise CheckFailed(f"logits of a row change with the rest of the batch (by up to "
                          f"{gap:.3g}); predict must not use batch statistics; a method that "
                          f"adapts to test batches declares needs 'test_time' and does it in "
                          f"adapt()")
    if setting.spec is not None:
        return (f"with one support set, queries agree across query sets of {len(full)}, 3 and 1 "
                f"(max gap {gap:.1e})")
    return f"rows agree across batch sizes {len(full)}, 3 and 1 (max gap {gap:.1e})"


def _seeded_run(s: _Subject, setting: _Setting, seed: int, data_seed: int = 0
                ) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Train a fresh instance seeded ``seed`` on batches drawn with ``data_seed``; probe logits."""
    method = _fresh(s, setting, seed)
    logs = _train(method, setting.sampler(s.cls, data_seed), _steps(s.cls))
    x = setting.inputs()
    with _eval_mode(method):
        logits = setting.scores(method, x)
        if _needs(s.cls, "test_time") and setting.spec is None:
            _call("adapt", method.adapt, x)
            logits = torch.cat([logits, _predict(method, x)])
    return logs, logits


@_check
def check_same_seed_same_result(s: _Subject) -> str:
    """Two fresh instances with the same seed and batches give bitwise identical logs and logits."""
    setting = _setting(s.cls)
    logs_a, logits_a = _seeded_run(s, setting, seed=0)
    logs_b, logits_b = _seeded_run(s, setting, seed=0)
    if not _same(logits_a, logits_b):
        gap = (logits_a - logits_b).abs().max().item()
        raise CheckFailed(f"two runs with seed 0 gave different logits (by up to {gap:.3g}); "
                          f"draw randomness from torch's global generator (seeded by the runner) "
                          f"or from a generator seeded from it")
    differ = [f"step {i} '{k}'" for i, (a, b) in enumerate(zip(logs_a, logs_b))
              for k in a if not _same(a[k], b.get(k))]
    if differ:
        raise CheckFailed(f"two runs with seed 0 logged different values at {_names(differ)}")
    suffix = (" (adapt included)" if _needs(s.cls, "test_time") and setting.spec is None
              else f" ({setting.call})" if setting.spec is not None else "")
    return f"identical logits after {len(logs_a)} updates{suffix}"


@_check
def check_different_seeds_differ(s: _Subject) -> str:
    """Seeds 0 and 1 on identical batches give different logits (the method does not re-seed)."""
    setting = _setting(s.cls)
    _, logits_a = _seeded_run(s, setting, seed=0)
    _, logits_b = _seeded_run(s, setting, seed=1)
    if _same(logits_a, logits_b):
        raise CheckFailed("seeds 0 and 1 gave bitwise identical logits from identical batches; "
                          "the method re-seeds or ignores the runner's seed (e.g. "
                          "torch.manual_seed in setup), so seeds are not independent replicates")
    return "seeds 0 and 1 give different logits"


def _train_x(setting: _Setting, domain: str) -> torch.Tensor:
    return setting.task.prepare(setting.data[domain]["train"].x)


def _row_index(x: torch.Tensor, pool: torch.Tensor) -> torch.Tensor | None:
    """For each row of ``x``, the index of an equal row of ``pool``; None if a row has none."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long)
    if x.shape[1:] != pool.shape[1:]:
        return None
    equal = (x.flatten(1)[:, None, :] == pool.flatten(1)[None, :, :]).all(dim=2)
    return equal.float().argmax(dim=1) if bool(equal.any(dim=1).all()) else None


def _episodes_and_pairs_given(cls: type, setting: _Setting, batch: Batch) -> list[str]:
    """Check a batch's episode and pairs against the protocol and needs; name what was given.

    A few-shot batch (source minibatches and episodes) holds only rows of the
    source train splits, so never a novel (target) class; pairs are rows
    ``i`` of the first source and target train splits, for the same ``i``.
    """
    protocol, info = setting.protocol, setting.info
    given = []
    if protocol == "fewshot":
        pool = torch.cat([_train_x(setting, d) for d in info.source_domains])
        if any(_row_index(x, pool) is None for x, _ in batch.source):
            raise CheckFailed("protocol fewshot: a source minibatch holds inputs from outside the "
                              "source train splits (novel classes leaked into training)")
    if batch.episode is not None:
        given.append("episodes")
        if not (protocol == "fewshot" and _needs(cls, "episodes")):
            raise CheckFailed(f"protocol {protocol}: training episodes reached a method that did "
                              f"not declare 'episodes'")
        episode = batch.episode
        if _row_index(torch.cat([episode.support_x, episode.query_x]), pool) is None:
            raise CheckFailed("protocol fewshot: a training episode holds inputs from outside "
                              "the source train splits (novel classes leaked into training)")
    elif protocol == "fewshot" and _needs(cls, "episodes"):
        raise CheckFailed("protocol fewshot: declared 'episodes' but got no training episode")
    if batch.pairs is not None:
        given.append("pairs")
        if not (protocol == "paired" and _needs(cls, "pairs")):
            raise CheckFailed(f"protocol {protocol}: index-aligned pairs reached a method that "
                              f"did not declare 'pairs'")
        x_a, x_b = batch.pairs
        rows = _row_index(x_a, _train_x(setting, info.source_domains[0]))
        target = _train_x(setting, info.target_domains[0])
        if rows is None or not _same(x_b, target[rows]):
            raise CheckFailed("protocol paired: batch.pairs are not rows i of the source and "
                              "target train splits for the same i")
    elif protocol == "paired" and _needs(cls, "pairs"):
        raise CheckFailed("protocol paired: declared 'pairs' but got no batch.pairs")
    return given


@_check
def check_gets_only_declared_data(s: _Subject) -> str:
    """Under each protocol it supports, training sees only the data it declared and still works."""
    cls = s.cls
    supported = _protocols(cls)
    if not supported:
        _main_protocol(cls)  # raises the skip with the reason
    notes = []
    for protocol in supported:
        setting = _setting(cls, protocol)
        sampler = _call(f"training_sampler (protocol {protocol!r})", setting.sampler, cls)
        batch = sampler.sample(0)
        uda = protocol == "uda"
        given = []
        if len(batch.source) != setting.info.num_source_domains:
            raise CheckFailed(f"protocol {protocol}: {len(batch.source)} source minibatches for "
                              f"{setting.info.num_source_domains} source domains")
        if batch.target is not None:
            given.append("target")
            if not (uda and _needs(cls, "target_unlabeled")):
                raise CheckFailed(f"protocol {protocol}: unlabeled target data reached a method "
                                  f"that did not declare it")
            if not isinstance(batch.target, torch.Tensor):
                raise CheckFailed(f"protocol {protocol}: batch.target is not a tensor of inputs")
        elif uda and _needs(cls, "target_unlabeled"):
            raise CheckFailed("protocol uda: declared 'target_unlabeled' but got no target batch")
        if batch.target_labeled is not None:
            given.append("target_labeled")
            if not (uda and _needs(cls, "target_labeled") and "oracle" in cls.tags):
                raise CheckFailed(f"protocol {protocol}: target labels reached a method that did "
                                  f"not declare them as an oracle")
        given += _episodes_and_pairs_given(cls, setting, batch)
        method = _fresh(s, setting)
        what = ", ".join(["source"] + given)
        try:
            logs = _train(method, sampler, _steps(cls))
            for step, entry in enumerate(logs):
                _check_logs(entry, f"step {step}")
        except CheckFailed as exc:
            raise CheckFailed(f"protocol {protocol}, given only {what} (its needs: "
                              f"{', '.join(sorted(cls.needs)) or 'none'}): {exc}") from exc
        notes.append(f"{protocol}: {what}")
    skipped = [p for p in cls.protocols if p not in supported]
    if skipped:
        notes.append(f"not posed here: {', '.join(skipped)}")
    return "; ".join(notes)


def _other_target(batch: Batch) -> Batch:
    if batch.target is None:  # a stage that does not read it
        return batch
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(batch.target.shape, generator=generator) * 3.0 + 2.0
    return dataclasses.replace(batch, target=x.to(batch.target.device, batch.target.dtype))


def _other_pairs(batch: Batch) -> Batch:
    if batch.pairs is None:
        return batch
    x_a, x_b = batch.pairs
    generator = torch.Generator().manual_seed(1234)
    other = torch.randn(x_b.shape, generator=generator) * 3.0 + 2.0
    return dataclasses.replace(batch, pairs=(x_a, other.to(x_b.device, x_b.dtype)))


def _other_labels(num_classes: int) -> Callable[[Batch], Batch]:
    def transform(batch: Batch) -> Batch:
        if batch.target_labeled is None:
            return batch
        x, y = batch.target_labeled
        return dataclasses.replace(batch, target_labeled=(x, (y + 1) % num_classes))
    return transform


@_check
def check_uses_declared_data(s: _Subject) -> str:
    """Target data it declares changes what it learns (it does not just pass it through)."""
    cls = s.cls
    declared = sorted(cls.needs & {"target_unlabeled", "target_labeled", "pairs"})
    if not declared:
        needs = ", ".join(sorted(cls.needs)) or "-"
        raise CheckSkipped(f"declares no target data (needs: {needs})")
    notes = []
    for need in declared:
        protocol = "paired" if need == "pairs" else "uda"
        if protocol not in cls.protocols:
            raise CheckFailed(f"declares '{need}' but does not support protocol '{protocol}', "
                              f"the only one that hands it out")
        setting = _setting(cls, protocol)
        transform = {"target_unlabeled": _other_target, "pairs": _other_pairs,
                     "target_labeled": _other_labels(setting.info.num_classes)}[need]
        field = {"target_unlabeled": "batch.target", "pairs": "target side of batch.pairs",
                 "target_labeled": "the labels of batch.target_labeled"}[need]
        real = _fresh(s, setting)
        other = _fresh(s, setting)
        steps = _steps(cls)
        _train(real, setting.sampler(cls), steps)
        _train(other, setting.sampler(cls), steps, transform=transform)
        if not _diff(_parameters(real), _parameters(other)):
            raise CheckFailed(f"declares '{need}' but {steps} updates with a different {field} "
                              f"leave its parameters bitwise identical: it does not learn from it")
        notes.append(f"parameters depend on {field}")
    return "; ".join(notes)


@_check
def check_single_source_domain(s: _Subject) -> str:
    """Trains and predicts with one source domain, or declares min_source_domains >= 2."""
    cls = s.cls
    protocol = _main_protocol(cls)
    msd = _min_sources(cls, protocol)
    if msd >= 2:
        raise CheckSkipped(f"declares min_source_domains = {msd} under {protocol}; not run with "
                           f"one source domain")
    setting = _setting(cls, protocol, n_sources=1)
    hint = "; if it needs several source domains, declare min_source_domains = 2"
    try:
        method = _fresh(s, setting)
        logs = _train(method, setting.sampler(cls), _steps(cls))
        for step, entry in enumerate(logs):
            _check_logs(entry, f"step {step}")
        x = setting.inputs()
        with _eval_mode(method):
            _check_scores(setting.scores(method, x), setting, x, setting.call)
    except CheckFailed as exc:
        raise CheckFailed(f"with one source domain: {exc}{hint}") from exc
    return (f"{len(logs)} updates and {setting.call} with source domain "
            f"{setting.info.source_domains[0]}")


#: Tags of rows that are ERM by design (reference rows such as ``kd_scratch``): exempt from
#: ``not_erm_on_one_source`` when the class is registered with them itself (a subclass does
#: not inherit ERM's exemption).
ERM_VARIANT_TAGS = frozenset({"baseline"})


@_check
def check_not_erm_on_one_source(s: _Subject) -> str:
    """On one source domain under dg, a method declaring min_source_domains = 1 is not plain ERM.

    From the same seed and batches, after a few updates its predictions must
    differ from ERM's (ERM built with the method's lr and weight decay where it
    has them): a penalty across source domains that is zero on one domain
    leaves ERM, and such a method declares ``min_source_domains = 2`` so it is
    not run (and ranked) where it cannot apply. ERM and reference rows tagged
    ``baseline`` are exempt.
    """
    from xbench.methods.erm import ERM

    cls = s.cls
    if "dg" not in cls.protocols:
        raise CheckSkipped(f"does not support dg (protocols: {', '.join(cls.protocols)})")
    own_tags = set(cls.__dict__.get("tags", ()))
    if cls is ERM or ERM_VARIANT_TAGS & own_tags:
        raise CheckSkipped(f"ERM or a reference row (tags {', '.join(sorted(own_tags))}): "
                           f"ERM by design")
    need = _min_sources(cls, "dg")
    if need >= 2:
        raise CheckSkipped(f"declares min_source_domains = {need} under dg; not run with one "
                           f"source domain")
    setting = _setting(cls, "dg", n_sources=1)
    shared = {k: v for k, v in s.new().get_params().items() if k in ERM.default_hparams()}
    erm = _Subject(ERM, "erm", shared)
    logs, logits = _seeded_run(s, setting, seed=0)
    erm_logs, erm_logits = _seeded_run(erm, setting, seed=0)
    if _same(logits, erm_logits):
        raise CheckFailed(f"with one source domain its {setting.call} logits after {len(logs)} "
                          f"updates are bitwise ERM's from the same seed and batches: its "
                          f"learning rule reduces to ERM there; declare min_source_domains = 2 "
                          f"(or {{'dg': 2}}) so the planner does not run it where it cannot apply")
    return f"predictions differ from ERM's after {len(logs)} updates on one source domain"


@_check
def check_works_on_images(s: _Subject) -> str:
    """Trains and predicts on image inputs (1x8x8) as well as on flat vectors."""
    setting = _setting(s.cls, images=True)
    try:
        method = _fresh(s, setting)
        logs = _train(method, setting.sampler(s.cls), _steps(s.cls))
        for step, entry in enumerate(logs):
            _check_logs(entry, f"step {step}")
        x = setting.inputs()
        with _eval_mode(method):
            if _needs(s.cls, "test_time") and setting.spec is None:
                _call("adapt", method.adapt, x)
            _check_scores(setting.scores(method, x), setting, x, setting.call)
    except CheckFailed as exc:
        raise CheckFailed(f"on image inputs {setting.info.input_shape}: {exc}") from exc
    return f"input shape {setting.info.input_shape}: {len(logs)} updates and {setting.call}"


@_check
def check_stages_are_exercised(s: _Subject) -> str:
    """Staged methods: stage_steps gives each stage a budget; each stage's update runs and learns."""
    cls = s.cls
    default_schedule = (cls.stage_steps is Method.stage_steps
                        and cls.begin_stage is Method.begin_stage)
    if tuple(cls.stages) == ("train",) and default_schedule:
        raise CheckSkipped("one stage ('train') with the default schedule; its update is "
                           "covered by update_returns_finite_floats")
    setting = _setting(cls)
    method = _fresh(s, setting)
    for steps in (1, len(cls.stages), 7, 300):
        schedule = _call(f"stage_steps({steps})", method.stage_steps, steps)
        if not isinstance(schedule, dict) or set(schedule) != set(cls.stages):
            raise CheckFailed(f"stage_steps({steps}) returned {schedule!r}; expected one entry "
                              f"per stage {tuple(cls.stages)}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in schedule.values()) \
                or sum(schedule.values()) < 1:
            raise CheckFailed(f"stage_steps({steps}) returned {schedule}; each stage needs a "
                              f"non-negative integer number of steps, and some stage at least one")
    sampler = setting.sampler(cls)
    step = 0
    for stage in cls.stages:
        _call(f"begin_stage({stage!r})", method.begin_stage, stage)
        before = _learned_state(method)
        changed: list[str] = []
        for _ in range(STEPS):
            batch = sampler.sample(step, stage)
            logs = _call(f"update (stage {stage!r}, step {step})", method.update, batch)
            _check_logs(logs, f"stage {stage!r}, step {step}")
            step += 1
            changed = _diff(before, _learned_state(method))
            if changed:
                break
        if not changed:
            raise CheckFailed(f"{STEPS} updates in stage '{stage}' changed none of its parameters "
                              f"(or tensors it keeps outside its modules)")
    x = setting.inputs()
    with _eval_mode(method):
        _check_scores(setting.scores(method, x), setting, x, "after the last stage")
    return f"stages {', '.join(cls.stages)} each update and change parameters"


def _test_time_only(s: _Subject) -> None:
    if not _needs(s.cls, "test_time"):
        raise CheckSkipped("no 'test_time' need: adapt() is never called")
    if _main_protocol(s.cls) == "fewshot":
        raise CheckSkipped("under fewshot the runner scores predict_episode and never calls "
                           "adapt()")


@_check
def check_adapt_then_predict_is_pure(s: _Subject) -> str:
    """Test-time methods: adapt(x) may change state (even for one sample); predict after it not."""
    _test_time_only(s)
    method, setting = _trained(s)
    x = setting.probe()
    with _eval_mode(method):
        returned = _call("adapt", method.adapt, x)
        if returned is not None:
            raise CheckFailed(f"adapt returned {type(returned).__name__}; it returns None (the "
                              f"runner calls predict for the logits)")
        before, rng = state_snapshot(method), _rng_state()
        first = _predict(method, x)
        changed = _diff(before, state_snapshot(method))
        drawn = _rng_changed(rng, _rng_state())
        second = _predict(method, x)
        if changed:
            raise CheckFailed(f"predict after adapt changed {_names(changed)}; adaptation "
                              f"belongs in adapt()")
        if drawn:
            raise CheckFailed(f"predict after adapt drew from the global {'/'.join(drawn)} "
                              f"generator")
        if not _same(first, second):
            raise CheckFailed("two predict calls after adapt gave different logits")
        _check_logits(first, len(x), setting.info.num_classes, x, "after adapt")
        _call("adapt on a single sample", method.adapt, x[:1])
        _check_logits(_predict(method, x[:1]), 1, setting.info.num_classes, x,
                      "after adapt on a single sample (the runner's latency pass)")
    return "predict after adapt changes nothing; adapt handles a single sample"


@_check
def check_adapt_changes_predictions(s: _Subject) -> str:
    """Test-time methods: adapt on a shifted target batch changes the predictions."""
    _test_time_only(s)
    method, setting = _trained(s)
    x = setting.probe()
    with _eval_mode(method):
        before = _predict(method, x)
        _call("adapt", method.adapt, x)
        after = _predict(method, x)
    if _same(before, after):
        raise CheckFailed("adapt(x) left the predictions on x bitwise unchanged: it declares "
                          "'test_time' (and its records say transductive) but does not adapt")
    return f"logits moved by up to {(after - before).abs().max().item():.3g}"


@_check
def check_evaluation_restores_adapted_state(s: _Subject) -> str:
    """Test-time methods: evaluation passes restore the trained state and repeat exactly."""
    _test_time_only(s)
    from xbench.harness.evaluation import evaluation_mode, predict_all

    method, setting = _trained(s)
    split = setting.data[setting.info.target_domains[0]]["test"]
    before = state_snapshot(method)
    passes = []
    for _ in range(2):
        with evaluation_mode(method):
            passes.append(_call("an evaluation pass", predict_all, method, split.x, 5,
                                setting.task.prepare))
    # Gradients are transient (every update recomputes them) and the runner's deep copy of
    # the instance does not carry them (nn.Parameter.__deepcopy__ drops .grad): not compared.
    changed = [k for k in _diff(before, state_snapshot(method)) if not k.endswith(".grad")]
    if changed:
        raise CheckFailed(f"after evaluation passes the trained state differs at "
                          f"{_names(changed)}; keep adapted state in instance attributes "
                          f"(the runner restores those)")
    if not _same(passes[0], passes[1]):
        raise CheckFailed("two evaluation passes gave different logits: adaptation leaked from "
                          "one pass into the next (state kept outside the instance?)")
    return "trained state restored; two passes give identical logits"


@contextlib.contextmanager
def _registered(s: _Subject, task: type[CheckBlobs] = CheckBlobs) -> Iterator[str]:
    """The subject's registered name; an unregistered class (and the check task ``task``) is
    registered for the duration and unregistered afterwards, its class attributes restored."""
    from xbench.registry import METHODS, TASKS

    task_name = task.registered_name
    added_task = task_name not in TASKS
    if added_task:
        TASKS.register(task_name, task, origin="xbench.testing")
    name = _registered_name(s.cls)
    temporary = name is None
    saved = {k: s.cls.__dict__[k] for k in ("registered_name", "tags") if k in s.cls.__dict__}
    try:
        if temporary:
            name = f"xbench_check_{s.cls.__name__.lower()}"
            METHODS.register(name, s.cls, tags=s.cls.tags)
        yield name
    finally:
        if temporary:
            METHODS.unregister(name)
            for key in ("registered_name", "tags"):
                if key in saved:
                    setattr(s.cls, key, saved[key])
                elif key in s.cls.__dict__:
                    delattr(s.cls, key)
        if added_task:
            TASKS.unregister(task_name)


_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def _traceback_location(text: str) -> str:
    """`` (at file.py:12 in func)``: the innermost frame of a traceback text outside torch."""
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    frames = [m for m in map(_FRAME.search, text.splitlines()) if m]
    for m in reversed(frames):
        if not os.path.abspath(m["path"]).startswith(torch_dir):
            return f" (at {os.path.basename(m['path'])}:{m['line']} in {m['func']})"
    return ""


@_check
def check_run_job_is_ok(s: _Subject) -> str:
    """A full tiny job through the runner (train, evaluate, time, record) ends with status ok."""
    from xbench.harness.plan import Job
    from xbench.harness.runner import run_job

    protocol = _main_protocol(s.cls)
    task = _task(s.cls, protocol)
    hparams = s.new().get_params()
    episodes = dataclasses.asdict(EPISODES) if protocol == "fewshot" else None
    stream = dataclasses.asdict(Stream(batch_size=5)) if protocol == "tta" else None
    with _registered(s, type(task)) as name:
        job = Job(suite="xbench-check", task=task.registered_name, task_version=task.version,
                  task_options=task.options(), target=task.default_target, protocol=protocol,
                  method=name, hparams=hparams, seed=0, budget=dataclasses.asdict(task.budget),
                  episodes=episodes, stream=stream)
        record = run_job(job, CPU)
    if record["status"] != "ok":
        raise CheckFailed(f"run_job ended {record['status']}: {record['error']}"
                          f"{_traceback_location(record.get('traceback') or '')}")
    acc = record["metrics"].get("acc_target")
    if not isinstance(acc, float) or not 0.0 <= acc <= 1.0:
        raise CheckFailed(f"run_job recorded acc_target {acc!r}")
    return (f"status ok under {protocol}: acc_target {acc:.2f} after {task.budget.steps} steps, "
            f"{record['cost'].get('params')} params")


class CanaryBlobs(CheckBlobs):
    """``CheckBlobs`` whose target test labels are ``true``, ``permuted`` or ``replaced``
    (each label moved to the next class): the leak canary's task."""

    registered_name = "xbench_check_canary"

    def __init__(self, *, data_seed: int = 0, n_domains: int = 4, images: bool = False,
                 n_per_split: int = 30, labels: str = "true"):
        super().__init__(data_seed=data_seed, n_domains=n_domains, images=images,
                         n_per_split=n_per_split)
        self.labels = labels

    def build(self) -> dict[str, dict[str, Split]]:
        data = super().build()
        target = self.default_target[0]
        x, y = data[target]["test"]
        if self.labels == "permuted":
            y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
        elif self.labels == "replaced":
            y = (y + 1) % self.num_classes
        data[target]["test"] = Split(x, y)
        return data


def _canary_run(s: _Subject, protocol: str, labels: str) -> dict[str, Any]:
    from xbench.harness.plan import Job
    from xbench.harness.runner import run_job

    task = CanaryBlobs(n_domains=_n_domains(s.cls, protocol), labels=labels)
    with _registered(s, CanaryBlobs) as name:
        job = Job(suite="xbench-check", task=task.registered_name, task_version=task.version,
                  task_options=task.options(), target=task.default_target, protocol=protocol,
                  method=name, hparams=s.new().get_params(), seed=0,
                  budget=dataclasses.asdict(task.budget))
        record = run_job(job, CPU)
    if record["status"] != "ok":
        raise CheckSkipped(f"run_job ended {record['status']} ({record['error']}); see "
                           f"run_job_is_ok")
    return record


def _without_target_test(record: dict[str, Any], target: str) -> list[Any]:
    """Everything the history holds except the target test accuracy (which must change)."""
    out = []
    for point in record["metrics"]["history"]:
        acc = {d: {k: v for k, v in splits.items() if not (d == target and k == "test")}
               for d, splits in point["acc"].items()}
        out.append((point["step"], point["logs"], acc, point.get("label_free")))
    return out


@_check
def check_target_labels_never_reach_the_method(s: _Subject) -> str:
    """Leak canary: with the target test labels permuted or replaced, neither training nor the
    predictions change (the target accuracy must not follow the labels)."""
    protocol = _main_protocol(s.cls)
    if protocol not in ("dg", "uda"):
        raise CheckSkipped(f"the canary runs under dg and uda; this method's first protocol is "
                           f"{protocol}")
    task = CanaryBlobs(n_domains=_n_domains(s.cls, protocol))
    target = task.default_target[0]
    y = task.build()[target]["test"].y
    permuted = CanaryBlobs(n_domains=task.n_domains, labels="permuted").build()[target]["test"].y
    agree = float((y == permuted).float().mean())
    runs = {labels: _canary_run(s, protocol, labels) for labels in ("true", "permuted",
                                                                      "replaced")}
    accs = {labels: [p["acc"][target]["test"] for p in r["metrics"]["history"]]
            for labels, r in runs.items()}
    reproducible = True
    reference = _without_target_test(runs["true"], target)
    for labels in ("permuted", "replaced"):
        if _without_target_test(runs[labels], target) != reference:
            again = _canary_run(s, protocol, "true")
            if _without_target_test(again, target) != reference:
                reproducible = False
                break
            raise CheckFailed(f"training or model selection changed when only the target test "
                              f"labels were {labels}; they must never reach the method")
    tolerance = 1e-4
    for i, (true, perm, repl) in enumerate(zip(accs["true"], accs["permuted"],
                                               accs["replaced"])):
        # The same predictions can match the true labels and the replaced ones (every label
        # moved to another class) on at most 100% of the samples together.
        if true + repl > 1.0 + tolerance or true + perm > 1.0 + agree + tolerance:
            raise CheckFailed(
                f"the target accuracy follows the target test labels: {true:.2f} with the true "
                f"labels, {perm:.2f} with them permuted and {repl:.2f} with every one replaced "
                f"(at most {1 - true:.2f} and {1 + agree - true:.2f} if the predictions ignored "
                f"them); the method reads the target test labels (through the runner's frames "
                f"or data, or by rebuilding the task)")
    if not reproducible:
        return "training is not reproducible, so only the accuracy bound was checked: it holds"
    return (f"target accuracy {accs['true'][-1]:.2f} with the true labels, "
            f"{accs['permuted'][-1]:.2f} permuted, {accs['replaced'][-1]:.2f} replaced; training "
            f"unchanged")


__doc__ += "\nThe checks, in the order they run\n---------------------------------\n" + "".join(
    f"* ``{check.name}``: {check.summary}\n" for check in CHECKS)
