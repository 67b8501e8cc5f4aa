"""One generic registry for methods, tasks and executors.

An entry is either an object registered with a decorator or a lazy
``"module:attr"`` string imported on first use. Third-party plugins are found
through the entry-point groups ``xbench.methods`` and ``xbench.tasks`` (set
``XBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` to switch that off); every entry knows
which distribution and version provided it, so records can say so.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import importlib.metadata
import os
import re
import threading
from typing import Any, Callable, Generic, Iterable, TypeVar

from xbench.errors import PluginError, RegistryClashError, UnknownNameError

T = TypeVar("T")

AUTOLOAD_ENV = "XBENCH_DISABLE_PLUGIN_AUTOLOAD"


@dataclasses.dataclass
class Entry:
    """One registered name: its target (object or lazy ``module:attr``), tags and origin."""

    name: str
    target: Any
    tags: frozenset[str]
    origin: str  # "dist==version", or "local:<module>" for code outside any distribution

    @property
    def loaded(self) -> bool:
        return not isinstance(self.target, str)


def natural_key(name: str) -> list:
    """Sort key that puts ``resnet10`` after ``resnet9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def origin_of(obj: Any) -> str:
    """The distribution (``name==version``) that ships the module defining ``obj``."""
    module = getattr(obj, "__module__", None) or ""
    top = module.split(".")[0]
    if top == "xbench":
        from xbench import __version__

        return f"xbench=={__version__}"
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"local:{module or '?'}"


class Registry(Generic[T]):
    """Names to objects, with lazy entries, wildcards, did-you-mean and plugins.

    ``kind`` is used in messages ("method", "task"); ``group`` is the entry-point
    group searched for plugins; ``builtins`` are modules imported on first
    lookup so that their decorators run.
    """

    def __init__(self, kind: str, group: str | None = None, builtins: Iterable[str] = ()):
        self.kind = kind
        self.group = group
        self._builtins = tuple(builtins)
        self._entries: dict[str, Entry] = {}
        self._ready = False
        self._lock = threading.RLock()
        self._resolving: str | None = None

    # -- registration ---------------------------------------------------------
    def register(self, name: str | None = None, obj: Any = None, *, tags: Iterable[str] = (),
                 origin: str | None = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if obj is None:
            def decorator(target: Any) -> Any:
                self.register(name or target.__name__, target, tags=tags, origin=origin)
                return target
            return decorator
        name = name or obj.__name__
        from xbench.names import check_name

        check_name(name, f"{self.kind} name", RegistryClashError)
        tags = frozenset(tags)
        with self._lock:
            current = self._entries.get(name)
            same_lazy = current is not None and not current.loaded and \
                current.target == f"{obj.__module__}:{obj.__qualname__}"
            if current is not None and (self._resolving == name or same_lazy):
                # A lazy entry's module registering itself while being imported.
                current.target = obj
                current.tags = current.tags | tags
                return obj
            if current is not None and current.target is not obj:
                new_origin = origin or origin_of(obj)
                raise RegistryClashError(
                    f"{self.kind} name '{name}' is registered twice: by {current.origin} "
                    f"({_describe(current.target)}) and by {new_origin} ({_describe(obj)}); "
                    f"rename one of them (or set {AUTOLOAD_ENV}=1 to skip plugins)")
            if isinstance(obj, type):
                obj.registered_name = name
                obj.tags = frozenset(obj.__dict__.get("tags", frozenset())) | tags
            self._entries[name] = Entry(name, obj, tags, origin or origin_of(obj))
        return obj

    def register_lazy(self, name: str, target: str, *, tags: Iterable[str] = (),
                      origin: str) -> None:
        """Register a ``"module:attr"`` string that is imported on first ``get``."""
        from xbench.names import check_name

        check_name(name, f"{self.kind} '{name}' from {origin}: name", PluginError)
        if ":" not in target:
            raise PluginError(f"{self.kind} '{name}' from {origin}: entry '{target}' "
                              f"must look like 'module:attr'")
        with self._lock:
            current = self._entries.get(name)
            if current is not None:
                raise RegistryClashError(
                    f"{self.kind} name '{name}' is registered twice: by {current.origin} "
                    f"({_describe(current.target)}) and by {origin} ({target}); "
                    f"rename one of them (or set {AUTOLOAD_ENV}=1 to skip plugins)")
            self._entries[name] = Entry(name, target, frozenset(tags), origin)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and by plugin authors while developing)."""
        with self._lock:
            self._entries.pop(name, None)

    # -- discovery ------------------------------------------------------------
    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self._ready = True
            for module in self._builtins:
                importlib.import_module(module)
            if self.group and os.environ.get(AUTOLOAD_ENV, "") in ("", "0"):
                self.load_plugins()

    def load_plugins(self) -> None:
        """Register every entry point of this registry's group as a lazy entry."""
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name in self._entries and self._entries[ep.name].target == ep.value:
                continue
            dist = getattr(ep, "dist", None)
            origin = f"{dist.name}=={dist.version}" if dist is not None else f"local:{ep.module}"
            self.register_lazy(ep.name, ep.value, origin=origin)

    # -- lookup ---------------------------------------------------------------
    def entry(self, name: str) -> Entry:
        """The entry for ``name`` (loaded); unknown names get a did-you-mean error."""
        self._ensure_ready()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self._unknown_message(name))
        if not entry.loaded:
            self._resolve(entry)
        return entry

    def get(self, name: str) -> T:
        """The object registered as ``name``."""
        return self.entry(name).target

    def _resolve(self, entry: Entry) -> None:
        module_name, _, attr = entry.target.partition(":")
        with self._lock:
            self._resolving = entry.name
            try:
                module = importlib.import_module(module_name)
                obj: Any = module
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                raise PluginError(
                    f"{self.kind} '{entry.name}' from {entry.origin} could not be loaded from "
                    f"'{entry.target}': {type(exc).__name__}: {exc}") from exc
            finally:
                self._resolving = None
            entry.target = obj
            if isinstance(obj, type):
                obj.registered_name = entry.name
                entry.tags = entry.tags | frozenset(obj.__dict__.get("tags", ()))

    def _unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        return (f"Unknown {self.kind} '{name}'.{hint} Available: {shown or '(none)'} "
                f"(see `xbench list {self.kind}s`)")

    def names(self) -> list[str]:
        """Every registered name, naturally sorted."""
        self._ensure_ready()
        return sorted(self._entries, key=natural_key)

    def list(self, pattern: str | Iterable[str] = "*", *, exclude: str | Iterable[str] = (),
             tags: Iterable[str] = ()) -> list[str]:
        """Names matching any fnmatch ``pattern``, minus ``exclude``, having all ``tags``."""
        include = [pattern] if isinstance(pattern, str) else list(pattern)
        exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        wanted = frozenset(tags)
        out = []
        for name in self.names():
            if not any(fnmatch.fnmatchcase(name, p) for p in include):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in exclude):
                continue
            if wanted and not wanted <= self.entry(name).tags:
                continue
            out.append(name)
        return out

    def __contains__(self, name: str) -> bool:
        self._ensure_ready()
        return name in self._entries

    # -- worker processes -----------------------------------------------------
    def portable_entries(self) -> list[tuple[str, str, frozenset[str], str]]:
        """``(name, "module:qualname", tags, origin)`` of classes registered from code outside
        xbench (a script's or test's ``register``) that a spawned worker can import again."""
        out = []
        for entry in list(self._entries.values()):
            target = entry.target
            if not isinstance(target, type):
                continue
            module, qualname = target.__module__, target.__qualname__
            if module.split(".")[0] == "xbench" or module == "__main__" or "<" in qualname:
                continue
            out.append((entry.name, f"{module}:{qualname}", entry.tags, entry.origin))
        return out

    def adopt(self, entries: Iterable[tuple[str, str, frozenset[str], str]]) -> None:
        """Register another process's :meth:`portable_entries` lazily (names already here win)."""
        self._ensure_ready()
        for name, target, tags, origin in entries:
            if name not in self._entries:
                self.register_lazy(name, target, tags=tags, origin=origin)


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"


