"""compare: the direction- and noise-aware gate, on synthetic records with planted changes."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from tests.synthetic import CPU, record, write
from xbench.cli import main
from xbench.analysis.compare import METRICS, assess, compare, get_metric, parse_thresholds, render
from xbench.errors import ExitCode, NothingToCompareError, UsageError


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def timings(rng, centre, n=20, noise=0.05):
    """``n`` raw throughput (or latency) samples with multiplicative noise."""
    return list(centre * np.exp(rng.normal(0.0, noise, n)))


def accuracy_runs(rng, mean, seeds, sd, method="erm", **kw):
    return [record(method, s, acc=float(mean + rng.normal(0.0, sd)), **kw) for s in seeds]


# -- accuracy -----------------------------------------------------------------------------------

def test_three_point_drop_over_five_seeds_is_caught_with_different_seeds(tmp_path):
    rng = np.random.default_rng(7)
    base = write(tmp_path / "base.jsonl", accuracy_runs(rng, 0.80, range(5), 0.005))
    new = write(tmp_path / "new.jsonl", accuracy_runs(rng, 0.77, range(5, 10), 0.005))
    result = compare([base], [new], metrics=["acc_target"])
    (row,) = result.rows
    assert row.verdict.status == "regression" and row.verdict.test == "Welch t"
    assert row.verdict.change == pytest.approx(-0.03, abs=0.006)
    assert row.verdict.p < 0.05
    assert result.exit_code == ExitCode.FAILURES


def test_three_point_drop_is_caught_with_matching_seeds_by_a_paired_test(tmp_path):
    # Same seeds: the seed effect (2 points) is shared by both sides; the paired test removes it.
    rng = np.random.default_rng(11)
    seed_effect = rng.normal(0.0, 0.02, 5)
    base = [record("erm", s, acc=0.80 + seed_effect[s] + rng.normal(0, 0.005)) for s in range(5)]
    new = [record("erm", s, acc=0.77 + seed_effect[s] + rng.normal(0, 0.005)) for s in range(5)]
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["acc_target"])
    (row,) = result.rows
    assert row.verdict.status == "regression" and row.verdict.test == "paired t"
    # Welch's test on the same numbers cannot see the drop through the seed effect
    welch = assess(METRICS["acc_target"], [r["metrics"]["acc_target"] for r in base],
                   [r["metrics"]["acc_target"] for r in new], paired=False)
    assert welch.status == "underpowered" and "needs" in welch.note


def test_a_three_point_drop_is_caught_in_every_one_of_50_reseedings(tmp_path):
    rng = np.random.default_rng(2024)
    metric = METRICS["acc_target"]
    for _ in range(50):
        base = 0.80 + rng.normal(0.0, 0.005, 5)
        new = 0.77 + rng.normal(0.0, 0.005, 5)
        assert assess(metric, base, new).status == "regression"


def test_seed_noise_of_the_same_configuration_is_never_flagged_in_50_reseedings(tmp_path):
    """Same configuration on both sides: 1-point seed noise on accuracy, 5% timing noise."""
    rng = np.random.default_rng(12345)
    flagged = []
    for rep in range(50):
        sides = []
        for side in ("base", "new"):
            seeds = range(5) if rep % 2 else (range(5) if side == "base" else range(5, 10))
            runs = [record(m, s, acc=float(0.80 + rng.normal(0, 0.01)),
                           train=timings(rng, 1000), infer=timings(rng, 5000, n=3),
                           latency=timings(rng, 1.0), mem=float(800 + rng.normal(0, 8)))
                    for m in ("erm", "coral") for s in seeds]
            sides.append(write(tmp_path / f"{side}{rep}.jsonl", runs))
        result = compare([sides[0]], [sides[1]])
        assert len(result.rows) == 10
        flagged += [(rep, r.method, r.metric.name) for r in result.by_status("regression")]
        flagged += [(rep, r.method, r.metric.name) for r in result.by_status("improvement")]
    assert flagged == []


def test_identical_deterministic_values_are_no_change_without_warnings(tmp_path):
    runs = [record("erm", s, acc=0.5, train=[1000.0] * 5, infer=[10.0] * 3, latency=[1.0] * 4)
            for s in range(3)]
    base, new = write(tmp_path / "b.jsonl", runs), write(tmp_path / "n.jsonl", runs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a zero-variance test
        result = compare([base], [new])
    assert {r.verdict.status for r in result.rows} == {"same"}
    assert all(math.isnan(r.verdict.p) for r in result.rows)
    assert result.exit_code == ExitCode.OK


def test_zero_variance_differences_need_more_seeds_never_p_zero():
    metric = METRICS["acc_target"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paired = assess(metric, [0.5, 0.6, 0.7], [0.45, 0.55, 0.65], paired=True)
        welch = assess(metric, [0.5, 0.5, 0.5], [0.45, 0.45, 0.45])
    for verdict in (paired, welch):
        assert verdict.status == "underpowered" and "needs more seeds" in verdict.note
        assert math.isnan(verdict.p)
    assert paired.test == "paired t" and welch.test == "Welch t"
    # a constant difference within the threshold is no change
    assert assess(metric, [0.5, 0.6, 0.7], [0.495, 0.595, 0.695], paired=True).status == "same"


def test_single_run_beyond_threshold_needs_more_seeds():
    verdict = assess(METRICS["acc_target"], [0.8], [0.7])
    assert verdict.status == "underpowered" and "needs more seeds" in verdict.note


# -- timing -------------------------------------------------------------------------------------

def test_thirty_percent_throughput_slowdown_over_runs_is_caught(tmp_path):
    rng = np.random.default_rng(3)
    base = [record("erm", s, train=timings(rng, 1000 * rng.lognormal(0, 0.03)))
            for s in range(8)]
    new = [record("erm", s, train=timings(rng, 700 * rng.lognormal(0, 0.03)))
           for s in range(8)]
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["train_samples_per_s"])
    (row,) = result.rows
    assert row.verdict.status == "regression"
    assert row.verdict.test == "Mann-Whitney U (per run)"
    assert row.verdict.change == pytest.approx(-0.30, abs=0.05)
    assert (row.verdict.n_base, row.verdict.n_new) == (8, 8)  # one statistic per run
    assert row.verdict.p < 0.002


def test_timing_with_too_few_runs_is_underpowered_not_a_failure(tmp_path, capsys):
    # three runs a side: the smallest one-sided Mann-Whitney p is 1/20 > 0.002
    rng = np.random.default_rng(4)
    base = [record("erm", s, train=timings(rng, 1000)) for s in range(3)]
    new = [record("erm", s, train=timings(rng, 700)) for s in range(3)]
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    (row,) = compare([b], [n], metrics=["train_samples_per_s"]).rows
    assert row.verdict.status == "underpowered" and row.verdict.worse
    assert row.verdict.needs == 6 and "needs 6 runs" in row.verdict.note
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "train_samples_per_s")
    assert code == ExitCode.OK and "Underpowered" in out
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "train_samples_per_s",
                           "--require-power")
    assert code == ExitCode.FAILURES and "UNDERPOWERED" in out


def test_timing_threshold_is_at_least_the_run_to_run_spread(tmp_path):
    # runs scatter by ~30%: a 20% median difference is within the measured spread
    rng = np.random.default_rng(5)
    base = [record("erm", s, train=[1000 * float(rng.lognormal(0, 0.3))]) for s in range(10)]
    new = [record("erm", s, train=[800 * float(rng.lognormal(0, 0.3))]) for s in range(10)]
    (row,) = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["train_samples_per_s"]).rows
    assert row.threshold > 0.2 and row.verdict.status != "regression"
    assert "run-to-run spread" in row.verdict.note


def test_declared_unstable_timing_is_shown_not_gated(tmp_path, capsys):
    rng = np.random.default_rng(6)
    base = [record("tent", s, train=timings(rng, 1000)) for s in range(8)]
    new = [record("tent", s, train=timings(rng, 600)) for s in range(8)]
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    assert run_cli(capsys, "compare", b, n, "--metric", "train_samples_per_s")[0] == \
        ExitCode.FAILURES
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "train_samples_per_s",
                           "--unstable", "digits_rotated/tent")
    assert code == ExitCode.OK and "Unstable timing, not gated (1)" in out


# -- directions ---------------------------------------------------------------------------------

DIRECTIONS = {"acc_target": True, "acc_target_worst": True, "acc_source_val": True,
              "acc_target@last": True, "train_samples_per_s": True,
              "infer_samples_per_s": True, "latency_ms": False, "peak_mem_mb": False}


@pytest.mark.parametrize("name, higher_is_better", sorted(DIRECTIONS.items()))
def test_every_metric_has_the_right_direction(name, higher_is_better):
    metric = get_metric(name)
    assert metric.higher_is_better is higher_is_better
    centre = 0.5 if metric.kind == "accuracy" else 100.0
    spread = np.linspace(0.99, 1.01, 10)  # ten runs (or raw timing samples) a side
    base, higher = centre * spread, 1.2 * centre * spread
    assert assess(metric, base, higher).status == ("improvement" if higher_is_better
                                                   else "regression")
    assert assess(metric, higher, base).status == ("regression" if higher_is_better
                                                   else "improvement")


def test_all_metrics_in_a_known_direction_from_records(tmp_path):
    rng = np.random.default_rng(5)

    def runs(acc, speed, latency, mem):
        return [record("erm", s, acc=acc + rng.normal(0, 0.002), train=timings(rng, speed),
                       infer=timings(rng, 5 * speed, n=10), latency=timings(rng, latency),
                       mem=mem + rng.normal(0, 1)) for s in range(6)]

    good, bad = runs(0.80, 1000, 1.0, 800), runs(0.75, 700, 1.3, 1040)
    b, n = write(tmp_path / "good.jsonl", good), write(tmp_path / "bad.jsonl", bad)
    worse = compare([b], [n])
    assert {r.metric.name: r.verdict.status for r in worse.rows} == {
        "acc_target": "regression", "train_samples_per_s": "regression",
        "infer_samples_per_s": "regression", "latency_ms": "regression",
        "peak_mem_mb": "regression"}
    assert {r.metric.name: r.verdict.worse for r in worse.rows} == dict.fromkeys(
        ["acc_target", "train_samples_per_s", "infer_samples_per_s", "latency_ms",
         "peak_mem_mb"], True)
    better = compare([n], [b])
    assert {r.verdict.status for r in better.rows} == {"improvement"}
    assert better.exit_code == ExitCode.OK


# -- matching, sections, configuration ----------------------------------------------------------

def test_new_missing_and_config_changes_are_listed(tmp_path, capsys):
    base = [record("erm", s) for s in range(3)] + [record("coral", s) for s in range(3)]
    new = ([record("erm", s, hparams={"lr": 1e-7, "weight_decay": 0.0}) for s in range(3)]
           + [record("dann", s) for s in range(3)])
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    result = compare([b], [n], metrics=["acc_target"])
    assert [r.method for r in result.rows] == ["erm"]  # matched although lr differs
    assert [m["method"] for m in result.missing] == ["coral"]
    assert [m["method"] for m in result.new] == ["dann"]
    assert result.config_changes == [{"task": "digits_rotated", "method": "erm",
                                      "change": "lr 0.001 -> 1e-07"}]
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.INCOMPLETE  # coral is missing in NEW
    for title in ("New: only in NEW (1)", "Missing: only in BASE (1)",
                  "Configuration changes (1)", "Incomplete: NEW lost data (1)"):
        assert title in out
    assert "missing in NEW" in out
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target", "--allow-missing")
    assert code == ExitCode.OK


def test_long_new_and_missing_lists_are_cut_unless_all(tmp_path):
    """A sweep compared with a small baseline has thousands of new benchmarks: they are all
    counted, the first LISTED shown, and --all lists every one."""
    from xbench.analysis import compare as compare_module

    base = [record("erm", s) for s in range(2)]
    new = base + [record("erm", s, task=f"task{i:03d}") for i in range(60) for s in range(2)]
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["acc_target"])
    assert len(result.new) == 60
    text = render(result)
    assert "New: only in NEW (60)" in text
    assert f"... and {60 - compare_module.LISTED} more (--all lists every one)" in text
    assert "task049" in text and "task050" not in text
    everything = render(result, show_all=True)
    assert "task059" in everything and "more (--all" not in everything


def test_runs_are_matched_by_the_comparability_key(tmp_path):
    """Replicate (data_seed) and location (root) options do not split a benchmark; the budget,
    an identity option and the precision do (they are other benchmarks)."""
    from xbench.analysis.records import comparability_key

    def variant(r, **changes):
        return {**r, **changes, "job_id": r["job_id"] + str(sorted(changes.items()))}

    base = [variant(record("erm", s), task_options={"data_seed": 0, "root": "/a"})
            for s in range(3)]
    new = [variant(record("erm", s), task_options={"data_seed": 7, "root": "/b"})
           for s in range(3)]
    assert comparability_key(base[0]) == comparability_key(new[0])
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["acc_target"])
    assert [r.method for r in result.rows] == ["erm"] and not result.missing

    for changed in ([record("erm", s, steps=300) for s in range(3)],
                    [variant(record("erm", s), task_options={"data_seed": 0, "resolution": 32})
                     for s in range(3)],
                    [variant(record("erm", s), precision="bf16") for s in range(3)]):
        result = compare([write(tmp_path / "b.jsonl", base)],
                         [write(tmp_path / "n.jsonl", [*new, *changed])], metrics=["acc_target"])
        assert [m["method"] for m in result.new] == ["erm"], changed[0]
        assert [r.method for r in result.rows] == ["erm"]
        assert result.new[0]["task"] != result.rows[0].task  # labelled by what differs


def test_cost_is_matched_with_the_device_in_the_key(tmp_path):
    base = [record("erm", s, device="cpu: A") for s in range(3)] + \
        [record("erm", s, device="cpu: B", train=(500.0,)) for s in range(3, 6)]
    new = [record("erm", s, device="cpu: A") for s in range(3)]
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["train_samples_per_s"])
    (row,) = result.rows  # only the cpu: A runs of BASE are compared: no 2x "speed-up"
    assert row.verdict.base == pytest.approx(1000.0) and row.verdict.n_base == 3


def test_a_sweep_is_matched_by_exact_hyper_parameters(tmp_path):
    lrs = ({"lr": 0.001, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 0.0})
    base = [record("erm", s, hparams=h) for h in lrs for s in range(3)]
    new = [record("erm", s, hparams=lrs[0]) for s in range(3)]
    result = compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                     metrics=["acc_target"])
    assert [r.method for r in result.rows] == ["erm{lr=0.001}"]
    assert [m["method"] for m in result.missing] == ["erm{lr=0.01}"]
    assert result.config_changes == []


def test_runs_failing_in_new_are_incomplete_exit_4(tmp_path, capsys):
    base = [record("erm", s) for s in range(3)]
    new = [record("erm", 0), record("erm", 1),
           record("erm", 2, status="failed", error="NonFiniteError: 'loss' became nan")]
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.INCOMPLETE == 4
    assert "Incomplete: NEW lost data (2)" in out and "became nan" in out
    assert "1 failed job(s) in NEW" in out and "fewer successful seeds in NEW: 2 < BASE 3" in out
    every = write(tmp_path / "all.jsonl", [record("erm", s, status="failed", error="boom")
                                           for s in range(3)])
    code, out, _ = run_cli(capsys, "compare", b, every, "--metric", "acc_target")
    assert code == ExitCode.INCOMPLETE and "3 failed job(s) in NEW: boom" in out
    code, out, _ = run_cli(capsys, "compare", b, every, "--metric", "acc_target",
                           "--allow-missing")
    assert code == ExitCode.OK and "(allowed by --allow-missing)" in out


def test_markdown_output_for_pull_requests(tmp_path, capsys):
    b = write(tmp_path / "b.jsonl", [record("erm", s, acc=0.80 + s / 1000) for s in range(3)])
    n = write(tmp_path / "n.jsonl", [record("erm", s, acc=0.70 + s / 500) for s in range(3)])
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target", "--format", "md")
    assert code == ExitCode.FAILURES
    assert out.startswith("**xbench compare: REGRESSION")
    assert "### Regressions (1)" in out
    line = next(line for line in out.splitlines() if line.startswith("| digits_rotated"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:7] == ["digits_rotated", "erm", "acc_target", "80.1", "70.2", "-9.9 pt",
                         "1 pt"]
    assert cells[9] == "paired t"


def test_threshold_override_and_fdr(tmp_path, capsys):
    rng = np.random.default_rng(1)
    b = write(tmp_path / "b.jsonl", accuracy_runs(rng, 0.80, range(5), 0.005))
    n = write(tmp_path / "n.jsonl", accuracy_runs(rng, 0.77, range(5, 10), 0.005))
    assert run_cli(capsys, "compare", b, n, "--metric", "acc_target")[0] == ExitCode.FAILURES
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target",
                           "--threshold", "acc_target=5")
    assert code == ExitCode.OK and "1 unchanged" in out
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target", "--fdr", "--all")
    assert code == ExitCode.FAILURES
    assert parse_thresholds(["latency_ms=20%", "acc_target=2pt"]) == {
        "latency_ms": pytest.approx(0.2), "acc_target": pytest.approx(0.02)}


# -- environment --------------------------------------------------------------------------------

def test_different_devices_warn_and_skip_cost_unless_forced(tmp_path, capsys):
    rng = np.random.default_rng(9)
    b = write(tmp_path / "b.jsonl", [record("erm", s, train=timings(rng, 1000)) for s in range(3)])
    n = write(tmp_path / "n.jsonl", [record("erm", s, train=timings(rng, 9000),
                                            device="NVIDIA H200", torch="2.5.0", threads=16)
                                     for s in range(3)])
    code, out, _ = run_cli(capsys, "compare", b, n)
    assert code == ExitCode.OK
    assert f"different devices: BASE {CPU}, NEW NVIDIA H200" in out
    assert "different torch versions" in out and "different thread counts" in out
    assert "4 cost comparison(s) skipped" in out
    result = compare([b], [n])
    assert [r.metric.name for r in result.rows] == ["acc_target"]
    forced = compare([b], [n], force_cost=True)
    assert {r.metric.name for r in forced.rows} == {"acc_target", "train_samples_per_s",
                                                    "infer_samples_per_s", "latency_ms",
                                                    "peak_mem_mb"}
    code, _, err = run_cli(capsys, "compare", b, n, "--metric", "train_samples_per_s")
    assert code == ExitCode.NOTHING_TO_COMPARE and "--force-cost" in err


# -- exit codes through the CLI -----------------------------------------------------------------

def test_exit_code_0_no_regression(tmp_path, capsys):
    runs = [record("erm", s, acc=0.8 + s / 100) for s in range(3)]
    b = write(tmp_path / "b.jsonl", runs)
    write(tmp_path / "n" / "records.jsonl", runs)
    code, out, _ = run_cli(capsys, "compare", b, tmp_path / "n")  # a run folder works too
    assert code == ExitCode.OK and "no regression" in out


def test_exit_code_1_regression_names_task_method_metric(tmp_path, capsys):
    rng = np.random.default_rng(0)
    b = write(tmp_path / "b.jsonl", accuracy_runs(rng, 0.80, range(5), 0.005))
    n = write(tmp_path / "n.jsonl", accuracy_runs(rng, 0.77, range(5), 0.005))
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.FAILURES
    row = next(line for line in out.splitlines() if line.startswith("digits_rotated"))
    assert row.split()[:3] == ["digits_rotated", "erm", "acc_target"]
    assert "pt" in row and "paired t" in row


@pytest.mark.parametrize("argv, fragment", [
    (["{b}", "{tmp}/nothing"], "no such results folder or record file"),
    (["{b}", "{n}", "--threshold", "acc_target"], "expected NAME=VALUE"),
    (["{b}", "{n}", "--threshold", "acc_target=-1"], "must be a non-negative number"),
    (["{b}", "{n}", "--threshold", "speed=10%"], "--threshold speed: unknown metric"),
    (["{b}", "{n}", "--metric", "acc_targt"], "Did you mean: acc_target"),
    (["{b}", "{n}", "--significance", "2"], "--significance 2.0: must be between 0 and 1"),
    (["{b}", "{n}", "--alpha", "0.1"], "unrecognized arguments: --alpha"),
])
def test_exit_code_2_usage_errors_are_one_line(tmp_path, capsys, argv, fragment):
    b = write(tmp_path / "b.jsonl", [record("erm", 0)])
    n = write(tmp_path / "n.jsonl", [record("erm", 0)])
    argv = [a.format(b=b, n=n, tmp=tmp_path) for a in argv]
    code, out, err = run_cli(capsys, "compare", *argv)
    assert code == ExitCode.USAGE_ERROR
    errors = [line for line in err.splitlines() if line.startswith("xbench: error:")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in err


def test_exit_code_3_nothing_comparable(tmp_path, capsys):
    b = write(tmp_path / "b.jsonl", [record("erm", s, task="digits_rotated") for s in range(2)])
    n = write(tmp_path / "n.jsonl", [record("erm", s, task="other_task") for s in range(2)])
    code, _, err = run_cli(capsys, "compare", b, n)
    assert code == ExitCode.NOTHING_TO_COMPARE
    assert "no benchmark has successful runs in both BASE and NEW" in err
    empty = write(tmp_path / "empty.jsonl", [])
    code, _, err = run_cli(capsys, "compare", empty, n)
    assert code == ExitCode.NOTHING_TO_COMPARE and "holds no records" in err
    with pytest.raises(NothingToCompareError):
        compare([b], [n])


def test_unknown_metric_is_a_usage_error():
    with pytest.raises(UsageError, match="Did you mean: latency_ms"):
        get_metric("latency")


def test_render_lists_every_section_title(tmp_path):
    rng = np.random.default_rng(4)
    base = (accuracy_runs(rng, 0.80, range(4), 0.002)
            + accuracy_runs(rng, 0.60, range(4), 0.002, method="coral")
            + [record("mmd", s, acc=0.5) for s in range(2)])
    new = (accuracy_runs(rng, 0.70, range(4), 0.002)
           + accuracy_runs(rng, 0.70, range(4), 0.002, method="coral")
           + [record("dann", s, acc=0.5) for s in range(2)])
    text = render(compare([write(tmp_path / "b.jsonl", base)], [write(tmp_path / "n.jsonl", new)],
                          metrics=["acc_target"]))
    for title in ("Regressions (1)", "Improvements (1)", "New: only in NEW (1)",
                  "Missing: only in BASE (1)"):
        assert title in text


# -- end to end: real runs of a tiny suite ------------------------------------------------------

E2E_SUITE = """
name = "tiny-gate"
seeds = [0, 1, 2]
methods = ["erm"]
[budget]
steps = 30
batch_size = 16
eval_every = 10
eval_batch_size = 64
[[tasks]]
name = "tiny_blobs"
"""


@pytest.fixture
def one_thread():
    """One torch thread: tiny jobs run far faster on a busy machine (restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_end_to_end_gate_on_real_runs(tmp_path, capsys, one_thread):
    suite = tmp_path / "gate.toml"
    suite.write_text(E2E_SUITE)

    def run(name, *extra):
        code, _, err = run_cli(capsys, "run", suite, "--out", tmp_path / name, "--quiet", *extra)
        assert code == ExitCode.OK, err
        return tmp_path / name

    base, again = run("base"), run("again")
    broken, reseeded = run("broken", "--set", "erm.lr=1e-7"), run("reseeded", "--seeds", "3,4,5")
    gate = ["--metric", "acc_target"]
    # the same seeds twice: CPU accuracy is reproducible
    code, out, _ = run_cli(capsys, "compare", base, again, *gate)
    assert code == ExitCode.OK and "1 unchanged" in out
    # a broken change (learning rate 1e-7) is a regression naming erm, with the config change
    code, out, _ = run_cli(capsys, "compare", base, broken, *gate)
    assert code == ExitCode.FAILURES, out
    row = next(line for line in out.splitlines() if line.startswith("tiny_blobs"))
    assert row.split()[:3] == ["tiny_blobs", "erm", "acc_target"]
    assert "lr 0.001 -> 1e-07" in out
    # other seeds of the same configuration: not a regression
    code, out, _ = run_cli(capsys, "compare", base, reseeded, *gate)
    assert code == ExitCode.OK, out
    # --exact: the same seeds twice are bit-identical; the broken change is a behaviour change
    code, out, _ = run_cli(capsys, "compare", base, again, "--exact")
    assert code == ExitCode.OK and "3 identical job(s)" in out, out
    code, out, _ = run_cli(capsys, "compare", base, broken, "--exact")
    assert code == ExitCode.FAILURES and "BEHAVIOUR CHANGED" in out, out
    # one seed removed from NEW: incomplete
    lines = (again / "records.jsonl").read_text().splitlines()
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("\n".join(line for line in lines if '"seed": 2' not in line) + "\n")
    code, out, _ = run_cli(capsys, "compare", base, fewer, *gate)
    assert code == ExitCode.INCOMPLETE and "missing seed(s) 2" in out, out


# -- nothing lost passes ------------------------------------------------------------------------

def test_a_missing_seed_in_new_is_incomplete_even_when_the_rest_is_identical(tmp_path, capsys):
    base = [record("erm", s, acc=0.8 + s / 100) for s in range(5)]
    b = write(tmp_path / "b.jsonl", base)
    n = write(tmp_path / "n.jsonl", base[:4])
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.INCOMPLETE
    assert "fewer successful seeds in NEW: 4 < BASE 5 (missing seed(s) 4)" in out
    assert out.startswith("xbench compare: INCOMPLETE")


def test_one_seed_left_and_a_collapse_is_not_a_pass(tmp_path, capsys):
    # the case: NEW ran one seed and ERM collapsed from 50.0 to 10.0
    b = write(tmp_path / "b.jsonl", [record("erm", s, acc=0.5) for s in range(2)])
    n = write(tmp_path / "n.jsonl", [record("erm", 0, acc=0.1)])
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.INCOMPLETE and "needs more seeds" in out
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target", "--allow-missing",
                           "--require-power")
    assert code == ExitCode.FAILURES


