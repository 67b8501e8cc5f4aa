"""Suite files: TOML data (never code) naming tasks, methods, seeds and budgets.

::

    name = "quick"
    description = "Smoke test of every built-in method family."
    seeds = [0, 1, 2]
    methods = ["*"]                 # fnmatch patterns over registered methods
    exclude_methods = []
    hparam_samples = 0              # random-search draws per method (0 = defaults only)
    sweep_seed = 0
    leave_one_domain_out = false    # add one auxiliary run per held-out source domain
    precision = "fp32"              # fp32 (default), bf16, fp16 (CUDA) or auto; --precision wins
    timeout_s = 21600               # per-job time limit (s); a job past it fails "timeout"
    [slurm]                         # defaults for `--executor slurm` (flags win)
    partition = "gpu"
    time_min = 60
    [budget]                        # defaults for every task below
    steps = 200
    stage_steps = { teacher = 300 } # staged methods: steps of the named stage (default: the
                                    # method's own, e.g. ``steps`` for each stage)
    [tta]                           # the adaptation stream of protocol "tta"
    batch_size = 64                 # unlabeled target test batches adapted on (default 64)
    mode = "reset"                  # "reset" (episodic) or "continual" (over the stream)
    [[tasks]]
    name = "digits_rotated"
    targets = ["75"]                # one job set per target; "all" = each domain in turn
    protocol = "dg"
    methods = ["erm", "coral"]      # optional: only these of the suite's methods here
    seeds = [0, 1, 2, 3, 4, 5]      # optional: this task's seeds (a noisier task needs more)
    steps = 300                     # per-task budget override
    options = { resolution = 16 }   # task options; data_seed defaults to the job's seed
                                    # (options = { data_seed = 0 } pins one split for all)
    tta = { batch_size = 32 }       # per-task [tta] override (protocol = "tta")
    # few-shot tasks (protocol = "fewshot") also take: ways, shots, queries,
    # test_episodes, val_episodes
    [hparams."*"]                   # defaults for every method taking the hyper-parameter
    lr = 5e-5
    [hparams.erm]                   # per-method hyper-parameters (win over "*")
    lr = 1e-3
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from xbench.errors import ConfigError, UnknownNameError
from xbench.harness.isolation import DEFAULT_TIMEOUT_S
from xbench.tasks.base import Stream
from xbench.names import check_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "suites"

_TOP_KEYS = {"name", "description", "seeds", "methods", "exclude_methods", "budget", "tasks",
             "hparams", "hparam_samples", "sweep_seed", "leave_one_domain_out", "slurm",
             "precision", "timeout_s", "tta", "timing_unstable"}
_SLURM_KEYS = {"partition", "time_min", "gpus_per_job", "cpus_per_job", "max_parallel"}
_TASK_KEYS = {"name", "target", "targets", "protocol", "options", "steps", "batch_size",
              "eval_every", "eval_batch_size", "ways", "shots", "queries", "test_episodes",
              "val_episodes", "methods", "stage_steps", "tta", "seeds"}
_EPISODE_KEYS = {"ways", "shots", "queries", "test_episodes", "val_episodes"}
_BUDGET_KEYS = {"steps", "batch_size", "eval_every", "eval_batch_size"}
#: Every method with that hyper-parameter takes the values of ``[hparams."*"]``.
ALL_METHODS = "*"


@dataclasses.dataclass
class SuiteTask:
    """One ``[[tasks]]`` entry of a suite."""

    name: str
    options: dict[str, Any]
    targets: list[tuple[str, ...]] | None  # None: the task's default target
    all_targets: bool
    protocol: str | None
    budget: dict[str, int]
    episodes: dict[str, int] = dataclasses.field(default_factory=dict)
    methods: list[str] | None = None  # narrows the suite's methods for this task
    stage_steps: dict[str, int] = dataclasses.field(default_factory=dict)
    stream: Stream | None = None  # the tta stream, when protocol is "tta"
    seeds: list[int] | None = None  # replaces the suite's seeds for this task


@dataclasses.dataclass
class Suite:
    """A parsed suite file."""

    name: str
    path: str
    description: str
    seeds: list[int]
    methods: list[str]
    exclude_methods: list[str]
    budget: dict[str, int]
    tasks: list[SuiteTask]
    hparams: dict[str, dict[str, Any]]
    hparam_samples: int = 0
    sweep_seed: int = 0
    leave_one_domain_out: bool = False
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    precision: str = "fp32"  # may be "auto" (resolved against the device before planning)
    timeout_s: float = DEFAULT_TIMEOUT_S  # per-job time limit in seconds (0: none)
    stage_steps: dict[str, int] = dataclasses.field(default_factory=dict)
    #: fnmatch patterns over METHOD or TASK/METHOD whose timing is known to be unstable:
    #: ``xbench bench`` shows it and never gates on it.
    timing_unstable: list[str] = dataclasses.field(default_factory=list)


def list_suites() -> dict[str, Path]:
    """Shipped suites by name."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.toml"))}


