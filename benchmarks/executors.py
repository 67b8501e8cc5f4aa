"""Run one suite through several executors; compare their records and wall-clock times.

    python benchmarks/executors.py standard --out /tmp/executors            # local, process, ray
    python benchmarks/executors.py quick --executors local,process --jobs 2

Each executor runs ``xbench run SUITE --executor E --out OUT/E --quiet`` in a
subprocess; its wall time (``time.perf_counter`` around the whole command,
start-up and planning included) is saved in ``OUT/E.wall``. An executor whose
wall file already exists is not run again, so an interrupted measurement
resumes. Then every executor's records are matched by ``job_id`` to the
first executor's: the script prints how many jobs match, the largest
``acc_target`` difference, and each wall time with its ratio to the first,
and how many jobs have identical ``metrics`` (every selection's accuracy and
the whole evaluation history), and exits 1 when the records differ (a missing
job, a failed job, or any metric). Run it on an otherwise idle machine: the ratios are only
as good as the quiet around them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate


def run(suite: str, executor: str, out: Path, jobs: int) -> float:
    """Wall seconds of one ``xbench run``, measured once and saved in ``OUT/EXECUTOR.wall``."""
    wall_file = out / f"{executor}.wall"
    if wall_file.exists():
        return float(wall_file.read_text())
    command = [sys.executable, "-m", "xbench.cli", "run", suite, "--executor", executor,
               "--out", str(out / executor), "--quiet"]
    if executor != "local":
        command += ["--jobs", str(jobs)]
    print("$ xbench", " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    wall_file.write_text(f"{wall:.1f}\n")
    return wall


def metrics(records_dir: Path) -> dict[str, dict | None]:
    """``job_id -> metrics`` (every selection, the evaluation history; ``None``: failed job)."""
    result: dict[str, dict | None] = {}
    for line in (records_dir / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        result[record["job_id"]] = record["metrics"] if record["status"] == "ok" else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite")
    parser.add_argument("--out", type=Path, default=Path("executor-bench"))
    parser.add_argument("--executors", default="local,process,ray")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    executors = args.executors.split(",")
    walls = {e: run(args.suite, e, args.out, args.jobs) for e in executors}
    reference = metrics(args.out / executors[0])
    rows, same = [], True
    for executor in executors:
        got = metrics(args.out / executor)
        shared = [j for j in reference.keys() & got.keys()
                  if got[j] is not None and reference[j] is not None]
        failed = sum(v is None for v in got.values())
        diffs = [abs(got[j]["acc_target"] - reference[j]["acc_target"]) for j in shared]
        equal = sum(got[j] == reference[j] for j in shared)
        same &= got.keys() == reference.keys() and failed == 0 and equal == len(reference)
        rows.append([executor, len(got), len(shared), failed, max(diffs, default=0.0), equal,
                     f"{walls[executor]:.0f}", f"{walls[executors[0]] / walls[executor]:.2f}"])
    print(tabulate(rows, headers=["executor", "jobs", f"ok job_ids shared with {executors[0]}",
                                  "failed", "max |Δ acc_target|", "identical metrics",
                                  "wall s", f"speed-up vs {executors[0]}"]))
    print("records identical" if same else "records DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
