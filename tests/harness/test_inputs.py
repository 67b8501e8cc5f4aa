"""Inputs are checked where they are read (issue 15): one line, exit code 2, no traceback, and
the message names the real cause."""

from __future__ import annotations

import os

import pytest

from xbench.cli import main
from xbench.errors import ExitCode
from xbench.registry import METHODS

SUITE = """
name = "inputs"
seeds = [0]
methods = ["erm"]
[budget]
steps = 4
batch_size = 8
eval_every = 2
[[tasks]]
name = "digits_rotated"
targets = ["30"]
options = {{ version = "1", resolution = {resolution}, angles = [0, 15, 30] }}
"""


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def write_suite(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("value, words", [
    ('"big"', "option 'resolution' must be an integer"),
    ("0", "option 'resolution' must be a positive integer"),
    ("-8", "option 'resolution' must be a positive integer"),
    ("nan", "option 'resolution' must be an integer"),
    ("100000", "option 'resolution' 100000 is too large"),
    ('8, data_seed = "0"', "option 'data_seed' must be an integer"),
])
def test_bad_task_options_fail_when_the_plan_is_built(tmp_path, capsys, value, words):
    suite = write_suite(tmp_path, SUITE.format(resolution=value))
    code, _, err = run_cli(capsys, "run", suite, "--out", tmp_path / "o", "--quiet")
    assert code == ExitCode.USAGE_ERROR
    assert words in err and str(suite) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "records.jsonl").exists()


def test_a_suite_that_is_not_utf8_is_one_line(tmp_path, capsys):
    suite = tmp_path / "latin1.toml"
    suite.write_bytes(SUITE.format(resolution=8).replace('"inputs"', '"caf\xe9"')
                      .encode("latin-1"))
    code, _, err = run_cli(capsys, "run", suite, "--quiet")
    assert code == ExitCode.USAGE_ERROR and "not UTF-8" in err


def test_a_deeply_nested_toml_array_is_one_line(tmp_path, capsys):
    suite = write_suite(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = run_cli(capsys, "run", suite, "--quiet")
    assert code == ExitCode.USAGE_ERROR and "nested too deeply" in err


def test_a_folder_or_fifo_suite_path_says_what_it_is(tmp_path, capsys):
    (tmp_path / "d.toml").mkdir()
    code, _, err = run_cli(capsys, "run", tmp_path / "d.toml", "--quiet")
    assert code == ExitCode.USAGE_ERROR and "is a folder" in err
    os.mkfifo(tmp_path / "f.toml")
    code, _, err = run_cli(capsys, "run", tmp_path / "f.toml", "--quiet")
    assert code == ExitCode.USAGE_ERROR and "not a regular file" in err


@pytest.mark.parametrize("argv, words", [
    (["--out", ""], "--out is empty"),
    (["--methods", ""], "--methods is empty"),
    (["--methods", " , "], "--methods is empty"),
    (["--tasks", ""], "--tasks is empty"),
])
def test_empty_values_are_errors_not_defaults(tmp_path, capsys, argv, words):
    suite = write_suite(tmp_path, SUITE.format(resolution=8))
    code, _, err = run_cli(capsys, "run", suite, "--quiet", *argv)
    assert code == ExitCode.USAGE_ERROR and words in err
    assert not list(tmp_path.rglob("records.jsonl"))


def test_empty_targets_is_an_error(tmp_path, capsys):
    suite = write_suite(tmp_path, SUITE.format(resolution=8).replace('targets = ["30"]',
                                                                     "targets = []"))
    code, _, err = run_cli(capsys, "run", suite, "--out", tmp_path / "o", "--quiet")
    assert code == ExitCode.USAGE_ERROR and "'targets' is empty" in err


def test_messages_name_the_real_cause(tmp_path, capsys):
    text = SUITE.format(resolution=8)
    excluded = write_suite(tmp_path, text.replace('methods = ["erm"]', 'methods = ["erm"]\n'
                                                  'exclude_methods = ["*"]'), "e.toml")
    code, _, err = run_cli(capsys, "run", excluded, "--quiet")
    assert code == ExitCode.USAGE_ERROR and "excluded by exclude_methods" in err
    negative = write_suite(tmp_path, "hparam_samples = -1\n" + text, "n.toml")
    code, _, err = run_cli(capsys, "run", negative, "--quiet")
    assert code == ExitCode.USAGE_ERROR and "'hparam_samples'" in err
    assert "--hparam-samples" not in err
    code, _, err = run_cli(capsys, "compare", tmp_path, tmp_path, "--threshold", "bogus=2")
    assert code == ExitCode.USAGE_ERROR and "--threshold bogus" in err
    code, out, _ = run_cli(capsys, "list", "executors")
    assert code == 0 and "process" in out
    code, _, err = run_cli(capsys, "run", write_suite(tmp_path, text, "t.toml"), "--executor",
                           "process", "--threads", "-2", "--quiet")
    assert code == ExitCode.USAGE_ERROR and "--threads -2" in err


def test_a_broken_plugin_is_listed_as_broken_and_breaks_nothing(capsys):
    METHODS.register_lazy("zz_broken_plugin", "no_such_module_xyz:Method", origin="broken==1.0")
    try:
        code, out, err = run_cli(capsys, "list", "methods")
        assert code == 0
        assert "zz_broken_plugin" in out and "BROKEN" in out and "erm" in out
        assert "no_such_module_xyz" in err
        code, out, _ = run_cli(capsys, "docs", "methods")
        assert code == 0 and "`erm`" in out
    finally:
        METHODS.unregister("zz_broken_plugin")
