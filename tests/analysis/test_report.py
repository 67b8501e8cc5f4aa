"""Report: golden tables computed by hand from committed fixture records."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest

from tests.records_factory import board_records, record, sweep_records, write
from xbench.cli import main
from xbench.analysis.report import accuracy_table, analyse, cost_table, load_results, mean_ci, report

FIXTURE = Path(__file__).parent / "fixtures" / "report"

# Student t quantiles t_{0.975, df}, from printed tables.
T975 = {1: 12.7062, 2: 4.3027}


def test_mean_ci_matches_the_student_t_formula_with_ddof_1():
    values = [0.80, 0.82, 0.84]
    # sample sd with ddof=1: sqrt(((-.02)^2 + 0 + .02^2) / 2) = 0.02
    expected_half = T975[2] * 0.02 / math.sqrt(3)
    ci = mean_ci(values)
    assert ci["mean"] == pytest.approx(0.82)
    assert ci["std"] == pytest.approx(0.02)
    assert ci["n"] == 3
    assert ci["ci"] == pytest.approx(expected_half, rel=1e-4)
    assert math.isnan(mean_ci([0.5])["ci"]) and mean_ci([0.5])["n"] == 1


def md_rows(table: str) -> dict[str, list[str]]:
    """The body rows of the first Markdown table in ``table``: first cell -> the other cells."""
    rows = {}
    lines = []
    for line in table.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def section(text: str, title: str) -> str:
    """The part of a report from the table whose title starts with ``title``."""
    return text[text.index(title):]


def test_accuracy_table_golden_markdown():
    df = load_results(FIXTURE)
    with pytest.warns(UserWarning, match="beta on t2: seed 0: no successful run"):
        table = accuracy_table(df, "md")
    rows = md_rows(table)
    # alpha/t1: mean 82.0, half-width 4.3027 * 2.0 / sqrt(3) = 4.97 -> 5.0, n = 3
    # alpha/t2: 70.0, sd 0 -> ± 0.0, n = 2; average (82.0 + 70.0) / 2 = 76.0
    # beta/t1: mean 88.0, sd 2.828 -> 12.7062 * 2.828 / sqrt(2) = 25.41 -> 25.4, n = 2
    # beta/t2: only a failed run -> missing, and no average over fewer tasks
    # t1 tie: beta is best, [62.6, 113.4] overlaps alpha's [77.0, 87.0] -> both marked
    assert rows["alpha"] == ["**82.0 ± 5.0 (3)**", "**70.0 ± 0.0 (2)**", "76.0"]
    assert rows["beta"] == ["**88.0 ± 25.4 (2)**", "—", "—"]
    assert list(rows) == ["alpha", "beta"]
    assert "model selection: training_domain" in table


def test_selection_last_reads_the_last_step_scores():
    df = load_results(FIXTURE)
    with pytest.warns(UserWarning):
        table = accuracy_table(df, "md", selection="last")
    # t1: beta 80.0 ± 0.0 is best and alpha 50.0 ± 0.0 does not overlap it: beta alone
    assert md_rows(table)["alpha"] == ["50.0 ± 0.0 (3)", "**60.0 ± 0.0 (2)**", "55.0"]
    assert md_rows(table)["beta"] == ["**80.0 ± 0.0 (2)**", "—", "—"]
    assert "model selection: last" in table
    with pytest.warns(UserWarning):
        oracle = accuracy_table(df, "md", selection="oracle")
    assert "ORACLE" in oracle


def test_cost_table_medians_per_method_and_device():
    rows = md_rows(cost_table(load_results(FIXTURE), "md"))
    # alpha: train samples/s over 5 jobs 100..500 -> median 300; peak mem 10..50 -> 30
    # beta: two ok jobs (the failed one is left out): median(1000, 3000) = 2000 -> rank 1
    assert rows["alpha"] == ["cpu: Test CPU", "300", "3,000", "1.00", "30.00", "1,000", "2", "5"]
    assert rows["beta"][:2] == ["cpu: Test CPU", "2,000"] and rows["beta"][-2:] == ["1", "2"]


def test_csv_is_long_form_with_numbers():
    with pytest.warns(UserWarning):
        csv = accuracy_table(load_results(FIXTURE), "csv")
    header, *rows = csv.strip().splitlines()
    assert header == "method,task,selection,mean,std,n,ci,status,oracle,top"
    assert any(r.startswith("alpha,t1,training_domain,0.82") for r in rows)
    assert any(r.startswith("beta,t2,training_domain,,,0,,incomplete") for r in rows)


def test_full_report_lists_failed_jobs_and_latex_renders():
    with pytest.warns(UserWarning):
        text = report(FIXTURE, fmt="md")
    assert "Failed jobs" in text and "beta on t2 (seed 0): RuntimeError: boom" in text
    with pytest.warns(UserWarning):
        latex = report(FIXTURE, fmt="latex")
    assert "\\toprule" in latex and "\\textbf{82.0 $\\pm$ 5.0 (3)}" in latex


def test_report_all_prints_every_supported_selection_and_says_which_are_not():
    with pytest.warns(UserWarning):
        text = report(FIXTURE)
    heads = re.findall(r"^## Model selection: (\w+)", text, flags=re.M)
    assert heads == ["training_domain", "last", "oracle"]
    for name in heads:  # every table of a section names its selection
        part = text.split(f"## Model selection: {name}")[1].split("\n## ")[0]
        assert "### Protocol: dg" in part
        # accuracy, worst-domain, across-task and Pareto tables (no pairwise table: only one
        # method is ranked)
        assert part.count(f"model selection: {name}") == 4
    assert ("Not shown: selection leave_one_domain_out under protocol dg: no "
            "leave-one-domain-out (holdout) runs") in text
    assert ("Not shown: selection target_entropy under protocol dg: label-free validators "
            "apply to UDA") in text


@pytest.fixture
def board(tmp_path):
    return write(tmp_path / "board", board_records())


def test_leaderboard_golden_tables_ties_oracle_and_incomplete(board):
    with pytest.warns(UserWarning, match="D on t2: seed 1: no successful run"):
        text = report(board, selection="training_domain")
    acc = md_rows(text)
    # by hand: A t1 .80/.82/.84 -> 82.0 ± 4.3027*.02/sqrt3 = 5.0; A t2 .62/.64/.66 -> 64.0 ± 5.0
    #          B t1 .70/.71/.72 -> 71.0 ± 2.5; B t2 .70/.72/.74 -> 72.0 ± 5.0
    # t1: A best [77.0, 87.0], B [68.5, 73.5] no overlap -> A alone
    # t2: B best [67.0, 77.0], A [59.0, 69.0] overlaps -> A and B tied, both marked
    assert acc["A"] == ["**82.0 ± 5.0 (3)**", "**64.0 ± 5.0 (3)**", "73.0"]
    assert acc["B"] == ["71.0 ± 2.5 (3)", "**72.0 ± 5.0 (3)**", "71.5"]
    assert acc["C"] == ["60.0 ± 0.0 (3)", "50.0 ± 0.0 (3)", "55.0"]
    assert acc["D"] == ["50.0 ± 0.0 (3)", "—", "—"]             # incomplete: missing
    # the oracle row is listed last, marked, never bolded although it is the most accurate
    assert list(acc) == ["A", "B", "C", "D", "erm_oracle [ORACLE]"]
    assert acc["erm_oracle [ORACLE]"] == ["95.0 ± 0.0 (3)", "95.0 ± 0.0 (3)", "95.0"]

    agg = md_rows(section(text, "Across tasks"))
    # ranks among A, B, C: t1 A1 B2 C3, t2 B1 A2 C3 -> 1.5, 1.5, 3; D and the oracle unranked
    assert [agg[m][1] for m in ("A", "B", "C", "D", "erm_oracle [ORACLE]")] == \
        ["1.50", "1.50", "3.00", "—", "—"]
    # IQM of A: pooled .62 .64 .66 .80 .82 .84, trim 1 each side -> (.64+.66+.80+.82)/4 = .73
    assert agg["A"][2].startswith("**73.0 [")
    assert agg["D"] == ["—", "—", "—", "—", "1/2"]
    # Friedman by hand: 12/(2*3*4) * (3^2 + 3^2 + 6^2) - 3*2*4 = 3.0; CD = 2.343 * sqrt(12/12)
    assert "Friedman test over 3 methods x 2 tasks: chi2 = 3.00" in text
    assert "critical difference of average ranks (alpha = 0.05): 2.34" in text

    pareto = md_rows(section(text, "Accuracy vs cost"))
    # A (73.0, 100/s) most accurate, B (71.5, 300/s) fastest: both on the front;
    # C (55.0, 200/s) dominated by B; D has no average; the oracle is left out
    assert {m: r[-1] for m, r in pareto.items()} == {"A": "**yes**", "B": "**yes**", "C": "",
                                                      "D": ""}
    pair = md_rows(section(text, "Pairwise"))
    # A leads (rank tie broken by mean); A beats C on all 6 (task, seed) pairs: P = 100%,
    # exact Wilcoxon p = 2 / 2^6
    assert pair["A"][0] == "C" or pair["A"][0] == "B"
    rows = [line for line in section(text, "Pairwise").splitlines()[:8] if line.startswith("| A")]
    assert any("| C " in r and "| 100 " in r and "0.0312" in r for r in rows)


def test_cost_is_never_ranked_across_devices_unless_asked(tmp_path):
    gpu = [record(f"E-{t}-{s}", method="E", task=t, seed=s, protocol="dg", acc_target=0.7,
                  device="cuda: Big GPU", train_samples_per_s=90000.0)
           for t in ("t1", "t2") for s in range(3)]
    folder = write(tmp_path / "two", board_records() + gpu)
    with pytest.warns(UserWarning):
        text = report(folder, selection="training_domain")
    cost = md_rows(section(text, "Cost: median"))
    assert "2 devices: cost is ranked within each device only" in text
    # E, 300 times faster on its GPU, is ranked only among GPU runs; B stays first on the CPU
    assert cost["E"][0] == "cuda: Big GPU" and cost["E"][-2] == "1"
    assert cost["B"][0] == "cpu: Test CPU" and cost["B"][-2] == "1"
    # the Pareto table is per device too: E does not dominate A or B
    pareto = md_rows(section(text, "Accuracy vs cost"))
    assert pareto["E"][0] == "cuda: Big GPU" and pareto["E"][-1] == "**yes**"
    assert pareto["A"][-1] == "**yes**" and pareto["B"][-1] == "**yes**"
    with pytest.warns(UserWarning):
        pooled = report(folder, selection="training_domain", cost_across_devices=True)
    assert "POOLED ACROSS 2 DEVICES" in pooled


def test_plots_are_written_as_png(board, tmp_path):
    with pytest.warns(UserWarning):
        report(board, selection="training_domain", plots=tmp_path / "plots")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["training_domain_dg_accuracy_vs_cost.png", "training_domain_dg_domains.png",
                     "training_domain_dg_ranks.png"]
    for p in (tmp_path / "plots").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oracle_rows_and_marked_ties_in_latex_and_html(board):
    with pytest.warns(UserWarning):
        latex = report(board, selection="training_domain", fmt="latex")
    assert "erm\\_oracle [ORACLE] & 95.0 $\\pm$ 0.0 (3) &" in latex
    assert "B & 71.0 $\\pm$ 2.5 (3) & \\textbf{72.0 $\\pm$ 5.0 (3)}" in latex
    with pytest.warns(UserWarning):
        page = report(board, selection="training_domain", fmt="html")
    assert '<td class="top" data-v="0.72' in page and "<!DOCTYPE html>" in page


def test_cli_report_selection_format_and_errors(capsys, board, tmp_path):
    code = main(["report", str(board), "--selection", "oracle", "--format", "csv"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("method,task,selection,mean")
    assert "warning: D on t2: seed 1: no successful run" in err
    code = main(["report", str(board), "--selection", "nope"])
    out, err = capsys.readouterr()
    assert code == 2 and "xbench: error: --selection nope: unknown" in err
    assert "Traceback" not in err
    code = main(["report", str(board), "--selection", "leave_one_domain_out"])
    out, err = capsys.readouterr()
    assert code == 2 and ("xbench: error: --selection leave_one_domain_out: applies to none of "
                          "these records") in err
    # holdout runs for method m only: n's cell is missing with a warning, never a fallback
    mixed = write(tmp_path / "mixed", sweep_records() + sweep_records(method="n",
                                                                      with_holdouts=False))
    code = main(["report", str(mixed), "--selection", "leave_one_domain_out"])
    out, err = capsys.readouterr()
    assert code == 0
    assert ("warning: n on t: seed 0: no leave-one-domain-out (holdout) runs for trial(s) "
            "0, 1, 2") in err
    rows = md_rows(section(out, "Target accuracy"))
    assert rows == {"m": ["**75.0 (1)**"], "n": ["—"]}


def test_analyse_is_reusable_for_the_run_table(board):
    a = analyse(load_results(board), "training_domain")
    assert a.methods == ["A", "B", "C", "D", "erm_oracle"]
    assert a.tasks == ["t1", "t2"]


def test_leaderboard_script_writes_a_generated_header(board, tmp_path):
    import os
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "results" / "update-leaderboard.sh"
    out = tmp_path / "LEADERBOARD.md"
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(["bash", str(script), str(board), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    first = out.read_text().splitlines()[0]
    assert first == (f"<!-- generated by `xbench report {board} --format md`; do not edit by "
                     f"hand, run the command again -->")
    assert "## Model selection: training_domain" in out.read_text()


def test_few_shot_episodes_table_and_paired_test_over_episodes(tmp_path):
    from scipy import stats as st

    episodes = {("P", 0): [0.4, 0.6, 0.8], ("P", 1): [0.6, 0.6, 0.6],
                ("Q", 0): [0.2, 0.4, 0.6], ("Q", 1): [0.5, 0.4, 0.3]}
    records = [record(f"{m}-{s}", method=m, task="fs", seed=s, protocol="fewshot",
                      acc_target=sum(accs) / 3, episodes={"hash": "h1", "acc": accs, "n": 3})
               for (m, s), accs in episodes.items()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = report(write(tmp_path / "fs", records), selection="training_domain")
    assert [str(w.message) for w in caught] == []  # complete cells: nothing to warn about
    rows = md_rows(section(text, "Few-shot"))
    # P per episode over seeds: .5 .6 .7 -> 60.0 ± 4.3027 * .1 / sqrt(3) = 24.8
    # Q: .35 .40 .45 -> 40.0 ± 4.3027 * .05 / sqrt(3) = 12.4
    assert rows["P"] == ["fs", "60.0 ± 24.8", "3", "2", ""]
    assert rows["Q"] == ["fs", "40.0 ± 12.4", "3", "2", ""]
    # paired t-test over the 6 shared episodes: d = .2 .2 .2 .1 .2 .3, mean .2, sd sqrt(.004)
    t = 0.2 / (math.sqrt(0.004) / math.sqrt(6))
    p = 2 * st.t.sf(t, 5)
    pair = md_rows(section(text, "Pairwise"))
    assert pair["P"][0] == "Q" and pair["P"][4] == "6"
    assert float(pair["P"][5]) == pytest.approx(p, rel=1e-2)


def test_a_method_absent_from_a_task_says_whether_it_could_not_run_there(tmp_path):
    # mldg needs 2 source domains: on "one" (a single source domain) it cannot run, on "two"
    # it simply did not; erm ran on both. Neither absence is averaged over fewer tasks.
    records = []
    for seed in (0, 1):
        for task in ("one", "two"):
            r = record(f"erm-{task}-{seed}", method="erm", task=task, seed=seed, protocol="dg",
                       acc_target=0.5)
            if task == "one":
                del r["metrics"]["domains"]["b"]  # sources: a only
            records.append(r)
    records += [record(f"mldg-two-{s}", method="mldg", task="three", seed=s, protocol="dg",
                       acc_target=0.6) for s in (0, 1)]
    records += [record(f"erm-three-{s}", method="erm", task="three", seed=s, protocol="dg",
                       acc_target=0.4) for s in (0, 1)]
    notes = " ".join(analyse(load_results(write(tmp_path / "r", records)),
                             "training_domain").warnings)
    assert ("mldg: no result for one (not applicable: mldg needs 2 source domains, the task "
            "has 1), two (not run); its average is left out") in notes
