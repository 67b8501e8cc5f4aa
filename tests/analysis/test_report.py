"""Report: golden tables computed by hand from committed fixture records."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest

import numpy as np
from scipy import stats as st

from tests.records_factory import board_records, point, record, sweep_records, write
from xbench.analysis import stats
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
    # t1: beta 80.0 ± 0.0 (2 seeds) vs alpha 50.0 ± 0.0 (3 seeds, other seeds): no variance
    # on either side, so no test can rule alpha out as the best -- both marked, never p ~ 0
    assert md_rows(table)["alpha"] == ["**50.0 ± 0.0 (3)**", "**60.0 ± 0.0 (2)**", "55.0"]
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
    # mean of A over tasks .82, .64 = 73.0; variance of the mean (.02^2/3 + .02^2/3) / 2^2,
    # Welch-Satterthwaite df = (2v)^2 / (2 v^2 / 2) = 4 -> half-width t_{.975,4} sqrt(2v) / 2
    v = 0.02 ** 2 / 3
    assert agg["A"][0] == f"**73.0 ± {100 * st.t.ppf(0.975, 4) * math.sqrt(2 * v) / 2:.1f}**"
    assert agg["D"] == ["—", "—", "—", "1/2"]
    assert "IQM not shown: 2 task(s), fewer than 10" in text
    # Friedman by hand: 12/(2*3*4) * (3^2 + 3^2 + 6^2) - 3*2*4 = 3.0; CD = 2.343 * sqrt(12/12)
    # Iman-Davenport: F = (N-1) chi2 / (N (k-1) - chi2) = 1 * 3 / (2 * 2 - 3) = 3.0 on (2, 2)
    assert "Friedman test over 3 methods x 2 tasks: chi2 = 3.00" in text
    assert f"Iman-Davenport F(2, 2) = 3.00, p = {st.f.sf(3.0, 2, 2):.3g}" in text
    assert "critical difference of average ranks (alpha = 0.05): 2.34" in text

    pareto = md_rows(section(text, "Accuracy vs cost"))
    # A (73.0, 100/s) most accurate, B (71.5, 300/s) fastest: both on the front;
    # C (55.0, 200/s) dominated by B; D has no average; the oracle is left out
    assert {m: r[-1] for m, r in pareto.items()} == {"A": "**yes**", "B": "**yes**", "C": "",
                                                      "D": ""}
    # no 'erm' in these records: no pairwise table, and a note says why
    assert "Pairwise" not in text and "the control 'erm' has no results" in text


def test_pairwise_is_against_a_fixed_control_exact_and_holm_adjusted(board):
    a = analyse(load_results(board), "training_domain", "dg", control="C")
    rows = a.pairwise.set_index("method")
    # A beats C on all 6 (task, seed) pairs: exact two-sided signed-rank p = 2 / 2^6
    assert rows.loc["A", "p"] == pytest.approx(2 / 2 ** 6)
    assert rows.loc["A", "p"] == pytest.approx(st.wilcoxon([.2, .22, .24, .12, .14, .16],
                                                           method="exact").pvalue)
    assert rows.loc["A", "min_p"] == pytest.approx(2 / 2 ** 6)
    # D: its t2 cell is incomplete and never enters; on t1 it loses 3 of 3: p = 2 / 2^3
    assert rows.loc["D", "pairs"] == 3 and rows.loc["D", "p"] == pytest.approx(0.25)
    # Holm over the three: sorted 1/32, 1/32, 1/4 -> x3, x2 (monotone: max), x1
    assert list(rows.loc[["A", "B", "D"], "p_holm"]) == pytest.approx([3 / 32, 3 / 32, 0.25])
    assert list(rows.loc[["A", "B"], "verdict"]) == ["no difference detected"] * 2
    assert rows.loc["D", "verdict"].startswith("cannot reject: 3 non-zero pairs (min p = 0.25)")
    assert "erm_oracle" not in rows.index


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
    # never an absolute local path: outside the working directory, the last two parts
    shown = Path(*Path(board).parts[-2:])
    assert first == (f"<!-- generated by `xbench report {shown} --format md`; do not edit by "
                     f"hand, run the command again -->")
    assert str(tmp_path) not in out.read_text()
    assert "## Model selection: training_domain" in out.read_text()


def test_few_shot_unit_is_the_seed_never_the_episode(tmp_path):
    episodes = {("P", 0): [0.4, 0.6, 0.8], ("P", 1): [0.6, 0.6, 0.6], ("P", 2): [0.5, 0.7, 0.6],
                ("Q", 0): [0.2, 0.4, 0.6], ("Q", 1): [0.5, 0.4, 0.3], ("Q", 2): [0.7, 0.5, 0.6]}
    records = [record(f"{m}-{s}", method=m, task="fs", seed=s, protocol="fewshot",
                      acc_target=sum(accs) / 3, episodes={"hash": "h1", "acc": accs, "n": 3})
               for (m, s), accs in episodes.items()]
    a = analyse(load_results(write(tmp_path / "fs", records)), "training_domain", "fewshot",
                control="Q")
    # P per seed: .6 .6 .6 -> CI 0; Q per seed: .4 .4 .6 -> mean .4667, t over 3 seeds
    q = [0.4, 0.4, 0.6]
    row = a.episodes.set_index("method").loc["Q"]
    assert row["seeds"] == 3 and row["episodes"] == 3
    assert row["ci"] == pytest.approx(st.sem(q) * st.t.ppf(0.975, 2))
    # the test is over the 3 seeds (differences .2 .2 0 -> 2 non-zero pairs), not 9 episodes
    pair = a.pairwise.set_index("method").loc["P"]
    assert pair["pairs"] == 3 and pair["nonzero"] == 2
    assert pair["p"] == pytest.approx(st.wilcoxon([0.2, 0.2, 0.0], method="exact",
                                                  zero_method="wilcox").pvalue)
    assert pair["verdict"].startswith("cannot reject: 2 non-zero pairs (min p = 0.5)")


def test_few_shot_episodes_are_read_at_the_selected_step_of_every_selection(tmp_path):
    # the 'last' selection picks step 200, the default (training_domain) step 100: each
    # reads the episodes stored at its own history point, so no seed is dropped
    records = []
    for seed in (0, 1):
        history = [point(100, 0.9, 0.5, 0.5), point(200, 0.8, 0.7, 0.7)]
        history[0]["episode_accs"] = [0.4, 0.6]
        history[1]["episode_accs"] = [0.6, 0.8]
        records.append(record(f"P-{seed}", method="P", task="fs", seed=seed,
                              protocol="fewshot", history=history,
                              episodes={"hash": "h", "acc": [0.4, 0.6], "n": 2}))
    df = load_results(write(tmp_path / "fs", records))
    for selection, mean in (("training_domain", 0.5), ("last", 0.7)):
        row = analyse(df, selection, "fewshot").episodes.iloc[0]
        assert row["seeds"] == 2 and row["mean"] == pytest.approx(mean)


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
    assert ("mldg: no result for one (not applicable: mldg needs 2 source domains under dg, "
            "the task has 1), two (not run)") in notes
    # one rule: 'one' is left out of everybody's average (mldg cannot run there), while
    # mldg's missing 'two' leaves mldg without an average
    a = analyse(load_results(write(tmp_path / "r", records)), "training_domain")
    assert a.common == ["three", "two"]
    agg = a.aggregate.set_index("method")
    assert agg.loc["erm", "mean"] == pytest.approx(0.45) and math.isnan(agg.loc["mldg", "mean"])


def test_power_row_and_seeds_needed(tmp_path):
    # erm and A on one task, 4 seeds; differences A - erm: .02 .04 .00 .02 (sd by hand)
    values = {"erm": [0.50, 0.52, 0.54, 0.56], "A": [0.52, 0.56, 0.54, 0.58]}
    records = [record(f"{m}-{s}", method=m, task="t", seed=s, protocol="dg", acc_target=v)
               for m, vs in values.items() for s, v in enumerate(vs)]
    folder = write(tmp_path / "p", records)
    a = analyse(load_results(folder), "training_domain", "dg")
    sd = float(np.std([0.02, 0.04, 0.0, 0.02], ddof=1))
    assert a.power["t"]["sd"] == pytest.approx(sd) and a.power["t"]["n"] == 4
    text = report(folder, selection="training_domain", power=2.0)
    row = md_rows(text)["MDD vs erm"]
    assert row[0] == f"{100 * stats.min_detectable_difference(sd, 4):.1f}"
    need = stats.seeds_needed(0.02, sd)
    assert f"- t: {need:.0f} seeds (have 4;" in text


def _every_target_records(missing: tuple[str, int] | None = None):
    """erm and coral on one task, each of three domains held out in turn, 4 seeds."""
    from tests.synthetic import record as synthetic

    rng = np.random.default_rng(3)
    accs, out = {}, []
    for method, base in (("erm", 0.70), ("coral", 0.74)):
        for target, shift in (("0", 0.0), ("45", -0.05), ("75", -0.10)):
            for seed in range(4):
                if missing == (target, seed) and method == "coral":
                    continue
                acc = float(base + shift + rng.normal(0, 0.01))
                accs[method, target, seed] = acc
                r = synthetic(method, seed, acc=acc, target=(target,))
                r["metrics"]["by_selection"] = {"training_domain": {
                    "step": 200, "acc_target": acc, "acc_target_worst": acc,
                    "acc_source_val": 0.9}}
                out.append(r)
    return accs, out


def test_a_task_run_with_every_target_is_one_column_averaged_per_seed(tmp_path):
    from tests.synthetic import write as write_records

    accs, records = _every_target_records()
    df = load_results(write_records(tmp_path / "r.jsonl", records))
    a = analyse(df, "training_domain", "dg")
    assert a.tasks == ["digits_rotated"]
    cell = a.cells.set_index("method").loc["coral"]
    per_seed = [np.mean([accs["coral", t, s] for t in ("0", "45", "75")]) for s in range(4)]
    half = st.t.ppf(0.975, 3) * np.std(per_seed, ddof=1) / 2  # the seed is the unit
    assert cell["mean"] == pytest.approx(np.mean(per_seed)) and cell["n"] == 4
    assert cell["ci"] == pytest.approx(half)
    table = accuracy_table(df, selection="training_domain")
    assert "digits_rotated (3 targets" in table
    # one flag away: a column per target
    per_target = analyse(df, "training_domain", "dg", per_target=True)
    assert per_target.tasks == ["digits_rotated:0", "digits_rotated:45", "digits_rotated:75"]
    code = main(["report", str(tmp_path / "r.jsonl"), "--per-target",
                 "--selection", "training_domain"])
    assert code == 0


def test_a_seed_missing_one_target_makes_the_folded_cell_incomplete(tmp_path):
    from tests.synthetic import write as write_records

    _, records = _every_target_records(missing=("45", 2))
    df = load_results(write_records(tmp_path / "r.jsonl", records))
    a = analyse(df, "training_domain", "dg")
    cell = a.cells.set_index("method").loc["coral"]
    assert cell["status"] == "incomplete"
    assert any("seed 2: no run for digits_rotated:45" in w for w in a.warnings)


def test_pairwise_table_counts_pairs_scored_on_the_same_items(tmp_path):
    """Real runs keep per-item outcomes: the pairwise table says every (task, seed) pair
    scored identical items, and how many pairs' models differ beyond item noise."""
    import dataclasses
    import json as json_

    from tests.conftest import make_job
    from xbench.harness.runner import run_job
    from xbench.predictions import correct_at

    records = []
    for seed in (0, 1, 2):
        for method in ("erm", "coral"):
            job = make_job(method, seed)
            job = dataclasses.replace(job, task_options={"data_seed": seed, "n_per_domain": 60})
            records.append(run_job(job))
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json_.dumps(r) + "\n" for r in records))
    a = analyse(load_results(path), "training_domain", "dg")
    (row,) = a.pairwise.itertuples()
    assert row.method == "coral" and row.item_pairs == 3
    # McNemar counts recomputed here from the records' own per-item outcomes
    by = {(r["method"], r["seed"]): r for r in records}
    differ = 0
    for seed in (0, 1, 2):
        mine, base = by["coral", seed], by["erm", seed]
        x = correct_at(mine["metrics"]["history"], mine["metrics"]["selected_step"], "c")
        y = correct_at(base["metrics"]["history"], base["metrics"]["selected_step"], "c")
        b, c = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        p = st.binomtest(min(b, c), b + c, 0.5).pvalue - st.binom.pmf(min(b, c), b + c, 0.5) \
            if b != c else 1.0
        differ += p < 0.05
    assert row.item_differ == differ
    table = accuracy_table(load_results(path), selection="training_domain")
    assert "MDD vs erm" in table


