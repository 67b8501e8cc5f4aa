"""The method contract: a method owns only its learning rule.

The runner owns seeding, the device, data sampling, timing, evaluation and
storage. A method:

* stores its keyword hyper-parameters in ``__init__`` and nothing else
  (defaults are declared there; ``search_space`` declares sweep ranges);
* builds networks and optimizers in ``setup(info, device)``;
* performs one step in ``update(batch) -> dict[str, float]`` on per-domain
  minibatches that are already on the device;
* returns logits from ``predict(x)`` without changing any state.

It declares the ``protocols`` it supports and the extra data it ``needs``;
the runner gives it nothing more. Training may be staged (``stages``): each
stage gets its own step budget (``stage_steps``: by default the job's full
``steps`` for every stage; a suite may set it per stage), the runner calls
``begin_stage`` before each, gives a stage only the data it reads
(``stage_needs``) and times each stage on its own. After a stage, the runner freezes the
modules named in ``frozen_after[stage]`` (eval mode, no gradients) and fails
the job if they change afterwards: a distilled teacher stays a teacher.

Optional hooks, used only when a method declares the matching protocol or need:

* ``predict_episode(support_x, support_y, query_x) -> logits`` for the
  ``fewshot`` protocol: adapt to a labeled support set (classes ``0..ways-1``)
  and score the queries, without changing the method's state;
* ``adapt(x)`` for ``needs = {"test_time"}`` (protocol ``tta``);
* ``references() -> {name: predict_fn}``: extra predictors the runner scores
  too (a distillation teacher, say), reported beside the method's own result.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from xbench.errors import ConfigError
from xbench.tasks.base import TaskInfo

#: Extra data a method can declare in ``needs``; the runner gives nothing undeclared.
#:
#: * ``target_unlabeled``: inputs of the target domains' train split, no labels
#:   (only under the ``uda`` protocol) -> ``Batch.target``.
#: * ``target_labeled``: the target train split *with* labels, for oracle rows
#:   only (methods tagged ``oracle``, ``uda`` protocol) -> ``Batch.target_labeled``.
#: * ``test_time``: unlabeled evaluation batches at prediction time (only under
#:   the ``tta`` protocol, which such a method declares alone); the runner calls
#:   ``adapt(x)`` before ``predict(x)`` on each batch of the adaptation stream
#:   and restores the trained state before each batch (``reset``) or after the
#:   whole pass (``continual``).
#: * ``episodes``: N-way K-shot training episodes from the source classes
#:   (``fewshot`` protocol) -> ``Batch.episode``.
#: * ``pairs``: unlabeled index-aligned pairs from a paired task's source and
#:   target train splits (``paired`` protocol) -> ``Batch.pairs``.
NEEDS = ("target_unlabeled", "target_labeled", "test_time", "episodes", "pairs")


@dataclasses.dataclass
class Episode:
    """A few-shot episode: labeled support set and query set, classes ``0..ways-1``."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def ways(self) -> int:
        return int(self.support_y.max().item()) + 1


#: The data fields of a ``Batch`` (each counted by ``Batch.size`` when set).
BATCH_DATA = ("source", "target", "target_labeled", "episode", "pairs")


