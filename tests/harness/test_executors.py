"""Executors: same records everywhere, resumable after a killed driver, status, extras."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xbench.cli import main
from xbench.errors import ExitCode, XbenchError
from xbench.harness.executors import ExecutorOptions, available_cores, require
from xbench.harness.session import run, status
from xbench.store import read_records

SUITE = """
name = "exec"
seeds = [0, 1]
methods = ["erm"]
[budget]
steps = 12
batch_size = 8
eval_every = 6
eval_batch_size = 128
[[tasks]]
name = "digits_rotated"
options = { version = "1", resolution = 8, angles = [0, 30, 60] }
targets = ["60"]
"""


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "exec.toml"
    path.write_text(SUITE)
    return path


def accuracies(out: Path) -> dict[str, float]:
    records = read_records(out / "records.jsonl").records
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    return {r["job_id"]: r["metrics"]["acc_target"] for r in records}


def test_local_process_and_ray_give_identical_records(suite_file, tmp_path):
    threads = max(1, available_cores() // 2)  # what each of 2 workers gets
    previous = torch.get_num_threads()
    run(str(suite_file), out=tmp_path / "local", options=ExecutorOptions(threads=threads),
        progress=False)
    assert torch.get_num_threads() == previous  # the local executor restores the setting
    local = accuracies(tmp_path / "local")
    run(str(suite_file), out=tmp_path / "process", executor="process",
        options=ExecutorOptions(jobs=2), progress=False)
    run(str(suite_file), out=tmp_path / "ray", executor="ray",
        options=ExecutorOptions(jobs=2, cpus_per_job=threads), progress=False)
    assert len(local) == 2
    assert accuracies(tmp_path / "process") == local
    assert accuracies(tmp_path / "ray") == local


def test_killed_process_sweep_resumes_with_every_job_exactly_once(tmp_path):
    suite = tmp_path / "sweep.toml"
    suite.write_text(SUITE.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4, 5]")
                     .replace("steps = 12", "steps = 60"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xbench.cli", "run", str(suite), "--out", str(out),
               "--executor", "process", "--jobs", "2", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 1:
            break
        time.sleep(0.1)
    assert driver.poll() is None, "the sweep finished before it could be interrupted"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
    driver.wait()
    before = read_records(records).records
    assert 1 <= len(before) < 6
    assert status(out)[0].missing > 0
    code = subprocess.run(command, env=env, capture_output=True).returncode
    assert code == 0
    after = read_records(records)
    ids = [r["job_id"] for r in after.records]
    assert len(ids) == 6 and len(set(ids)) == 6  # every job exactly once
    assert [r["job_id"] for r in after.records[:len(before)]] == [r["job_id"] for r in before]
    assert status(out)[0].done == 6


def test_submitit_local_executor_runs_a_two_job_array(suite_file, tmp_path):
    summary = run(str(suite_file), out=tmp_path / "slurm", executor="slurm",
                  options=ExecutorOptions(cluster="local", folder=str(tmp_path / "logs"),
                                          max_parallel=2), progress=False)
    assert summary.ran == 2 and not summary.failed
    assert len(accuracies(tmp_path / "slurm")) == 2


def test_status_reports_missing_jobs_and_exits_nonzero_until_complete(suite_file, tmp_path,
                                                                      capsys):
    out = tmp_path / "partial"
    run(str(suite_file), out=out, seeds=[0], progress=False)
    from xbench.harness.plan import build_plan
    from xbench.harness.session import save_plan
    from xbench.harness.suite import load_suite

    save_plan(out, "exec", build_plan(load_suite(str(suite_file))))  # the full 2-seed plan
    assert main(["status", str(out)]) == ExitCode.FAILURES
    assert "1 done, 0 failed, 1 missing: INCOMPLETE" in capsys.readouterr().out
    run(str(suite_file), out=out, progress=False)
    assert main(["status", str(out)]) == ExitCode.OK
    assert "2 done, 0 failed, 0 missing: complete" in capsys.readouterr().out


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(XbenchError, match=r'pip install "xbench\[ray\]"'):
        require("no_such_module_for_xbench", "ray")


def test_unknown_executor_is_a_one_line_usage_error(suite_file, capsys):
    assert main(["run", str(suite_file), "--executor", "rayy"]) == ExitCode.USAGE_ERROR
    assert "Unknown executor 'rayy'. Did you mean: ray?" in capsys.readouterr().err
