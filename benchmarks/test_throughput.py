"""pytest-benchmark: the ``update`` and ``predict`` steps of every registered method.

Run with ``pytest benchmarks`` (not part of the default test run). Each method
is set up on a fixed small task (``digits_rotated``, its default target,
seed 0) and timed on one fixed batch that is already on the device, so only
the learning rule is measured, not data sampling. The device is synchronised
inside the timed function, so a CUDA kernel that is still queued is counted.

* ``test_update[METHOD-PROTOCOL-STAGE]``: one ``method.update(batch)`` on a
  batch from ``training_sampler`` (the runner's leak-guarded sampler) for
  each protocol of the task the method supports (others are skipped with the
  reason) and each training stage (earlier stages run a few steps first).
* ``test_predict[METHOD]``: one evaluation batch (``eval_batch_size`` target
  test inputs) through the runner's ``predict_all`` in evaluation mode
  (test-time adaptation included, as the runner times it).

``extra_info`` records the samples per call, so samples/s = samples x ops.
The device is ``XBENCH_BENCH_DEVICE`` (``cpu`` by default; ``cuda``, ``auto``).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

import xbench
from xbench.harness.environment import device_name, resolve_device
from xbench.harness.evaluation import evaluation_mode, predict_all
from xbench.harness.runner import seed_everything
from xbench.harness.sampling import training_sampler
from xbench.harness.timing import synchronize
from xbench.registry import METHODS, load_task
from xbench.tasks.base import Budget, Split

TASK = "digits_rotated"
SEED = 0
BATCH_SIZE = 32          # per source domain, as in the quick suite
EVAL_BATCH_SIZE = 512
PRIOR_STAGE_STEPS = 3    # steps run in each earlier stage before timing a later one
PROTOCOLS = load_task(TASK).protocols


@functools.lru_cache(maxsize=None)
def device() -> torch.device:
    return resolve_device(os.environ.get("XBENCH_BENCH_DEVICE", "cpu"))


@functools.lru_cache(maxsize=None)
def task_and_data():
    task = load_task(TASK)
    data = {d: {s: Split(p.x.to(device()), p.y.to(device())) for s, p in parts.items()}
            for d, parts in task.build().items()}
    return task, data


def set_up(name: str, protocol: str):
    """A set-up method, its task info and a sampler for ``protocol`` (or a skip with the reason)."""
    cls = METHODS.get(name)
    if protocol not in cls.protocols:
        pytest.skip(f"{name} supports protocols {', '.join(cls.protocols)}, not {protocol}")
    task, data = task_and_data()
    info = task.info(task.default_target, protocol, Budget(steps=100, batch_size=BATCH_SIZE,
                                                           eval_batch_size=EVAL_BATCH_SIZE))
    seed_everything(SEED)
    method = xbench.create_method(name)
    method.setup(info, device())
    method.train(True)
    sampler = training_sampler(cls, info, data, seed=SEED, prepare=task.prepare)
    return method, info, sampler


def record_context(benchmark, samples: int) -> None:
    benchmark.extra_info.update({"samples": samples, "device": device_name(device()),
                                 "threads": torch.get_num_threads(), "task": TASK})


def update_cases():
    for name in xbench.list_methods():
        for protocol in PROTOCOLS:
            for stage in METHODS.get(name).stages:
                yield pytest.param(name, protocol, stage, id=f"{name}-{protocol}-{stage}")


@pytest.mark.benchmark(group="update")
@pytest.mark.parametrize("name, protocol, stage", list(update_cases()))
def test_update(benchmark, name, protocol, stage):
    method, info, sampler = set_up(name, protocol)
    step = 0
    for earlier in method.stages[:method.stages.index(stage)]:
        method.begin_stage(earlier)
        for _ in range(PRIOR_STAGE_STEPS):
            method.update(sampler.sample(step, earlier))
            step += 1
    method.begin_stage(stage)
    batch = sampler.sample(step, stage)
    method.update(batch)  # warm-up: lazy allocations, optimizer state
    dev = device()

    def update():
        method.update(batch)
        synchronize(dev)

    benchmark(update)
    record_context(benchmark, batch.size)


@pytest.mark.benchmark(group="predict")
@pytest.mark.parametrize("name", xbench.list_methods())
def test_predict(benchmark, name):
    cls = METHODS.get(name)
    supported = [p for p in PROTOCOLS if p in cls.protocols]
    if not supported:
        pytest.skip(f"{name} supports protocols {', '.join(cls.protocols)}; {TASK} offers "
                    f"{', '.join(PROTOCOLS)}")
    method, info, sampler = set_up(name, supported[0])
    for stage in method.stages:  # a few steps per stage so predict sees a trained-shaped model
        method.begin_stage(stage)
        for step in range(PRIOR_STAGE_STEPS):
            method.update(sampler.sample(step, stage))
    task, data = task_and_data()
    x = data[info.target_domains[0]]["test"].x[:EVAL_BATCH_SIZE]
    dev = device()

    def predict():
        predict_all(method, x, EVAL_BATCH_SIZE, task.prepare)
        synchronize(dev)

    with evaluation_mode(method):
        predict()  # warm-up
        benchmark(predict)
    record_context(benchmark, len(x))