def resolve_suite_path(name_or_path: str) -> Path:
    """A shipped suite's file, or the given path to a TOML file."""
    shipped = list_suites()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise ConfigError(f"suite file '{path}' is a folder; pass a .toml file")
        if path.exists() and not path.is_file():
            raise ConfigError(f"suite file '{path}' is not a regular file (a FIFO or device?); "
                              f"pass a .toml file")
        if not path.is_file():
            raise ConfigError(f"suite file '{path}' does not exist")
        return path
    import difflib

    close = difflib.get_close_matches(name_or_path, list(shipped), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownNameError(f"Unknown suite '{name_or_path}'.{hint} Shipped suites: "
                           f"{', '.join(shipped)}; or pass a path to a .toml file")


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite (shipped name or path); errors name the file and key."""
    path = resolve_suite_path(name_or_path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc}); fix the file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}); save the file as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{where}: values nested too deeply to read; a suite needs at most "
                          f"a few levels") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    _check_keys(raw, _TOP_KEYS, where, "top level")
    name = _typed(raw.get("name", path.stem), str, where, "name")
    check_name(name, f"{where}: suite 'name'")
    seeds = _seeds(raw.get("seeds", [0]), where, "seeds")
    methods = _patterns(raw.get("methods", ["*"]), where, "methods")
    exclude = _patterns(raw.get("exclude_methods", []), where, "exclude_methods")
    budget = dict(_typed(raw.get("budget", {}), dict, where, "budget"))
    stage_steps = _stage_steps(budget.pop("stage_steps", {}), where, "[budget] stage_steps")
    _check_keys(budget, _BUDGET_KEYS, where, "[budget]")
    tta = _typed(raw.get("tta", {}), dict, where, "tta")
    hparams = _typed(raw.get("hparams", {}), dict, where, "hparams")
    for method, values in hparams.items():
        _typed(values, dict, where, f"hparams.{method}")
    entries = _typed(raw.get("tasks", []), list, where, "tasks")
    if not entries:
        raise ConfigError(f"{where}: no [[tasks]] entries; add at least one task")
    tasks = [_suite_task(entry, where, i, tta) for i, entry in enumerate(entries, start=1)]
    Stream.from_options(tta, f"{where}: [tta]")  # validated even when no task runs tta
    samples = _typed(raw.get("hparam_samples", 0), int, where, "hparam_samples")
    if isinstance(samples, bool) or samples < 0:
        raise ConfigError(f"{where}: 'hparam_samples' must be 0 (defaults only) or more, got "
                          f"{samples!r}")
    sweep_seed = _typed(raw.get("sweep_seed", 0), int, where, "sweep_seed")
    lodo = _typed(raw.get("leave_one_domain_out", False), bool, where, "leave_one_domain_out")
    slurm = _typed(raw.get("slurm", {}), dict, where, "slurm")
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or \
            not 0 <= timeout < float("inf"):
        raise ConfigError(f"{where}: 'timeout_s' must be a number of seconds >= 0 (0 = no "
                          f"limit), got {timeout!r}")
    _check_keys(slurm, _SLURM_KEYS, where, "[slurm]")
    precision = _typed(raw.get("precision", "fp32"), str, where, "precision")
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise ConfigError(f"{where}: 'precision' must be one of fp32, bf16, fp16, auto; "
                          f"got {precision!r}")
    unstable = _patterns(raw.get("timing_unstable", []), where, "timing_unstable")
    return Suite(name=name, path=where, precision=precision,
                 description=str(raw.get("description", "")),
                 seeds=list(seeds), methods=methods, exclude_methods=exclude,
                 budget=dict(budget), tasks=tasks, hparams=hparams, hparam_samples=samples,
                 sweep_seed=sweep_seed, leave_one_domain_out=lodo, slurm=dict(slurm),
                 timeout_s=float(timeout), stage_steps=stage_steps, timing_unstable=unstable)


def _stage_steps(value: Any, where: str, key: str) -> dict[str, int]:
    """``{stage: steps}``, each a positive integer."""
    _typed(value, dict, where, key)
    for stage, steps in value.items():
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"{where}: {key}.{stage} must be a positive integer, got {steps!r}")
    return dict(value)


def _seeds(value: Any, where: str, key: str) -> list[int]:
    """A non-empty list of integer seeds."""
    seeds = _typed(value, list, where, key)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: '{key}' must be a non-empty list of integers, got {seeds!r}")
    return list(seeds)


def _suite_task(entry: Any, where: str, index: int, tta: dict[str, Any]) -> SuiteTask:
    label = f"[[tasks]] #{index}"
    _typed(entry, dict, where, label)
    _check_keys(entry, _TASK_KEYS, where, label)
    if "name" not in entry:
        raise ConfigError(f"{where}: {label} has no 'name'; add the task's registered name")
    if "target" in entry and "targets" in entry:
        raise ConfigError(f"{where}: {label} sets both 'target' and 'targets'; keep one")
    raw_targets = entry.get("targets", entry.get("target"))
    all_targets = raw_targets == "all"
    targets = None
    if raw_targets is not None and not all_targets:
        items = raw_targets if isinstance(raw_targets, list) else [raw_targets]
        if not items:
            raise ConfigError(f"{where}: {label} 'targets' is empty; name at least one domain, "
                              f"use \"all\", or leave the key out for the task's default")
        targets = []
        for item in items:
            group = tuple(item) if isinstance(item, list) else (item,)
            if not group or not all(isinstance(d, (str, int)) for d in group):
                raise ConfigError(f"{where}: {label} 'targets' must hold domain names, "
                                  f"got {item!r}")
            targets.append(tuple(str(d) for d in group))
    budget = {k: entry[k] for k in _BUDGET_KEYS if k in entry}
    protocol = entry.get("protocol")
    if protocol is not None:
        _typed(protocol, str, where, f"{label} protocol")
    options = _typed(entry.get("options", {}), dict, where, f"{label} options")
    episodes = {k: entry[k] for k in _EPISODE_KEYS if k in entry}
    methods = _patterns(entry["methods"], where, f"{label} methods") if "methods" in entry \
        else None
    stage_steps = _stage_steps(entry.get("stage_steps", {}), where, f"{label} stage_steps")
    own_tta = _typed(entry.get("tta", {}), dict, where, f"{label} tta")
    if own_tta and protocol != "tta":
        raise ConfigError(f"{where}: {label} sets 'tta' but runs protocol {protocol or 'default'}"
                          f"; the adaptation stream needs protocol = \"tta\"")
    stream = Stream.from_options({**tta, **own_tta}, f"{where}: {label} tta") \
        if protocol == "tta" else None
    return SuiteTask(name=_typed(entry["name"], str, where, f"{label} name"), options=options,
                     targets=targets, all_targets=all_targets, protocol=protocol, budget=budget,
                     episodes=episodes, methods=methods, stage_steps=stage_steps, stream=stream,
                     seeds=_seeds(entry["seeds"], where, f"{label} seeds") if "seeds" in entry
                     else None)


def _check_keys(table: dict, allowed: set[str], where: str, label: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' in {label}; "
                          f"allowed keys: {', '.join(sorted(allowed))}")


def _typed(value: Any, kind: type, where: str, key: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _patterns(value: Any, where: str, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: '{key}' must be a list of name patterns, got {value!r}")
    return list(items)
