"""Run one job: (task, target, protocol, method, hyper-parameters, seed) -> one record.

The runner owns everything but the learning rule: seeding, the device, data
sampling, timing, evaluation, model selection and the record. It never
raises past a failed job: an exception or a non-finite loss becomes a record
with ``status: "failed"``.

Besides accuracy and cost, every record carries what a reader needs to judge
a number: ``num_classes`` and ``chance`` (see ``chance_level``), the number of
target test items scored (``metrics.test_size``, ``metrics.n_test``), the
options that identify the data (``task_identity``), the ``precision``, the
per-stage step budget (``budget.stage_steps``) and, under ``tta``, the
adaptation ``stream``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import random
import statistics
import time
import traceback
from typing import Any

import numpy as np
import torch

from xbench import predictions
from xbench.errors import JobError, NonFiniteError, ProtocolError
from xbench.harness import checkpoints as selection
from xbench.harness.environment import environment
from xbench.harness.episodes import episode_accuracies, episodes_hash, fixed_episodes
from xbench.harness.episodes import mean as episode_mean
from xbench.harness.evaluation import evaluate, inference_cost
from xbench.harness.isolation import Guard, canonical_global_state
from xbench.harness.plan import Job
from xbench.harness.precision import Precision
from xbench.harness.sampling import training_sampler
from xbench.harness.timing import PeakMemory, clock
from xbench.methods.base import Method
from xbench.registry import METHODS, create_method, load_task
from xbench.store import SCHEMA as STORE_SCHEMA
from xbench.tasks.base import Budget, EpisodeSpec, Split, Stream, Task

SCHEMA = STORE_SCHEMA  # one schema: xbench.store validates what is read
TIMING_BLOCKS = 20
#: Decimals kept for the per-episode accuracies of every evaluation point.
EPISODE_DECIMALS = 4
#: called as ``step_hook(step, total_steps)`` after every training step when set (the
#: session's progress bar inside a job, in-process executors only); outside the timed region
step_hook: Any = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_data_cache() -> tuple[Any, Any]:
    """Per-process task data, held in closures (not module globals a method can import).

    Returns ``(handout, changed)``: ``handout(job, device)`` gives the task and a
    fresh copy of its data; ``changed(job)`` says which split, if any, the job
    wrote into, and forgets the copy.
    """

    @functools.lru_cache(maxsize=2)
    def pristine(name: str, version: str, options_key: str, device: str,
                 fingerprint: str | None) -> tuple[Task, dict]:  # new content, new entry
        task = load_task(name, version=version, **json.loads(options_key))
        data = {d: {s: Split(p.x.to(device), p.y.to(device)) for s, p in parts.items()}
                for d, parts in task.build().items()}
        return task, data

    handed_out: dict[int, tuple[dict, dict]] = {}

    def handout(job: Job, device: torch.device) -> tuple[Task, dict[str, dict[str, Split]]]:
        task, data = pristine(job.task, job.task_version,
                              json.dumps(job.task_options, sort_keys=True),
                              str(device), job.data_fingerprint)
        copy = {d: {s: Split(p.x.clone(), p.y.clone()) for s, p in parts.items()}
                for d, parts in data.items()}
        handed_out[id(job)] = (copy, data)
        return task, copy

    def changed(job: Job) -> str | None:
        copy, data = handed_out.pop(id(job), (None, None))
        if copy is None:
            return None
        for domain, parts in data.items():
            for split, part in parts.items():
                mine = copy[domain][split]
                if not (torch.equal(mine.x, part.x) and torch.equal(mine.y, part.y)):
                    return f"{domain}/{split}"
        return None

    return handout, changed


_handout, _changed = _make_data_cache()


def task_data(job: Job, device: torch.device) -> tuple[Task, dict[str, dict[str, Split]]]:
    """The job's task and a fresh copy of its data on ``device``.

    The data is built once per process and device; every call gets its own
    copy, so a method that writes into its inputs cannot change what later
    jobs see, and :func:`run_job` fails a job whose copy changed.
    """
    return _handout(job, device)


def task_identity(job: Job) -> dict[str, Any]:
    """The task options that identify the data: without data paths (``location_options``)
    and without ``data_seed`` (which draws a split of that data, like a seed); with the
    fingerprint of a data folder's content (``data_fingerprint``) in place of its path."""
    identity = {k: v for k, v in job.task_options.items()
                if k not in job.location_options and k != "data_seed"}
    if job.data_fingerprint is not None:
        identity["data_fingerprint"] = job.data_fingerprint
    return identity


