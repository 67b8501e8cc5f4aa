"""Hand-written fixture records for the selection, statistics, report and publish tests.

Each record is spelled out by its evaluation history; ``by_selection`` (the
in-run checkpoint choice) is filled in by the harness's own selector, exactly
as the runner does, so the fixtures have the shape of real records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xbench.harness.checkpoints import select as in_run_select

SOURCE = ("a", "b")
TARGET = ("z",)


def point(step: int, src_val: float, tgt_val: float, tgt_test: float, entropy: float = 0.5,
          im: float = 0.5, held_out: dict[str, float] | None = None) -> dict[str, Any]:
    """One evaluation point: source domains a, b share ``src_val``; target z.

    ``held_out`` overrides the validation accuracy of source domains (for
    holdout runs, the held-out domain's validation accuracy).
    """
    acc = {d: {"val": src_val, "test": 0.99} for d in SOURCE}
    for domain, value in (held_out or {}).items():
        acc[domain] = {"val": value, "test": 0.99}
    acc["z"] = {"val": tgt_val, "test": tgt_test}
    label_free = {d: {"entropy": 0.1, "im": 1.0} for d in SOURCE}
    label_free["z"] = {"entropy": entropy, "im": im}
    return {"step": step, "logs": {"loss": 0.1}, "acc": acc, "label_free": label_free}


def record(job_id: str, *, method: str = "m", task: str = "t", seed: int = 0, trial: int = 0,
           history: list[dict[str, Any]] | None = None, holdout: tuple[str, ...] = (),
           protocol: str = "uda", status: str = "ok", oracle: bool = False,
           train_samples_per_s: float = 100.0, device: str = "cpu: Test CPU",
           hparams: dict[str, Any] | None = None, episodes: dict[str, Any] | None = None,
           git_sha: str = "0123456789abcdef", acc_target: float | None = None) -> dict[str, Any]:
    """A record; with ``acc_target`` and no history, a single-step history is made up."""
    if history is None:
        value = 0.5 if acc_target is None else acc_target
        history = [point(100, 0.9, value, value)]
    source = tuple(d for d in SOURCE if d not in holdout)
    metrics: dict[str, Any] = {}
    if status == "ok":
        chosen = in_run_select(history, source, TARGET)
        default = chosen["training_domain"]
        metrics = {"acc_target": default["acc_target"],
                   "acc_target_worst": default["acc_target_worst"],
                   "acc_source_val": default["acc_source_val"], "selection": "training_domain",
                   "selected_step": default["step"], "by_selection": chosen,
                   "history": history,
                   "domains": next(p for p in history if p["step"] == default["step"])["acc"]}
        if episodes is not None:
            metrics["episodes"] = episodes
    return {
        "schema": "xbench.record/1", "job_id": job_id, "suite": "fixture", "task": task,
        "task_version": "1", "target": list(TARGET), "protocol": protocol, "method": method,
        "method_origin": "xbench==0.1.0", "hparams": hparams or {"lr": 0.001 * (trial + 1)},
        "seed": seed, "trial": trial, "holdout": list(holdout), "oracle": oracle,
        "transductive": False, "status": status,
        "error": None if status == "ok" else "RuntimeError: boom", "metrics": metrics,
        "cost": {"train_samples_per_s": train_samples_per_s, "infer_samples_per_s": 1000.0,
                 "latency_ms": 1.0, "peak_mem_mb": 10.0, "params": 1000, "wall_s": 1.0},
        "env": {"device_name": device, "git_sha": git_sha, "git_dirty": False, "threads": 2,
                "torch": "2.0", "python": "3.11", "xbench": "0.1.0"},
    }


# The sweep of the selection tests: method m, seed 0, three trials, steps 100 and 200.
#            step: src val, tgt val, tgt test, entropy, im
TRIALS = {
    0: [point(100, 0.70, 0.60, 0.55, 0.9, 0.5), point(200, 0.80, 0.50, 0.65, 0.4, 0.3)],
    1: [point(100, 0.85, 0.75, 0.40, 0.5, 0.8), point(200, 0.75, 0.80, 0.90, 0.2, 0.6)],
    2: [point(100, 0.60, 0.85, 0.70, 0.3, 0.9), point(200, 0.65, 0.70, 0.75, 0.6, 0.2)],
}
# held-out validation accuracy of the holdout runs, per trial: {holdout: (step 100, step 200)}
HOLDOUTS = {
    0: {"a": (0.50, 0.60), "b": (0.55, 0.65)},   # mean .525, .625 -> step 200, .625
    1: {"a": (0.70, 0.60), "b": (0.72, 0.58)},   # .71, .59 -> step 100, .71
    2: {"a": (0.66, 0.80), "b": (0.70, 0.78)},   # .68, .79 -> step 200, .79 (best)
}


def holdout_history(values: tuple[float, float], domain: str) -> list[dict[str, Any]]:
    return [point(step, 0.9, 0.5, 0.123, held_out={domain: v})
            for step, v in zip((100, 200), values)]


def sweep_records(seed: int = 0, trials: tuple[int, ...] = (0, 1, 2), with_holdouts: bool = True,
                  method: str = "m", failed_trials: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for trial in trials:
        status = "failed" if trial in failed_trials else "ok"
        out.append(record(f"{method}-s{seed}-t{trial}", method=method, seed=seed, trial=trial,
                          history=TRIALS[trial], status=status))
        if with_holdouts:
            for domain, values in HOLDOUTS[trial].items():
                out.append(record(f"{method}-s{seed}-t{trial}-h{domain}", method=method,
                                  seed=seed, trial=trial, holdout=(domain,),
                                  history=holdout_history(values, domain)))
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    return path


# The leaderboard of the report and publish tests: target accuracy per (method, task) and seed.
BOARD = {
    "A": {"t1": [0.80, 0.82, 0.84], "t2": [0.62, 0.64, 0.66]},
    "B": {"t1": [0.70, 0.71, 0.72], "t2": [0.70, 0.72, 0.74]},
    "C": {"t1": [0.60, 0.60, 0.60], "t2": [0.50, 0.50, 0.50]},
    "D": {"t1": [0.50, 0.50, 0.50], "t2": [0.90, None, 0.90]},   # seed 1 failed on t2
    "erm_oracle": {"t1": [0.95, 0.95, 0.95], "t2": [0.95, 0.95, 0.95]},
}
SPEED = {"A": 100.0, "B": 300.0, "C": 200.0, "D": 50.0, "erm_oracle": 1000.0}


def board_records(device: str = "cpu: Test CPU", names: dict[str, str] | None = None,
                  protocol: str = "dg") -> list[dict[str, Any]]:
    """One record per (method, task, seed) of BOARD; ``names`` renames methods."""
    out = []
    for method, tasks in BOARD.items():
        for task, values in tasks.items():
            for seed, acc in enumerate(values):
                name = (names or {}).get(method, method)
                out.append(record(f"{method}-{task}-{seed}-{device[:4]}", method=name, task=task,
                                  seed=seed, protocol=protocol, acc_target=acc,
                                  status="ok" if acc is not None else "failed",
                                  oracle=method.endswith("oracle"), device=device,
                                  train_samples_per_s=SPEED[method]))
    return out
