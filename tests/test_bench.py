"""xbench bench: interleaved A/B timing, judged on one statistic per run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xbench.bench import abba, interleave, render
from xbench.errors import ExitCode, UsageError


def workload(slowdown: float = 1.0, blocks: int = 7, items: int = 100):
    """A CPU-bound 'training step' timed like the runner does: throughput per block, and the
    run's statistic is the median of its blocks. ``slowdown`` multiplies the work per item."""
    work = int(2000 * slowdown)

    def run(_index: int) -> dict[str, dict[str, float]]:
        rates = []
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(items):
                total = 0
                for i in range(work):
                    total += i
            rates.append(items / (time.perf_counter() - start))
        return {"toy/erm": {"train_samples_per_s": float(np.median(rates))}}

    return run


def test_abba_order():
    assert abba(3) == ["A", "B", "B", "A", "A", "B"]


def test_interleaved_test_golden_against_scipy_wilcoxon():
    from scipy import stats

    from xbench.analysis.gate_stats import interleaved_test

    base = [100.0, 101, 99, 102, 98, 100, 103, 97, 100]
    new = [b * r for b, r in zip(base, [0.7, 0.72, 0.69, 0.71, 0.68, 0.7, 0.73, 0.66, 0.95])]
    p, change, _ = interleaved_test(base, new, 0.1, higher_is_better=True)
    logs = np.log(np.array(new) / np.array(base)) - np.log(0.9)
    assert p == pytest.approx(stats.wilcoxon(logs, alternative="less", method="exact").pvalue)
    assert p == pytest.approx(2 / 512) and change == pytest.approx(-0.30)


class Machine:
    """A shared machine whose load drifts (a random walk of +-40%, as when neighbours start
    and stop jobs), plus 3% noise per run: what one timing run sees is the code's speed
    divided by the load at that moment."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.load = 1.0

    def side(self, speed: float):
        def run(_index: int) -> dict[str, dict[str, float]]:
            self.load = float(np.clip(self.load * np.exp(self.rng.normal(0, 0.08)), 0.6, 1.4))
            blocks = speed / self.load * np.exp(self.rng.normal(0, 0.03, 7))
            return {"toy/erm": {"train_samples_per_s": float(np.median(blocks))}}
        return run


def test_interleaved_timing_catches_a_planted_30_percent_slowdown():
    caught = 0
    for seed in range(20):
        machine = Machine(seed)
        result = interleave(machine.side(1000.0), machine.side(700.0),
                            metrics=["train_samples_per_s"])
        (row,) = result.rows
        assert row.verdict.n_base == row.verdict.n_new == 12  # one statistic per run
        assert row.verdict.change == pytest.approx(-0.30, abs=0.08)
        caught += row.verdict.status == "regression"
    assert caught >= 19


def test_same_code_a_b_is_not_flagged_in_50_reseedings():
    for seed in range(50):
        machine = Machine(100 + seed)
        result = interleave(machine.side(1000.0), machine.side(1000.0),
                            metrics=["train_samples_per_s"])
        assert result.exit_code == ExitCode.OK, render(result)


def test_per_run_values_without_pairing_would_drown_in_the_drift():
    # the same runs judged unpaired (compare's Mann-Whitney on per-run values) see a
    # run-to-run spread far above the 30% change's pair spread
    from xbench.analysis.gate_stats import timing_spread

    machine = Machine(7)
    a, b = machine.side(1000.0), machine.side(1000.0)
    values = [a(0)["toy/erm"]["train_samples_per_s"] for _ in range(12)]
    assert timing_spread(values) > 0.05


def test_a_real_cpu_workload_interleaved():
    """Wall-clock timing of a real CPU loop on this machine: the estimate of a planted 30%
    slowdown is right, and the same code is not flagged (whether the slowdown is also
    significant depends on how loaded the machine is: its spread sets the threshold)."""
    result = interleave(workload(1.0), workload(1 / 0.7), metrics=["train_samples_per_s"])
    (row,) = result.rows
    assert -0.5 < row.verdict.change < -0.15, render(result)
    same = interleave(workload(), workload(), metrics=["train_samples_per_s"])
    assert same.exit_code == ExitCode.OK, render(same)


def test_unstable_benchmarks_are_not_gated_and_bench_times_timing_only():
    machine = Machine(3)
    result = interleave(machine.side(1000.0), machine.side(700.0),
                        metrics=["train_samples_per_s"], unstable=["erm"])
    assert result.rows[0].verdict.status == "unstable" and result.exit_code == ExitCode.OK
    with pytest.raises(UsageError):
        interleave(workload(), workload(), repeats=1, metrics=["acc_target"])