def test_a_missing_benchmark_is_named_and_regression_wins_over_incomplete(tmp_path, capsys):
    rng = np.random.default_rng(8)
    base = accuracy_runs(rng, 0.8, range(6), 0.01) + accuracy_runs(rng, 0.7, range(6), 0.01,
                                                                    method="coral")
    new = accuracy_runs(rng, 0.6, range(6), 0.01)
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    result = compare([b], [n], metrics=["acc_target"])
    assert result.incomplete == [{"task": "digits_rotated", "method": "coral",
                                  "problem": "missing in NEW"}]
    assert result.by_status("regression") and result.exit_code == ExitCode.FAILURES
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.FAILURES and "Incomplete: NEW lost data (1)" in out


def test_underpowered_is_not_no_regression(tmp_path, capsys):
    # two noisy seeds a side: a 3-point drop cannot be seen; say so, and how many seeds would
    b = write(tmp_path / "b.jsonl", [record("erm", 0, acc=0.80), record("erm", 1, acc=0.75)])
    n = write(tmp_path / "n.jsonl", [record("erm", 0, acc=0.74), record("erm", 1, acc=0.75)])
    result = compare([b], [n], metrics=["acc_target"])
    (row,) = result.rows
    assert row.verdict.status == "underpowered" and row.verdict.needs > 2
    assert row.verdict.detectable > 0.03
    assert f"needs {row.verdict.needs} seeds" in row.verdict.note
    code, out, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target")
    assert code == ExitCode.OK and "no regression" in out and "1 underpowered" in out
    code, _, _ = run_cli(capsys, "compare", b, n, "--metric", "acc_target", "--require-power")
    assert code == ExitCode.FAILURES


