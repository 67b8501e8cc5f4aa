"""bf16 vs fp32: step rate and accuracy of the same jobs, paired over seeds.

    python benchmarks/precision.py                                  # about 6 min on 2 cores
    python benchmarks/precision.py --tasks digits_rotated --methods erm --seeds 0,1,2,3,4

Plans the ``standard`` suite's jobs for ``--tasks`` x ``--methods`` x ``--seeds``
(the standard budget: 200 steps, batch 16 per domain, or the task's override),
and runs each job twice through the runner, in fp32 and in bf16 (autocast
applied by the runner), alternating which goes first, on one torch thread.
Records go to ``OUT/records.jsonl`` (``xbench report OUT`` shows both
precisions as separate cells). Per (task, method) it prints:

* the median over seeds of the step-rate ratio bf16 / fp32 (training
  samples/s, warm-up excluded) and of the inference-rate ratio;
* the mean accuracy difference bf16 - fp32 (target test, ``training_domain``
  selection) with its paired 95% Student-t interval over seeds (the interval
  of ``xbench compare``'s paired test), and whether 0 lies inside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tabulate import tabulate


def paired_interval(diffs: list[float]) -> tuple[float, float]:
    """Mean and half-width of the paired 95% Student-t interval (nan with one seed)."""
    mean = float(np.mean(diffs))
    if len(diffs) < 2:
        return mean, math.nan
    return mean, float(stats.sem(diffs) * stats.t.ppf(0.975, len(diffs) - 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="digits_rotated,digits_colored,digits_corrupted")
    parser.add_argument("--methods", default="erm,coral")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--out", type=Path, default=Path("precision-bench"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from xbench.harness.plan import build_plan
    from xbench.harness.precision import cpu_has_native_bf16
    from xbench.harness.runner import run_job
    from xbench.harness.suite import load_suite
    from xbench.store import RecordStore

    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    plan = build_plan(suite, tasks=args.tasks.split(","), methods=args.methods.split(","),
                      seeds=[int(s) for s in args.seeds.split(",")], precision="fp32")
    store = RecordStore(args.out)
    print(f"# {len(plan.jobs)} jobs x fp32/bf16; suite {args.suite}; {args.threads} thread(s); "
          f"torch {torch.__version__}; native bf16 on this CPU: {cpu_has_native_bf16()}",
          flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    start = time.perf_counter()
    for i, job in enumerate(plan.jobs):
        pair = {}
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            record = run_job(dataclasses.replace(job, precision=precision))
            store.append(record)
            if record["status"] != "ok":
                print(f"FAILED {job.label()} {precision}: {record['error']}", file=sys.stderr)
                break
            pair[precision] = record
        else:
            results.setdefault((job.task, job.protocol, job.method), []).append(pair)
            f, b = pair["fp32"], pair["bf16"]
            print(f"{job.label():<40} fp32 {f['cost']['train_samples_per_s']:7.0f}/s "
                  f"acc {f['metrics']['acc_target']:.3f} | bf16 "
                  f"{b['cost']['train_samples_per_s']:7.0f}/s acc "
                  f"{b['metrics']['acc_target']:.3f}", flush=True)
    rows = []
    for (task, protocol, method), pairs in results.items():
        train = [p["bf16"]["cost"]["train_samples_per_s"] / p["fp32"]["cost"]["train_samples_per_s"]
                 for p in pairs]
        infer = [p["bf16"]["cost"]["infer_samples_per_s"] / p["fp32"]["cost"]["infer_samples_per_s"]
                 for p in pairs]
        diffs = [p["bf16"]["metrics"]["acc_target"] - p["fp32"]["metrics"]["acc_target"]
                 for p in pairs]
        mean, half = paired_interval(diffs)
        fp32_acc = statistics.mean(p["fp32"]["metrics"]["acc_target"] for p in pairs)
        inside = "—" if math.isnan(half) else ("yes" if abs(mean) <= half else "NO")
        rows.append([task, protocol, method, len(pairs), f"{statistics.median(train):.2f} "
                     f"({min(train):.2f}-{max(train):.2f})", f"{statistics.median(infer):.2f}",
                     f"{100 * fp32_acc:.1f}", f"{100 * mean:+.1f} ± {100 * half:.1f}", inside])
    print()
    print(tabulate(rows, headers=["task", "protocol", "method", "seeds",
                                  "train rate bf16/fp32 (range)",
                                  "infer rate bf16/fp32", "fp32 acc %",
                                  "Δacc bf16-fp32 pt (95% paired CI)", "0 in CI"],
                   tablefmt="github", disable_numparse=True))
    print(f"\n{time.perf_counter() - start:.0f} s; records in {args.out / 'records.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