def chance_level(labels: torch.Tensor, num_classes: int) -> float:
    """The accuracy a classifier reaches without looking at the input.

    ``max(1 / num_classes, majority share)``: on balanced target test labels
    it is 1/num_classes; with class imbalance, always predicting the most
    frequent target test class scores its share, which is the better floor.
    """
    share = torch.bincount(labels.cpu().long()).max().item() / len(labels) if len(labels) else 0.0
    return max(1.0 / num_classes, share)


def job_stage_steps(job: Job) -> dict[str, int]:
    """The job's per-stage step budget: as planned, or the method's default for ``steps``."""
    if job.budget.get("stage_steps"):
        return dict(job.budget["stage_steps"])
    return create_method(job.method, **job.hparams).stage_steps(job.budget.get("steps",
                                                                                Budget.steps))


def run_job(job: Job, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run ``job`` on ``device`` and return its record (``status`` ok or failed)."""
    device = torch.device(device)
    cls = METHODS.get(job.method)
    if job.protocol not in cls.protocols:
        raise ProtocolError(f"method '{job.method}' does not support protocol '{job.protocol}'; "
                            f"it supports: {', '.join(cls.protocols)}")
    if job.protocol == "tta" and job.stream is None:
        job = dataclasses.replace(job, stream=dataclasses.asdict(Stream()))
    record: dict[str, Any] = {
        "schema": SCHEMA, "job_id": job.job_id, "suite": job.suite, "task": job.task,
        "task_version": job.task_version, "task_options": job.task_options,
        "task_identity": task_identity(job),
        "target": list(job.target), "protocol": job.protocol, "method": job.method,
        "method_origin": METHODS.entry(job.method).origin, "hparams": job.hparams,
        "seed": job.seed, "trial": job.trial, "holdout": list(job.holdout),
        "budget": {**job.budget, "stage_steps": None}, "stream": job.stream,
        "precision": job.precision, "num_classes": None, "chance": None,
        "oracle": "oracle" in cls.tags,
        "transductive": "test_time" in cls.needs, "status": "ok", "error": None,
        "metrics": {}, "cost": {}, "env": environment(device),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    wall_start = time.perf_counter()
    guard = Guard(job.timeout_s)
    try:
        with canonical_global_state(), guard:
            try:
                record["budget"]["stage_steps"] = job_stage_steps(job)
                with PeakMemory(device) as memory:
                    metrics, cost, about = _train_and_evaluate(job, cls, device)
                changed = _changed(job)
                if changed is not None:
                    raise JobError(f"the method changed the task's {changed} data in place; "
                                   f"a method must not write into its inputs")
                record.update(about)
                record["metrics"] = metrics
                record["cost"] = {**cost, "peak_mem_mb": memory.peak_mb,
                                  "peak_mem_kind": memory.kind}
            except Exception as exc:  # noqa: BLE001 - a failed job must not stop the run
                record["status"] = "failed"
                record["error"] = f"{type(exc).__name__}: {exc}"
                record["traceback"] = "".join(traceback.format_exc().splitlines(True)[-30:])
    finally:
        _changed(job)  # forget the job's copy
    if guard.error is not None:  # SystemExit, a method's own KeyboardInterrupt, a timeout
        record["status"] = "failed"
        record["error"] = guard.error
        record["metrics"], record["cost"] = {}, {}
    record["cost"]["wall_s"] = time.perf_counter() - wall_start
    return record


def _train_and_evaluate(job: Job, cls: type, device: torch.device) -> tuple[dict, dict, dict]:
    seed_everything(job.seed)
    task, data = task_data(job, device)
    budget = Budget(**{k: v for k, v in job.budget.items() if k != "stage_steps"})
    info = task.info(job.target, job.protocol, budget, holdout=job.holdout)
    spec = EpisodeSpec(**job.episodes) if job.episodes else None
    stream = Stream(**job.stream) if job.stream else None
    method: Method = create_method(job.method, **job.hparams)
    if spec is not None and not hasattr(method, "predict_episode"):
        raise ProtocolError(f"method '{job.method}' declares protocol 'fewshot' but has no "
                            f"predict_episode")
    method.setup(info, device)
    method.train(True)
    amp = Precision(job.precision, device)  # autocast around update and every evaluation
    sampler = training_sampler(cls, info, data, seed=job.seed, prepare=task.prepare,
                               episodes=spec)
    evaluator = Evaluator(job, task, data, info, spec, budget, amp, stream)

    stage_steps = job_stage_steps(job)
    total_steps = sum(stage_steps[stage] for stage in method.stages)
    history: list[dict[str, Any]] = []
    stages: dict[str, dict[str, Any]] = {}
    step_times: list[tuple[float, int]] = []  # (seconds, samples) of timed steps
    frozen: dict[str, dict[str, torch.Tensor]] = {}
    step = 0
    for stage_index, stage in enumerate(method.stages):
        n_steps = stage_steps[stage]
        warmup = min(10, n_steps // 5)
        method.begin_stage(stage)
        stage_time, stage_samples, read = 0.0, 0, 0
        final_stage = stage_index == len(method.stages) - 1
        for i in range(n_steps):
            batch = sampler.sample(step, stage)
            start = clock(device)
            with amp.train(method):
                logs = method.update(batch)
            seconds = clock(device) - start
            _check_finite(logs, job.method, stage, step)
            size = batch.read_size  # only the samples this update read
            read += size
            if i >= warmup:
                stage_time += seconds
                stage_samples += size
                step_times.append((seconds, size))
            step += 1
            if step_hook is not None:
                step_hook(step, total_steps)
            if final_stage and (step % budget.eval_every == 0 or i == n_steps - 1):
                history.append({"step": step, "logs": logs, **evaluator.evaluate(method)})
        stages[stage] = {"steps": n_steps, "warmup_steps": warmup, "train_s": stage_time,
                         "train_samples_per_s": _rate(stage_samples, stage_time),
                         "samples_per_step": read / n_steps if n_steps else None}
        frozen.update(freeze(method, cls.frozen_after.get(stage, ())))
    check_frozen(method, frozen)

    chosen = selection.select(history, info.source_domains, info.target_domains)
    default = chosen[selection.DEFAULT]
    at_default = next(p for p in history if p["step"] == default["step"])
    metrics = {"acc_target": default["acc_target"],
               "acc_target_worst": default["acc_target_worst"],
               "acc_source_val": default["acc_source_val"],
               "selection": selection.DEFAULT, "selected_step": default["step"],
               "domains": at_default["acc"], "by_selection": chosen,
               "test_size": sum(evaluator.n_test.values()), "n_test": evaluator.n_test,
               "test_items": evaluator.items_hash,
               "history": [_compact(p) for p in history]}
    if spec is not None:
        accs = at_default["episode_accs"]
        metrics["episodes"] = {"spec": job.episodes, "hash": evaluator.test_hash,
                               "acc": accs, **_ci95(accs)}
    references = {name: evaluator.score_reference(fn) for name, fn in method.references().items()}
    if references:
        metrics["references"] = references
    infer = evaluator.inference_cost(method, device)
    total_time = sum(s for s, _ in step_times)
    cost = {"train_samples_per_s": _rate(sum(n for _, n in step_times), total_time),
            "train_samples_per_s_samples": _block_rates(step_times),
            "train_s": total_time, "eval_s": evaluator.seconds, "stages": stages,
            "params": method.parameter_count(), **infer, **amp.record()}
    if spec is not None:
        num_classes, chance = spec.ways, 1.0 / spec.ways
    else:
        labels = torch.cat([data[d]["test"].y for d in info.target_domains])
        num_classes, chance = info.num_classes, chance_level(labels, info.num_classes)
    return metrics, cost, {"num_classes": num_classes, "chance": chance}


def _compact(point: dict[str, Any]) -> dict[str, Any]:
    """An evaluation point for the record: few-shot episode accuracies rounded."""
    if "episode_accs" not in point:
        return point
    return {**point, "episode_accs": [round(a, EPISODE_DECIMALS) for a in point["episode_accs"]]}


class Evaluator:
    """Scores a method at each evaluation point: per-domain accuracy, or episodes for few-shot."""

    def __init__(self, job: Job, task: Task, data: dict, info: Any, spec: EpisodeSpec | None,
                 budget: Budget, amp: Precision | None = None, stream: Stream | None = None):
        self.task, self.data, self.info, self.spec, self.budget = task, data, info, spec, budget
        self.amp = amp or Precision("fp32", torch.device("cpu"))
        self.stream = stream
        self.seconds = 0.0
        #: Target test items scored per target domain (few-shot: episodes x ways x queries).
        self.n_test = {d: (spec.test_episodes * spec.ways * spec.queries if spec is not None
                           else len(data[d]["test"].y)) for d in info.target_domains}
        #: Per target domain, the hash of its test items in order (what ``pred_target`` scores).
        self.items_hash = {} if spec is not None else {
            d: predictions.items_hash(data[d]["test"].x, data[d]["test"].y)
            for d in info.target_domains}
        self.episodes: dict[tuple[str, str], list] = {}
        if spec is not None:
            options = {k: v for k, v in job.task_options.items()
                       if k not in job.location_options}  # not where the data lives
            identity = f"{job.task}:{job.task_version}:{sorted(options.items())}"
            if job.data_fingerprint is not None:  # other content: other episodes
                identity += f":{job.data_fingerprint}"
            shape = f"{spec.ways}w{spec.shots}s{spec.queries}q"
            for domain, split, count in [*[(d, "val", spec.val_episodes)
                                           for d in info.source_domains],
                                         *[(d, s, spec.val_episodes if s == "val"
                                            else spec.test_episodes)
                                           for d in info.target_domains for s in ("val", "test")]]:
                self.episodes[domain, split] = fixed_episodes(
                    data[domain][split], spec, count, f"{identity}:{domain}:{split}:{shape}")
            self.test_hash = episodes_hash([e for d in info.target_domains
                                            for e in self.episodes[d, "test"]])

    def evaluate(self, method: Method) -> dict[str, Any]:
        """``{"acc": {domain: {split: accuracy}}}`` (+ ``episode_accs`` for few-shot)."""
        with self.amp.infer():
            return self._evaluate(method)

    def _evaluate(self, method: Method) -> dict[str, Any]:
        start = time.perf_counter()
        if self.spec is None:
            out = evaluate(method, self.data, self.budget.eval_batch_size, self.task.prepare,
                           stream=self.stream, num_classes=self.info.num_classes,
                           keep=self.info.target_domains)
            kept = out.pop("pred_test")
            out["pred_target"] = {d: predictions.encode(c) for d, c in kept.items()}
            out["correct_target"] = {d: predictions.encode_bits(c == self.data[d]["test"].y)
                                     for d, c in kept.items()}
        else:
            per_episode = {key: episode_accuracies(method, self.data[key[0]][key[1]], episodes,
                                                   self.task.prepare)
                           for key, episodes in self.episodes.items()}
            acc: dict[str, dict[str, float]] = {}
            for (domain, split), accs in per_episode.items():
                acc.setdefault(domain, {})[split] = episode_mean(accs)
            out = {"acc": acc, "episode_accs": [a for d in self.info.target_domains
                                                for a in per_episode[d, "test"]]}
        self.seconds += time.perf_counter() - start
        return out

    def score_reference(self, predict: Any) -> dict[str, Any]:
        """Test accuracy of an extra predictor (e.g. a teacher) on every domain."""
        domains = {}
        with torch.no_grad(), self.amp.infer():
            for domain, parts in self.data.items():
                split = parts["test"]
                logits = torch.cat([predict(self.task.prepare(split.x[i:i + 512]))
                                    for i in range(0, len(split.x), 512)])
                domains[domain] = (logits.argmax(1) == split.y).float().mean().item()
        return {"acc_target": float(np.mean([domains[d] for d in self.info.target_domains])),
                "domains": domains}

    def inference_cost(self, method: Method, device: torch.device) -> dict[str, Any]:
        """Throughput and latency of predicting the target test split (or its episodes)."""
        with self.amp.infer():
            return self._inference_cost(method, device)

    def _inference_cost(self, method: Method, device: torch.device) -> dict[str, Any]:
        if self.spec is None:
            target_x = torch.cat([self.data[d]["test"].x for d in self.info.target_domains])
            return inference_cost(method, target_x, self.budget.eval_batch_size, device,
                                  self.task.prepare, stream=self.stream)
        domain = self.info.target_domains[0]
        episodes = self.episodes[domain, "test"][:50]
        times = []
        for index in episodes:
            start = clock(device)
            episode_accuracies(method, self.data[domain]["test"], [index], self.task.prepare)
            times.append(clock(device) - start)
        queries = len(episodes[0][3])
        return {"infer_samples_per_s": queries * len(times) / sum(times),
                "infer_samples_per_s_samples": [queries / t for t in times],
                "latency_ms": statistics.median(times) * 1000.0,
                "latency_ms_samples": [t * 1000.0 for t in times], "latency_unit": "episode"}


def freeze(method: Method, names: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
    """Put the named modules in eval mode without gradients; return their state to check later."""
    states = {}
    for name in names:
        module = getattr(method, name, None)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"frozen_after names '{name}', which is not a module of the method")
        module.eval()
        module.requires_grad_(False)
        module.xbench_frozen = True
        states[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return states


def check_frozen(method: Method, states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Fail the job if a frozen module changed after it was frozen."""
    for name, state in states.items():
        now = getattr(method, name).state_dict()
        changed = [k for k, v in state.items() if not torch.equal(v, now[k])]
        if changed:
            raise JobError(f"frozen module '{name}' changed after it was frozen "
                           f"({', '.join(changed[:3])}); a frozen module must stay fixed")


def _ci95(values: list[float]) -> dict[str, float]:
    from scipy import stats

    n = len(values)
    if n < 2:
        return {"mean": episode_mean(values), "ci95": float("nan"), "n": n}
    half = float(stats.sem(values) * stats.t.ppf(0.975, n - 1))
    return {"mean": episode_mean(values), "ci95": half, "n": n}


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
