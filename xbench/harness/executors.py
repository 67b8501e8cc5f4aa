"""Executors run planned jobs and hand records back to the driver, which alone writes them.

Every executor has ``map(jobs, device) -> iterator of records`` yielding each
record as its job finishes (in any order) and ``parallelism`` (jobs in flight).
A method's own error is already a ``failed`` record (the runner never raises);
an executor only has to survive system failures (a dead worker process or
node), which it turns into ``failed`` records naming the cause.

* ``local``: in this process, one job after another (default; for debugging),
  with ``--threads`` torch threads (default 1: small models lose little, and
  several threads collapse, 20x here, as soon as another process competes).
  A job that kills the process (``os._exit``, a segfault, the OOM killer)
  takes the driver with it, but leaves its ``started`` marker in the results
  folder: the next run runs that job alone in a child process, so a crash
  that repeats is recorded as a failed job and the run goes on, and a job
  that was merely interrupted (kill -9 of the driver) simply finishes.
* ``process``: a pool of ``--jobs N`` worker processes that stay up for the
  whole run: each imports torch and xbench once (forked from a forkserver that
  preloaded them, where the platform has one; spawned otherwise) and builds
  each task once (the runner's per-process task cache), so short suites do not
  pay a start-up per job; torch threads per worker = cores / N so that N jobs
  do not oversubscribe the CPU; CUDA jobs pinned one GPU per worker when
  several GPUs exist.
  When a worker dies, the jobs that were running are re-run one at a time in
  a child process of their own; one that crashes there is recorded as failed
  with the exit code or signal. A job past its time limit that the in-process
  timer cannot stop (stuck in native code) has its worker killed
  ``HARD_KILL_GRACE_S`` later: a ``timeout`` record.
* ``ray``: one Ray task per job with declared ``num_cpus``/``num_gpus``
  (fractional GPUs pack small jobs); system failures retried, method errors
  never; a local Ray instance unless ``--address`` is given.
* ``slurm``: one submitit job array with a parallelism cap; submitit's
  ``local`` or ``debug`` cluster runs it without Slurm.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import importlib
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch

from xbench.errors import UsageError, XbenchError
from xbench.harness.plan import Job
from xbench.harness.runner import run_job
from xbench.registry import Registry

EXECUTORS: Registry = Registry("executor")


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise XbenchError(f"the '{extra}' executor needs the {module} package; install it with "
                          f"pip install \"xbench[{extra}]\"") from None


#: A job past its ``timeout_s`` that has not stopped this many seconds later (stuck inside a
#: native call, where the in-process timer cannot reach it) has its process killed by the
#: driver (``process`` executor, and jobs run alone in a child process).
HARD_KILL_GRACE_S = 60.0


def system_failure(job: Job, cause: str, kind: str = "SystemFailure") -> dict[str, Any]:
    """A ``failed`` record for a job lost to the system (not to its method)."""
    return {"schema": "xbench.record/1", "job_id": job.job_id, "suite": job.suite,
            "task": job.task, "task_version": job.task_version,
            "task_options": job.task_options, "target": list(job.target),
            "protocol": job.protocol, "method": job.method, "method_origin": None,
            "hparams": job.hparams, "seed": job.seed, "trial": job.trial,
            "holdout": list(job.holdout), "budget": job.budget,
            "precision": getattr(job, "precision", "fp32"), "status": "failed",
            "error": f"{kind}: {cause}", "metrics": {}, "cost": {}, "env": {}}


@dataclasses.dataclass
class ExecutorOptions:
    """Flags shared by executors (each reads what concerns it)."""

    jobs: int = 1
    threads: int | None = None  # torch threads per job; None: 1 (local), cores / jobs (process)
    address: str | None = None
    cpus_per_job: float | None = None
    gpus_per_job: float | None = None
    max_retries: int = 2
    partition: str | None = None
    time_min: int = 60
    max_parallel: int = 64
    cluster: str | None = None  # submitit: None (auto: slurm), "local" or "debug"
    folder: str | None = None
    started_dir: str | None = None  # local: where "job started" markers live (the --out folder)


def crash_cause(exitcode: int | None) -> str:
    """Why a worker process ended without a record, from its exit code."""
    if exitcode is None:
        return "the worker process died (os._exit, a segfault or the OOM killer)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {signal.SIGKILL: " (out of memory? the kernel's OOM killer sends SIGKILL)",
                signal.SIGSEGV: " (a segmentation fault in native code)"}.get(-exitcode, "")
        return f"the worker process was killed by {name}{hint}"
    return (f"the worker process exited with code {exitcode} before returning a record "
            f"(os._exit or a crash inside the method)")


def _portable() -> tuple[list, list]:
    from xbench.registry import METHODS, TASKS

    return METHODS.portable_entries(), TASKS.portable_entries()


def _adopt(portable: tuple[list, list]) -> None:
    from xbench.registry import METHODS, TASKS

    METHODS.adopt(portable[0])
    TASKS.adopt(portable[1])


def _child_main(conn: Any, job: Job, device: str, threads: int,
                portable: tuple[list, list]) -> None:
    if threads:
        torch.set_num_threads(threads)
    _adopt(portable)
    record = run_job(job, device)
    conn.send(record)
    conn.close()


def _stuck_cause(job: Job) -> str:
    return (f"the job ran past its time limit of {job.timeout_s:g} s and had not stopped "
            f"{HARD_KILL_GRACE_S:g} s later (stuck in native code?); its process was killed")


def run_in_child(job: Job, device: torch.device | str, threads: int = 1) -> dict[str, Any]:
    """Run one job in a fresh spawned process; a crash becomes a ``failed`` record naming the
    exit code or signal, and a job stuck past its time limit is killed (``timeout``)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, daemon=True,
                              args=(send, job, str(device), threads, _portable()))
    process.start()
    send.close()
    record = None
    deadline = time.monotonic() + job.timeout_s + HARD_KILL_GRACE_S if job.timeout_s else None
    stuck = False
    try:
        while record is None:
            if receive.poll(0.2):
                try:
                    record = receive.recv()
                except EOFError:
                    break
            elif not process.is_alive() and not receive.poll(0):
                break
            elif deadline is not None and time.monotonic() > deadline:
                process.kill()
                stuck = True
                break
    finally:
        process.join()
        receive.close()
    if record is None and stuck:
        return system_failure(job, _stuck_cause(job), kind="timeout")
    return record if record is not None else system_failure(job, crash_cause(process.exitcode))


