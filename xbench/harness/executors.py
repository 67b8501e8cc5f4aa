"""Executors run planned jobs and hand records back to the driver, which alone writes them.

Every executor has ``map(jobs, device) -> iterator of records`` yielding each
record as its job finishes (in any order) and ``parallelism`` (jobs in flight).
A method's own error is already a ``failed`` record (the runner never raises);
an executor only has to survive system failures (a dead worker process or
node), which it turns into ``failed`` records naming the cause.

* ``local``: in this process, one job after another (default; for debugging),
  with ``--threads`` torch threads (default 1: small models lose little, and
  several threads collapse, 20x here, as soon as another process competes).
* ``process``: a pool of ``--jobs N`` worker processes that stay up for the
  whole run: each imports torch and xbench once (forked from a forkserver that
  preloaded them, where the platform has one; spawned otherwise) and builds
  each task once (the runner's per-process task cache), so short suites do not
  pay a start-up per job; torch threads per worker = cores / N so that N jobs
  do not oversubscribe the CPU; CUDA jobs pinned one GPU per worker when
  several GPUs exist.
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


def system_failure(job: Job, cause: str) -> dict[str, Any]:
    """A ``failed`` record for a job lost to the system (not to its method)."""
    return {"schema": "xbench.record/1", "job_id": job.job_id, "suite": job.suite,
            "task": job.task, "task_version": job.task_version,
            "task_options": job.task_options, "target": list(job.target),
            "protocol": job.protocol, "method": job.method, "method_origin": None,
            "hparams": job.hparams, "seed": job.seed, "trial": job.trial,
            "holdout": list(job.holdout), "budget": job.budget,
            "precision": getattr(job, "precision", "fp32"), "status": "failed",
            "error": f"SystemFailure: {cause}", "metrics": {}, "cost": {}, "env": {}}


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


@EXECUTORS.register("local")
class LocalExecutor:
    """Runs jobs one after another in this process (the default; best for debugging)."""

    def __init__(self, options: ExecutorOptions | None = None):
        options = options or ExecutorOptions()
        self.parallelism = 1
        self.threads = options.threads if options.threads is not None else 1
        if self.threads < 0:
            raise UsageError(f"--threads {self.threads}: give 1 or more (0 = torch's default)")

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Yield one record per job, in order, as each finishes."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            for job in jobs:
                yield run_job(job, device)
        finally:
            torch.set_num_threads(previous)


def _init_worker(threads: int, gpu_counter: Any, n_gpus: int) -> None:
    torch.set_num_threads(threads)
    if n_gpus > 1:
        with gpu_counter.get_lock():
            index = gpu_counter.value % n_gpus
            gpu_counter.value += 1
        torch.cuda.set_device(index)


def _run_in_worker(job: Job, device: str) -> dict[str, Any]:
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
        self.parallelism = options.jobs
        self.threads = options.threads or max(1, available_cores() // options.jobs)

    def map(self, jobs: list[Job], device: torch.device) -> Iterator[dict[str, Any]]:
        """Yield records as workers finish; a dead worker fails only its own jobs."""
        context = _worker_context()
        n_gpus = torch.cuda.device_count() if device.type == "cuda" and device.index is None else 0
        pending = list(jobs)
        while pending:
            counter = context.Value("i", 0)
            with cf.ProcessPoolExecutor(self.parallelism, mp_context=context,
                                        initializer=_init_worker,
                                        initargs=(self.threads, counter, n_gpus)) as pool:
                futures = {pool.submit(_run_in_worker, job, str(device)): job for job in pending}
                pending = []
                remaining = dict(futures)
                for future in cf.as_completed(futures):
                    job = remaining.pop(future)
                    try:
                        yield future.result()
                    except cf.process.BrokenProcessPool:
                        # The pool is gone. Keep what finished, fail one suspect, requeue the
                        # rest in a fresh pool (each round removes a job, so this ends).
                        yield system_failure(job, "worker process died")
                        for other, other_job in remaining.items():
                            if other.done() and other.exception() is None:
                                yield other.result()
                            else:
                                pending.append(other_job)
                        break
                    except Exception as exc:  # noqa: BLE001 - e.g. a record that cannot pickle
                        yield system_failure(job, f"{type(exc).__name__}: {exc}")


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
