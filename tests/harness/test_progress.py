"""Before and during a run: the estimate, step progress inside a job, the parallel speed-up."""

from __future__ import annotations

from tests.conftest import make_job
from xbench.harness import runner
from xbench.harness.session import StepBar, run


def test_runner_reports_every_step_to_the_hook():
    seen = []
    runner.step_hook = lambda step, total: seen.append((step, total))
    try:
        record = runner.run_job(make_job(steps=20))
    finally:
        runner.step_hook = None
    assert record["status"] == "ok"
    assert seen == [(i, 20) for i in range(1, 21)]


def test_step_bar_appears_only_after_a_few_seconds_and_closes():
    bar = StepBar(after=3600)
    for step in range(1, 11):
        bar(step, 10)
    assert bar.bar is None  # a short job shows nothing
    bar = StepBar(after=0)
    bar(1, 10)
    for step in range(2, 11):
        bar(step, 10)
    assert bar.bar is not None and bar.bar.n == 10
    bar(1, 5)  # the next job starts a fresh bar
    assert bar.bar is not None and bar.bar.total == 5
    bar.close()
    assert bar.bar is None


def test_estimate_from_earlier_records_on_this_device(tiny_suite, tmp_path, capsys):
    first = run(str(tiny_suite), out=tmp_path, seeds=[0], progress=False)
    assert "no earlier record" in first.estimate
    second = run(str(tiny_suite), out=tmp_path, seeds=[1, 2], progress=True)
    assert second.estimate.startswith("estimate: 2 jobs ≈ ")
    assert "from 1 earlier records" in second.estimate
    assert second.estimate in capsys.readouterr().err
    quiet = run(str(tiny_suite), out=tmp_path, seeds=[3], progress=False)
    assert quiet.estimate and quiet.estimate not in capsys.readouterr().err


def test_summary_measures_the_speedup(tiny_suite, tmp_path):
    summary = run(str(tiny_suite), out=tmp_path, progress=False)
    assert summary.ran == 2 and summary.parallelism == 1
    assert summary.jobs_wall_s > 0 and summary.elapsed_s >= summary.jobs_wall_s * 0.9
    assert 0 < summary.speedup <= 1.1


def test_cli_prints_the_speedup_with_several_jobs(tmp_path, capsys):
    from xbench.cli import main

    suite = tmp_path / "exec.toml"
    suite.write_text("""
name = "exec"
seeds = [0, 1]
methods = ["erm"]
[budget]
steps = 6
batch_size = 8
eval_every = 6
eval_batch_size = 128
[[tasks]]
name = "digits_rotated"
options = { version = "1", resolution = 8, angles = [0, 30, 60] }
targets = ["60"]
""")
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--executor", "process",
                 "--jobs", "2", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "speed-up " in err and "with 2 jobs in parallel" in err