METHODS: Registry = Registry("method", group="xbench.methods", builtins=["xbench.methods"])
TASKS: Registry = Registry("task", group="xbench.tasks", builtins=["xbench.tasks"])


def register_method(name: str | None = None, *, tags: Iterable[str] = ()) -> Callable[[T], T]:
    """Class decorator: register a ``Method`` subclass under ``name``."""
    return METHODS.register(name, tags=tags)


def register_task(name: str | None = None, *, tags: Iterable[str] = ()) -> Callable[[T], T]:
    """Class decorator: register a ``Task`` subclass under ``name``."""
    return TASKS.register(name, tags=tags)


def list_methods(pattern: str | Iterable[str] = "*", *, exclude: str | Iterable[str] = (),
                 tags: Iterable[str] = ()) -> list[str]:
    """Registered method names matching ``pattern`` (fnmatch), naturally sorted."""
    return METHODS.list(pattern, exclude=exclude, tags=tags)


def list_tasks(pattern: str | Iterable[str] = "*", *, exclude: str | Iterable[str] = (),
               tags: Iterable[str] = ()) -> list[str]:
    """Registered task names matching ``pattern`` (fnmatch), naturally sorted."""
    return TASKS.list(pattern, exclude=exclude, tags=tags)


def get_method(name: str) -> type:
    """The method class registered as ``name``."""
    return METHODS.get(name)


def create_method(name: str, **hparams: Any) -> Any:
    """Instantiate method ``name`` with the given hyper-parameters (checked by name)."""
    cls = METHODS.get(name)
    return cls.from_hparams(hparams) if hasattr(cls, "from_hparams") else cls(**hparams)


def load_task(name: str, **options: Any) -> Any:
    """Instantiate task ``name`` with the given options (checked by name)."""
    cls = TASKS.get(name)
    return cls.from_options(options) if hasattr(cls, "from_options") else cls(**options)
