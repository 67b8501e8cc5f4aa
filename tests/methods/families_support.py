"""Helpers for the method-family tests (meta, distill, contrastive)."""

from __future__ import annotations

import torch

from xbench.harness.plan import Job
from xbench.registry import create_method, load_task


def tiny_job(task: str, method: str, protocol: str, target: tuple[str, ...], *, steps: int,
             batch: int, hparams: dict | None = None, episodes: dict | None = None,
             seed: int = 0) -> Job:
    """A job on a (test) task with a small budget, evaluated once at the end."""
    resolved = create_method(method, **(hparams or {})).get_params()
    loaded = load_task(task)
    return Job(suite="test", task=task, task_version=str(loaded.version),
               task_options=loaded.options(), target=target, protocol=protocol, method=method,
               hparams=resolved, seed=seed,
               budget={"steps": steps, "batch_size": batch, "eval_every": steps,
                       "eval_batch_size": 64}, episodes=episodes)


def module_state(method) -> dict[str, torch.Tensor]:
    """Copies of every parameter, buffer and gradient of every module of ``method``."""
    out = {}
    for name, module in method.modules().items():
        for key, value in module.state_dict(keep_vars=False).items():
            out[f"{name}.{key}"] = value.detach().clone()
        for key, p in module.named_parameters():
            out[f"{name}.{key}.grad"] = None if p.grad is None else p.grad.detach().clone()
    return out


def assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        other = after[key]
        if value is None or other is None:
            assert value is None and other is None, key
        else:
            assert torch.equal(value, other), f"{key} changed"
