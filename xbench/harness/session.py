"""Run a suite into a results folder: plan, skip finished jobs, execute, store, and report status.

Only this driver appends to ``records.jsonl`` (workers return records), so
lines never interleave whatever the executor. The plan of every run is saved
beside the records (``plans/<suite>-<hash>.json``, written atomically), so
``xbench status`` can tell done, failed and missing jobs apart and a partial
sweep never silently becomes a table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from xbench.harness.environment import resolve_device
from xbench.harness.executors import EXECUTORS, ExecutorOptions
from xbench.harness.plan import Plan, build_plan, config_hash
from xbench.harness.precision import resolve_precision
from xbench.harness.suite import load_suite
from xbench.store import RecordStore, load_records

PLANS_DIR = "plans"
STARTED_DIR = ".started"  # local executor: a marker per running job (see executors)
LOCK_FILE = ".xbench.lock"  # held by the one `xbench run` writing into a results folder


@contextlib.contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s advisory writer lock (``fcntl.flock``; the kernel drops it when the
    process dies, even by kill -9); a second writer gets :class:`FolderInUseError` naming the
    holder's pid and host. Readers never take it."""
    import fcntl

    from xbench.errors import FolderInUseError

    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise FolderInUseError(f"{out}: another `xbench run` is writing into this folder "
                                   f"({holder}); wait for it to finish, or pass another --out")
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {now}\n"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclasses.dataclass
class RunSummary:
    """What a run did: jobs planned, skipped as finished, run, and failed."""

    out: Path
    planned: int
    skipped: int
    ran: int
    failed: list[dict[str, Any]]
    plan: Plan
    problems: list[str]
    skipped_failed: int = 0  # jobs with a failed record, not re-run (no --retry-failed)

    @property
    def ok(self) -> bool:
        return not self.failed


def run(suite: str, *, out: str | Path | None = None, methods: list[str] | None = None,
        tasks: list[str] | None = None, seeds: list[int] | None = None, device: str = "cpu",
        overrides: dict[str, dict[str, Any]] | None = None, executor: str = "local",
        options: ExecutorOptions | None = None, hparam_samples: int | None = None,
        leave_one_domain_out: bool | None = None, retry_failed: bool = False,
        progress: bool = True, precision: str | None = None,
        timeout_s: float | None = None) -> RunSummary:
    """Run ``suite`` (a shipped name or a TOML path) and append records under ``out``.

    Jobs that already have a record in ``out`` are skipped, so re-running the
    same command resumes where it stopped. The rule for failed jobs: they are
    skipped too (and counted in ``RunSummary.skipped_failed``) unless
    ``retry_failed``, which runs them again. Only one run at a time may write
    into ``out`` (:func:`writer_lock`). ``precision`` (else the suite's
    ``precision``, else fp32) may be ``auto``: bf16 where ``device`` computes it
    natively, else fp32.
    """
    parsed = load_suite(suite)
    torch_device = resolve_device(device)
    resolved = resolve_precision(precision or parsed.precision, torch_device)
    plan = build_plan(parsed, methods=methods, tasks=tasks, seeds=seeds, overrides=overrides,
                      hparam_samples=hparam_samples, leave_one_domain_out=leave_one_domain_out,
                      precision=resolved, timeout_s=timeout_s)
    options = options or ExecutorOptions()
    if executor == "slurm":  # the suite's [slurm] table fills what the flags left unset
        defaults = ExecutorOptions()
        for key, value in parsed.slurm.items():
            if getattr(options, key) == getattr(defaults, key):
                setattr(options, key, value)
    out = Path(out) if out is not None else Path("xbench-runs") / parsed.name
    options.started_dir = str(out / STARTED_DIR)
    runner = EXECUTORS.get(executor)(options)
    with writer_lock(out):
        return _run_locked(parsed, plan, out, runner, torch_device, retry_failed, progress)


