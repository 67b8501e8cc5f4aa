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
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tqdm import tqdm

from xbench.store import RecordStore, load_records

if TYPE_CHECKING:  # the planner and executors import torch: only `run` needs them
    from xbench.harness.executors import ExecutorOptions
    from xbench.harness.plan import Plan

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
    elapsed_s: float = 0.0      # wall time of executing the jobs
    jobs_wall_s: float = 0.0    # sum of the jobs' own wall times (cost.wall_s)
    parallelism: int = 1        # jobs in flight (--jobs)
    estimate: str | None = None  # what was printed before starting

    @property
    def speedup(self) -> float | None:
        """Sum of job wall times / elapsed: the parallel speed-up this run achieved."""
        return self.jobs_wall_s / self.elapsed_s if self.elapsed_s > 0 and self.ran else None

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
    from xbench.harness.environment import resolve_device  # torch: imported only to run
    from xbench.harness.executors import EXECUTORS, ExecutorOptions
    from xbench.harness.plan import build_plan
    from xbench.harness.precision import resolve_precision
    from xbench.harness.suite import load_suite  # the tasks (torch): not for `status`

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
        return _run_locked(parsed, plan, out, runner, torch_device, retry_failed, progress,
                           executor)


def _run_locked(parsed: Any, plan: Plan, out: Path, runner: Any, torch_device: Any,
                retry_failed: bool, progress: bool, executor: str) -> RunSummary:
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
    guess = estimate(existing.records, todo, torch_device, runner.parallelism, out) \
        if todo else None
    if progress and guess:
        print(guess, file=sys.stderr, flush=True)
    bar = tqdm(total=len(todo), desc=f"xbench {parsed.name}", unit="job", disable=not progress,
               dynamic_ncols=True)
    from xbench.harness import runner as job_runner

    inner = StepBar() if progress and executor == "local" and sys.stderr.isatty() else None
    job_runner.step_hook = inner
    started, jobs_wall = time.perf_counter(), 0.0
    try:
        for finished, record in enumerate(runner.map(todo, torch_device), start=1):
            if inner is not None:
                inner.close()
            jobs_wall += (record.get("cost") or {}).get("wall_s") or 0.0
            store.append(record)
            if record["status"] != "ok":
                failed.append(record)
            bar.update(1)
            rate = (record.get("cost") or {}).get("train_samples_per_s")
            bar.set_postfix(failed=len(failed),
                            running=min(runner.parallelism, len(todo) - finished),
                            last=record["method"], samples_s=f"{rate:.0f}" if rate else "-")
    finally:
        job_runner.step_hook = None
        if inner is not None:
            inner.close()
        bar.close()
    return RunSummary(out=out, planned=len(plan.jobs), skipped=len(plan.jobs) - len(todo),
                      ran=len(todo), failed=failed, plan=plan, problems=existing.problems,
                      skipped_failed=skipped_failed,
                      elapsed_s=time.perf_counter() - started, jobs_wall_s=jobs_wall,
                      parallelism=runner.parallelism, estimate=guess)


class StepBar:
    """Step progress and ETA inside a job (a second tqdm bar under the job bar), shown once a
    job has run for ``after`` seconds; in-process executors only."""

    def __init__(self, after: float = 3.0):
        self.after, self.bar, self.start, self.total = after, None, None, None

    def __call__(self, step: int, total: int) -> None:
        now = time.perf_counter()
        if self.start is None or step == 1:
            self.close()
            self.start, self.total = now, total
        if self.bar is None and now - self.start >= self.after:
            self.bar = tqdm(total=total, initial=step, desc="  steps", unit="step", position=1,
                            leave=False, dynamic_ncols=True)
        elif self.bar is not None:
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.start = None, None


def estimate(records: list[dict[str, Any]], todo: list[Any], device: Any, parallelism: int,
             out: Path) -> str:
    """A line saying how long ``todo`` should take, from earlier records on this device in
    ``out``: per job, the median seconds per step of earlier ok records of the same (task,
    method, precision), else of the same task, else of any, times the job's steps."""
    import statistics

    from xbench.harness.environment import device_name

    name = device_name(device)
    rates: dict[tuple, list[float]] = {}
    for r in records:
        cost, budget = r.get("cost") or {}, r.get("budget") or {}
        if r.get("status") != "ok" or (r.get("env") or {}).get("device_name") != name \
                or not cost.get("wall_s") or not budget.get("steps"):
            continue
        per_step = cost["wall_s"] / budget["steps"]
        for key in ((r.get("task"), r.get("method"), r.get("precision") or "fp32"),
                    (r.get("task"),), ()):
            rates.setdefault(key, []).append(per_step)
    if not rates:
        return (f"estimate: {len(todo)} jobs; no earlier record on {name} in {out} to time "
                f"them by (the job bar shows an ETA once jobs finish)")
    total = 0.0
    for job in todo:
        for key in ((job.task, job.method, job.precision), (job.task,), ()):
            if key in rates:
                total += statistics.median(rates[key]) * job.budget["steps"]
                break
    wall = total / max(1, parallelism)
    known = sum(1 for r in records if (r.get("env") or {}).get("device_name") == name)
    return (f"estimate: {len(todo)} jobs ≈ {_duration(wall)} on {name}"
            f"{f' with {parallelism} in parallel' if parallelism > 1 else ''} (from {known} "
            f"earlier records in {out})")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def save_plan(out: Path, suite: str, plan: Plan) -> Path:
    """Write the plan's job configs to ``out/plans/`` atomically (temp file + rename)."""
    from xbench.harness.plan import config_hash

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


def _states(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """job_id -> status and job_id -> protocol of the records in ``out`` (from the derived
    index of the analysis layer when it is usable: three light columns, no JSON parsing).
    Broken lines and invalid records are warned about, one warning each (naming file,
    line and field), then their count; their jobs count as missing."""
    if not (out / "records.jsonl").exists():
        return {}, {}
    from xbench.analysis import index
    from xbench.analysis.records import _flatten
    from xbench.store import record_files

    indexed = index.load_frame(record_files([out]), _flatten,
                               columns=["job_id", "status", "protocol"])
    if indexed is not None:
        df, problems = indexed
        for problem in problems:
            warnings.warn(problem, stacklevel=3)
        if df.empty:
            return {}, {}
        ids = df["job_id"].tolist()
        return dict(zip(ids, df["status"].tolist())), dict(zip(ids, df["protocol"].tolist()))
    result = load_records([out])
    for problem in result.problems:
        warnings.warn(problem, stacklevel=3)
    records = result.records
    return ({r["job_id"]: r.get("status") for r in records},
            {r["job_id"]: r.get("protocol") for r in records})


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
    states, protocols = _states(out)
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