@dataclasses.dataclass
class Batch:
    """One training step's data, already on the device.

    ``source`` holds one ``(x, y)`` pair per source domain, in the order of
    ``TaskInfo.source_domains``. ``target`` is set only for methods that need
    unlabeled target data and only under a protocol that allows it.

    The batch notes which data fields are read (``read_size``), so that
    throughput counts only the samples an update actually uses.
    """

    source: list[tuple[torch.Tensor, torch.Tensor]]
    target: torch.Tensor | None = None
    target_labeled: tuple[torch.Tensor, torch.Tensor] | None = None
    episode: Episode | None = None
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    stage: str = "train"
    step: int = 0
    _read: set = dataclasses.field(default_factory=set, init=False, repr=False, compare=False)

    def __getattribute__(self, name: str) -> Any:
        if name in BATCH_DATA:
            object.__getattribute__(self, "_read").add(name)
        return object.__getattribute__(self, name)

    def _count(self, name: str) -> int:
        value = object.__getattribute__(self, name)
        if value is None:
            return 0
        if name == "source":
            return sum(len(y) for _, y in value)
        if name == "target":
            return len(value)
        if name == "target_labeled":
            return len(value[1])
        if name == "episode":
            return len(value.support_y) + len(value.query_y)
        return 2 * len(value[0])  # pairs

    @property
    def size(self) -> int:
        """Number of samples in this batch (every data field that is set)."""
        return sum(self._count(name) for name in BATCH_DATA)

    @property
    def read_size(self) -> int:
        """Number of samples in the data fields read so far (what throughput counts)."""
        return sum(self._count(name) for name in BATCH_DATA
                   if name in object.__getattribute__(self, "_read"))

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All source domains concatenated: ``(x, y)``."""
        return torch.cat([x for x, _ in self.source]), torch.cat([y for _, y in self.source])


class Method(abc.ABC):
    """Base class of every method. Subclass it and register with ``@register_method``."""

    registered_name: ClassVar[str] = ""
    tags: ClassVar[frozenset[str]] = frozenset()
    protocols: ClassVar[tuple[str, ...]] = ("dg",)
    needs: ClassVar[frozenset[str]] = frozenset()
    stages: ClassVar[tuple[str, ...]] = ("train",)
    frozen_after: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: The subset of ``needs`` each stage reads (a stage not named reads all of
    #: ``needs``); the sampler gives a stage nothing else, e.g. a distillation
    #: teacher stage ``{"teacher": frozenset()}`` gets no target batch.
    stage_needs: ClassVar[dict[str, frozenset[str]]] = {}
    search_space: ClassVar[dict[str, Any]] = {}
    #: Fewest source domains the learning rule needs to mean anything (a penalty
    #: across source domains needs 2): an int for every protocol, or
    #: ``{protocol: n}`` where it differs by protocol (protocols not named: 1).
    #: The planner does not run a method where it cannot apply; ``xbench check``
    #: holds a method declaring 1 to not being plain ERM on one source domain.
    min_source_domains: ClassVar[int | dict[str, int]] = 1

    @classmethod
    def min_sources(cls, protocol: str) -> int:
        """``min_source_domains`` under ``protocol``."""
        need = cls.min_source_domains
        return need.get(protocol, 1) if isinstance(need, dict) else need

    # -- hyper-parameters (scikit-learn style) --------------------------------
    @classmethod
    def hparam_names(cls) -> list[str]:
        """Names of the keyword hyper-parameters ``__init__`` accepts."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY]

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """Hyper-parameter defaults as declared in ``__init__``."""
        params = inspect.signature(cls.__init__).parameters
        return {name: params[name].default for name in cls.hparam_names()}

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> "Method":
        """Instantiate with ``hparams``, naming any unknown key or mistyped value."""
        defaults = cls.default_hparams()
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise ConfigError(f"method '{cls.registered_name}' has no hyper-parameter(s) "
                              f"{unknown}; it takes: {', '.join(defaults) or '(none)'}")
        for key, value in hparams.items():
            default = defaults[key]
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, (int, float)) and not isinstance(value, (int, float))):
                raise ConfigError(f"method '{cls.registered_name}': hyper-parameter '{key}' "
                                  f"expects {type(default).__name__}, got {value!r}")
        return cls(**hparams)

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters this instance was created with."""
        return {name: getattr(self, name) for name in self.hparam_names()}

    # -- the learning rule ----------------------------------------------------
    @abc.abstractmethod
    def setup(self, info: TaskInfo, device: torch.device) -> None:
        """Build networks and optimizers for ``info`` on ``device``."""

    @abc.abstractmethod
    def update(self, batch: Batch) -> dict[str, float]:
        """One optimisation step; return finite scalar logs (e.g. ``{"loss": 0.4}``)."""

    @abc.abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(len(x), num_classes)``; must not change any state."""

    def stage_steps(self, steps: int) -> dict[str, int]:
        """Each stage's step budget for a job of ``steps`` steps.

        Default: every stage gets the full ``steps`` (each stage has as many
        steps to do its job as a one-stage method has); a suite's
        ``stage_steps`` overrides it per stage, and records state it.
        """
        return {stage: steps for stage in self.stages}

    def begin_stage(self, stage: str) -> None:
        """Called by the runner before each stage of a staged method."""

    def references(self) -> dict[str, Any]:
        """Extra predictors the runner scores beside ``predict`` (e.g. ``{"teacher": fn}``)."""
        return {}

    def adapt(self, x: torch.Tensor) -> None:
        """Test-time adaptation on one unlabeled batch (only for ``needs = {"test_time"}``).

        The runner calls it before ``predict(x)`` on every evaluation batch and
        restores the trained state after each evaluation pass.
        """

    # -- helpers the runner uses ----------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Every ``nn.Module`` attribute of this method, by attribute name."""
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}

    def train(self, mode: bool = True) -> "Method":
        """Put every module in training (``True``) or evaluation mode; frozen ones stay in eval."""
        for module in self.modules().values():
            module.train(mode and not getattr(module, "xbench_frozen", False))
        return self

    def parameter_count(self) -> int:
        """Number of distinct parameters across all modules."""
        seen: dict[int, int] = {}
        for module in self.modules().values():
            for p in module.parameters():
                seen[id(p)] = p.numel()
        return sum(seen.values())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
