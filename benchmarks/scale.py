"""Results at scale: report, status, compare and history over 100,000 records.

    python benchmarks/scale.py build --out /tmp/scale          # 99,900 records (about 630 MB)
    python benchmarks/scale.py time --out /tmp/scale            # time each command (warm)

``build`` replicates ``results/standard/records.jsonl`` (333 records) ``--copies``
times (default 300: 99,900 records), each copy with new seeds (seed + 3 x copy)
and so new ``job_id``s, into ``OUT/run/records.jsonl`` with a saved plan of every
job (for ``xbench status``). ``time`` runs each command ``--repeats`` times in a
fresh subprocess (after one untimed warm-up run that builds the derived index,
``.xbench-index/``, and warms the page cache) and prints the median wall time
and the peak RSS of the child (``ru_maxrss`` from ``wait4``), then the same with
the index switched off (``XBENCH_NO_INDEX=1``, pure JSONL) when ``--jsonl`` is
given. Targets: <= 5 s and <= 1 GB each, warm.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path, copies: int) -> None:
    source = (ROOT / "results" / "standard" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in source if line.strip()]
    run = out / "run"
    (run / "plans").mkdir(parents=True, exist_ok=True)
    jobs = []
    with open(run / "records.jsonl", "w") as f:
        for copy in range(copies):
            for r in records:
                seed = int(r["seed"]) + 3 * copy
                job_id = hashlib.sha256(f"{r['job_id']}:{copy}".encode()).hexdigest()[:16]
                f.write(json.dumps({**r, "seed": seed, "job_id": job_id}, sort_keys=True) + "\n")
                jobs.append({"job_id": job_id, "task": r["task"], "target": r["target"],
                             "protocol": r["protocol"], "method": r["method"], "seed": seed,
                             "trial": r.get("trial", 0), "holdout": r.get("holdout", [])})
    (run / "plans" / "scale.json").write_text(json.dumps({"suite": "scale", "jobs": jobs}))
    size = (run / "records.jsonl").stat().st_size
    print(f"{len(jobs)} records, {size / 2**20:.0f} MiB in {run / 'records.jsonl'}")


COMMANDS = {
    "report": ["report", "{run}"],
    "status": ["status", "{run}"],
    "compare": ["compare", str(ROOT / "results" / "standard"), "{run}"],
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
        argv = [a.format(run=run) for a in COMMANDS[name]]
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
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--jsonl", action="store_true", help="also time the pure-JSONL path")
    args = parser.parse_args(argv)
    if args.what == "build":
        build(args.out, args.copies)
    else:
        time_commands(args.out, args.repeats, args.commands.split(","), args.jsonl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
