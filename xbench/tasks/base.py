"""The task contract: domains, which are source and target, protocol, budget.

A task builds its data once, deterministically from its version and its own
``data_seed`` (never the method), as CPU tensors per domain and split. The
planner sets ``data_seed`` to the job's seed unless the suite pins it, so
seeds replicate the split as well as training (DomainBed's trial seed). The
runner moves the data to the device and decides who sees what.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
from typing import Any, NamedTuple

import torch

from xbench.errors import ConfigError

#: Kinds of transfer a task can pose.
KINDS = ("cross_domain", "cross_task", "cross_modality")

#: Protocols: ``dg`` (no target data in training), ``uda`` (unlabeled target
#: train split in training), ``tta`` (trained as ``dg``, then adapts on unlabeled
#: target *test* batches while predicting; see ``Stream``), ``fewshot`` (episodes
#: on classes disjoint from the training classes), ``paired`` (index-aligned pairs
#: across two domains or modalities; see ``Task.paired``).
PROTOCOLS = ("dg", "uda", "tta", "fewshot", "paired")

#: How a ``tta`` stream adapts: ``reset`` restores the trained state before each
#: batch (episodic), ``continual`` adapts over the whole stream in order.
STREAM_MODES = ("reset", "continual")

#: Split names every domain provides.
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a job may train: steps, per-domain batch size and evaluation schedule."""

    steps: int = 300
    batch_size: int = 32
    eval_every: int = 100
    eval_batch_size: int = 512

    def replace(self, **changes: Any) -> "Budget":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown budget key(s) {sorted(unknown)}; "
                              f"use steps, batch_size, eval_every or eval_batch_size")
        new = dataclasses.replace(self, **changes)
        for field in dataclasses.fields(new):
            value = getattr(new, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"budget key '{field.name}' must be a positive integer, "
                                  f"got {value!r}")
        return new


@dataclasses.dataclass(frozen=True)
class Stream:
    """The ``tta`` protocol's adaptation stream: unlabeled batches of ``batch_size``, in order.

    ``mode`` is ``reset`` (the trained state is restored before each batch:
    episodic adaptation) or ``continual`` (adaptation carries over the whole
    stream; the trained state is restored after each evaluation pass). The
    batch size is the adaptation's, not the evaluation chunk size
    (``Budget.eval_batch_size``).
    """

    batch_size: int = 64
    mode: str = "reset"

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str = "[tta]") -> "Stream":
        """Validate suite keys (``batch_size``, ``mode``) into a stream."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}'; use batch_size or mode")
        size = options.get("batch_size", cls.batch_size)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"{where} batch_size must be a positive integer, got {size!r}")
        mode = options.get("mode", cls.mode)
        if mode not in STREAM_MODES:
            raise ConfigError(f"{where} mode must be one of {', '.join(STREAM_MODES)}, "
                              f"got {mode!r}")
        return cls(batch_size=size, mode=mode)


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """The few-shot protocol: N ``ways``, K ``shots``, ``queries`` per class, episode counts."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    test_episodes: int = 600
    val_episodes: int = 100

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "EpisodeSpec":
        """Validate suite keys (positive integers) into a spec."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown few-shot key(s) {sorted(unknown)}; use ways, shots, "
                              f"queries, test_episodes or val_episodes")
        for key, value in options.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"few-shot key '{key}' must be a positive integer, "
                                  f"got {value!r}")
        return cls(**options)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a method may know about the task it is set up for (no data)."""

    name: str
    kind: str
    protocol: str
    input_shape: tuple[int, ...]
    num_classes: int
    source_domains: tuple[str, ...]
    target_domains: tuple[str, ...]
    steps: int
    batch_size: int
    input_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    paired: bool = False
    #: Keyword arguments for ``xbench.networks.featurizer`` the task asks for (e.g. ``arch``,
    #: ``weights``); empty: the default network for ``input_shape``.
    backbone: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_source_domains(self) -> int:
        return len(self.source_domains)


