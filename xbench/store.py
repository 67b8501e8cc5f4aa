"""Append-only JSONL records: one line per finished job, written whole.

``DIR/records.jsonl`` is only ever appended to, one complete line per call,
flushed and fsynced, so a killed run never loses a finished job. A broken
line (a run killed mid-write, an editor accident) is reported, skipped and
never fatal; the next append starts on a fresh line.

Every record read is validated against one schema (:func:`validate_record`:
types, accuracies in [0, 1], non-negative costs, known protocol and status
values); a record that fails is skipped with one warning naming the file,
line and field, and counted in ``ReadResult.invalid``. A record of a newer
schema version than this xbench knows is refused (:class:`RecordsError`). A
UTF-8 byte-order mark and CRLF line ends are tolerated, and gzipped record
files (``records.jsonl.gz``) are read.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable

from xbench.errors import RecordsError

RECORDS_FILE = "records.jsonl"
#: The record schema this xbench writes and the newest version it reads.
SCHEMA = "xbench.record/1"
SCHEMA_VERSION = 1
#: Protocols a record may name (``tta``: test-time adaptation).
PROTOCOLS = frozenset({"dg", "uda", "fewshot", "paired", "tta"})
STATUSES = frozenset({"ok", "failed"})
_ACCURACIES = ("acc_target", "acc_target_worst", "acc_source_val")
_COSTS = ("train_samples_per_s", "infer_samples_per_s", "latency_ms", "peak_mem_mb", "params",
          "wall_s", "train_s", "eval_s")


@dataclasses.dataclass
class ReadResult:
    """Records read from disk, the lines that could not be used, and how many records were
    skipped as invalid (they are among ``problems``, one line each)."""

    records: list[dict[str, Any]]
    problems: list[str]
    invalid: int = 0


class InvalidRecord(ValueError):
    """A record that breaks the schema; ``field`` names the offending field."""

    def __init__(self, field: str, why: str):
        super().__init__(f"field '{field}' {why}")
        self.field = field


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _accuracy(value: Any, field: str, required: bool = False) -> None:
    if value is None and not required:
        return
    if not _number(value) or not 0.0 <= value <= 1.0:
        raise InvalidRecord(field, f"is {_short(value)}, not an accuracy in [0, 1]")


def _text(record: dict[str, Any], key: str, required: bool = True) -> None:
    value = record.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise InvalidRecord(key, f"is {_short(value)}, not a non-empty string")


def schema_version(record: dict[str, Any]) -> int | None:
    """The version number of the record's ``schema`` (``xbench.record/N``), if it has one."""
    match = re.fullmatch(r"xbench\.record/(\d+)", str(record.get("schema", "")))
    return int(match.group(1)) if match else None


def validate_record(record: dict[str, Any]) -> None:
    """Raise :class:`InvalidRecord` naming the first field that breaks the record schema.

    Required: ``job_id``, ``task``, ``method`` (non-empty strings), ``protocol``
    (one of :data:`PROTOCOLS`), ``status`` (``ok`` or ``failed``), ``target`` (a
    non-empty list of strings), ``seed`` (an integer). Optional but typed:
    ``schema``, ``trial`` (integer >= 0), ``hparams``/``metrics``/``cost``/``env``
    (objects), every accuracy in ``metrics`` (in [0, 1]; an ok record must have
    ``acc_target``), every cost (a non-negative number).
    """
    if "schema" in record and schema_version(record) is None:
        raise InvalidRecord("schema", f"is {_short(record['schema'])}, not xbench.record/N")
    for key in ("job_id", "task", "method"):
        _text(record, key)
    if record.get("protocol") not in PROTOCOLS:
        raise InvalidRecord("protocol", f"is {_short(record.get('protocol'))}, not one of "
                                        f"{', '.join(sorted(PROTOCOLS))}")
    if record.get("status") not in STATUSES:
        raise InvalidRecord("status", f"is {_short(record.get('status'))}, not ok or failed")
    target = record.get("target")
    if not isinstance(target, list) or not target or \
            not all(isinstance(t, str) and t for t in target):
        raise InvalidRecord("target", f"is {_short(target)}, not a list of domain names")
    seed = record.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InvalidRecord("seed", f"is {_short(seed)}, not an integer")
    trial = record.get("trial", 0)
    if not isinstance(trial, int) or isinstance(trial, bool) or trial < 0:
        raise InvalidRecord("trial", f"is {_short(trial)}, not an integer >= 0")
    for key in ("hparams", "metrics", "cost", "env", "task_options", "budget"):
        if key in record and record[key] is not None and not isinstance(record[key], dict):
            raise InvalidRecord(key, f"is {_short(record[key])}, not an object")
    metrics = record.get("metrics") or {}
    ok = record["status"] == "ok"
    for key in _ACCURACIES:
        _accuracy(metrics.get(key), f"metrics.{key}", required=ok and key == "acc_target")
    chosen = metrics.get("by_selection") or {}
    if not isinstance(chosen, dict):
        raise InvalidRecord("metrics.by_selection", "is not an object")
    for name, values in chosen.items():
        if not isinstance(values, dict):
            raise InvalidRecord(f"metrics.by_selection.{name}", "is not an object")
        for key in ("acc_target", "acc_target_worst"):
            _accuracy(values.get(key), f"metrics.by_selection.{name}.{key}")
    domains = metrics.get("domains") or {}
    if not isinstance(domains, dict):
        raise InvalidRecord("metrics.domains", "is not an object")
    for domain, splits in domains.items():
        if not isinstance(splits, dict):
            raise InvalidRecord(f"metrics.domains.{domain}", "is not an object")
        for split, value in splits.items():
            _accuracy(value, f"metrics.domains.{domain}.{split}")
    cost = record.get("cost") or {}
    for key in _COSTS:
        value = cost.get(key)
        if value is not None and (not _number(value) or value < 0):
            raise InvalidRecord(f"cost.{key}", f"is {_short(value)}, not a non-negative number")


