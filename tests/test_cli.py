"""CLI: exit codes and one-line messages for every error a user can cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xbench.cli import main
from xbench.errors import ExitCode


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("xbench: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_exit_codes_are_a_documented_intenum():
    assert [int(c) for c in (ExitCode.OK, ExitCode.FAILURES, ExitCode.USAGE_ERROR)] == [0, 1, 2]


def test_list_methods_tasks_suites(capsys):
    code, out, _ = run_cli(capsys, "list", "methods")
    assert code == 0 and "erm" in out and "xbench==" in out
    code, out, _ = run_cli(capsys, "list", "tasks", "digits*")
    assert code == 0 and "digits_rotated" in out and "cross_domain" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("digits_")}
    # version (and the old ones still loadable), default target and its test size
    assert "2 (old: 1)  75: 2000" in rows["digits_rotated"]
    assert "real: 360*" in rows["digits_syn2real"]  # capped by the real pool, and says so
    assert "* digits_syn2real: capped by scikit-learn's 1,797 real digits" in out
    assert "novel: -" in rows["digits_fewshot"]  # episodes: not known without the data
    code, out, _ = run_cli(capsys, "list", "suites")
    assert code == 0 and "quick" in out
    code, _, err = run_cli(capsys, "list", "methods", "zzz*")
    assert code == ExitCode.USAGE_ERROR and "no methods match 'zzz*'" in err


def test_run_then_rerun_skips_and_report(capsys, tiny_suite, tmp_path):
    out_dir = tmp_path / "runs"
    code, out, err = run_cli(capsys, "run", str(tiny_suite), "--out", str(out_dir), "--quiet")
    assert code == ExitCode.OK
    assert "2 run, 0 failed" in err
    assert "| erm " in out and "(2)" in out  # mean ± CI with 2 seeds
    code, out, err = run_cli(capsys, "run", str(tiny_suite), "--out", str(out_dir), "--quiet")
    assert code == ExitCode.OK and "2 already finished (skipped), 0 run" in err
    code, out, _ = run_cli(capsys, "report", str(out_dir), "--format", "md")
    assert code == ExitCode.OK and "± " in out and "(2)" in out and "train samples/s" in out


def test_methods_not_run_are_noted_once_per_task_and_reason(capsys, tiny_suite, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--out", str(tmp_path / "r"),
                           "--methods", "erm,cdan,mcc", "--seeds", "0", "--quiet")
    assert code == ExitCode.OK
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == ["note: not run on tiny_blobs [dg] (does not support protocol 'dg'): "
                     "cdan, mcc"]


def test_failed_jobs_give_exit_code_1_and_the_run_goes_on(capsys, tiny_suite, tmp_path):
    code, out, err = run_cli(capsys, "run", str(tiny_suite), "--out", str(tmp_path / "r"),
                             "--methods", "erm,test_raising", "--seeds", "0", "--quiet")
    assert code == ExitCode.FAILURES
    assert "2 run, 1 failed" in err
    assert "failed: test_raising on tiny_blobs (seed 0): RuntimeError: boom" in err
    assert "| erm " in out  # the good job still made it into the table


@pytest.mark.parametrize("argv, fragment", [
    (["run", "quickk"], "Unknown suite 'quickk'. Did you mean: quick?"),
    (["run", "{suite}", "--methods", "ermm"], "Unknown method 'ermm'. Did you mean: erm"),
    (["run", "{suite}", "--seeds", "a,b"], "--seeds a,b: seeds must be integers"),
    (["run", "{suite}", "--set", "erm.lr"], "--set erm.lr: expected METHOD.KEY=VALUE"),
    (["run", "{suite}", "--set", "erm.lrr=1"], "'erm' has no hyper-parameter(s) ['lrr']"),
    (["run", "{suite}", "--set", "erm.lr=fast"], "'lr' expects float, got 'fast'"),
    (["run", "{suite}", "--device", "quantum"], "--device quantum: not a device"),
    (["run", "missing.toml"], "suite file 'missing.toml' does not exist"),
    (["report", "{tmp}/nothing"], "no such results folder or record file"),
    (["report", "{tmp}"], "no records.jsonl in this folder"),
    (["report", "{fixture}", "--selection", "best"], "--selection best: unknown"),
    (["run", "{suite}", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_user_errors_are_one_line_with_exit_code_2(capsys, tiny_suite, tmp_path, argv, fragment):
    fixture = Path(__file__).parent / "analysis" / "fixtures" / "report"
    argv = [a.format(suite=tiny_suite, tmp=tmp_path, fixture=fixture) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == ExitCode.USAGE_ERROR
    assert fragment in one_error_line(err)


def test_malformed_suite_file_names_the_file_and_key(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [0]\nmethod = ['erm']\n[[tasks]]\nname = 'tiny_blobs'\n")
    code, _, err = run_cli(capsys, "run", str(bad))
    assert code == ExitCode.USAGE_ERROR
    line = one_error_line(err)
    assert str(bad) in line and "unknown key 'method'" in line


def test_console_script_prints_no_traceback_for_user_errors():
    # pip installs the console script beside the interpreter of the environment
    exe = Path(sys.executable).parent / "xbench"
    assert exe.exists(), f"{exe} missing: install xbench as the README says"
    proc = subprocess.run([exe, "run", "no_such_suite"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("xbench: error: Unknown suite 'no_such_suite'")
    assert "Traceback" not in proc.stderr


def test_report_status_compare_history_name_each_invalid_record_once(capsys, tiny_suite,
                                                                      tmp_path):
    """One warning per invalid record (file, line, field), then the count; the report's
    header counts them beside the failed jobs."""
    import json
    import shutil

    base = tmp_path / "base"
    assert run_cli(capsys, "run", str(tiny_suite), "--out", str(base), "--quiet")[0] == 0
    bad = tmp_path / "bad"
    shutil.copytree(base, bad, ignore=shutil.ignore_patterns(".xbench*"))
    lines = (bad / "records.jsonl").read_text().splitlines()
    a, b = json.loads(lines[0]), json.loads(lines[1])
    a["metrics"]["acc_target"] = 57.0
    b["seed"] = True
    (bad / "records.jsonl").write_text("\n".join([*lines, json.dumps(a), json.dumps(b)]) + "\n")
    path = bad / "records.jsonl"
    expected = [f"warning: {path}:3: invalid record: field 'metrics.acc_target' is 57.0, not an "
                f"accuracy in [0, 1]; skipped",
                f"warning: {path}:4: invalid record: field 'seed' is true, not an integer; "
                f"skipped",
                "warning: 2 records skipped as invalid"]
    for argv in (["report", str(bad)], ["status", str(bad)], ["history", str(bad)],
                 ["compare", str(base), str(bad)]):
        code, out, err = run_cli(capsys, *argv)
        assert "Traceback" not in err, argv
        said = [line.replace("warning: NEW: ", "warning: ")
                for line in (out + err).splitlines() if "invalid" in line and
                line.startswith("warning:")]
        assert said == expected, (argv, out, err)
        if argv[0] == "report":
            assert code == 0 and "0 failed jobs; 2 records skipped as invalid\n" in out
