"""history: a metric across commits, and step detection, on synthetic records."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import record, write
from xbench.cli import main
from xbench.analysis.compare import METRICS
from xbench.errors import ExitCode, NothingToCompareError
from xbench.analysis.history import Point, detect_steps, history


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def sha(i: int) -> str:
    return f"{i:02d}" + "c" * 38


def commits(rng, means, seeds=3, sd=0.005, method="erm", **kw):
    """Records of ``len(means)`` commits, one hour apart, ``seeds`` runs each."""
    out = []
    for i, mean in enumerate(means):
        for s in range(seeds):
            out.append(record(method, s, acc=float(mean + rng.normal(0, sd)), sha=sha(i),
                              time=f"2026-01-01T{i:02d}:00:00+00:00", **kw))
    return out


def test_a_planted_accuracy_step_is_marked_at_its_commit(tmp_path):
    rng = np.random.default_rng(0)
    path = write(tmp_path / "r.jsonl", commits(rng, [0.80] * 5 + [0.75] * 4))
    (series,) = history([path])
    assert [p.commit for p in series.points] == [sha(i)[:10] for i in range(9)]
    assert list(series.steps) == [5]
    step = series.steps[5]
    assert step.worse and step.status == "regression"
    assert step.change == pytest.approx(-0.05, abs=0.005)


def test_a_flat_series_is_never_marked_in_20_reseedings(tmp_path):
    rng = np.random.default_rng(1)
    metric = METRICS["acc_target"]
    for _ in range(20):
        points = [Point(str(i), str(i), 3, list(0.8 + rng.normal(0, 0.01, 3)), 0.8)
                  for i in range(10)]
        assert detect_steps(points, metric) == {}


def test_two_steps_and_single_runs_per_commit(tmp_path):
    rng = np.random.default_rng(2)
    means = [0.80] * 4 + [0.70] * 4 + [0.78] * 4
    (series,) = history([write(tmp_path / "r.jsonl", commits(rng, means, seeds=1))])
    assert list(series.steps) == [4, 8]
    assert series.steps[4].worse and not series.steps[8].worse


def test_timing_step_uses_one_statistic_per_run_and_is_per_device(tmp_path):
    rng = np.random.default_rng(3)
    records = []
    for i in range(6):
        speed = 1000 if i < 3 else 600
        for device in ("cpu: A", "cpu: B"):
            for seed in range(3):
                records.append(record("erm", seed, sha=sha(i), device=device,
                                      time=f"2026-01-01T{i:02d}:00:00+00:00",
                                      train=list(speed * np.exp(rng.normal(0, 0.05, 20)))))
    series = history([write(tmp_path / "r.jsonl", records)], metric="train_samples_per_s")
    assert sorted(s.device for s in series) == ["cpu: A", "cpu: B"]
    for s in series:
        assert all(len(p.values) == 3 for p in s.points)  # runs, not their 20 blocks
        assert list(s.steps) == [3] and s.steps[3].worse

    # one run per commit: 3 runs a side cannot reach the timing level (0.002): no step
    single = [r for r in records if r["seed"] == 0]
    series = history([write(tmp_path / "one.jsonl", single)], metric="train_samples_per_s")
    assert all(not s.steps for s in series)


def test_history_cli_marks_the_step_and_filters(tmp_path, capsys):
    rng = np.random.default_rng(4)
    records = (commits(rng, [0.80] * 3 + [0.90] * 3)
               + commits(rng, [0.60] * 6, method="coral"))
    path = write(tmp_path / "run" / "records.jsonl", records)
    code, out, _ = run_cli(capsys, "history", tmp_path / "run")
    assert code == ExitCode.OK
    assert "digits_rotated / coral: acc_target (higher is better)" in out
    step_lines = [line for line in out.splitlines() if "<- step" in line]
    assert len(step_lines) == 1
    assert step_lines[0].startswith(sha(3)[:10]) and "step better" in step_lines[0]
    assert "1 step(s) found in 2 series" in out
    code, out, _ = run_cli(capsys, "history", path, "--method", "cor*", "--format", "md")
    assert code == ExitCode.OK and "### digits_rotated / coral" in out and "erm" not in out
    code, _, err = run_cli(capsys, "history", path, "--task", "nope*")
    assert code == ExitCode.NOTHING_TO_COMPARE and "match --task nope*" in err
    code, _, err = run_cli(capsys, "history", path, "--metric", "speed")
    assert code == ExitCode.USAGE_ERROR and "unknown metric" in err
    # a threshold larger than the step hides it
    code, out, _ = run_cli(capsys, "history", path, "--threshold", "15")
    assert code == ExitCode.OK and "<- step" not in out


def test_history_without_runs_is_nothing_to_compare(tmp_path):
    path = write(tmp_path / "r.jsonl", [record("erm", 0, status="failed", error="boom")])
    with pytest.raises(NothingToCompareError):
        history([path])