def _finite(value: Any) -> Any:
    """Replace NaN and infinities by ``None`` so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class RecordStore:
    """The records of one results folder."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / RECORDS_FILE

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one whole line (flush + fsync)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_finite(record), sort_keys=True, allow_nan=False) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RecordsError(f"{self.path}: not a regular file (a FIFO or device?); "
                                   f"records are only appended to a plain file")
            if _ends_without_newline(fd):
                line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> ReadResult:
        """Every parseable record, and a note for each line that is not."""
        return read_records(self.path)

    def finished_ids(self) -> set[str]:
        """``job_id`` of every job with an ``ok`` record."""
        return {r["job_id"] for r in self.read().records if r.get("status") == "ok"}


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    return os.pread(fd, 1, size - 1) != b"\n"


def _read_text(path: Path) -> str:
    """The file's text: gzip when it is gzipped, BOM dropped, undecodable bytes replaced."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise RecordsError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise RecordsError(f"{path}: not a regular file (a FIFO, device or folder?); pass a "
                           f"records.jsonl file or the --out folder of `xbench run`")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise RecordsError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc}); "
                           f"is it a complete records.jsonl(.gz)?") from None
    return raw.decode("utf-8-sig", errors="replace")


def read_records(path: str | os.PathLike) -> ReadResult:
    """Parse a ``records.jsonl`` (or ``.jsonl.gz``) file, skipping (and reporting) broken lines
    and invalid records; a record of a newer schema version raises :class:`RecordsError`."""
    path = Path(path)
    if not path.exists():
        return ReadResult([], [])
    records, problems, invalid = [], [], 0
    lines = _read_text(path).split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "job_id" not in record:
                raise ValueError("not a record")
        except (ValueError, RecursionError):
            what = "truncated last line (a run was killed mid-write?)" if number - 1 == last \
                else "unparseable line"
            problems.append(f"{path}:{number}: {what}; skipped")
            continue
        version = schema_version(record)
        if version is not None and version > SCHEMA_VERSION:
            raise RecordsError(f"{path}:{number}: record schema {record['schema']} is newer than "
                               f"this xbench reads ({SCHEMA}); upgrade xbench to read it")
        try:
            validate_record(record)
        except InvalidRecord as exc:
            invalid += 1
            problems.append(f"{path}:{number}: invalid record: {exc}; skipped")
            continue
        records.append(record)
    return ReadResult(records, problems, invalid)


def record_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve results folders and record files to ``records.jsonl`` paths."""
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted([*p.rglob(RECORDS_FILE), *p.rglob(RECORDS_FILE + ".gz")])
            if not found:
                raise RecordsError(f"{p}: no {RECORDS_FILE} in this folder; pass the --out "
                                   f"folder of an `xbench run`")
            files.extend(found)
        elif p.exists():
            files.append(p)  # a file, or something read_records refuses in one line
        else:
            raise RecordsError(f"{p}: no such results folder or record file")
    return files


def supersedes(new: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether a later record (or run) of a job replaces the one kept so far: the latest
    wins, except that a failed one never replaces an ``ok`` one."""
    return current is None or new.get("status") == "ok" or current.get("status") != "ok"


def load_records(paths: Iterable[str | os.PathLike]) -> ReadResult:
    """Records from several folders or files; the latest record per ``job_id`` wins,
    an ``ok`` record always beating a failed one."""
    by_id: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    invalid = 0
    for file in record_files(paths):
        result = read_records(file)
        problems.extend(result.problems)
        invalid += result.invalid
        for record in result.records:
            if supersedes(record, by_id.get(record["job_id"])):
                by_id[record["job_id"]] = record
    if invalid:
        problems.append(f"{invalid} record{'s' if invalid != 1 else ''} skipped as invalid")
    return ReadResult(list(by_id.values()), problems, invalid)
