"""kill -9 at random moments, local and process executors (issue 15): after the kills and a
final run, no record is lost, duplicated or corrupt, and the results equal an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from xbench.store import read_records

SUITE = """
name = "killloop"
seeds = [0, 1, 2, 3, 4, 5, 6, 7]
methods = ["erm"]
[budget]
steps = 60
batch_size = 8
eval_every = 30
eval_batch_size = 128
[[tasks]]
name = "digits_rotated"
options = { version = "1", resolution = 8, angles = [0, 30, 60] }
targets = ["60"]
"""

KILLS_PER_EXECUTOR = 10


def _command(suite, out, executor):
    extra = ["--jobs", "2"] if executor == "process" else []
    return [sys.executable, "-m", "xbench.cli", "run", str(suite), "--out", str(out),
            "--executor", executor, "--threads", "1", "--quiet", *extra]


def _accuracies(out):
    result = read_records(out / "records.jsonl")
    return result, {r["job_id"]: r["metrics"]["acc_target"] for r in result.records}


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_duplicates_and_corrupts_nothing(tmp_path):
    suite = tmp_path / "killloop.toml"
    suite.write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    baseline_out = tmp_path / "baseline"
    subprocess.run(_command(suite, baseline_out, "local"), env=env, check=True,
                   capture_output=True)
    _, baseline = _accuracies(baseline_out)
    assert len(baseline) == 8
    rng = random.Random(15)
    kills = 0
    for executor in ("local", "process"):
        out = tmp_path / executor
        killed, attempts = 0, 0
        while killed < KILLS_PER_EXECUTOR and attempts < 3 * KILLS_PER_EXECUTOR:
            attempts += 1
            driver = subprocess.Popen(_command(suite, out, executor), env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            time.sleep(rng.uniform(0.5, 6.0))
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                killed += 1
            driver.wait()
        final = subprocess.run(_command(suite, out, executor), env=env, capture_output=True,
                               text=True)
        assert final.returncode == 0, final.stderr
        result, accuracies = _accuracies(out)
        ids = [r["job_id"] for r in result.records]
        assert result.problems == [] and result.invalid == 0  # nothing corrupt
        assert len(ids) == len(set(ids)) == 8  # nothing lost, nothing duplicated
        assert accuracies == baseline  # identical to an uninterrupted run
        assert not (out / ".started").exists() or not list((out / ".started").iterdir())
        kills += killed
    assert kills >= 2 * KILLS_PER_EXECUTOR
