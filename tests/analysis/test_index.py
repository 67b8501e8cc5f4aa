"""The derived columnar index: rebuilt incrementally, never trusted when stale, never
required, and giving exactly what the pure-JSONL path gives."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from xbench.analysis import index
from xbench.analysis.records import _flatten, load_results
from xbench.store import RecordStore, load_records

pq = pytest.importorskip("pyarrow.parquet")
ROOT = Path(__file__).resolve().parents[2]


def _copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(ROOT / "results" / name / "records.jsonl", folder / "records.jsonl")
    return folder


def _jsonl(folder: Path, monkeypatch) -> tuple[pd.DataFrame, list[str]]:
    monkeypatch.setenv("XBENCH_NO_INDEX", "1")
    problems: list[str] = []
    df = load_results(folder, problems=problems)
    monkeypatch.delenv("XBENCH_NO_INDEX")
    return df, problems


def _indexed(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    problems: list[str] = []
    return load_results(folder, problems=problems), problems


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Lazy fields materialised, so frames can be compared with ``equals``."""
    df = df.copy()
    df["history"] = [list(h) for h in df["history"]]
    df["episodes"] = [None if e is None else dict(e) for e in df["episodes"]]
    return df


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = _plain(a), _plain(b)
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        assert a[column].tolist() == b[column].tolist() or a[column].equals(b[column]), column


def _meta(folder: Path) -> dict:
    return json.loads((index.index_folder(folder / "records.jsonl") / "meta.json").read_text())


@pytest.mark.parametrize("name", ["quick", "standard"])
def test_index_equals_the_jsonl_path_on_committed_records(name, tmp_path, monkeypatch):
    folder = _copy(name, tmp_path)
    expected, _ = _jsonl(folder, monkeypatch)
    built, _ = _indexed(folder)       # builds the index
    warm, _ = _indexed(folder)        # reads it
    assert (index.index_folder(folder / "records.jsonl") / "meta.json").exists()
    assert_same(expected, built)
    assert_same(expected, warm)
    assert isinstance(warm["history"].iloc[0], index.LazyHistory)
    # the heavy fields are not in the Parquet parts: read from the record's line when used
    assert isinstance(warm["by_selection"].iloc[0], index.LazySelections)
    part = sorted(index.index_folder(folder / "records.jsonl").glob("*.parquet"))[0]
    assert not {"history", "by_selection"} & set(pq.read_schema(part).names)


def test_reports_are_identical_with_and_without_the_index(tmp_path, monkeypatch):
    from xbench.analysis.report import report

    folder = _copy("quick", tmp_path)
    with_index = report(folder, fmt="md")
    monkeypatch.setenv("XBENCH_NO_INDEX", "1")
    assert report(folder, fmt="md") == with_index


def test_compare_and_history_read_the_same_records(tmp_path, monkeypatch):
    from xbench.analysis.history import load_history

    folder = _copy("quick", tmp_path)
    full = {r["job_id"]: r for r in load_records([folder]).records}
    light = index.load_records([folder], _flatten)
    assert light is not None and [r["job_id"] for r in light.records] == list(full)
    for record in light.records:
        original = full[record["job_id"]]
        assert record["cost"] == original["cost"]  # raw timing samples kept
        assert "history" not in record["metrics"]
        assert {k: v for k, v in original["metrics"].items() if k not in ("history", "episodes")} \
            == {k: v for k, v in record["metrics"].items() if k != "episodes"}
    assert len(load_history([folder])) == len(full)


def test_an_append_updates_the_index_incrementally(tmp_path, monkeypatch):
    folder = _copy("quick", tmp_path)
    lines = (folder / "records.jsonl").read_text().splitlines()
    (folder / "records.jsonl").write_text("\n".join(lines[:10]) + "\n")
    assert len(_indexed(folder)[0]) == 10
    first = _meta(folder)
    store = RecordStore(folder)
    for line in lines[10:]:
        store.append(json.loads(line))
    df, _ = _indexed(folder)
    meta = _meta(folder)
    assert len(df) == len(lines)
    assert len(meta["parts"]) == 2 and meta["parts"][0] == first["parts"][0]  # only the tail
    assert meta["size"] == (folder / "records.jsonl").stat().st_size
    assert_same(_jsonl(folder, monkeypatch)[0], df)


