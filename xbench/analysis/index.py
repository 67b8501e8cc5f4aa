"""A derived columnar index of a record file, so that results stay fast at 100,000 records.

``records.jsonl`` stays the append-only source of truth. Beside it,
``.xbench-index/<file name>.idx/`` holds what :func:`xbench.analysis.records._flatten`
makes of each record -- the *light* columns only -- as Parquet parts (pyarrow),
plus ``meta.json``: how many bytes of the record file the parts cover, that
prefix's SHA-256, a cheap sampled fingerprint of it, its size, mtime and inode,
the number of lines covered and the broken lines found there (with, for a
record that parses but breaks the schema, the field and why: the same
warnings, worded the same way, and the same "N records skipped as invalid"
count as :func:`xbench.store.load_records`; a record of a newer schema
version is refused, as there).

Heavy per-record fields are not in the index: the evaluation history
(``metrics.history``) and the per-episode accuracies (``metrics.episodes.acc``).
Each row keeps the byte offset and length of its line instead, and the frame
holds :class:`LazyHistory` / :class:`LazyEpisodes` objects that read and parse
that one line the first time they are looked at -- only the commands and
selections that need them pay for them. (Raw timing samples were never among
``_flatten``'s columns; ``compare`` and ``history`` read whole records.)

Trust rules (:func:`frame_of`):

* unchanged file (same size, mtime and inode, same sampled fingerprint): the
  parts are used as they are;
* the file grew: the covered prefix is hashed again (SHA-256); if it still
  matches, only the new tail is parsed and written as one more part (parts
  are compacted into one when there are many); otherwise the index is rebuilt;
* the file shrank, was rewritten (same size, other mtime and other hash),
  replaced (other inode), or the meta is missing, unreadable or of another
  version: rebuilt from the JSONL;
* an incomplete last line (no newline yet: a run killed mid-write) is never
  covered; it is parsed (and reported as truncated) on each read until a newline
  follows it.

The index is never required: without pyarrow, with ``XBENCH_NO_INDEX=1``, or
when the folder cannot be written, :func:`frame_of` returns ``None`` and the
caller reads the JSONL as before.
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from xbench.errors import RecordsError
from xbench.store import SCHEMA, SCHEMA_VERSION, InvalidRecord, schema_version, validate_record

INDEX_DIR = ".xbench-index"
VERSION = 10  # 3: broken lines kept with the reason; 4-6: run columns (h16b); 7: both;
#              8: by_selection left out (lazy); 9: ``_run`` a list; 10: a ``_run.<field>``
#              column per run field
COMPACT_PARTS = 16
#: ``_flatten`` columns kept as JSON text in the Parquet parts (decoded on load)
_JSON_COLUMNS = ("episodes", "holdout")
#: per-record columns that are not ``_flatten``'s: the slim record (``_record``), and what
#: ``compare`` and ``history`` read of a run (``_run.<field>``: a column per field of
#: ``records.RUN_FIELDS`` and ``job_id``; ``_lite``:
#: :func:`xbench.analysis.records.run_record`, parsed lazily)
_HIDDEN = ("_record", "_lite")
_RUN = "_run."
#: the run fields whose ``_run.<field>`` column holds JSON text (any JSON value); the
#: others hold strings (the key, method, configuration, status, job id) or, ``seed``,
#: integers (``xbench.store.validate_record``)
_RUN_JSON = ("error", "device_name", "torch", "threads", "git_sha", "git_dirty", "time")
#: the run fields ``history`` chooses and filters records by, before reading any run
WHO = ("job_id", "git_sha", "git_dirty", "device_name", "status", "task", "method")
#: heavy fields left out of the index and loaded lazily (selection and scoring read the
#: ``step@`` / ``criterion@`` / ``acc_target@`` columns instead of ``by_selection``)
HEAVY = ("history", "episodes.acc", "by_selection")
_CHUNK = 1 << 20


def enabled() -> bool:
    """False when the index is switched off (``XBENCH_NO_INDEX``) or pyarrow is missing."""
    if os.environ.get("XBENCH_NO_INDEX", "") not in ("", "0"):
        return False
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- lazy fields

def _read_record(file: str, offset: int, length: int) -> dict[str, Any]:
    with open(file, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(length).decode("utf-8-sig", errors="replace"))


def _read_metric(file: str, offset: int, length: int, key: str) -> Any:
    return (_read_record(file, offset, length).get("metrics") or {}).get(key)


class LazyHistory(collections.abc.Sequence):
    """A record's ``metrics.history``, read from its line in the record file on first use."""

    __slots__ = ("_file", "_offset", "_length", "_value")

    def __init__(self, file: str, offset: int, length: int):
        self._file, self._offset, self._length = file, offset, length
        self._value: list | None = None

    def _load(self) -> list:
        if self._value is None:
            self._value = _read_metric(self._file, self._offset, self._length, "history") or []
        return self._value

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, item: Any) -> Any:
        return self._load()[item]

    def __iter__(self):
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return list(self._load()) == (list(other) if isinstance(other, (list, LazyHistory))
                                      else other)

    def __repr__(self) -> str:
        return repr(self._load()) if self._value is not None else "<history: not loaded>"