@EXECUTORS.register("local")
class LocalExecutor:
    """Runs jobs one after another in this process (the default; best for debugging)."""

    def __init__(self, options: ExecutorOptions | None = None):
        options = options or ExecutorOptions()
        self.parallelism = 1
        self.threads = options.threads if options.threads is not None else 1
        if self.threads < 0:
            raise UsageError(f"--threads {self.threads}: give 1 or more (0 = torch's default)")
        self.started_dir = Path(options.started_dir) if options.started_dir else None

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Yield one record per job, in order, as each finishes.

        A job whose ``started`` marker survives from an earlier run (that run
        died during it) runs alone in a child process, so a crash that
        repeats becomes a failed record instead of killing this run too.
        """
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            for job in jobs:
                marker = self.started_dir / job.job_id if self.started_dir else None
                if marker is not None and marker.exists():
                    record = run_in_child(job, device, self.threads)
                else:
                    if marker is not None:
                        marker.parent.mkdir(parents=True, exist_ok=True)
                        marker.write_text(f"{os.getpid()}@{socket.gethostname()}\n")
                    record = run_job(job, device)
                yield record
                if marker is not None:  # the driver has stored the record by now
                    marker.unlink(missing_ok=True)
        finally:
            torch.set_num_threads(previous)


def _init_worker(threads: int, gpu_counter: Any, n_gpus: int,
                 portable: tuple[list, list] = ([], [])) -> None:
    torch.set_num_threads(threads)
    _adopt(portable)
    if n_gpus > 1:
        with gpu_counter.get_lock():
            index = gpu_counter.value % n_gpus
            gpu_counter.value += 1
        torch.cuda.set_device(index)


def _run_in_worker(job: Job, device: str, started_dir: str | None = None) -> dict[str, Any]:
    if started_dir is not None:
        (Path(started_dir) / job.job_id).write_text(str(os.getpid()))
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.current_device()}"
    return run_job(job, device)


def _worker_context() -> Any:
    """A forkserver context that preloads torch and the runner (workers start warm, and no
    OpenMP or CUDA state is forked from the driver); spawn where there is no forkserver."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "xbench.harness.runner", "xbench.methods",
                                        "xbench.tasks"])
        return context
    return multiprocessing.get_context("spawn")  # pragma: no cover - Windows, macOS defaults