def _run_locked(parsed: Any, plan: Plan, out: Path, runner: Any, torch_device: Any,
                retry_failed: bool, progress: bool) -> RunSummary:
    store = RecordStore(out)
    save_plan(out, parsed.name, plan)
    existing = store.read()
    done = {r["job_id"]: r["status"] for r in existing.records if r.get("status") == "ok"}
    if not retry_failed:
        for record in existing.records:
            done.setdefault(record["job_id"], record.get("status"))
    todo = [job for job in plan.jobs if job.job_id not in done]
    skipped_failed = sum(1 for job in plan.jobs if done.get(job.job_id) not in (None, "ok"))
    failed: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc=f"xbench {parsed.name}", unit="job", disable=not progress,
               dynamic_ncols=True)
    try:
        for finished, record in enumerate(runner.map(todo, torch_device), start=1):
            store.append(record)
            if record["status"] != "ok":
                failed.append(record)
            bar.update(1)
            rate = (record.get("cost") or {}).get("train_samples_per_s")
            bar.set_postfix(failed=len(failed),
                            running=min(runner.parallelism, len(todo) - finished),
                            last=record["method"], samples_s=f"{rate:.0f}" if rate else "-")
    finally:
        bar.close()
    return RunSummary(out=out, planned=len(plan.jobs), skipped=len(plan.jobs) - len(todo),
                      ran=len(todo), failed=failed, plan=plan, problems=existing.problems,
                      skipped_failed=skipped_failed)


def save_plan(out: Path, suite: str, plan: Plan) -> Path:
    """Write the plan's job configs to ``out/plans/`` atomically (temp file + rename)."""
    jobs = [{"job_id": j.job_id, "task": j.task, "target": list(j.target),
             "protocol": j.protocol, "method": j.method,
             "seed": j.seed, "trial": j.trial, "holdout": list(j.holdout)} for j in plan.jobs]
    folder = out / PLANS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{suite}-{config_hash({'jobs': [j['job_id'] for j in jobs]})}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"suite": suite, "jobs": jobs}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


@dataclasses.dataclass
class StatusRow:
    """Done, failed and missing job counts of one (task, protocol, method)."""

    task: str
    protocol: str
    method: str
    done: int
    failed: int
    missing: int


def status(out: str | Path) -> list[StatusRow]:
    """Per (task, protocol, method): how many planned jobs are done, failed or missing."""
    out = Path(out)
    from xbench.errors import RecordsError

    plans = sorted((out / PLANS_DIR).glob("*.json")) if out.is_dir() else []
    if not plans:
        raise RecordsError(f"{out}: no saved plan (plans/*.json); is this the --out folder of "
                           f"an `xbench run`?")
    planned: dict[str, dict[str, Any]] = {}
    for path in plans:
        try:
            jobs = json.loads(path.read_text(encoding="utf-8"))["jobs"]
            for job in jobs:
                planned[str(job["job_id"])] = {"task": str(job["task"]),
                                               "method": str(job["method"]),
                                               "protocol": job.get("protocol")}
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            raise RecordsError(f"{path}: not a plan saved by `xbench run` (corrupt?); delete it "
                               f"and re-run the suite into {out} to write it again") from None
    records = load_records([out]).records if (out / "records.jsonl").exists() else []
    states = {r["job_id"]: r.get("status") for r in records}
    protocols = {r["job_id"]: r.get("protocol") for r in records}
    rows: dict[tuple[str, str, str], StatusRow] = {}
    for job_id, job in planned.items():
        # plans saved before the protocol was kept: take it from the job's record, if any
        protocol = job.get("protocol") or protocols.get(job_id) or "-"
        key = (job["task"], protocol, job["method"])
        row = rows.setdefault(key, StatusRow(*key, 0, 0, 0))
        state = states.get(job_id)
        if state == "ok":
            row.done += 1
        elif state is None:
            row.missing += 1
        else:
            row.failed += 1
    return [rows[k] for k in sorted(rows)]