def test_a_stale_index_is_never_used_when_the_file_changes_behind_its_back(tmp_path,
                                                                           monkeypatch):
    folder = _copy("quick", tmp_path)
    _indexed(folder)
    path = folder / "records.jsonl"
    record = json.loads(path.read_text().splitlines()[0])
    # appended behind its back (no xbench involved), same second
    with open(path, "a") as f:
        f.write(json.dumps({**record, "job_id": "behind-its-back", "seed": 99}) + "\n")
    df, _ = _indexed(folder)
    assert "behind-its-back" in set(df["job_id"])
    # rewritten in place with the same size: other bytes, other hash -> rebuilt
    text = path.read_text()
    path.write_text(text.replace('"seed": 99', '"seed": 98'))
    df, _ = _indexed(folder)
    assert df.loc[df["job_id"] == "behind-its-back", "seed"].item() == 98
    # truncated to fewer records -> rebuilt, the removed ones are gone
    path.write_text("\n".join(text.splitlines()[:5]) + "\n")
    df, _ = _indexed(folder)
    assert len(df) == 5
    assert_same(_jsonl(folder, monkeypatch)[0], df)


def test_a_truncated_last_line_is_reported_and_the_next_append_is_picked_up(tmp_path,
                                                                            monkeypatch):
    folder = _copy("quick", tmp_path)
    path = folder / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2])
    df, problems = _indexed(folder)
    expected, expected_problems = _jsonl(folder, monkeypatch)
    assert len(df) == 5 and problems == expected_problems
    assert "truncated last line" in problems[0]
    RecordStore(folder).append(json.loads(lines[6]))  # the store starts a fresh line
    df, problems = _indexed(folder)
    expected, expected_problems = _jsonl(folder, monkeypatch)
    assert len(df) == 6 and problems == expected_problems
    assert "unparseable line" in problems[0] and ":6:" in problems[0]
    assert_same(expected, df)


def test_never_required_read_only_folder_or_switched_off(tmp_path, monkeypatch):
    folder = _copy("quick", tmp_path)
    expected, _ = _jsonl(folder, monkeypatch)
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        df, _ = _indexed(folder)
        assert not (folder / index.INDEX_DIR).exists()
        assert_same(expected, df)
    finally:
        os.chmod(folder, 0o755)


def test_unwritable_index_falls_back_to_the_jsonl(tmp_path, monkeypatch):
    folder = _copy("quick", tmp_path)
    expected, _ = _jsonl(folder, monkeypatch)
    (folder / index.INDEX_DIR).write_text("not a folder")  # the index cannot be made
    df, _ = _indexed(folder)
    assert_same(expected, df)


def test_duplicates_across_files_follow_load_records(tmp_path, monkeypatch):
    a = _copy("quick", tmp_path)
    lines = (a / "records.jsonl").read_text().splitlines()
    b = tmp_path / "b"
    b.mkdir()
    failed = {**json.loads(lines[0]), "status": "failed", "error": "boom"}
    newer = {**json.loads(lines[1]), "seed": 7}
    (b / "records.jsonl").write_text(json.dumps(failed) + "\n" + json.dumps(newer) + "\n")
    monkeypatch.setenv("XBENCH_NO_INDEX", "1")
    expected = load_results(a, b, problems=[])
    monkeypatch.delenv("XBENCH_NO_INDEX")
    got = load_results(a, b, problems=[])
    assert_same(expected, got)
    assert got.loc[got["job_id"] == newer["job_id"], "seed"].item() == 7
    assert got.loc[got["job_id"] == failed["job_id"], "status"].item() == "ok"


def test_status_reads_the_index(tmp_path, tiny_suite):
    from xbench.harness.session import run, status

    out = tmp_path / "out"
    run(str(tiny_suite), out=out, progress=False)
    before = status(out)
    assert (out / index.INDEX_DIR).exists()
    assert sum(r.done for r in before) == 2