# -- exact --------------------------------------------------------------------------------------

def _one_item_changed(r: dict) -> dict:
    r = json.loads(json.dumps(r))
    r["metrics"]["domains"] = {"75": {"test": 0.801, "val": 0.7}}
    return r


def test_exact_passes_identical_runs_and_flags_a_one_item_change(tmp_path, capsys):
    base = [record("erm", s, acc=0.8) for s in range(3)]
    for r in base:
        r["metrics"]["domains"] = {"75": {"test": 0.8, "val": 0.7}}
        r["metrics"]["selected_step"] = 200
    b = write(tmp_path / "b.jsonl", base)
    same = write(tmp_path / "same.jsonl", [json.loads(json.dumps(r)) for r in base])
    code, out, _ = run_cli(capsys, "compare", b, same, "--exact")
    assert code == ExitCode.OK and "3 identical job(s)" in out
    # one item of one seed's target test split: 1/1000 in a per-domain accuracy
    changed = write(tmp_path / "changed.jsonl", [base[0], _one_item_changed(base[1]), base[2]])
    code, out, _ = run_cli(capsys, "compare", b, changed, "--exact")
    assert code == ExitCode.FAILURES and "BEHAVIOUR CHANGED" in out
    assert "seed 1" in out and "domains.75.test" in out and "0.8 -> 0.801" in out
    # the selected step and by_selection count too
    moved = json.loads(json.dumps(base[2]))
    moved["metrics"]["selected_step"] = 100
    code, out, _ = run_cli(capsys, "compare", b, write(tmp_path / "m.jsonl",
                                                       [*base[:2], moved]), "--exact")
    assert code == ExitCode.FAILURES and "selected_step" in out
    # a statistical gate would not flag a one-item change
    assert run_cli(capsys, "compare", b, changed, "--metric", "acc_target")[0] == ExitCode.OK


