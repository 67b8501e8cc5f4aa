"""Hostile plugins: what one job may do to the next, run through the runner, the local and
process executors and ``xbench check`` (issue 15)."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import make_job
from tests.harness import hostile
from xbench.harness.executors import ExecutorOptions
from xbench.harness.isolation import preserved_global_state
from xbench.harness.runner import run_job
from xbench.harness.session import run
from xbench.registry import METHODS
from xbench.store import read_records


@pytest.fixture(scope="module", autouse=True)
def hostile_methods():
    for name, cls in hostile.HOSTILE.items():
        METHODS.register(name, cls, origin="tests")
    yield
    for name in hostile.HOSTILE:
        METHODS.unregister(name)


def job(method: str, **changes):
    return dataclasses.replace(make_job(method), **changes)


def _state():
    return (torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(),
            torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())


def _same_state(a, b):
    return (a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and torch.equal(a[3], b[3])
            and np.array_equal(a[4], b[4]) and a[5] == b[5])


# -- the runner ---------------------------------------------------------------------------------
def test_a_method_writing_into_its_inputs_cannot_corrupt_later_jobs():
    before = run_job(make_job("erm"))
    hostile_record = run_job(make_job("h_mutates_input"))
    after = run_job(make_job("erm"))
    assert after["status"] == "ok"
    assert after["metrics"]["acc_target"] == before["metrics"]["acc_target"]
    assert hostile_record["status"] == "failed"
    assert "in place" in hostile_record["error"]


def test_overwriting_the_labels_it_finds_fails_the_job_and_spares_the_next():
    before = run_job(make_job("erm"))
    cheat = run_job(make_job("h_overwrites_labels"))
    after = run_job(make_job("erm"))
    assert cheat["status"] == "failed" and "in place" in cheat["error"]
    assert after["metrics"]["acc_target"] == before["metrics"]["acc_target"]


def test_global_state_is_restored_after_a_job_that_changes_it():
    baseline = run_job(make_job("erm"))
    state = _state()
    changed = run_job(make_job("h_changes_globals"))
    assert changed["status"] == "ok", changed["error"]
    assert _same_state(_state(), state)
    again = run_job(make_job("erm"))
    assert again["metrics"]["history"] == baseline["metrics"]["history"]


def test_grad_mode_and_dtype_restored_by_the_guard():
    state = _state()
    with preserved_global_state():
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.rand(3)
        np.random.rand()
        random.random()
    assert _same_state(_state(), state)


@pytest.mark.parametrize("method, words", [("h_exits", "SystemExit"),
                                           ("h_interrupts", "KeyboardInterrupt: raised by the "
                                                            "method")])
def test_exits_raised_by_a_method_become_failed_records(method, words):
    record = run_job(make_job(method))
    assert record["status"] == "failed"
    assert record["error"].startswith(words)


def test_the_users_ctrl_c_still_stops_the_run():
    class SelfSignal(hostile.ERM):
        def update(self, batch):
            os.kill(os.getpid(), signal.SIGINT)  # what a real Ctrl-C delivers
            return super().update(batch)

    METHODS.register("h_sigint", SelfSignal, origin="tests")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_job(make_job("h_sigint"))
    finally:
        METHODS.unregister("h_sigint")


def test_a_hanging_job_times_out_and_is_recorded():
    record = run_job(job("h_hangs", timeout_s=1.0))
    assert record["status"] == "failed"
    assert record["error"].startswith("timeout:")
    assert record["cost"]["wall_s"] < 30


@pytest.mark.parametrize("method, words", [("h_one_row", "shape (1, 3) for 20 inputs"),
                                           ("h_nan_logits", "NaN or infinite"),
                                           ("h_wide_logits", "shape (20, 1003)")])
def test_malformed_predictions_fail_the_job(method, words):
    record = run_job(make_job(method))
    assert record["status"] == "failed"
    assert "InvalidPredictionError" in record["error"] and words in record["error"]


def test_timeout_flag_and_suite_key(tiny_suite, tmp_path):
    from xbench.cli import main
    from xbench.errors import ExitCode

    tiny_suite.write_text(tiny_suite.read_text().replace('methods = ["erm"]',
                                                         'methods = ["h_hangs"]\ntimeout_s = 1'))
    assert main(["run", str(tiny_suite), "--out", str(tmp_path / "o"), "--quiet",
                 "--seeds", "0"]) == ExitCode.FAILURES
    records = read_records(tmp_path / "o" / "records.jsonl").records
    assert [r["error"][:8] for r in records] == ["timeout:"]
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_suite.read_text().replace("timeout_s = 1", 'timeout_s = "long"'))
    assert main(["run", str(bad), "--out", str(tmp_path / "b"), "--quiet"]) == \
        ExitCode.USAGE_ERROR


# -- through the executors ----------------------------------------------------------------------
HOSTILE_SUITE = """
name = "hostile"
seeds = [0]
methods = [{methods}]
[budget]
steps = 20
batch_size = 16
eval_every = 10
eval_batch_size = 64
[[tasks]]
name = "tiny_blobs"
"""


def _suite(tmp_path, methods):
    path = tmp_path / "hostile.toml"
    path.write_text(HOSTILE_SUITE.format(methods=", ".join(f'"{m}"' for m in methods)))
    return path


def test_local_executor_records_every_hostile_job_and_runs_the_rest(tmp_path):
    suite = _suite(tmp_path, ["h_exits", "h_interrupts", "h_mutates_input",
                              "h_changes_globals", "h_one_row", "erm"])
    summary = run(str(suite), out=tmp_path / "o", progress=False)
    records = {r["method"]: r for r in read_records(tmp_path / "o" / "records.jsonl").records}
    assert len(records) == 6
    assert records["erm"]["status"] == "ok"
    assert records["erm"]["metrics"]["acc_target"] == \
        run_job(make_job("erm"))["metrics"]["acc_target"]
    assert {m for m, r in records.items() if r["status"] == "failed"} == \
        {"h_exits", "h_interrupts", "h_mutates_input", "h_one_row"}
    assert len(summary.failed) == 4


@pytest.mark.slow  # spawns several processes (about 30 s to 2 min)
def test_process_executor_records_a_crash_and_a_hang_and_keeps_the_others(tmp_path):
    suite = _suite(tmp_path, ["h_crashes", "h_exits", "h_mutates_input", "h_hangs", "erm"])
    run(str(suite), out=tmp_path / "o", executor="process", timeout_s=10,
        options=ExecutorOptions(jobs=2, threads=1), progress=False)
    records = read_records(tmp_path / "o" / "records.jsonl").records
    by_method = {r["method"]: r for r in records}
    assert len(records) == 5 and len(by_method) == 5
    assert by_method["h_hangs"]["error"].startswith("timeout:")
    assert by_method["h_crashes"]["status"] == "failed"
    assert "exited with code 1" in by_method["h_crashes"]["error"]
    assert by_method["h_exits"]["error"].startswith("SystemExit")
    assert "in place" in by_method["h_mutates_input"]["error"]
    assert by_method["erm"]["status"] == "ok"
    assert by_method["erm"]["metrics"]["acc_target"] == \
        run_job(make_job("erm"))["metrics"]["acc_target"]


@pytest.mark.slow  # spawns several processes (about 30 s to 2 min)
def test_process_executor_kills_a_job_stuck_past_its_time_limit(tmp_path, monkeypatch):
    from xbench.harness import executors

    monkeypatch.setattr(executors, "HARD_KILL_GRACE_S", 1.0)
    suite = _suite(tmp_path, ["h_stuck", "erm"])
    run(str(suite), out=tmp_path / "o", executor="process", timeout_s=3,
        options=ExecutorOptions(jobs=1, threads=1), progress=False)
    by_method = {r["method"]: r for r in read_records(tmp_path / "o" / "records.jsonl").records}
    assert by_method["h_stuck"]["status"] == "failed"
    assert by_method["h_stuck"]["error"].startswith("timeout:")
    assert "process was killed" in by_method["h_stuck"]["error"]
    assert by_method["erm"]["status"] == "ok"
    stuck = executors.run_in_child(job("h_stuck", timeout_s=2.0), "cpu")
    assert stuck["error"].startswith("timeout:") and "killed" in stuck["error"]


@pytest.mark.slow  # spawns several processes (about 30 s to 2 min)
def test_local_executor_records_a_crash_on_the_next_run(tmp_path):
    suite = _suite(tmp_path, ["h_crashes", "erm"])
    out = tmp_path / "o"
    script = textwrap.dedent(f"""
        import sys
        from tests.conftest import TinyBlobs
        from tests.harness import hostile
        from xbench.registry import METHODS, TASKS
        TASKS.register("tiny_blobs", TinyBlobs, origin="tests")
        for name, cls in hostile.HOSTILE.items():
            METHODS.register(name, cls, origin="tests")
        from xbench.cli import main
        sys.exit(main(["run", {str(suite)!r}, "--out", {str(out)!r}, "--quiet"]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True)
    assert first.returncode == 1  # os._exit(1) took the driver down with it
    assert "h_crashes" not in {r["method"] for r in read_records(out / "records.jsonl").records}
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True)
    assert second.returncode == 1, second.stderr
    records = {r["method"]: r for r in read_records(out / "records.jsonl").records}
    assert records["h_crashes"]["status"] == "failed"
    assert "exited with code 1" in records["h_crashes"]["error"]
    assert records["erm"]["status"] == "ok"
    assert not list((out / ".started").iterdir())


# -- xbench check -------------------------------------------------------------------------------
def test_check_survives_an_exiting_method(capsys):
    from xbench.cli import main

    code = main(["check", "h_exits"])
    out = capsys.readouterr().out
    assert code == 1
    assert "checks on 1 method(s)" in out
    assert "SystemExit" in out


def test_check_global_state_changes_do_not_reach_the_next_method(capsys):
    from xbench import testing

    state = _state()
    testing.check_method("h_changes_globals", ["predict_returns_logits", "run_job_is_ok"])
    assert _same_state(_state(), state)
    results = testing.check_method("erm", ["predict_returns_logits", "run_job_is_ok"])
    assert all(r.status == testing.PASSED for r in results), results


def test_the_leak_canary_catches_a_method_reading_target_labels():
    from xbench import testing

    [result] = testing.check_method("h_reads_labels", ["target_labels_never_reach_the_method"])
    assert result.status == testing.FAILED
    assert "target test labels" in result.reason
    [honest] = testing.check_method("erm", ["target_labels_never_reach_the_method"])
    assert honest.status == testing.PASSED, honest.reason