class LazyEpisodes(collections.abc.Mapping):
    """A record's ``metrics.episodes``: spec, hash, mean and CI from the index; the
    per-episode accuracies (``acc``) read from the record's line on first use."""

    __slots__ = ("_light", "_file", "_offset", "_length", "_acc")

    def __init__(self, light: dict[str, Any], file: str, offset: int, length: int):
        self._light, self._file, self._offset, self._length = light, file, offset, length
        self._acc: list | None = None

    def __getitem__(self, key: str) -> Any:
        if key == "acc":
            if self._acc is None:
                record = _read_record(self._file, self._offset, self._length)
                self._acc = ((record.get("metrics") or {}).get("episodes") or {}).get("acc")
            return self._acc
        return self._light[key]

    def __iter__(self):
        return iter([*self._light, "acc"])

    def __len__(self) -> int:
        return len(self._light) + 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, collections.abc.Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"LazyEpisodes({self._light!r})"


class LazyJSON(collections.abc.Mapping):
    """A JSON object from the index (what ``compare`` and ``history`` read of a run), parsed
    on first use: most rows of a large file are never looked at."""

    __slots__ = ("_text", "_value")

    def __init__(self, text: str):
        self._text, self._value = text, None

    def _load(self) -> dict:
        if self._value is None:
            self._value = json.loads(self._text)
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, collections.abc.Mapping) and self._load() == dict(other)

    def __repr__(self) -> str:
        return repr(self._load())


class LazySelections(LazyJSON):
    """A record's ``metrics.by_selection``, read from its line in the record file on first
    use (only a decision that cannot use the light columns reads it)."""

    __slots__ = ("_file", "_offset", "_length")

    def __init__(self, file: str, offset: int, length: int):
        self._file, self._offset, self._length, self._value = file, offset, length, None

    def _load(self) -> dict:
        if self._value is None:
            self._value = _read_metric(self._file, self._offset, self._length,
                                       "by_selection") or {}
        return self._value

    def __repr__(self) -> str:
        return repr(self._load()) if self._value is not None else \
            "<by_selection: not loaded>"


class LazyCell(LazyJSON):
    """:class:`LazyJSON` of one cell of a pyarrow string column, not even made a Python
    string until first use (``compare`` and ``history`` read the values of a few runs of
    100,000: the column stays one Arrow buffer)."""

    __slots__ = ("_column", "_row")

    def __init__(self, column: Any, row: int):
        self._column, self._row, self._value = column, row, None

    def _load(self) -> dict:
        if self._value is None:
            self._value = json.loads(self._column[self._row].as_py())
            self._column = None
        return self._value


# --------------------------------------------------------------------------- the file

