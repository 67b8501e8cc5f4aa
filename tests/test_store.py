"""Store: whole lines, tolerant reading, resume by job_id."""

from __future__ import annotations

import gzip
import json

import pytest

from xbench.errors import RecordsError
from xbench.harness.session import run
from xbench.store import RecordStore, load_records, read_records


def rec(job_id: str, status: str = "ok", **extra) -> dict:
    """A minimal valid record."""
    out = {"schema": "xbench.record/1", "job_id": job_id, "task": "t", "method": "m",
           "protocol": "dg", "target": ["z"], "seed": 0, "status": status,
           "metrics": {"acc_target": 0.5} if status == "ok" else {}, "cost": {}}
    out.update(extra)
    return out


def test_append_writes_one_whole_json_line_per_record(tmp_path):
    store = RecordStore(tmp_path / "out")
    store.append(rec("a", x=float("nan")))
    store.append(rec("b", "failed"))
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0])["x"] is None  # NaN is stored as null: strict JSON


def test_truncated_last_line_is_reported_not_fatal(tmp_path):
    store = RecordStore(tmp_path)
    store.append(rec("a"))
    with open(store.path, "a") as f:
        f.write('{"job_id": "b", "sta')  # a run killed mid-write
    result = read_records(store.path)
    assert [r["job_id"] for r in result.records] == ["a"]
    assert len(result.problems) == 1 and "truncated last line" in result.problems[0]
    # the next append starts on a fresh line, so the new record is intact
    store.append(rec("c"))
    result = read_records(store.path)
    assert [r["job_id"] for r in result.records] == ["a", "c"]
    assert "unparseable line" in result.problems[0]


def test_latest_record_wins_and_ok_beats_failed(tmp_path):
    store = RecordStore(tmp_path)
    store.append(rec("a", "failed", n=1))
    store.append(rec("a", "ok", n=2))
    store.append(rec("a", "failed", n=3))
    store.append(rec("b", "failed", n=4))
    store.append(rec("b", "failed", n=5))
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


@pytest.mark.parametrize("change, field", [
    ({"metrics": {"acc_target": 57.0}}, "metrics.acc_target"),
    ({"metrics": {"acc_target": -3}}, "metrics.acc_target"),
    ({"metrics": {"acc_target": float("inf")}}, "metrics.acc_target"),
    ({"metrics": {"acc_target": float("nan")}}, "metrics.acc_target"),
    ({"metrics": {"acc_target": True}}, "metrics.acc_target"),
    ({"metrics": {}}, "metrics.acc_target"),
    ({"metrics": {"acc_target": 0.5, "by_selection": {"last": {"acc_target": 2}}}},
     "metrics.by_selection.last.acc_target"),
    ({"protocol": None}, "protocol"),
    ({"protocol": "/../../x"}, "protocol"),
    ({"status": "done"}, "status"),
    ({"target": "75"}, "target"),
    ({"seed": "0"}, "seed"),
    ({"method": 3}, "method"),
    ({"cost": {"latency_ms": -1}}, "cost.latency_ms"),
    ({"cost": {"params": "many"}}, "cost.params"),
    ({"metrics": [0.5]}, "metrics"),
])
def test_invalid_records_are_skipped_counted_and_named(tmp_path, change, field):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(rec("good")) + "\n" + json.dumps(rec("bad", **change)) + "\n")
    result = read_records(path)
    assert [r["job_id"] for r in result.records] == ["good"]
    assert result.invalid == 1
    assert result.problems == [f"{path}:2: invalid record: field '{field}' " +
                               result.problems[0].split(f"field '{field}' ", 1)[1]]
    loaded = load_records([tmp_path])
    assert loaded.invalid == 1 and loaded.problems[-1] == "1 record skipped as invalid"


def test_tta_protocol_and_failed_records_are_valid(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(rec("a", protocol="tta")) + "\n" + json.dumps(rec("b", "failed"))
                    + "\n")
    assert read_records(path).invalid == 0 and len(read_records(path).records) == 2


def test_a_newer_schema_is_refused_naming_the_version(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(rec("a", schema="xbench.record/2")) + "\n")
    with pytest.raises(RecordsError, match="xbench.record/2 is newer"):
        read_records(path)


def test_bom_crlf_and_gzip_are_read(tmp_path):
    text = json.dumps(rec("a")) + "\r\n" + json.dumps(rec("b")) + "\r\n"
    bom = tmp_path / "bom" / "records.jsonl"
    bom.parent.mkdir()
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = read_records(bom)
    assert [r["job_id"] for r in result.records] == ["a", "b"] and not result.problems
    gz = tmp_path / "gz" / "records.jsonl.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(text.encode()))
    assert [r["job_id"] for r in load_records([gz.parent]).records] == ["a", "b"]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(text.encode())[:20])
    with pytest.raises(RecordsError, match="cannot read"):
        read_records(broken)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "records.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(RecordsError, match="not a regular file"):
        load_records([fifo])


def test_status_names_a_corrupt_plan_file(tiny_suite, tmp_path):
    from xbench.cli import main

    out = tmp_path / "runs"
    run(str(tiny_suite), out=out, seeds=[0], progress=False)
    plan = next((out / "plans").glob("*.json"))
    plan.write_text('{"jobs": [{"task": 1}]')
    assert main(["status", str(out)]) == 2


def test_a_second_writer_into_the_same_folder_stops_naming_the_holder(tiny_suite, tmp_path,
                                                                       capsys):
    import os
    import socket

    from xbench.cli import main
    from xbench.errors import ExitCode, FolderInUseError
    from xbench.harness.session import writer_lock

    out = tmp_path / "runs"
    with writer_lock(out):
        with pytest.raises(FolderInUseError, match=f"pid {os.getpid()} on host "
                                                   f"{socket.gethostname()}"):
            run(str(tiny_suite), out=out, progress=False)
        assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == \
            ExitCode.FOLDER_IN_USE
        assert "another `xbench run` is writing" in capsys.readouterr().err
        assert not (out / "records.jsonl").exists()
    assert run(str(tiny_suite), out=out, seeds=[0], progress=False).ran == 1  # released


def test_a_plain_rerun_says_how_many_failed_jobs_it_skipped(tiny_suite, tmp_path, capsys):
    from xbench.cli import main

    out = tmp_path / "runs"
    argv = ["run", str(tiny_suite), "--out", str(out), "--quiet", "--methods", "test_raising"]
    assert main(argv) == 1
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 job(s) that failed in an earlier run were skipped; add --retry-failed" in err
    assert main([*argv, "--retry-failed"]) == 1
    assert "were skipped" not in capsys.readouterr().err


def test_a_run_into_a_folder_whose_records_file_is_a_device_or_fifo_is_one_line(tiny_suite,
                                                                                tmp_path,
                                                                                capsys):
    import os

    from xbench.cli import main

    for name, make in (("fifo", lambda p: os.mkfifo(p)),
                       ("full", lambda p: os.symlink("/dev/full", p))):
        out = tmp_path / name
        out.mkdir()
        make(out / "records.jsonl")
        assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "not a regular file" in err and "Traceback" not in err
