"""Session: ``xbench status`` counts jobs per (task, protocol, method) from the saved plan."""

from __future__ import annotations

from xbench.cli import main
from xbench.errors import ExitCode
from xbench.harness.session import run, status

SUITE = """
name = "two-protocols"
seeds = [0]
methods = ["erm"]
[budget]
steps = 4
batch_size = 8
eval_every = 4
eval_batch_size = 128
[[tasks]]
name = "digits_rotated"
options = { version = "1", resolution = 8, angles = [0, 30, 60] }
[[tasks]]
name = "digits_rotated"
options = { version = "1", resolution = 8, angles = [0, 30, 60] }
protocol = "uda"
"""


def test_status_keeps_protocols_of_one_task_apart(tmp_path, capsys):
    suite = tmp_path / "two.toml"
    suite.write_text(SUITE)
    out = tmp_path / "runs"
    run(str(suite), out=out, progress=False)
    rows = status(out)
    assert [(r.task, r.protocol, r.method, r.done, r.missing) for r in rows] == [
        ("digits_rotated", "dg", "erm", 1, 0), ("digits_rotated", "uda", "erm", 1, 0)]
    assert main(["status", str(out)]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert "protocol" in printed and "uda" in printed and "2 done, 0 failed, 0 missing" in printed


def test_status_takes_the_protocol_from_records_when_an_old_plan_lacks_it(tmp_path):
    import json

    suite = tmp_path / "two.toml"
    suite.write_text(SUITE)
    out = tmp_path / "runs"
    run(str(suite), out=out, progress=False)
    for plan in (out / "plans").glob("*.json"):  # as saved before plans kept the protocol
        saved = json.loads(plan.read_text())
        for job in saved["jobs"]:
            del job["protocol"]
        plan.write_text(json.dumps(saved))
    assert [r.protocol for r in status(out)] == ["dg", "uda"]
