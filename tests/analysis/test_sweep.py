"""Selection across a sweep: the choice per selection method, computed by hand from fixtures."""

from __future__ import annotations

import copy

import pytest

from tests.records_factory import record, sweep_records, write
from xbench.analysis.report import load_results
from xbench.analysis.sweep import SELECTIONS, select, visible


def frame(tmp_path, records, name="r"):
    return load_results(write(tmp_path / name, records))


# Chosen (trial, step, target test accuracy) per selection method, read off the table in
# records_factory.TRIALS / HOLDOUTS by hand:
EXPECTED = {
    # best source val at each trial's own training_domain step: .80 (t0@200), .85 (t1@100), .65
    "training_domain": (1, 100, 0.40),
    # source val at the last step: .80 (t0), .75 (t1), .65 (t2)
    "last": (0, 200, 0.65),
    # best target val at each trial's oracle step: .60 (t0@100), .80 (t1@200), .85 (t2@100)
    "oracle": (2, 100, 0.70),
    # lowest target entropy: .4 (t0@200), .2 (t1@200), .3 (t2@100)
    "target_entropy": (1, 200, 0.90),
    # highest IM: .5 (t0@100), .8 (t1@100), .9 (t2@100)
    "target_im": (2, 100, 0.70),
    # mean held-out val per step: t0 .525/.625, t1 .71/.59, t2 .68/.79 -> t2 @ 200
    "leave_one_domain_out": (2, 200, 0.75),
}


@pytest.mark.parametrize("name", SELECTIONS)
def test_each_selection_picks_the_hand_computed_trial_and_step(tmp_path, name):
    chosen = select(frame(tmp_path, sweep_records()), name)
    assert chosen.incomplete == {}
    (run,) = chosen.runs.itertuples()
    assert (run.trial, run.step) == EXPECTED[name][:2]
    assert run.acc_target == pytest.approx(EXPECTED[name][2])
    assert run.trials == 3 and run.selection == name
    assert run.job_id == f"m-s0-t{EXPECTED[name][0]}"  # always the main run, never a holdout


def test_a_single_trial_reduces_to_the_in_run_choice(tmp_path):
    records = sweep_records(trials=(1,))
    df = frame(tmp_path, records)
    in_run = records[0]["metrics"]["by_selection"]
    for name in ("training_domain", "last", "oracle", "target_entropy", "target_im"):
        (run,) = select(df, name).runs.itertuples()
        assert run.step == in_run[name]["step"]
        assert run.acc_target == in_run[name]["acc_target"]
        assert run.trials == 1


def test_canary_permuting_target_test_accuracies_changes_no_decision(tmp_path):
    records = sweep_records()
    tests = [p["acc"]["z"]["test"] for r in records for p in r["metrics"]["history"]]
    permuted = copy.deepcopy(records)
    rotated = tests[3:] + tests[:3]
    i = 0
    for r in permuted:
        for p in r["metrics"]["history"]:
            p["acc"]["z"]["test"] = rotated[i]
            i += 1
        for choice in r["metrics"]["by_selection"].values():  # the recorded scores too
            choice["acc_target"] = 1.0 - choice["acc_target"]
            choice["acc_target_worst"] = 1.0 - choice["acc_target_worst"]
        r["metrics"]["acc_target"] = 1.0 - r["metrics"]["acc_target"]
    before, after = frame(tmp_path, records, "a"), frame(tmp_path, permuted, "b")
    changed_scores = 0
    for name in SELECTIONS:
        x, y = select(before, name).runs.iloc[0], select(after, name).runs.iloc[0]
        assert (x.job_id, x.trial, x.step) == (y.job_id, y.trial, y.step), name
        changed_scores += x.acc_target != y.acc_target
    assert changed_scores == len(SELECTIONS)  # the permutation did reach the scorer


def test_the_view_a_decision_reads_has_no_target_test_accuracy(tmp_path):
    (row,) = frame(tmp_path, sweep_records(trials=(0,), with_holdouts=False)).to_dict("records")
    view = visible(row)
    assert all("test" not in p["acc"]["z"] for p in view["history"])
    assert all("test" in p["acc"]["a"] for p in view["history"])  # source test is not hidden
    assert all(set(c) <= {"step", "acc_source_val"} for c in view["by_selection"].values())
    assert "acc_target" not in repr(view)


def test_incomplete_sweep_makes_the_cell_missing_with_a_reason(tmp_path):
    # seed 1 lost trial 2 (failed): seed 1's result is not taken over fewer trials
    records = sweep_records(seed=0) + sweep_records(seed=1, failed_trials=(2,))
    chosen = select(frame(tmp_path, records), "training_domain")
    assert list(chosen.runs["seed"]) == [0]
    assert chosen.incomplete == {
        ("m", "t"): "seed 1: trial(s) 2 of 3 failed or not run (incomplete sweep)"}
    assert "cell shown as missing" in chosen.warnings[0]


def test_leave_one_domain_out_never_falls_back_when_holdout_runs_are_missing(tmp_path):
    records = sweep_records(with_holdouts=False)
    chosen = select(frame(tmp_path, records), "leave_one_domain_out")
    assert chosen.runs.empty
    assert "no leave-one-domain-out (holdout) runs for trial(s) 0, 1, 2" in \
        chosen.incomplete[("m", "t")]
    # one trial lacking one of its two holdout runs: missing too, not chosen among the rest
    records = [r for r in sweep_records() if r["job_id"] != "m-s0-t1-hb"]
    chosen = select(frame(tmp_path, records, "b"), "leave_one_domain_out")
    assert chosen.runs.empty
    assert "missing or failed holdout runs for trial(s) 1" in chosen.incomplete[("m", "t")]


def test_label_free_validators_do_not_apply_outside_uda(tmp_path):
    records = [record("dg0", protocol="dg", acc_target=0.7)]
    chosen = select(frame(tmp_path, records), "target_entropy")
    assert chosen.runs.empty and chosen.not_applicable == {("m", "t")}
    assert chosen.incomplete == {}


def test_trials_of_a_sweep_share_the_method_label(tmp_path):
    df = frame(tmp_path, sweep_records())
    assert set(df["method_label"]) == {"m"}  # not m{lr=...} per trial