def _sweep_records(tmp_path: Path) -> Path:
    """A few committed cells (DG, UDA, few-shot) as 4-trial sweeps with shifted accuracies
    (as benchmarks/scale.py builds them), so selections choose between trials."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    source = [json.loads(line) for line in
              (ROOT / "results" / "standard" / "records.jsonl").read_text().splitlines()]
    keep = [r for r in source if r["method"] in ("erm", "dann", "protonet", "finetune", "tent")
            and r["task"] in ("digits_rotated", "digits_syn2real", "digits_fewshot")]
    folder = tmp_path / "sweep"
    folder.mkdir()
    with open(folder / "records.jsonl", "w") as f:
        for trial in range(4):
            for r in keep:
                rng = random.Random(f"{r['job_id']}:{trial}")
                d = rng.gauss(0, 0.05)
                new = {**r, "trial": trial, "job_id": f"{r['job_id']}-{trial}",
                       "metrics": scale._shift(r["metrics"], d, d / 2 + rng.gauss(0, 0.05))}
                if trial == 2 and r["method"] == "erm" and r["seed"] == 1:
                    new["metrics"]["by_selection"].pop("oracle")  # decide() must say why
                f.write(json.dumps(new) + "\n")
    return folder


def test_selection_from_the_criterion_columns_equals_decide(tmp_path, monkeypatch):
    """select() chooses from the step@/criterion@ columns exactly what decide() chooses from
    the runs' views (and falls back to decide() where a value is missing), and scores from
    the acc_target@ columns exactly what by_selection holds (read lazily from the line)."""
    from xbench.analysis import sweep

    folder = _sweep_records(tmp_path)
    df = _indexed(folder)[0]
    jsonl = _jsonl(folder, monkeypatch)[0]
    seen_missing = False
    for protocol in sorted(df["protocol"].unique()):
        mine, mine_jsonl = df[df["protocol"] == protocol], jsonl[jsonl["protocol"] == protocol]
        for selection in sweep.CHECKPOINT_SELECTIONS:
            if not sweep.applies(selection, protocol):
                continue
            fast = sweep.select(mine, selection)
            from_jsonl = sweep.select(mine_jsonl, selection)
            with monkeypatch.context() as m:
                m.setattr(sweep, "_decide_from_columns", lambda *a: {})
                m.setattr(sweep, "_choices", lambda *a: lambda position: None)
                slow = sweep.select(mine, selection)
            assert len(fast.runs) and (fast.runs["trials"] == 4).all()
            for other in (slow, from_jsonl):
                pd.testing.assert_frame_equal(fast.runs, other.runs)
                assert fast.incomplete == other.incomplete
                assert fast.not_applicable == other.not_applicable
            seen_missing |= any("recorded no 'oracle'" in why for why in fast.incomplete.values())
    assert seen_missing


def _with_invalid(tmp_path: Path) -> Path:
    """The quick records with two invalid ones in front (a percentage, a null protocol)."""
    folder = _copy("quick", tmp_path)
    lines = (folder / "records.jsonl").read_text().splitlines()
    a, b = json.loads(lines[0]), json.loads(lines[1])
    a["metrics"]["acc_target"] = 57.0
    b["protocol"] = None
    (folder / "records.jsonl").write_text(
        "\n".join([json.dumps(a), json.dumps(b), "{not json", *lines]) + "\n")
    return folder


def test_invalid_records_are_named_and_counted_as_the_jsonl_path_does(tmp_path, monkeypatch):
    folder = _with_invalid(tmp_path)
    expected, expected_problems = _jsonl(folder, monkeypatch)
    for _ in range(2):  # building the index, then reading it
        df, problems = _indexed(folder)
        assert problems == expected_problems
        assert_same(expected, df)
    path = folder / "records.jsonl"
    assert problems == [
        f"{path}:1: invalid record: field 'metrics.acc_target' is 57.0, not an accuracy in "
        f"[0, 1]; skipped",
        f"{path}:2: invalid record: field 'protocol' is null, not one of dg, fewshot, paired, "
        f"tta, uda; skipped",
        f"{path}:3: unparseable line; skipped",
        "2 records skipped as invalid"]
    light = index.load_records([folder], _flatten)
    assert light.invalid == 2 and light.problems == load_records([folder]).problems


def test_an_invalid_record_appended_after_indexing_is_named_too(tmp_path):
    folder = _copy("quick", tmp_path)
    _indexed(folder)
    record = json.loads((folder / "records.jsonl").read_text().splitlines()[0])
    record["seed"] = "zero"
    with open(folder / "records.jsonl", "a") as f:
        f.write(json.dumps(record))  # no newline yet: the tail the index does not cover
    _, problems = _indexed(folder)
    assert problems[-2].endswith(
        "invalid record: field 'seed' is \"zero\", not an integer; skipped")
    assert problems[-1] == "1 record skipped as invalid"


def test_the_index_refuses_a_newer_schema_and_reads_a_bom(tmp_path, monkeypatch):
    from xbench.errors import RecordsError

    folder = _copy("quick", tmp_path)
    lines = (folder / "records.jsonl").read_text().splitlines()
    (folder / "records.jsonl").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    expected, expected_problems = _jsonl(folder, monkeypatch)
    df, problems = _indexed(folder)
    assert problems == expected_problems == [] and len(df) == len(expected)
    assert list(df["history"].iloc[0]) == list(expected["history"].iloc[0])  # line 1, lazily
    newer = json.loads(lines[0])
    newer["schema"] = "xbench.record/9"
    with open(folder / "records.jsonl", "a") as f:
        f.write(json.dumps(newer) + "\n")
    with pytest.raises(RecordsError, match=r"records.jsonl:\d+: record schema xbench.record/9 "
                                           r"is newer than this xbench reads"):
        _indexed(folder)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_as_records_file_is_refused_in_one_line_not_read(tmp_path, kind):
    """The index never opens a records.jsonl that is not a regular file (a FIFO would block
    report forever, /dev/full reads as empty); the JSONL reader refuses it by name."""
    from xbench.errors import RecordsError

    folder = tmp_path / "out"
    folder.mkdir()
    if kind == "fifo":
        os.mkfifo(folder / "records.jsonl")
    else:
        os.symlink("/dev/null", folder / "records.jsonl")
    assert index.update(folder / "records.jsonl", _flatten) is None
    with pytest.raises(RecordsError, match="not a regular file"):
        load_results(folder)


# -- compare and history from the index's run columns ---------------------------------------

def _sweep(tmp_path: Path, copies: int = 4, trials: int = 2) -> Path:
    """A small sweep like ``benchmarks/scale.py build`` (trials with other hyper-parameters,
    shifted accuracies), plus a failed record and a job recorded twice."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    scale.build(tmp_path / "sweep", copies, trials)
    run = tmp_path / "sweep" / "run"
    lines = (run / "records.jsonl").read_text().splitlines()
    failed = {**json.loads(lines[5]), "status": "failed", "error": "boom"}
    again = json.loads(lines[7])
    again["cost"]["latency_ms_samples"] = [1.0, float("nan"), 3.0, 2.5]
    with open(run / "records.jsonl", "a") as f:
        f.write(json.dumps(failed) + "\n" + json.dumps(again) + "\n")
    return run