def test_exact_still_reports_lost_data(tmp_path, capsys):
    base = [record("erm", s) for s in range(3)]
    code, out, _ = run_cli(capsys, "compare", write(tmp_path / "b.jsonl", base),
                           write(tmp_path / "n.jsonl", base[:2]), "--exact")
    assert code == ExitCode.INCOMPLETE and "2 identical job(s)" in out


# -- exports ------------------------------------------------------------------------------------

def test_github_action_benchmark_and_bencher_exports(tmp_path, capsys):
    rng = np.random.default_rng(9)
    base = [record("erm", s, acc=0.8 + float(rng.normal(0, 0.01)), train=timings(rng, 1000))
            for s in range(6)]
    new = [record("erm", s, acc=0.8 + float(rng.normal(0, 0.01)), train=timings(rng, 1000))
           for s in range(6)]
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    argv = ["compare", b, n, "--metric", "acc_target,train_samples_per_s", "--format"]
    code, out, _ = run_cli(capsys, *argv, "github-action-benchmark")
    assert code == ExitCode.OK
    entries = json.loads(out)
    assert [e["name"] for e in entries] == ["digits_rotated/erm/acc_target",
                                            "digits_rotated/erm/train_samples_per_s"]
    acc = entries[0]
    assert set(acc) == {"name", "unit", "value", "range", "extra"} and acc["unit"] == "%"
    mean = 100 * np.mean([r["metrics"]["acc_target"] for r in new])
    assert acc["value"] == pytest.approx(mean) and acc["range"].startswith("± ")
    assert "higher is better" in acc["extra"] and "verdict" in acc["extra"]
    assert all(isinstance(e["value"], float) for e in entries)

    code, out, _ = run_cli(capsys, *argv, "bencher")
    bmf = json.loads(out)
    measure = bmf["digits_rotated/erm"]["acc_target"]
    assert measure["value"] == pytest.approx(mean)
    assert measure["lower_value"] < measure["value"] < measure["upper_value"]
    assert set(bmf["digits_rotated/erm"]) == {"acc_target", "train_samples_per_s"}


