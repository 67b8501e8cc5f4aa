"""The gate suite's design, simulated: does `xbench compare` catch a 3-point drop, and how
often does it cry wolf? Records are built here (tests.synthetic), never read back from xbench.

Design (xbench/suites/gate.toml): mnist1d_shift v2 -> sheared, 2,000 target test items, 30
seeds, erm and coral. Per-benchmark accuracy and seed-to-seed sd measured on the committed
baseline (results/gate, 30 seeds at the gate's budget): erm 39.4 +- 2.83 points, coral
40.9 +- 2.14. Each simulated run: a model accuracy drawn around the mean (the seed's model
variance), then 2,000 test items scored binomially (the item noise), so the observed sd matches
the measured one. A seed also fixes the data (the split follows the seed), which two
configurations run with that seed share: on the committed baseline, erm and coral with the same
seed correlate at 0.88, so a share RHO of each run's model variance is the seed's and the rest
is the configuration's own. A behaviour-changing commit redraws the configuration's part (and
the items it gets right); the same code with other seeds redraws both.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.synthetic import record, write
from xbench.analysis.compare import METRICS, assess, compare
from xbench.errors import ExitCode

ITEMS = 2000
SEEDS = 30
#: method: (mean target accuracy, measured seed-to-seed sd), the gate's benchmarks
DESIGN = {"erm": (0.394, 0.0283), "coral": (0.409, 0.0214)}
#: Share of a run's model variance that its seed (the data split) fixes, measured above.
RHO = 0.88
#: Each seed's effect (a standard normal draw), shared by every run with that seed.
_SEED_EFFECT = np.random.default_rng(99).standard_normal(10_000)


def draw(rng, mean: float, sd: float, n: int, seeds=None) -> np.ndarray:
    model_sd = math.sqrt(max(sd ** 2 - mean * (1 - mean) / ITEMS, 0.0))
    own = rng.normal(0.0, 1.0, n)
    shared = _SEED_EFFECT[list(seeds)] if seeds is not None else rng.normal(0.0, 1.0, n)
    noise = model_sd * (math.sqrt(RHO) * shared + math.sqrt(1 - RHO) * own)
    p = np.clip(mean + noise, 0.0, 1.0)
    return rng.binomial(ITEMS, p) / ITEMS


def side(rng, seeds, drop: float = 0.0) -> list[dict]:
    out = []
    for method, (mean, sd) in DESIGN.items():
        values = draw(rng, mean - drop, sd, len(seeds), seeds)
        out += [record(method, s, acc=float(v), task="mnist1d_shift", target=("sheared",))
                for s, v in zip(seeds, values)]
    return out


def statuses(tmp_path, base, new) -> dict[str, str]:
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["acc_target"])
    return {row.method: row.verdict.status for row in result.rows}


def test_the_gate_design_is_powered_for_a_three_point_drop():
    # the verdict's own power calculation at the measured sds: detectable drop < 3 points
    rng = np.random.default_rng(0)
    for method, (mean, sd) in DESIGN.items():
        base = dict(enumerate(draw(rng, mean, sd, SEEDS)))
        new = dict(enumerate(draw(rng, mean, sd, SEEDS)))
        verdict = assess(METRICS["acc_target"], base, new, paired=True)
        assert verdict.detectable < 0.03, (method, verdict)


def test_planted_three_point_drop_is_caught_in_at_least_80_percent(tmp_path):
    rng = np.random.default_rng(2026)
    seeds = range(SEEDS)
    caught = {m: 0 for m in DESIGN}
    replicates = 60
    for _ in range(replicates):
        found = statuses(tmp_path, side(rng, seeds), side(rng, seeds, drop=0.03))
        for method in DESIGN:
            caught[method] += found[method] == "regression"
    rates = {m: c / replicates for m, c in caught.items()}
    print(f"detection rate of a planted 3-point drop over {replicates} replicates: {rates}")
    assert sum(caught.values()) / (replicates * len(DESIGN)) >= 0.8
    assert min(rates.values()) >= 0.75


def test_neutral_reseedings_false_alarm_rate(tmp_path):
    """Same code, other seeds (Welch) and a behaviour-changing neutral commit on the same seeds
    (paired): per benchmark <= 5% false alarms; the per-run rate is printed."""
    rng = np.random.default_rng(7)
    reseedings = 60
    alarms = {m: 0 for m in DESIGN}
    runs_with_alarm = 0
    underpowered = {"paired": 0, "welch": 0}
    for i in range(reseedings):
        base = side(rng, range(SEEDS))
        other = range(SEEDS, 2 * SEEDS) if i % 2 == 0 else range(SEEDS)
        found = statuses(tmp_path, base, side(rng, other))
        for method in DESIGN:
            alarms[method] += found[method] == "regression"
        kind = "welch" if i % 2 == 0 else "paired"
        underpowered[kind] += sum(s == "underpowered" for s in found.values())
        runs_with_alarm += any(s == "regression" for s in found.values())
    per_benchmark = {m: a / reseedings for m, a in alarms.items()}
    per_run = runs_with_alarm / reseedings
    verdicts = reseedings // 2 * len(DESIGN)
    print(f"false alarms over {reseedings} neutral reseedings: per benchmark {per_benchmark}, "
          f"per run {per_run:.3f}; underpowered verdicts {underpowered} of {verdicts} each")
    assert max(per_benchmark.values()) <= 0.05
    assert per_run <= 0.10
    # same seeds (what CI runs): powered; other seeds (Welch) sit at the edge of the design
    # (expected detectable drop 2.84 points for erm against the 3 asked), so some of those
    # verdicts say "underpowered (needs N seeds)" -- never a pass or a failure by default
    assert underpowered["paired"] == 0
    assert underpowered["welch"] <= 0.25 * verdicts


def test_same_code_same_seeds_is_identical_and_passes(tmp_path):
    rng = np.random.default_rng(3)
    base = side(rng, range(SEEDS))
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", base)],
                     metrics=["acc_target"])
    assert result.exit_code == ExitCode.OK
    assert {r.verdict.note for r in result.rows} == {"identical"}


@pytest.mark.slow
def test_detection_and_false_alarm_rates_over_500_replicates():
    """The same simulation at the verdict level (assess), 500 replicates each."""
    rng = np.random.default_rng(11)
    metric = METRICS["acc_target"]
    for method, (mean, sd) in DESIGN.items():
        caught = alarms = 0
        for _ in range(500):
            base = dict(enumerate(draw(rng, mean, sd, SEEDS)))
            drop = dict(enumerate(draw(rng, mean - 0.03, sd, SEEDS)))
            same = dict(enumerate(draw(rng, mean, sd, SEEDS)))
            caught += assess(metric, base, drop, paired=True).status == "regression"
            alarms += assess(metric, base, same, paired=True).status == "regression"
        print(f"{method}: detection {caught / 500:.3f}, false alarms {alarms / 500:.3f}")
        assert caught / 500 >= 0.8 and alarms / 500 <= 0.05
