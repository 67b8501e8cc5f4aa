"""Synthetic records shaped like the runner's, for compare and history tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from xbench.harness.plan import config_hash
from xbench.harness.runner import SCHEMA

CPU = "cpu: Test CPU"


def record(method: str = "erm", seed: int = 0, *, acc: float = 0.80,
           task: str = "digits_rotated", target: tuple[str, ...] = ("75",),
           protocol: str = "dg", hparams: dict[str, Any] | None = None,
           train: Iterable[float] = (1000.0,), infer: Iterable[float] = (5000.0,),
           latency: Iterable[float] = (1.0,), mem: float = 800.0, device: str = CPU,
           torch: str = "2.4.0", threads: int = 2, sha: str | None = "a" * 40,
           dirty: bool = False, time: str = "2026-01-01T00:00:00+00:00", status: str = "ok",
           error: str | None = None, steps: int = 200) -> dict[str, Any]:
    """One record with the fields compare and history read; timings are raw samples."""
    import statistics

    hparams = {"lr": 0.001, "weight_decay": 0.0} if hparams is None else hparams
    budget = {"steps": steps, "batch_size": 32, "eval_every": 100, "eval_batch_size": 512}
    config = {"task": task, "task_version": "1", "task_options": {"data_seed": 0},
              "target": list(target), "protocol": protocol, "method": method,
              "hparams": hparams, "seed": seed, "budget": budget}
    train, infer, latency = list(train), list(infer), list(latency)
    ok = status == "ok"
    return {
        "schema": SCHEMA, "job_id": config_hash(config), "suite": "synthetic", **config,
        "task_options": {"data_seed": 0}, "method_origin": "tests", "status": status,
        "error": error,
        "metrics": {"acc_target": acc, "acc_target_worst": acc, "acc_source_val": 0.9,
                    "by_selection": {"last": {"acc_target": acc - 0.01},
                                     "training_domain": {"acc_target": acc}}} if ok else {},
        "cost": {"train_samples_per_s": statistics.median(train),
                 "train_samples_per_s_samples": train,
                 "infer_samples_per_s": statistics.median(infer),
                 "infer_samples_per_s_samples": infer,
                 "latency_ms": statistics.median(latency), "latency_ms_samples": latency,
                 "peak_mem_mb": mem, "params": 1000} if ok else {"wall_s": 1.0},
        "env": {"device_name": device, "torch": torch, "threads": threads, "git_sha": sha,
                "git_dirty": dirty, "xbench": "0.1.0"},
        "time": time}


def write(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` as a records.jsonl file at ``path`` and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    return path
