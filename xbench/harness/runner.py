"""Run one job: (task, target, protocol, method, hyper-parameters, seed) -> one record.

The runner owns everything but the learning rule: seeding, the device, data
sampling, timing, evaluation, model selection and the record. It never
raises past a failed job: an exception or a non-finite loss becomes a record
with ``status: "failed"``.
"""

from __future__ import annotations

import datetime
import functools
import math
import random
import time
import traceback
from typing import Any

import numpy as np
import torch

from xbench.errors import NonFiniteError, ProtocolError
from xbench.harness import selection
from xbench.harness.environment import environment
from xbench.harness.evaluation import evaluate, inference_cost
from xbench.harness.plan import Job
from xbench.harness.sampling import training_sampler
from xbench.harness.timing import PeakMemory, clock
from xbench.methods.base import Method
from xbench.registry import METHODS, create_method, load_task
from xbench.tasks.base import Budget, Split, Task

SCHEMA = "xbench.record/1"
TIMING_BLOCKS = 20


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=2)
def _task_data(name: str, options_key: str, device: str) -> tuple[Task, dict]:
    import json

    task = load_task(name, **json.loads(options_key))
    data = {d: {s: Split(p.x.to(device), p.y.to(device)) for s, p in parts.items()}
            for d, parts in task.build().items()}
    return task, data


def task_data(job: Job, device: torch.device) -> tuple[Task, dict[str, dict[str, Split]]]:
    """The job's task and its data on ``device`` (built once per process and device)."""
    import json

    return _task_data(job.task, json.dumps(job.task_options, sort_keys=True), str(device))


def run_job(job: Job, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run ``job`` on ``device`` and return its record (``status`` ok or failed)."""
    device = torch.device(device)
    cls = METHODS.get(job.method)
    if job.protocol not in cls.protocols:
        raise ProtocolError(f"method '{job.method}' does not support protocol '{job.protocol}'; "
                            f"it supports: {', '.join(cls.protocols)}")
    record: dict[str, Any] = {
        "schema": SCHEMA, "job_id": job.job_id, "suite": job.suite, "task": job.task,
        "task_version": job.task_version, "task_options": job.task_options,
        "target": list(job.target), "protocol": job.protocol, "method": job.method,
        "method_origin": METHODS.entry(job.method).origin, "hparams": job.hparams,
        "seed": job.seed, "budget": job.budget, "oracle": "oracle" in cls.tags,
        "transductive": "test_time" in cls.needs, "status": "ok", "error": None,
        "metrics": {}, "cost": {}, "env": environment(device),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    wall_start = time.perf_counter()
    try:
        with PeakMemory(device) as memory:
            metrics, cost = _train_and_evaluate(job, cls, device)
        record["metrics"] = metrics
        record["cost"] = {**cost, "peak_mem_mb": memory.peak_mb, "peak_mem_kind": memory.kind}
    except Exception as exc:  # noqa: BLE001 - a failed job must not stop the run
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = "".join(traceback.format_exc().splitlines(True)[-12:])
    record["cost"]["wall_s"] = time.perf_counter() - wall_start
    return record


def _train_and_evaluate(job: Job, cls: type, device: torch.device) -> tuple[dict, dict]:
    seed_everything(job.seed)
    task, data = task_data(job, device)
    budget = Budget(**job.budget)
    info = task.info(job.target, job.protocol, budget)
    method: Method = create_method(job.method, **job.hparams)
    method.setup(info, device)
    method.train(True)

    sampler = training_sampler(cls, info, data, seed=job.seed, prepare=task.prepare)
    stage_steps = method.stage_steps(budget.steps)
    history: list[dict[str, Any]] = []
    stages: dict[str, dict[str, Any]] = {}
    step_times: list[tuple[float, int]] = []  # (seconds, samples) of timed steps
    eval_seconds = 0.0
    step = 0
    for stage_index, stage in enumerate(method.stages):
        n_steps = stage_steps[stage]
        warmup = min(10, n_steps // 5)
        method.begin_stage(stage)
        stage_time, stage_samples = 0.0, 0
        final_stage = stage_index == len(method.stages) - 1
        for i in range(n_steps):
            batch = sampler.sample(step, stage)
            start = clock(device)
            logs = method.update(batch)
            seconds = clock(device) - start
            _check_finite(logs, job.method, stage, step)
            if i >= warmup:
                stage_time += seconds
                stage_samples += batch.size
                step_times.append((seconds, batch.size))
            step += 1
            if final_stage and (step % budget.eval_every == 0 or i == n_steps - 1):
                start = time.perf_counter()
                history.append({"step": step, "logs": logs,
                                "acc": evaluate(method, data, budget.eval_batch_size, task.prepare)})
                eval_seconds += time.perf_counter() - start
        stages[stage] = {"steps": n_steps, "warmup_steps": warmup, "train_s": stage_time,
                         "train_samples_per_s": _rate(stage_samples, stage_time)}

    chosen = selection.select(history, info.source_domains, info.target_domains)
    default = chosen[selection.DEFAULT]
    at_default = next(p for p in history if p["step"] == default["step"])
    metrics = {"acc_target": default["acc_target"],
               "acc_target_worst": default["acc_target_worst"],
               "acc_source_val": default["acc_source_val"],
               "selection": selection.DEFAULT, "selected_step": default["step"],
               "domains": at_default["acc"], "by_selection": chosen, "history": history}
    target_x = torch.cat([data[d]["test"].x for d in info.target_domains])
    infer = inference_cost(method, target_x, budget.eval_batch_size, device, task.prepare)
    total_time = sum(s for s, _ in step_times)
    cost = {"train_samples_per_s": _rate(sum(n for _, n in step_times), total_time),
            "train_samples_per_s_samples": _block_rates(step_times),
            "train_s": total_time, "eval_s": eval_seconds, "stages": stages,
            "params": method.parameter_count(), **infer}
    return metrics, cost


def _check_finite(logs: dict[str, Any], method: str, stage: str, step: int) -> None:
    if not isinstance(logs, dict):
        raise TypeError(f"{method}.update must return a dict of floats, got {type(logs).__name__}")
    for key, value in logs.items():
        value = float(value)
        logs[key] = value
        if not math.isfinite(value):
            raise NonFiniteError(f"'{key}' became {value} at step {step} (stage {stage})")


def _rate(samples: int, seconds: float) -> float | None:
    return samples / seconds if seconds > 0 else None


def _block_rates(step_times: list[tuple[float, int]]) -> list[float]:
    """Throughput of up to ``TIMING_BLOCKS`` consecutive blocks of timed steps (raw samples)."""
    if not step_times:
        return []
    blocks = np.array_split(np.arange(len(step_times)), min(TIMING_BLOCKS, len(step_times)))
    out = []
    for block in blocks:
        seconds = sum(step_times[i][0] for i in block)
        samples = sum(step_times[i][1] for i in block)
        if seconds > 0:
            out.append(samples / seconds)
    return out
