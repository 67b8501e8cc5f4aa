"""Results at scale: report, status, compare and history over 100,000 records.

    python benchmarks/scale.py build --out /tmp/scale          # 102,720 records (about 640 MB)
    python benchmarks/scale.py time --out /tmp/scale            # time each command (warm)

``build`` replicates ``--source`` (default ``results/standard/records.jsonl``; the
measurements in ``benchmarks/README.md`` name the records they used; a copy goes to
``OUT/base``, the BASE of the timed ``compare``) ``--copies`` times (default 320: with
the 321 records of ``standard`` before issue 13, 102,720 records, about 640 MB) as a
DomainBed-like sweep: ``--trials`` random-search
trials (default 20, DomainBed's ``n_hparams``) x ``copies / trials`` seed groups (seed +
3 x group), so each (cell, seed) is one sweep of 20 trials, 48 seeds per cell, every
job with its own ``job_id``, (seed, trial) and hyper-parameters (trial 0: the defaults;
trials 1..N: numeric ones scaled by 10^U(-1, 1)). Each copy's accuracies are shifted by a
deterministic per-job amount (source/target validation by one draw, target test by a
correlated one, clipped to [0, 1]; the same shift everywhere a value is repeated in the
record, so ``by_selection``, ``domains`` and the history stay consistent), so selection
chooses between trials that differ and every statistic sees real spread -- no job key
the reader would deduplicate, no cell of identical values. Copy (trial 0, group 0) is the
committed records unchanged. ``--trials 1`` gives the old replication (new seeds only).
A saved plan of every job lets ``xbench status`` run. ``time`` runs each command
``--repeats`` times in a fresh subprocess (after one untimed warm-up run that builds the
derived index, ``.xbench-index/``, and warms the page cache) and prints the median wall
time and the peak RSS of the child (``ru_maxrss`` from ``wait4``), then the same with
the index switched off (``XBENCH_NO_INDEX=1``, pure JSONL) when ``--jsonl`` is
given. Targets: <= 5 s and <= 1 GB each, warm.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT / "results" / "standard" / "records.jsonl"


def _shift(value: Any, d_val: float, d_test: float, key: str = "") -> Any:
    """Every accuracy in a record's metrics moved by the job's shift (validation / source
    accuracies by ``d_val``, target test ones by ``d_test``); episodes and label-free
    scores left as they are."""
    if isinstance(value, dict):
        return {k: (v if k in ("episodes", "episode_accs", "label_free", "logs")
                    else _shift(v, d_val, d_test, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, d_val, d_test, key) for v in value]
    if isinstance(value, float) and key in ("val", "acc_source_val"):
        return min(1.0, max(0.0, value + d_val))
    if isinstance(value, float) and key in ("test", "acc_target", "acc_target_worst"):
        return min(1.0, max(0.0, value + d_test))
    return value


def build(out: Path, copies: int, trials: int = 20, source: Path = DEFAULT_SOURCE) -> None:
    if copies % trials:
        raise SystemExit(f"--copies {copies} is not a multiple of --trials {trials}")
    lines = source.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    (out / "base").mkdir(parents=True, exist_ok=True)  # compare's BASE: the source itself
    (out / "base" / "records.jsonl").write_text("".join(line + "\n" for line in lines
                                                        if line.strip()))
    run = out / "run"
    (run / "plans").mkdir(parents=True, exist_ok=True)
    jobs = []
    with open(run / "records.jsonl", "w") as f:
        for copy in range(copies):
            group, trial = divmod(copy, trials)
            for r in records:
                seed = int(r["seed"]) + 3 * group
                job_id = hashlib.sha256(f"{r['job_id']}:{copy}".encode()).hexdigest()[:16]
                rng = random.Random(job_id)
                d_val = rng.gauss(0.0, 0.03)
                d_test = 0.5 * d_val + rng.gauss(0.0, 0.03)
                new = {**r, "seed": seed, "job_id": job_id, "trial": trial}
                if copy:
                    new["metrics"] = _shift(r["metrics"], d_val, d_test)
                if trial:
                    new["hparams"] = {k: (float(f"{v * 10 ** rng.uniform(-1, 1):.3g}")
                                          if isinstance(v, float) and v > 0 else v)
                                      for k, v in (r.get("hparams") or {}).items()}
                f.write(json.dumps(new, sort_keys=True) + "\n")
                jobs.append({"job_id": job_id, "task": r["task"], "target": r["target"],
                             "protocol": r["protocol"], "method": r["method"], "seed": seed,
                             "trial": trial, "holdout": r.get("holdout", [])})
    (run / "plans" / "scale.json").write_text(json.dumps({"suite": "scale", "jobs": jobs}))
    size = (run / "records.jsonl").stat().st_size
    print(f"{len(jobs)} records ({copies // trials} seed groups x {trials} trials), "
          f"{size / 2**20:.0f} MiB in {run / 'records.jsonl'}")


COMMANDS = {
    "report": ["report", "{run}"],
    "status": ["status", "{run}"],
    "compare": ["compare", "{base}", "{run}"],
    "history": ["history", "{run}", "--method", "erm"],
}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of ``xbench ARGV`` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "xbench.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def time_commands(out: Path, repeats: int, commands: list[str], jsonl: bool) -> None:
    run = out / "run"
    variants = [("index", {})] + ([("jsonl", {"XBENCH_NO_INDEX": "1"})] if jsonl else [])
    print(f"{'command':<8} {'path':<6} {'wall s (median)':>16} {'range':>13} "
          f"{'peak RSS MB':>12} {'exit':>5}")
    for name in commands:
        argv = [a.format(run=run, base=out / "base") for a in COMMANDS[name]]
        for label, extra in variants:
            env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
            timed(argv, env)  # warm-up: builds the index, fills the page cache
            runs = [timed(argv, env) for _ in range(repeats)]
            walls = [w for w, _, _ in runs]
            print(f"{name:<8} {label:<6} {statistics.median(walls):16.2f} "
                  f"{min(walls):6.2f}-{max(walls):<6.2f} {max(m for _, m, _ in runs):12.0f} "
                  f"{runs[-1][2]:>5}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["build", "time"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/xbench-scale"))
    parser.add_argument("--copies", type=int, default=320)
    parser.add_argument("--trials", type=int, default=20,
                        help="random-search trials per (cell, seed) (1: new seeds only)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="the records to replicate (default: results/standard)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--jsonl", action="store_true", help="also time the pure-JSONL path")
    args = parser.parse_args(argv)
    if args.what == "build":
        build(args.out, args.copies, args.trials, args.source)
    else:
        time_commands(args.out, args.repeats, args.commands.split(","), args.jsonl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
