"""Nothing is written outside where the user said (issue 15): names that become paths, LaTeX
comments, plot labels and file names."""

from __future__ import annotations

import warnings

import pytest

from tests.records_factory import board_records, write
from xbench.cli import main
from xbench.errors import ConfigError, ExitCode, RegistryClashError
from xbench.harness.suite import load_suite
from xbench.names import check_name, safe_filename
from xbench.registry import Registry

SUITE = """
name = "{name}"
methods = ["erm"]
[[tasks]]
name = "tiny_blobs"
"""


@pytest.mark.parametrize("name", ["../../escape", "/abs", "a/b", ".hidden", "", "a..b",
                                  "x\ny"])
def test_a_suite_name_that_would_leave_the_folder_is_a_config_error(tmp_path, name, capsys):
    path = tmp_path / "inner" / "s.toml"
    path.parent.mkdir()
    path.write_text(SUITE.format(name=name.replace("\n", "\\n")))
    with pytest.raises(ConfigError, match="suite 'name'"):
        load_suite(str(path))
    assert main(["run", str(path), "--out", str(tmp_path / "inner" / "out"),
                 "--quiet"]) == ExitCode.USAGE_ERROR
    assert "Traceback" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["inner", "s.toml"]


def test_the_plan_file_lives_inside_out(tiny_suite, tmp_path):
    assert main(["run", str(tiny_suite), "--out", str(tmp_path / "o"), "--quiet",
                 "--seeds", "0"]) == 0
    plans = list(tmp_path.rglob("plans"))
    assert plans == [tmp_path / "o" / "plans"]


def test_registry_names_must_be_safe():
    registry = Registry("thing")
    with pytest.raises(RegistryClashError, match="not a valid name"):
        registry.register("../x", type("X", (), {}))
    registry.register("ok_name-1.2", type("Y", (), {}))


def test_safe_filename():
    for text in ("/../../x", "..", "$\\frac{a}{b}$", "a/b\\c", ".hidden", ""):
        name = safe_filename(text)
        assert "/" not in name and "\\" not in name and ".." not in name
        assert name and not name.startswith(".")
    assert check_name("dg", "protocol") == "dg"


EVIL = "boom\n\\immediate\\write18{touch pwned}\n% not a comment"


def test_latex_escapes_every_string_even_in_comments(tmp_path):
    records = board_records()
    for r in records:
        if r["status"] == "failed":
            r["error"] = EVIL
    records[0]["method"] = "A\n\\input{/etc/passwd}"
    folder = write(tmp_path / "runs", records)
    from xbench.analysis.report import report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latex = report(folder, fmt="latex")
    for line in latex.splitlines():
        assert "\\immediate" not in line or line.startswith("%"), line
        assert "\\write18" not in line.replace("\\textbackslash{}write18", ""), line
        assert "\\input{" not in line, line


def test_plot_labels_are_not_mathtext_and_file_names_are_safe(tmp_path):
    records = board_records(names={"A": "$\\frac{1}{$", "B": "$^^$"})
    folder = write(tmp_path / "runs", records)
    from xbench.analysis.report import report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report(folder, selection="training_domain", plots=tmp_path / "plots")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert len(names) == 3 and all(n.startswith("training_domain_dg_") for n in names)
    assert [p for p in tmp_path.rglob("*.png") if p.parent != tmp_path / "plots"] == []