def test_compare_runs_from_the_index_equal_the_jsonl_path(tmp_path, monkeypatch):
    from xbench.analysis.compare import METRICS, load_side

    sweep = _sweep(tmp_path)
    for folder in (_copy("standard", tmp_path), sweep):
        monkeypatch.setenv("XBENCH_NO_INDEX", "1")
        expected, expected_notes = load_side([folder], "NEW")
        monkeypatch.delenv("XBENCH_NO_INDEX")
        load_side([folder], "NEW")  # builds the index
        got, notes = load_side([folder], "NEW")
        assert notes == expected_notes
        assert [sorted(r) for r in got] == [sorted(r) for r in expected]
        assert isinstance(got[0]["record"], index.LazyJSON)  # not the whole record
        for column in set(expected[0]) - {"record"}:
            assert [r[column] for r in got] == [r[column] for r in expected], column
        for metric in METRICS.values():
            a = [metric.run_value(r["record"]) for r in expected]
            b = [metric.run_value(r["record"]) for r in got]
            assert a == b, metric.name  # timing: the median of the run's finite blocks


def _both(monkeypatch, call):
    monkeypatch.setenv("XBENCH_NO_INDEX", "1")
    expected = call()
    monkeypatch.delenv("XBENCH_NO_INDEX")
    call()  # builds the index
    return expected, call()