def task_protocols(task: "Task | type[Task]") -> tuple[str, ...]:
    """The protocols a task poses: its declared ``protocols``, plus ``tta`` wherever it poses
    ``dg`` (test-time adaptation trains exactly as ``dg`` and adapts on the target test split)."""
    protocols = tuple(task.protocols)
    if "dg" in protocols and "tta" not in protocols:
        i = protocols.index("dg") + 1
        protocols = protocols[:i] + ("tta",) + protocols[i:]
    return protocols


class Split(NamedTuple):
    """Inputs and integer labels of one split of one domain."""

    x: torch.Tensor
    y: torch.Tensor


class Task(abc.ABC):
    """A domain-shift task. Subclasses set the class attributes and implement ``build``.

    ``__init__`` takes keyword options only (``data_seed`` and task-specific
    ones such as ``resolution``); ``options()`` returns them resolved, and they
    are part of every job's identity.
    """

    registered_name: str = ""
    #: The data's version: the newest by default; a suite option ``version`` picks one of
    #: ``old_versions`` so old records can be rerun and compared (the version is part of
    #: every job's identity and comparability key, never of ``options()``).
    version: str = "1"
    old_versions: tuple[str, ...] = ()
    kind: str = "cross_domain"
    protocols: tuple[str, ...] = ("dg",)
    num_classes: int = 0
    budget: Budget = Budget()
    #: True when every domain's splits are index-aligned: row i of each domain's
    #: ``train`` split is the same underlying instance (cross-modality pairs).
    paired: bool = False

    def __init__(self, *, data_seed: int = 0):
        self.data_seed = data_seed

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Task":
        """Build the task from suite options, naming any unknown option.

        ``version`` (optional) is set on the instance before ``__init__`` runs, so
        defaults that changed between versions can read ``self.version``.
        """
        options = dict(options)
        version = options.pop("version", cls.version)
        known = (cls.version, *cls.old_versions)
        if not isinstance(version, str) or version not in known:
            raise ConfigError(f"task '{cls.registered_name}' has no version {version!r}; "
                              f"it has: {', '.join(known)}")
        allowed = option_names(cls)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"task '{cls.registered_name}' has no option(s) {unknown}; "
                              f"it takes: {', '.join(allowed) or '(none)'}")
        defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
        for key, value in options.items():
            check_option(cls.registered_name, key, value, defaults.get(key))
        task = cls.__new__(cls)
        task.version = version
        try:
            task.__init__(**options)
            return task
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"task '{cls.registered_name}': bad option value ({exc}); check "
                              f"its options: {', '.join(allowed)}") from None

    #: Options that say where the data lives rather than what it is (a data folder, a
    #: cache folder): kept out of a job's identity, so one experiment has one ``job_id``
    #: on every machine.
    location_options: tuple[str, ...] = ()

    def fingerprint(self) -> str | None:
        """A fingerprint of the data's content when it is read from outside (a data
        folder), else ``None``: part of the job's identity in place of the
        ``location_options``, so moved data keeps its ids and changed data gets new ones."""
        return None

    def options(self) -> dict[str, Any]:
        """The resolved options this task was built with."""
        return {name: _plain(getattr(self, name)) for name in option_names(type(self))}

    @property
    @abc.abstractmethod
    def domains(self) -> tuple[str, ...]:
        """All domain names, in a fixed order."""

    @property
    @abc.abstractmethod
    def default_target(self) -> tuple[str, ...]:
        """Target domain(s) used when a suite does not say."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Input shape per domain (differs across modalities); default: ``input_shape``."""
        return {d: tuple(self.input_shape) for d in self.domains}

    @abc.abstractmethod
    def build(self) -> dict[str, dict[str, Split]]:
        """Generate the data: ``{domain: {"train"|"val"|"test": Split}}`` on the CPU.

        ``x`` may be float (used as is) or uint8 (kept compact in memory;
        ``prepare`` turns each batch into floats).
        """

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Turn stored inputs into what a network consumes: uint8 -> float in [0, 1]."""
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x

    #: Why the default target's test split cannot grow, where a real embedded pool caps it
    #: (e.g. "scikit-learn's 1,797 real digits"); empty where a generator can grow it.
    target_test_cap: str = ""

    def target_test_size(self) -> int | None:
        """Test items in the default target's test split, known without building the data
        (``xbench list tasks`` prints it); None where it is not known in advance."""
        return None

    def backbone(self) -> dict[str, Any]:
        """Featurizer keyword arguments this task asks for (``TaskInfo.backbone``); default none."""
        return {}

    def info(self, target: tuple[str, ...], protocol: str, budget: Budget,
             holdout: tuple[str, ...] = ()) -> TaskInfo:
        """The ``TaskInfo`` handed to a method for this target and protocol.

        ``holdout`` source domains (leave-one-domain-out runs) are neither
        source nor target: they are only evaluated.
        """
        return TaskInfo(
            name=self.registered_name, kind=self.kind, protocol=protocol,
            input_shape=tuple(self.input_shape), num_classes=self.num_classes,
            source_domains=tuple(d for d in self.domains if d not in target and d not in holdout),
            target_domains=tuple(target), steps=budget.steps, batch_size=budget.batch_size,
            input_shapes=dict(self.input_shapes), paired=self.paired,
            backbone=dict(self.backbone()))

    def check_target(self, target: tuple[str, ...]) -> None:
        """Raise a ``ConfigError`` unless ``target`` names known domains and leaves a source."""
        for name in target:
            if name not in self.domains:
                raise ConfigError(f"task '{self.registered_name}' has no domain '{name}'; "
                                  f"its domains are: {', '.join(self.domains)}")
        if len(set(target)) >= len(self.domains):
            raise ConfigError(f"task '{self.registered_name}': target {list(target)} leaves "
                              f"no source domain to train on")


def known_names(task: str, what: str, names: Any, allowed: Any) -> tuple[str, ...]:
    """``names`` as a tuple of strings, each one of ``allowed``; else a one-line ConfigError
    naming the task, the unknown name and the choices."""
    names = tuple(str(n) for n in names)
    for name in names:
        if name not in allowed:
            raise ConfigError(f"{task}: unknown {what} '{name}'; choose from "
                              f"{', '.join(allowed)}")
    return names


#: Largest image side a task option ``resolution`` may ask for.
MAX_RESOLUTION = 2048


def check_option(task: str, key: str, value: Any, default: Any) -> None:
    """A one-line ``ConfigError`` naming ``key`` unless ``value`` fits its default's type:
    booleans, integers (>= 1 when the default is positive, else >= 0), finite numbers
    (>= 0 when the default is), strings, and lists of such; ``resolution`` at most
    :data:`MAX_RESOLUTION`. Options defaulting to None are the task's to check."""
    what = f"task '{task}': option '{key}'"
    if default is None or default is inspect.Parameter.empty:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{what} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{what} must be an integer, got {value!r}")
        if default > 0 and value < 1:
            raise ConfigError(f"{what} must be a positive integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{what} must be 0 or more, got {value!r}")
        if key == "resolution" and value > MAX_RESOLUTION:
            raise ConfigError(f"{what} {value} is too large (at most {MAX_RESOLUTION} pixels)")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise ConfigError(f"{what} must be a finite number, got {value!r}")
        if default >= 0 and value < 0:
            raise ConfigError(f"{what} must be 0 or more, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string, got {value!r}")
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{what} must be a list, got {value!r}")
        kinds = {type(d) for d in default}
        for item in value if kinds else ():  # an empty default says nothing about items
            if kinds <= {int} and (isinstance(item, bool) or not isinstance(item, int)) or \
                    kinds <= {float, int} and float in kinds and (
                        isinstance(item, bool) or not isinstance(item, (int, float))
                        or not math.isfinite(item)) or \
                    kinds == {str} and not isinstance(item, (str, int)):
                kind = "/".join(sorted(k.__name__ for k in kinds))
                raise ConfigError(f"{what} must be a list of {kind}, got item {item!r}")


def option_names(cls: type) -> list[str]:
    """Keyword option names of a task class's ``__init__``."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def split_indices(n: int, fractions: tuple[float, float, float],
                  generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Shuffle ``range(n)`` with ``generator`` and cut it into train/val/test parts."""
    order = torch.randperm(n, generator=generator)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def split_sizes(n: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
                ) -> tuple[int, int, int]:
    """The train/val/test sizes ``split_indices`` cuts ``n`` items into."""
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return n_train, n_val, n - n_train - n_val