def test_exit_code_3_when_the_accuracy_cannot_be_read(tmp_path, capsys):
    base = write(tmp_path / "b.jsonl", [record("erm", s) for s in range(3)])
    unreadable = [record("erm", s) for s in range(3)]
    for r in unreadable:
        r["metrics"]["acc_target"] = 57.0  # a percentage, not an accuracy: invalid
    new = write(tmp_path / "n.jsonl", unreadable)
    code, out, err = run_cli(capsys, "compare", base, new)
    assert code == ExitCode.NOTHING_TO_COMPARE, out + err
    assert "Traceback" not in err
    # a requested accuracy that neither side recorded is not "no regression" either
    new_ok = write(tmp_path / "n2.jsonl", [record("erm", s) for s in range(3)])
    code, out, err = run_cli(capsys, "compare", base, new_ok, "--metric",
                             "acc_target@oracle,latency_ms")
    assert code == ExitCode.NOTHING_TO_COMPARE, out + err
    assert "acc_target@oracle cannot be read" in err


def test_window_times_against_recent_commits_and_judges_accuracy_on_the_newest(tmp_path):
    """BASE is a history of five nightly commits (3 seeds each); the timing baseline is every
    run of the newest N commits, accuracy the newest commit only."""
    rng = np.random.default_rng(8)
    history = []
    for day in range(5):
        acc = 0.70 if day < 4 else 0.80   # the newest commit fixed a bug: accuracy rose
        for s in range(3):
            history.append(record("erm", s, acc=acc + rng.normal(0, 0.002), sha=f"{day}" * 40,
                                  time=f"2026-01-0{day + 1}T00:00:00+00:00",
                                  train=timings(rng, 1000 * rng.lognormal(0, 0.03))))
    base = write(tmp_path / "history.jsonl", history)
    slow = [record("erm", s, acc=0.80 + rng.normal(0, 0.002), sha="f" * 40,
                   train=timings(rng, 700 * rng.lognormal(0, 0.03))) for s in range(3)]
    new = write(tmp_path / "new.jsonl", slow)
    result = compare([base], [new], metrics=["acc_target", "train_samples_per_s"], window=5)
    rows = {r.metric.name: r.verdict for r in result.rows}
    assert rows["acc_target"].n_base == 3 and rows["acc_target"].status != "regression"
    assert rows["acc_target"].base == pytest.approx(0.80, abs=0.005)
    assert rows["train_samples_per_s"].n_base == 15
    assert rows["train_samples_per_s"].status == "regression"  # 15 vs 3 runs reach p < 0.002
    assert any("newest 5 of 5 commits" in n for n in result.warnings)
    one = compare([base], [new], metrics=["train_samples_per_s"], window=1)
    (row,) = one.rows
    assert row.verdict.n_base == 3 and row.verdict.status == "underpowered"  # 3 vs 3 runs
    with pytest.raises(UsageError, match="--window 0"):
        compare([base], [new], window=0)