def test_compare_and_history_output_equal_the_jsonl_path_on_a_sweep(tmp_path, monkeypatch):
    from xbench.analysis import compare, history

    standard, sweep = _copy("standard", tmp_path), _sweep(tmp_path)
    for base, new in ((standard, sweep), (sweep, sweep), (sweep, standard)):
        for fmt in ("text", "bencher"):
            expected, got = _both(monkeypatch, lambda: compare.render(
                compare.compare([base], [new]), fmt, show_all=True))
            assert got == expected
    for metric, method in (("acc_target", "erm"), ("latency_ms", "*"),
                           ("acc_target@oracle", "coral")):
        expected, got = _both(monkeypatch, lambda: history.render(history.history(
            [sweep, standard], metric=metric, method=method)))
        assert got == expected


def test_a_run_on_the_unindexed_last_line_is_read_by_compare_and_history(tmp_path,
                                                                        monkeypatch):
    from xbench.analysis import compare, history

    standard, sweep = _copy("standard", tmp_path), _sweep(tmp_path)
    compare.compare([standard], [sweep])  # indexes both
    record = json.loads((sweep / "records.jsonl").read_text().splitlines()[0])
    record.update(job_id="tail-0001", seed=99)
    with open(sweep / "records.jsonl", "a") as f:
        f.write(json.dumps(record))  # no newline yet: read from the line, not the index
    runs, _ = compare.load_side([sweep], "NEW")
    assert runs[-1]["seed"] == 99 and runs[-1]["cost_key"][-1] == str(
        record["env"]["device_name"])
    expected, got = _both(monkeypatch, lambda: compare.render(
        compare.compare([standard], [sweep]), "text", show_all=True))
    assert got == expected and "99" in got
    expected, got = _both(monkeypatch, lambda: history.render(history.history(
        [sweep], method=record["method"])))
    assert got == expected


def test_compare_exact_sees_per_episode_accuracies_with_the_index(tmp_path):
    from xbench.analysis.compare import compare

    base, new = _copy("standard", tmp_path), tmp_path / "new"
    new.mkdir()
    lines = (base / "records.jsonl").read_text().splitlines()
    changed = 0
    with open(new / "records.jsonl", "w") as f:
        for line in lines:
            record = json.loads(line)
            episodes = record["metrics"].get("episodes")
            if isinstance(episodes, dict) and episodes.get("acc") and not changed:
                episodes["acc"] = [episodes["acc"][0] + 0.001, *episodes["acc"][1:]]
                changed += 1
            f.write(json.dumps(record) + "\n")
    assert changed
    compare([base], [new])  # builds both indexes
    result = compare([base], [new], exact=True)
    assert [c["field"] for c in result.changed] == ["episodes.acc"]


def test_sweep_labels_equal_sweep_label():
    import random

    from xbench.analysis.compare import sweep_label, sweep_labels

    rng = random.Random(0)
    values = [1, 1.0, True, 0, False, None, "x", "{x}", "[", 0.5, float("nan"), [1, 2],
              [1, 2.0], {"p": 1}, {"p": 1.0}, {"p": [1]}]
    for _ in range(300):
        configs = list(dict.fromkeys(
            json.dumps({"hparams": {k: rng.choice(values) for k in "abcd"
                                    if rng.random() < 0.7}}, sort_keys=True)
            for _ in range(rng.randint(1, 8))))
        got = sweep_labels(configs)
        assert got == {c: sweep_label(c, configs) for c in configs}
    # a value all configurations share is not shown, unless it is NaN (not equal to itself)
    shared_nan = [json.dumps({"hparams": {"a": float("nan"), "b": b}}) for b in (1, 2)]
    assert sweep_labels(shared_nan) == {shared_nan[0]: "{a=nan,b=1}",
                                        shared_nan[1]: "{a=nan,b=2}"}
