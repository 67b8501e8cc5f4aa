"""Store: whole lines, tolerant reading, resume by job_id."""

from __future__ import annotations

import json

from xbench.harness.session import run
from xbench.store import RecordStore, load_records, read_records


def test_append_writes_one_whole_json_line_per_record(tmp_path):
    store = RecordStore(tmp_path / "out")
    store.append({"job_id": "a", "status": "ok", "x": float("nan")})
    store.append({"job_id": "b", "status": "failed"})
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0])["x"] is None  # NaN is stored as null: strict JSON


def test_truncated_last_line_is_reported_not_fatal(tmp_path):
    store = RecordStore(tmp_path)
    store.append({"job_id": "a", "status": "ok"})
    with open(store.path, "a") as f:
        f.write('{"job_id": "b", "sta')  # a run killed mid-write
    result = read_records(store.path)
    assert [r["job_id"] for r in result.records] == ["a"]
    assert len(result.problems) == 1 and "truncated last line" in result.problems[0]
    # the next append starts on a fresh line, so the new record is intact
    store.append({"job_id": "c", "status": "ok"})
    result = read_records(store.path)
    assert [r["job_id"] for r in result.records] == ["a", "c"]
    assert "unparseable line" in result.problems[0]


def test_latest_record_wins_and_ok_beats_failed(tmp_path):
    store = RecordStore(tmp_path)
    store.append({"job_id": "a", "status": "failed", "n": 1})
    store.append({"job_id": "a", "status": "ok", "n": 2})
    store.append({"job_id": "a", "status": "failed", "n": 3})
    store.append({"job_id": "b", "status": "failed", "n": 4})
    store.append({"job_id": "b", "status": "failed", "n": 5})
    records = {r["job_id"]: r["n"] for r in load_records([tmp_path]).records}
    assert records == {"a": 2, "b": 5}
    assert store.finished_ids() == {"a"}


def test_rerun_skips_finished_jobs_and_reruns_failed(tiny_suite, tmp_path):
    out = tmp_path / "runs"
    first = run(str(tiny_suite), out=out, progress=False)
    assert (first.planned, first.skipped, first.ran) == (2, 0, 2)
    lines_after_first = out.joinpath("records.jsonl").read_text().splitlines()
    second = run(str(tiny_suite), out=out, progress=False)
    assert (second.planned, second.skipped, second.ran) == (2, 2, 0)
    assert out.joinpath("records.jsonl").read_text().splitlines() == lines_after_first
    # a failed job is recorded; it runs again only with retry_failed
    failing = run(str(tiny_suite), out=out, methods=["test_raising"], seeds=[0],
                  progress=False)
    assert failing.ran == 1 and len(failing.failed) == 1
    again = run(str(tiny_suite), out=out, methods=["test_raising"], seeds=[0], progress=False)
    assert again.ran == 0
    retried = run(str(tiny_suite), out=out, methods=["test_raising"], seeds=[0],
                  retry_failed=True, progress=False)
    assert retried.ran == 1