def _fingerprint(f: Any, size: int) -> str:
    """SHA-256 of 17 samples of 4 KiB spread over the first ``size`` bytes (cheap check)."""
    h = hashlib.sha256(str(size).encode())
    for i in range(17):
        f.seek(max(0, min(size - 4096, size * i // 16)))
        h.update(f.read(min(4096, size)))
    return h.hexdigest()


def _prefix_hash(f: Any, size: int) -> "hashlib._Hash":
    h = hashlib.sha256()
    f.seek(0)
    left = size
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h


def _parse(data: bytes, first_line: int, base: int, flatten: Callable[[dict], dict],
           columns: dict[str, None], shown: str = "") -> tuple[list[dict[str, Any]], list[list],
                                                               int, int]:
    """Rows of the complete lines in ``data`` (starting at line ``first_line``, byte ``base``).

    Returns (rows, broken lines as ``[number, why]`` -- ``why`` is ``None`` for a line that
    is not a record, the schema violation for an invalid record --, lines covered, last
    non-blank line number or 0). A record of a newer schema raises :class:`RecordsError`.
    """
    rows, broken, last = [], [], 0
    start, number = 0, first_line
    end = data.rfind(b"\n") + 1
    while start < end:
        stop = data.index(b"\n", start)
        line = data[start:stop]
        if line.strip():
            last = number
            try:
                record = _record_of(line, f"{shown}:{number}")
                row = _light(flatten(record), columns)
                row["_offset"], row["_length"] = base + start, stop - start
                row["_record"] = _slim(record)
                run, row["_lite"] = _run_columns(record)
                row.update(run)
                rows.append(row)
            except InvalidRecord as exc:
                broken.append([number, str(exc)])
            except ValueError:
                broken.append([number, None])
        start, number = stop + 1, number + 1
    return rows, broken, number - first_line, last


def _slim(record: dict[str, Any]) -> str:
    """The record without its evaluation history and per-episode accuracies, as JSON (what
    ``compare`` and ``history`` read; raw timing samples stay, their tests need them)."""
    metrics = record.get("metrics")
    if isinstance(metrics, dict) and ("history" in metrics or "episodes" in metrics):
        metrics = {k: v for k, v in metrics.items() if k != "history"}
        if isinstance(metrics.get("episodes"), dict):
            metrics["episodes"] = {k: v for k, v in metrics["episodes"].items() if k != "acc"}
        record = {**record, "metrics": metrics}
    return json.dumps(record, sort_keys=True)


def _hidden(name: str) -> bool:
    return name in _HIDDEN or name.startswith(_RUN)


def _run_names() -> tuple[str, ...]:
    from xbench.analysis.records import RUN_FIELDS

    return (*RUN_FIELDS, "job_id")


def _run_columns(record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(the ``_run.<field>`` values: the record's run fields (``records.RUN_FIELDS``; the
    cost key, the key and the device name, is made again on reading) and its ``job_id``;
    ``_lite``: :func:`xbench.analysis.records.run_record` as JSON)."""
    from xbench.analysis.records import run_fields, run_record

    fields = {**run_fields(record), "job_id": record.get("job_id")}
    return ({_RUN + k: json.dumps(fields[k]) if k in _RUN_JSON else fields[k]
             for k in _run_names()}, json.dumps(run_record(record)))


def _run_values(table: Any, names: Iterable[str]) -> dict[str, list[Any]]:
    """The values of the ``_run.<name>`` columns of ``table``, each distinct value decoded
    once when the column was read as a dictionary (:func:`_read_runs`)."""
    import pyarrow as pa

    out = {}
    for name in names:
        array = table.column(_RUN + name).combine_chunks()
        indices = None
        if pa.types.is_dictionary(array.type):
            array, indices = array.dictionary, array.indices.to_pylist()
        values = array.to_pylist()
        if name in _RUN_JSON and values:
            values = json.loads("[" + ",".join(values) + "]")
        out[name] = values if indices is None else list(map(values.__getitem__, indices))
    return out


def _read_runs(path: Path, names: Iterable[str], extra: Iterable[str] = ()) -> Any:
    """The ``_run.<name>`` columns (and ``extra`` ones) of one part, strings as dictionaries:
    a value repeated over 100,000 runs is read (and parsed) once."""
    import pyarrow.parquet as pq

    columns = [_RUN + n for n in names]
    return pq.read_table(path, columns=[*columns, *extra],
                         read_dictionary=[c for c in columns if c != _RUN + "seed"])


def _add_runs(table: Any, columns: dict[str, list[Any]], cells: list[Any]) -> None:
    """Append the runs of ``table`` (:func:`_read_runs` with ``_lite``) to ``columns`` (their
    ``_run`` fields) and ``cells`` (their ``_lite``, each a :class:`LazyCell`)."""
    for name, values in _run_values(table, columns).items():
        columns[name] += values
    lite = table.column("_lite").combine_chunks()
    cells += [LazyCell(lite, i) for i in range(len(lite))]


def _run_dict(values: dict[str, Any]) -> dict[str, Any]:
    """A record's ``_run.<field>`` values (:func:`_run_columns`) as its run fields."""
    return {k[len(_RUN):]: json.loads(v) if k[len(_RUN):] in _RUN_JSON else v
            for k, v in values.items()}


def _runs(columns: dict[str, list[Any]], tail: dict[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    """The runs (dicts of their fields, ``cost_key`` added: the key and the device name, one
    tuple per distinct value) of ``_run`` columns (:func:`_run_values`, several parts'
    concatenated) and a ``tail`` run (:func:`_run_dict`) after them."""
    from xbench.analysis.records import KEY_COLUMNS

    if tail is not None:
        for name, column in columns.items():
            column.append(tail[name])
    keys = list(zip(*(columns[c] for c in KEY_COLUMNS), map(str, columns["device_name"])))
    shared: dict[tuple, tuple] = {}
    columns["cost_key"] = list(map(shared.setdefault, keys, keys))
    return [dict(zip(columns, row)) for row in zip(*columns.values())]


def _light(row: dict[str, Any], columns: dict[str, None] | None = None) -> dict[str, Any]:
    if columns is not None:
        columns.update(dict.fromkeys(row))  # the column order of the JSONL path's frame
    row = dict(row)
    row.pop("history", None)
    row.pop("by_selection", None)
    episodes = row.get("episodes")
    if isinstance(episodes, dict):
        row["episodes"] = {k: v for k, v in episodes.items() if k != "acc"}
    for column in _JSON_COLUMNS:
        value = row.get(column)
        row[column] = None if value is None else json.dumps(
            list(value) if isinstance(value, tuple) else value, sort_keys=True)
    return row


def _temp(folder: Path) -> str:
    """A temporary file in ``folder``, readable by all like the record file beside it."""
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)
    return tmp


def _write_part(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    tmp = _temp(folder)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / name)


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    tmp = _temp(folder)
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, folder / "meta.json")


def _record_of(line: bytes, where: str = "") -> dict[str, Any]:
    """One record line parsed and validated (:func:`xbench.store.validate_record`): a
    ``ValueError`` when it is not a record, :class:`xbench.store.InvalidRecord` (naming
    the field) when it breaks the schema -- an invalid record is never indexed -- and
    :class:`RecordsError` for a newer schema version (``where``: file:line, for the message)."""
    record = json.loads(line.decode("utf-8-sig", errors="replace"))
    if not isinstance(record, dict) or "job_id" not in record:
        raise ValueError("not a record")
    version = schema_version(record)
    if version is not None and version > SCHEMA_VERSION:
        raise RecordsError(f"{where}: record schema {record['schema']} is newer than this "
                           f"xbench reads ({SCHEMA}); upgrade xbench to read it")
    validate_record(record)
    return record


def _version(flatten: Callable[[dict], dict]) -> str:
    """The index format and the code of ``flatten``: an index built by another version of
    either is stale (its columns would not be what ``flatten`` gives now)."""
    import inspect

    try:
        source = inspect.getsource(flatten)
        # and the code it calls there: its own module and the selection criteria
        # (xbench.analysis.sweep.checkpoint_criteria) it stores as columns
        from xbench.analysis import sweep

        module = inspect.getmodule(flatten)
        source += (inspect.getsource(module) if module is not None else "") + \
            inspect.getsource(sweep)
    except (OSError, TypeError):
        source = repr(flatten)
    return f"{VERSION}:{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def index_folder(file: Path) -> Path:
    return file.parent / INDEX_DIR / f"{file.name}.idx"  # never matched by a records.jsonl glob


def update(file: Path, flatten: Callable[[dict], dict]) -> dict[str, Any] | None:
    """Bring the index of ``file`` up to date (incrementally when it only grew); its meta,
    or ``None`` when it cannot be written (then the caller reads the JSONL)."""
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO would block, a device never end:
            return None  # the JSONL reader refuses them in one line
    except OSError:
        return None
    folder = index_folder(file)
    version = _version(flatten)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != version:  # another index format, or another flatten
            meta = None
    except (OSError, ValueError):
        meta = None
    try:
        with open(file, "rb") as f:
            st = os.fstat(f.fileno())
            if meta is not None:
                meta = _still_valid(meta, f, st)
            if meta is not None and st.st_size == meta["size"]:
                if meta.pop("_touched", False):  # rewritten in place with the same bytes
                    _write_meta(folder, meta)
                return meta
            start = 0 if meta is None else meta["size"]
            hasher = _prefix_hash(f, start) if meta is None else meta.pop("_hasher")
            f.seek(start)
            tail = f.read(st.st_size - start)
        covered = tail.rfind(b"\n") + 1
        hasher.update(tail[:covered])
        first_line = 1 if meta is None else meta["lines"] + 1
        columns = dict.fromkeys(meta["columns"] if meta is not None else [])
        rows, broken, lines, last = _parse(tail[:covered], first_line, start, flatten, columns,
                                           str(file))
        folder.mkdir(parents=True, exist_ok=True)
        if meta is None:
            for old in folder.glob("part-*.parquet"):
                old.unlink()
            meta = {"version": version, "parts": [], "problems": [], "lines": 0,
                    "last_nonblank": 0, "generation": 0}
        if rows:
            name = f"part-{meta['generation']:06d}.parquet"
            meta["generation"] += 1
            _write_part(folder, name, rows)
            meta["parts"].append(name)
        end = start + covered
        with open(file, "rb") as f:
            meta.update(size=end, sha256=hasher.hexdigest(), fingerprint=_fingerprint(f, end),
                        mtime_ns=st.st_mtime_ns if end == st.st_size else None,
                        inode=st.st_ino, lines=meta["lines"] + lines,
                        last_nonblank=last or meta["last_nonblank"],
                        problems=meta["problems"] + broken, columns=list(columns))
        if len(meta["parts"]) > COMPACT_PARTS:
            _compact(folder, meta)
        _write_meta(folder, meta)
        return meta
    except OSError:
        return None


def _still_valid(meta: dict[str, Any], f: Any, st: os.stat_result) -> dict[str, Any] | None:
    """``meta`` if the file still starts with the prefix it covers (with a hasher of that
    prefix under ``_hasher`` when the file grew), else ``None`` (rebuild)."""
    size = meta.get("size", -1)
    if st.st_size < size or st.st_ino != meta.get("inode"):
        return None
    if st.st_size == size and st.st_mtime_ns == meta.get("mtime_ns"):
        return meta if _fingerprint(f, size) == meta.get("fingerprint") else None
    hasher = _prefix_hash(f, size)  # grown, or same size with another mtime: full check
    if hasher.hexdigest() != meta.get("sha256"):
        return None
    if st.st_size == size:
        meta["mtime_ns"], meta["_touched"] = st.st_mtime_ns, True
        return meta
    meta["_hasher"] = hasher
    return meta


def _compact(folder: Path, meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(folder / p) for p in meta["parts"]],
                             promote_options="permissive")
    name = f"part-{meta['generation']:06d}.parquet"
    meta["generation"] += 1
    tmp = _temp(folder)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / name)
    old, meta["parts"] = meta["parts"], [name]
    _write_meta(folder, meta)
    for p in old:
        (folder / p).unlink(missing_ok=True)


def _current(file: Path, flatten: Callable[[dict], dict]) -> tuple[dict[str, Any], Path] | None:
    """The up-to-date index meta of ``file`` and its folder; ``None`` when the index is off or
    cannot be used (the reader then takes the JSONL)."""
    if not enabled():
        return None
    meta = update(file, flatten)
    return None if meta is None else (meta, index_folder(file))


def frame_of(file: Path, flatten: Callable[[dict], dict], shown: str,
             columns: list[str] | None = None) -> tuple[pd.DataFrame, list[str]] | None:
    """The light rows of one record file (``_flatten`` columns, heavy ones lazy) and its
    broken-line notes (worded as :func:`xbench.store.read_records` words them), or ``None``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    current = _current(file, flatten)
    if current is None:
        return None
    meta, folder = current
    try:
        tables = [_read_part(folder / p, light=True, only=columns) for p in meta["parts"]]
    except (OSError, pa.ArrowException):
        return None
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    df = table.to_pandas() if table is not None else pd.DataFrame()
    # an incomplete last line is outside the index: parse it (it is never a whole record)
    record, numbers, last = _tail(file, meta)
    if record is not None:
        all_columns = dict.fromkeys(meta["columns"])
        row = _light(flatten(record), all_columns)
        meta["columns"] = list(all_columns)
        row["_offset"], row["_length"] = meta["size"], file.stat().st_size - meta["size"]
        row["_record"] = _slim(record)
        extra = pd.DataFrame([row])
        df = pd.concat([df, extra], ignore_index=True) if len(df) else extra
    problems = _problems(shown, numbers, last)
    if df.empty:
        return df, problems
    if columns is not None:  # only the columns asked for: nothing to decode
        return df[[c for c in columns if c in df.columns]], problems
    _decode(df, str(file))
    df.attrs["columns"] = meta["columns"]
    return df, problems


def _read_part(path: Path, light: bool, only: list[str] | None = None) -> Any:
    """One Parquet part: the light ``_flatten`` columns (``light``; only those in ``only``
    when given) or only ``_record``."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if only is not None:
        return pq.read_table(path, columns=[c for c in names if c in only])
    return pq.read_table(path, columns=[c for c in names if (not _hidden(c)) == light
                                        and (light or c == "_record")])


def records_of(file: Path, flatten: Callable[[dict], dict]
               ) -> tuple[list[dict[str, Any]], list[str]] | None:
    """Every record of ``file`` in line order, without heavy fields (see :func:`_slim`), and
    its broken-line notes, from the index; ``None`` when it cannot be used."""
    import pyarrow as pa

    current = _current(file, flatten)
    if current is None:
        return None
    meta, folder = current
    try:
        texts = [t for p in meta["parts"]
                 for t in _read_part(folder / p, light=False).column("_record").to_pylist()]
    except (OSError, pa.ArrowException, KeyError):
        return None
    records = [json.loads(t) for t in texts]
    record, numbers, last = _tail(file, meta)
    if record is not None:
        records.append(record)
    return records, _problems(str(file), numbers, last)


def _tail(file: Path, meta: dict[str, Any]) -> tuple[dict[str, Any] | None, list[list], int]:
    """The record on the lines the index does not cover yet (an incomplete or newly appended
    last line; never more than one record), the broken-line notes (``[number, why]``) with
    the tail's added when it is broken or invalid, and the last line's number."""
    numbers = list(meta["problems"])
    last = meta["last_nonblank"]
    with open(file, "rb") as f:
        f.seek(meta["size"])
        rest = f.read()
    if not rest.strip():
        return None, numbers, last
    last = meta["lines"] + 1
    try:
        return _record_of(rest, f"{file}:{last}"), numbers, last
    except InvalidRecord as exc:
        numbers.append([last, str(exc)])
    except ValueError:
        numbers.append([last, None])
    return None, numbers, last


def _problems(shown: str, broken: list[list], last: int) -> list[str]:
    """Broken-line notes (``[number, why]``, see :func:`_parse`) worded as
    :func:`xbench.store.read_records` words them."""
    return [f"{shown}:{n}: " + (f"invalid record: {why}" if why is not None else
                                "truncated last line (a run was killed mid-write?)" if n == last
                                else "unparseable line") + "; skipped"
            for n, why in sorted(broken, key=lambda item: item[0])]


def invalid_count(problems: list[str]) -> int:
    """How many of ``problems`` (notes of :func:`_problems`) are invalid records."""
    return sum(1 for p in problems if ": invalid record: " in p)


def with_invalid_count(problems: list[str]) -> list[str]:
    """``problems`` and, as :func:`xbench.store.load_records` ends them, the invalid count."""
    invalid = invalid_count(problems)
    if invalid:
        problems = [*problems, f"{invalid} record{'s' if invalid != 1 else ''} skipped as "
                               f"invalid"]
    return problems


def runs_of(file: Path, flatten: Callable[[dict], dict]
            ) -> tuple[list[tuple[dict[str, Any], Any]], list[str]] | None:
    """Every record of ``file`` in line order as (run fields with ``job_id``, the run's
    :func:`xbench.analysis.records.run_record` as a lazily parsed mapping) and its
    broken-line notes, from the index; ``None`` when it cannot be used."""
    import pyarrow as pa

    current = _current(file, flatten)
    if current is None:
        return None
    meta, folder = current
    names = _run_names()
    columns: dict[str, list[Any]] = {n: [] for n in names}
    cells: list[Any] = []
    try:
        for p in meta["parts"]:
            _add_runs(_read_runs(folder / p, names, ["_lite"]), columns, cells)
    except (OSError, pa.ArrowException, KeyError):
        return None
    record, numbers, last = _tail(file, meta)
    tail = None
    if record is not None:
        run, lite = _run_columns(record)
        tail = _run_dict(run)
        cells.append(LazyJSON(lite))
    return list(zip(_runs(columns, tail), cells)), _problems(str(file), numbers, last)


def run_keys_of(file: Path, flatten: Callable[[dict], dict]
                ) -> tuple[list[dict[str, Any]], list[str], Any] | None:
    """The ``WHO`` fields of every record of ``file`` in line order (each with its
    ``_position``), its broken-line notes, and what :func:`runs_at` needs to read the runs
    at some of those positions; ``None`` when the index cannot be used. (``history``
    chooses among records and filters them on these before reading any run.)"""
    import pyarrow as pa

    current = _current(file, flatten)
    if current is None:
        return None
    meta, folder = current
    out: list[dict[str, Any]] = []
    try:
        for p in meta["parts"]:
            columns = _run_values(_read_runs(folder / p, WHO), WHO)
            out += [dict(zip(WHO, row)) for row in zip(*columns.values())]
    except (OSError, pa.ArrowException, KeyError):
        return None
    for position, who in enumerate(out):
        who["_position"] = position
    record, numbers, last = _tail(file, meta)
    tail = _run_columns(record) if record is not None else None
    if tail is not None:
        run = _run_dict(tail[0])
        out.append({**{k: run[k] for k in WHO}, "_position": len(out)})
    return out, _problems(str(file), numbers, last), (folder, meta, tail)


def runs_at(token: Any, positions: list[int]) -> list[tuple[dict[str, Any], Any]] | None:
    """The runs (as :func:`runs_of` gives them) at ``positions`` (ascending) of the file
    :func:`run_keys_of` read, from the index it read; ``None`` when that is gone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, meta, tail = token
    names = _run_names()
    columns: dict[str, list[Any]] = {n: [] for n in names}
    cells: list[Any] = []
    start = 0
    try:
        for p in meta["parts"]:
            n = pq.read_metadata(folder / p).num_rows
            mine = [i - start for i in positions if start <= i < start + n]
            if mine:
                _add_runs(_read_runs(folder / p, names, ["_lite"]).take(mine), columns, cells)
            start += n
    except (OSError, pa.ArrowException, KeyError):
        return None
    run = None
    if tail is not None and start in positions:
        run = _run_dict(tail[0])
        cells.append(LazyJSON(tail[1]))
    return list(zip(_runs(columns, run), cells))


def _latest(paths: Iterable[Any], read: Callable[[Path], Any], fields_of: Callable[[Any], dict]
            ) -> tuple[list[Any], list[str]] | None:
    """The latest item per job (``xbench.store.supersedes`` on ``fields_of(item)``, which
    holds ``job_id`` and ``status``) over the record files of ``paths``, each file read by
    ``read`` (``(items, problems)`` or ``None``), and the broken-line notes; ``None`` when
    the index cannot be used for one of the files."""
    from xbench.store import record_files, supersedes

    by_id: dict[Any, Any] = {}
    problems: list[str] = []
    for file in record_files(paths):
        got = read(Path(file))
        if got is None:
            return None
        problems.extend(got[1])
        for item in got[0]:
            fields = fields_of(item)
            current = by_id.get(fields["job_id"])
            if supersedes(fields, None if current is None else fields_of(current)):
                by_id[fields["job_id"]] = item
    return list(by_id.values()), problems


def load_runs(paths: Iterable[Any], flatten: Callable[[dict], dict]
              ) -> tuple[list[dict[str, Any]], list[str]] | None:
    """The runs of :func:`load_records`'s records (the latest record per ``job_id``, an ``ok``
    one winning), each its run fields with ``record`` the lazy
    :func:`xbench.analysis.records.run_record`; ``None`` when the index cannot be used."""
    got = _latest(paths, lambda file: runs_of(file, flatten), lambda item: item[0])
    if got is None:
        return None
    runs = []
    for fields, lite in got[0]:
        fields.pop("job_id")
        fields["record"] = lite
        runs.append(fields)
    return runs, with_invalid_count(got[1])


def load_records(paths: Iterable[Any], flatten: Callable[[dict], dict]) -> Any:
    """:func:`xbench.store.load_records` from the index (records without heavy fields), or
    ``None`` when the index cannot be used."""
    from xbench.store import ReadResult

    got = _latest(paths, lambda file: records_of(file, flatten), lambda r: r)
    if got is None:
        return None
    return ReadResult(got[0], with_invalid_count(got[1]), invalid_count(got[1]))


def _decode(df: pd.DataFrame, file: str) -> None:
    """JSON columns back to Python values; heavy fields as lazy objects."""
    offsets = df.pop("_offset").tolist()
    lengths = df.pop("_length").tolist()
    loads = json.loads
    df["by_selection"] = [LazySelections(file, o, n) for o, n in zip(offsets, lengths)]
    df["holdout"] = [() if v == "[]" else tuple(loads(v)) if isinstance(v, str) else ()
                     for v in df["holdout"].to_numpy(dtype=object)]
    episodes = df["episodes"].to_numpy(dtype=object).tolist()
    df["episodes"] = [LazyEpisodes(loads(v), file, o, n) if isinstance(v, str) else None
                      for v, o, n in zip(episodes, offsets, lengths)]
    df["history"] = [LazyHistory(file, o, n) for o, n in zip(offsets, lengths)]


def load_frame(files: Iterable[Path], flatten: Callable[[dict], dict],
               columns: list[str] | None = None) -> tuple[pd.DataFrame, list[str]] | None:
    """Rows of several record files, the latest record per ``job_id`` winning (an ``ok``
    one always beating a failed one), as :func:`xbench.store.load_records` chooses;
    ``None`` when any file cannot be indexed (the caller reads the JSONL instead)."""
    if not enabled():
        return None
    frames, problems = [], []
    for file in files:
        got = frame_of(Path(file), flatten, str(file), columns)
        if got is None:
            return None
        frames.append(got[0])
        problems.extend(got[1])
    frames = [f for f in frames if len(f)]
    problems = with_invalid_count(problems)
    if not frames:
        return pd.DataFrame(), problems
    order = dict.fromkeys(c for f in frames for c in f.attrs.get("columns", f.columns)
                          if columns is None or c in columns)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df = df[[c for c in order if c in df.columns]]
    df.attrs.clear()
    return _latest_per_job(df), problems


def _latest_per_job(df: pd.DataFrame) -> pd.DataFrame:
    if not df["job_id"].duplicated().any():
        return df
    position = pd.Series(range(len(df)), index=df.index)
    ok = (df["status"] == "ok").to_numpy()
    # the winner: the last ok record of a job, else its last record
    rank = pd.Series(position.to_numpy() + ok * len(df), index=df.index)
    winner = rank.groupby(df["job_id"]).idxmax()
    first = position.groupby(df["job_id"]).min()
    order = first.sort_values().index
    return df.loc[winner.loc[order].to_numpy()].reset_index(drop=True)
