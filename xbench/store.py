"""Append-only JSONL records: one line per finished job, written whole.

``DIR/records.jsonl`` is only ever appended to, one complete line per call,
flushed and fsynced, so a killed run never loses a finished job. A broken
line (a run killed mid-write, an editor accident) is reported, skipped and
never fatal; the next append starts on a fresh line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from xbench.errors import RecordsError

RECORDS_FILE = "records.jsonl"


@dataclasses.dataclass
class ReadResult:
    """Records read from disk, and the lines that could not be parsed."""

    records: list[dict[str, Any]]
    problems: list[str]


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
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
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


def read_records(path: str | os.PathLike) -> ReadResult:
    """Parse a ``records.jsonl`` file, skipping (and reporting) broken lines."""
    path = Path(path)
    if not path.exists():
        return ReadResult([], [])
    records, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "job_id" not in record:
                raise ValueError("not a record")
            records.append(record)
        except ValueError:
            what = "truncated last line (a run was killed mid-write?)" if number - 1 == last \
                else "unparseable line"
            problems.append(f"{path}:{number}: {what}; skipped")
    return ReadResult(records, problems)


def record_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve results folders and record files to ``records.jsonl`` paths."""
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.rglob(RECORDS_FILE))
            if not found:
                raise RecordsError(f"{p}: no {RECORDS_FILE} in this folder; pass the --out "
                                   f"folder of an `xbench run`")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise RecordsError(f"{p}: no such results folder or record file")
    return files


def load_records(paths: Iterable[str | os.PathLike]) -> ReadResult:
    """Records from several folders or files; the latest record per ``job_id`` wins,
    an ``ok`` record always beating a failed one."""
    by_id: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for file in record_files(paths):
        result = read_records(file)
        problems.extend(result.problems)
        for record in result.records:
            current = by_id.get(record["job_id"])
            if current is None or record.get("status") == "ok" or current.get("status") != "ok":
                by_id[record["job_id"]] = record
    return ReadResult(list(by_id.values()), problems)
