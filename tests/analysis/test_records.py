"""The comparability key: records are pooled into one cell only when they are comparable."""

from __future__ import annotations

import copy

import pytest

from xbench.analysis.records import comparability_key, load_results
from xbench.analysis.report import analyse
from tests.records_factory import record, write


def _base(seed: int, **changes) -> dict:
    r = record(f"j{seed}-{len(changes)}-{sorted(changes)}", method="erm", task="digits",
               seed=seed, protocol="dg", acc_target=0.5 + 0.01 * seed)
    r["task_options"] = {"resolution": 16, "data_seed": seed, "root": "/data/a"}
    r["budget"] = {"steps": 200, "batch_size": 16, "eval_every": 50, "eval_batch_size": 512}
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = r
        for p in parents:
            target = target[p]
        target[leaf] = value
    return r


@pytest.mark.parametrize("change, label_part", [
    ({"task_options.resolution": 32}, "resolution=32"),
    ({"task_version": "2"}, "@v2"),
    ({"budget.steps": 300}, "steps=300"),
    ({"precision": "bf16"}, "[bf16]"),
])
def test_records_that_differ_in_identity_land_in_separate_cells(tmp_path, change, label_part):
    records = [_base(s) for s in range(3)] + [_base(s, **change) for s in (3, 4)]
    a = analyse(load_results(write(tmp_path, records)), protocol="dg")
    cells = a.cells[a.cells["method"] == "erm"]
    assert sorted(cells["n"]) == [2, 3]           # never one cell of 5 "seeds"
    assert any(label_part in task for task in cells["task"])


def test_location_and_replicate_options_do_not_split_a_cell(tmp_path):
    records = [_base(s) for s in range(2)] + [_base(2, **{"task_options.root": "/elsewhere"})]
    a = analyse(load_results(write(tmp_path, records)), protocol="dg")
    assert a.cells["n"].tolist() == [3]            # data_seed and root differ; one cell
    assert a.cells["task"].tolist() == ["digits"]


def test_eval_chunk_size_is_not_part_of_the_key():
    a = _base(0)
    b = copy.deepcopy(a)
    b["budget"]["eval_batch_size"] = 64
    assert comparability_key(a) == comparability_key(b)


def test_cost_key_adds_the_device():
    a = _base(0)
    b = copy.deepcopy(a)
    b["env"]["device_name"] = "cuda: H200"
    assert comparability_key(a) == comparability_key(b)
    assert comparability_key(a, cost=True) != comparability_key(b, cost=True)


def test_a_transductive_record_filed_under_dg_is_read_as_tta(tmp_path):
    tent = _base(0)
    tent["method"], tent["transductive"], tent["job_id"] = "tent", True, "tent0"
    df = load_results(write(tmp_path, [_base(0), tent]))
    assert dict(zip(df["method"], df["protocol"])) == {"erm": "dg", "tent": "tta"}
    assert "tent" not in set(analyse(df, protocol="dg").cells["method"])


def test_a_staged_methods_stage_steps_do_not_split_the_task_column(tmp_path):
    erm = [_base(s) for s in range(2)]
    kd = []
    for s in range(2):
        r = _base(s)
        r["method"], r["job_id"] = "kd_logit", f"kd{s}"
        r["budget"]["stage_steps"] = {"teacher": 200, "student": 200}
        kd.append(r)
    erm[0]["budget"]["stage_steps"] = {"train": 200}  # the default: no label
    longer = _base(2)
    longer["method"], longer["job_id"] = "kd_logit", "kd-long"
    longer["budget"]["stage_steps"] = {"teacher": 400, "student": 200}
    a = analyse(load_results(write(tmp_path, erm + kd + [longer])), protocol="dg")
    assert a.cells["task"].unique().tolist() == ["digits"]       # one column for everybody
    # two stage budgets of one method are two rows, labelled by what differs
    assert sorted(a.cells["method"]) == sorted([
        "erm", "kd_logit{stage_steps=None}", 'kd_logit{stage_steps={"student":200,"teacher":400}}'])


def test_bulk_analysis_pauses_the_collector_and_restores_both_settings():
    import gc
    import warnings

    import pandas as pd

    from xbench.analysis.records import bulk_analysis

    def infer() -> bool | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return bool(pd.get_option("future.infer_string"))
            except (KeyError, AttributeError):
                return None  # pandas without the option

    before = infer()
    assert gc.isenabled()
    with bulk_analysis():
        assert not gc.isenabled()
        with bulk_analysis():  # nested (report inside build): the outer one restores
            pass
        assert not gc.isenabled()
        if before is not None:
            assert pd.DataFrame({"a": ["x"]})["a"].dtype == object
    assert gc.isenabled() and infer() == before
    with pytest.raises(ValueError):
        with bulk_analysis():
            raise ValueError("restored on an error too")
    assert gc.isenabled() and infer() == before