def test_method_needs_are_cached_by_a_fingerprint_of_the_method_code(tmp_path, monkeypatch):
    """report reads min_source_domains from a cache (no torch import) keyed by the methods'
    code; a changed fingerprint asks the registry again."""
    import sys

    from xbench.analysis import report as rep
    from xbench.registry import METHODS

    calls = []

    def ask(pairs):
        calls.append(list(pairs))
        return {p: 2 for p in pairs}

    monkeypatch.setattr(rep, "_needs_from_registry", ask)
    monkeypatch.setenv("XBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("XBENCH_NO_INDEX", raising=False)
    monkeypatch.delitem(sys.modules, "xbench.methods", raising=False)
    monkeypatch.setattr(METHODS, "_entries", {})
    for expected_calls in (1, 1):  # a fresh process (empty memo): the second reads the file
        monkeypatch.setattr(rep, "_NEEDS", {})
        assert rep.method_needs([("coral", "dg")]) == {("coral", "dg"): 2}
        assert len(calls) == expected_calls
    monkeypatch.setattr(rep, "_method_code_fingerprint", lambda: "edited")
    monkeypatch.setattr(rep, "_NEEDS", {})
    rep.method_needs([("coral", "dg")])
    assert len(calls) == 2


def test_method_needs_from_the_cache_equal_the_registry(tmp_path, monkeypatch):
    from xbench.analysis import report as rep

    pairs = [("coral", "dg"), ("dann", "dg"), ("dann", "uda"), ("erm", "dg"), ("nope", "dg")]
    assert rep._needs_from_registry(pairs) == {("coral", "dg"): 2, ("dann", "dg"): 2,
                                               ("dann", "uda"): 1, ("erm", "dg"): 1,
                                               ("nope", "dg"): None}
    assert rep._method_code_fingerprint() is not None


def _spoil(folder: Path) -> Path:
    """Two invalid records (a percentage accuracy, an unknown protocol) before the good ones."""
    import json

    lines = (folder / "records.jsonl").read_text().splitlines()
    a, b = json.loads(lines[0]), json.loads(lines[1])
    a["metrics"]["acc_target"] = 57.0
    b["protocol"] = "sideways"
    (folder / "records.jsonl").write_text("\n".join([json.dumps(a), json.dumps(b), *lines])
                                          + "\n")
    return folder


@pytest.mark.parametrize("fmt", ["md", "latex"])
def test_the_header_counts_records_skipped_as_invalid_beside_failed_jobs(board, fmt):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clean = report(board, fmt=fmt)
    assert "failed jobs\n" in clean and "skipped as invalid" not in clean
    assert not [w for w in caught if "invalid" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = report(_spoil(board), fmt=fmt)
    header = next(line for line in text.splitlines() if "Records:" in line)
    assert header.endswith("1 failed jobs; 2 records skipped as invalid")
    messages = [str(w.message) for w in caught]
    path = board / "records.jsonl"
    assert [m for m in messages if "invalid" in m] == [
        f"{path}:1: invalid record: field 'metrics.acc_target' is 57.0, not an accuracy in "
        f"[0, 1]; skipped",
        f"{path}:2: invalid record: field 'protocol' is \"sideways\", not one of dg, fewshot, "
        f"paired, tta, uda; skipped",
        "2 records skipped as invalid"]


def test_html_report_counts_invalid_records_too(board):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "skipped as invalid" not in report(board, fmt="html")
        assert "2 records skipped as invalid" in report(_spoil(board), fmt="html")


def test_no_ok_record_left_says_how_many_were_invalid(tmp_path):
    import json

    from xbench.errors import RecordsError

    folder = write(tmp_path / "one", [record("x", acc_target=0.5)])
    only = json.loads((folder / "records.jsonl").read_text())
    only["metrics"]["acc_target"] = 50.0
    (folder / "records.jsonl").write_text(json.dumps(only) + "\n")
    with pytest.warns(UserWarning, match="field 'metrics.acc_target' is 50.0"):
        with pytest.raises(RecordsError, match=r"1 record skipped as invalid, see the warnings"):
            report(folder)