@EXECUTORS.register("process")
class ProcessExecutor:
    """``--jobs N`` spawned worker processes on this machine."""

    def __init__(self, options: ExecutorOptions | None = None):
        options = options or ExecutorOptions()
        if options.jobs < 1:
            raise UsageError(f"--jobs {options.jobs}: give at least 1 worker")
        if options.threads is not None and options.threads < 0:
            raise UsageError(f"--threads {options.threads}: give 1 or more (0 = cores / jobs)")
        self.parallelism = options.jobs
        self.threads = options.threads or max(1, available_cores() // options.jobs)

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Yield records as workers finish; a dead worker fails only the job that killed it.

        When the pool breaks, the jobs that had started (each worker leaves a
        marker) run again one at a time in a process of their own, where a
        crash names its job for certain; the others go back in the queue.
        """
        context = _worker_context()
        n_gpus = torch.cuda.device_count() if device.type == "cuda" and device.index is None else 0
        started = Path(tempfile.mkdtemp(prefix="xbench-started-"))
        portable = _portable()
        pending, suspects = list(jobs), []
        by_id = {job.job_id: job for job in jobs}
        stuck: set[str] = set()  # jobs whose worker the driver killed past their time limit
        try:
            while pending or suspects:
                if suspects:
                    yield run_in_child(suspects.pop(0), device, self.threads)
                    continue
                counter = context.Value("i", 0)
                with cf.ProcessPoolExecutor(self.parallelism, mp_context=context,
                                            initializer=_init_worker,
                                            initargs=(self.threads, counter, n_gpus,
                                                      portable)) as pool:
                    futures = {pool.submit(_run_in_worker, job, str(device), str(started)): job
                               for job in pending}
                    pending = []
                    remaining = dict(futures)
                    broken = False
                    while remaining and not broken:
                        done, _ = cf.wait(remaining, timeout=1.0,
                                          return_when=cf.FIRST_COMPLETED)
                        if not done:
                            _kill_stuck(started, by_id, stuck)
                            continue
                        for future in done:
                            job = remaining.pop(future)
                            try:
                                record = future.result()
                            except cf.process.BrokenProcessPool:
                                broken = True
                                lost = [job]
                                for other, other_job in remaining.items():
                                    if other.done() and other.exception() is None:
                                        yield other.result()
                                    else:
                                        lost.append(other_job)
                                running = [j for j in lost if (started / j.job_id).exists()]
                                for j in [j for j in running if j.job_id in stuck]:
                                    yield system_failure(j, _stuck_cause(j), kind="timeout")
                                if not running:  # died before any job began: fail one
                                    yield system_failure(job, crash_cause(None))
                                    running = [job]
                                else:
                                    suspects.extend(j for j in running if j.job_id not in stuck)
                                pending.extend(j for j in lost if j not in running)
                                for marker in started.iterdir():
                                    marker.unlink(missing_ok=True)
                                break
                            except Exception as exc:  # noqa: BLE001 - e.g. unpicklable
                                yield system_failure(job, f"{type(exc).__name__}: {exc}")
                            else:
                                (started / job.job_id).unlink(missing_ok=True)
                                yield record
        finally:
            shutil.rmtree(started, ignore_errors=True)


def _kill_stuck(started: Path, by_id: dict[str, Job], stuck: set[str]) -> None:
    """Kill the worker of every job past its time limit plus the grace period (the in-process
    timer could not stop it); the pool then breaks and the job is recorded as a timeout."""
    now = time.time()
    for marker in list(started.iterdir()):
        job = by_id.get(marker.name)
        if job is None or not job.timeout_s or job.job_id in stuck:
            continue
        try:
            if marker.stat().st_mtime + job.timeout_s + HARD_KILL_GRACE_S > now:
                continue
            pid = int(marker.read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue
        stuck.add(job.job_id)


@EXECUTORS.register("ray")
class RayExecutor:
    """One Ray task per job; ``--address`` joins a cluster, else a local Ray starts."""

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options or ExecutorOptions()
        self.ray = require("ray", "ray")
        self.parallelism = max(1, self.options.jobs)

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Yield records as Ray tasks finish (``ray.wait``)."""
        ray, options = self.ray, self.options
        started_here = not ray.is_initialized()
        if started_here:
            init = {"address": options.address} if options.address else \
                {"num_cpus": max(1, options.jobs if options.jobs > 1 else available_cores())}
            ray.init(include_dashboard=False, log_to_driver=False, **init)
        try:
            cpus = options.cpus_per_job or 1
            gpus = options.gpus_per_job if options.gpus_per_job is not None else \
                (1 if device.type == "cuda" else 0)
            remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=options.max_retries,
                                retry_exceptions=False)(_ray_job)
            refs = {remote.remote(job, device.type, int(max(1, cpus))): job for job in jobs}
            waiting = list(refs)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                job = refs[done[0]]
                try:
                    yield ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - worker or node lost after retries
                    yield system_failure(job, f"{type(exc).__name__}: {exc}")
        finally:
            if started_here:
                ray.shutdown()


def _ray_job(job: Job, device: str, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    return run_job(job, device)


@EXECUTORS.register("slurm")
class SlurmExecutor:
    """A submitit job array with a parallelism cap (``--cluster local|debug`` to test)."""

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options or ExecutorOptions()
        self.submitit = require("submitit", "slurm")
        self.parallelism = max(1, min(self.options.max_parallel, self.options.jobs or 1))

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Submit one array and yield records as its tasks finish."""
        options = self.options
        folder = Path(options.folder or "xbench-slurm") / "%j"
        executor = self.submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
        params: dict[str, Any] = {"timeout_min": options.time_min,
                                  "slurm_array_parallelism": options.max_parallel}
        if options.cluster in (None, "slurm"):
            params.update(slurm_partition=options.partition,
                          gpus_per_node=int(options.gpus_per_job or 0),
                          cpus_per_task=int(options.cpus_per_job or 1))
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        submitted = executor.map_array(run_job, jobs, [device.type] * len(jobs))
        waiting = dict(zip(submitted, jobs))
        while waiting:
            finished = [s for s in waiting if s.done()]
            if not finished:
                time.sleep(0.5)
                continue
            for item in finished:
                job = waiting.pop(item)
                try:
                    yield item.result()
                except Exception as exc:  # noqa: BLE001 - a lost or killed array task
                    yield system_failure(job, f"{type(exc).__name__}: "
                                              f"{traceback.format_exception_only(exc)[-1].strip()}")
