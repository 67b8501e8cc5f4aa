"""The ``xbench`` command: list | run | status | report | publish | compare | bench | history |
check | data | docs.

Each subcommand is a small function returning an ``ExitCode``. Errors a user
can cause print one line (``xbench: error: ...``) and exit with the code of
their kind; nothing is half-written, and Ctrl-C keeps every finished job.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Sequence

from xbench.errors import ExitCode, UsageError, XbenchError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"xbench: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE_ERROR)


def build_parser() -> argparse.ArgumentParser:
    from xbench import __version__

    parser = _Parser(prog="xbench", description="Benchmark cross-domain learning methods.")
    parser.add_argument("--version", action="version", version=f"xbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list methods, tasks or suites")
    p.add_argument("what", choices=["methods", "tasks", "suites", "executors"])
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'dann*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite and append records to --out")
    p.add_argument("suite", help="a shipped suite name (see `xbench list suites`) or a .toml path")
    p.add_argument("--methods", action="append", metavar="P[,P]",
                   help="method names or patterns (replaces the suite's list)")
    p.add_argument("--tasks", action="append", metavar="P[,P]",
                   help="only the suite's tasks matching these patterns")
    p.add_argument("--seeds", metavar="S[,S]", help="seeds, e.g. 0,1,2 (replaces the suite's)")
    p.add_argument("--out", metavar="DIR", help="results folder (default xbench-runs/SUITE)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   dest="overrides", help="set a hyper-parameter, e.g. erm.lr=1e-4")
    p.add_argument("--format", choices=["md", "csv", "latex"], default="md")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--hparam-samples", type=int, metavar="N",
                   help="random-search draws per method (0 = defaults only)")
    p.add_argument("--leave-one-domain-out", action="store_true", default=None,
                   help="add one auxiliary run per held-out source domain (for selection)")
    p.add_argument("--retry-failed", action="store_true", help="re-run jobs that failed before")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"],
                   help="autocast applied by the runner around update and predict (default: "
                        "the suite's, else fp32; fp16 needs CUDA; auto = bf16 where native)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", dest="timeout_s",
                   help="per-job time limit; a job past it is recorded as failed (timeout) and "
                        "the run goes on (default: the suite's timeout_s, else 6 h; 0 = none)")
    s = p.add_argument_group("executors")
    s.add_argument("--executor", default="local", help="local (default), process, ray, slurm")
    s.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel jobs (process, ray)")
    s.add_argument("--threads", type=int, metavar="N",
                   help="torch threads per job (default: 1 with local, cores/jobs with process; "
                        "0 = torch's default)")
    s.add_argument("--address", help="ray: cluster address (auto or HOST:PORT)")
    s.add_argument("--cpus-per-job", type=float, help="ray/slurm: CPUs per job")
    s.add_argument("--gpus-per-job", type=float, help="ray/slurm: GPUs per job (ray: fractional)")
    s.add_argument("--partition", help="slurm: partition")
    s.add_argument("--time-min", type=int, default=60, help="slurm: time limit per job (minutes)")
    s.add_argument("--max-parallel", type=int, default=64, help="slurm: array parallelism cap")
    s.add_argument("--cluster", choices=["slurm", "local", "debug"],
                   help="slurm: submitit cluster (local/debug run without Slurm)")
    s.add_argument("--slurm-folder", help="slurm: folder for submitit logs")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("docs", help="print generated reference documentation")
    p.add_argument("what", choices=["methods"])
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("status", help="done / failed / missing jobs of a results folder")
    p.add_argument("out", metavar="DIR")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="tables (and plots) from results folders or record files")
    p.add_argument("paths", nargs="+", metavar="DIR")
    p.add_argument("--format", choices=["md", "csv", "latex", "html"], default="md")
    _selection_flags(p)
    p.add_argument("--plots", metavar="DIR", help="also write PNG plots into DIR")
    p.add_argument("--power", type=float, metavar="POINTS",
                   help="also print how many seeds each task needs to detect a difference of "
                        "POINTS accuracy points from the control")
    p.add_argument("--per-target", action="store_true",
                   help="a column per target domain, instead of one per task averaged over "
                        "the targets it was run with")
    p.add_argument("--curves", metavar="METHOD",
                   help="also print METHOD's source-validation learning curve per task and "
                        "whether it plateaued (e.g. erm)")
    p.add_argument("--agreement", metavar="DIR", nargs="+",
                   help="also print Kendall's tau between the control-relative scores of "
                        "these results folders (e.g. results/quick) and the report's")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("publish", help="a static HTML leaderboard (one self-contained page)")
    p.add_argument("paths", nargs="+", metavar="RESULTS")
    p.add_argument("--site", required=True, metavar="DIR", help="folder to write index.html to")
    p.add_argument("--title", default="xbench leaderboard")
    _selection_flags(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("check", help="run the conformance suite on methods (xbench.testing)")
    p.add_argument("pattern", nargs="?", default="*",
                   help="method names or fnmatch patterns, comma-separated (default: all)")
    p.add_argument("--checks", metavar="P[,P]",
                   help="only the checks matching these names or patterns")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compare", help="regression gate: compare NEW records against BASE "
                                       "(exit 1 on a regression, 4 when NEW lost data)",
                       epilog="exit codes: 0 no regression, 1 regression (or behaviour changed "
                              "with --exact, or underpowered with --require-power), 2 usage or "
                              "input error, 3 nothing comparable, 4 incomplete: a BASE benchmark "
                              "missing in NEW, fewer successful seeds or failed jobs in NEW "
                              "(1 wins over 4)")
    p.add_argument("base", metavar="BASE", help="record file or run folder of the baseline")
    p.add_argument("new", metavar="NEW", help="record file or run folder of the new run")
    p.add_argument("--metric", action="append", metavar="NAME[,NAME]",
                   help="metrics to compare (default: acc_target, train_samples_per_s, "
                        "infer_samples_per_s, latency_ms, peak_mem_mb)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a threshold (the non-inferiority margin): accuracy points "
                        "(acc_target=2) or percent (latency_ms=20%%)")
    p.add_argument("--detect", action="append", default=[], metavar="NAME=VALUE",
                   help="the drop the gate must see with 80%% power (default acc 3 points, "
                        "30%% otherwise); benchmarks that cannot are 'underpowered'")
    p.add_argument("--significance", type=float, default=0.05, metavar="P",
                   help="significance level of the accuracy/memory tests (default 0.05)")
    p.add_argument("--timing-significance", type=float, default=0.002, metavar="P",
                   help="significance level of the timing tests (default 0.002, as asv)")
    p.add_argument("--unstable", action="append", default=[], metavar="PATTERN",
                   help="timing of these benchmarks (fnmatch over METHOD or TASK/METHOD) is "
                        "shown, never gated")
    p.add_argument("--window", type=int, metavar="N",
                   help="BASE is a history of runs: compare accuracy with its newest commit "
                        "and timing with all runs of its newest N commits on this device")
    p.add_argument("--allow-missing", action="store_true",
                   help="list what NEW lost (missing benchmarks, seeds, failed jobs) without "
                        "exit code 4")
    p.add_argument("--require-power", action="store_true",
                   help="an underpowered benchmark (cannot see the drop to detect) fails (exit 1)")
    p.add_argument("--exact", action="store_true",
                   help="for commits meant to change nothing: any difference in a matched "
                        "job's metrics is 'behaviour changed' (exit 1); no statistics")
    p.add_argument("--force-cost", action="store_true",
                   help="compare cost metrics even between different devices")
    p.add_argument("--fdr", action="store_true",
                   help="Benjamini-Hochberg adjustment of the p-values over all comparisons")
    p.add_argument("--format", choices=["text", "md", "github-action-benchmark", "bencher"],
                   default="text",
                   help="text (default), md for a pull-request comment, or JSON for "
                        "github-action-benchmark (custom) or Bencher (BMF)")
    p.add_argument("--all", action="store_true", dest="show_all",
                   help="also list the comparisons within the threshold, and every new and "
                        "missing benchmark (else the first 50 of each)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="re-time jobs of two code versions A/B interleaved on this "
                                     "machine (asv-style); exit 1 on a timing regression")
    p.add_argument("base", metavar="BASE_REF", help="git ref or xbench source folder (BASE)")
    p.add_argument("new", metavar="NEW_REF", help="git ref or xbench source folder (NEW)")
    p.add_argument("--suite", default="gate", help="suite whose jobs are timed (default gate)")
    p.add_argument("--methods", default="erm", metavar="P[,P]", help="methods (default erm)")
    p.add_argument("--tasks", metavar="P[,P]", help="only the suite's tasks matching these")
    p.add_argument("--seeds", default="0", metavar="S[,S]", help="seeds (default 0)")
    p.add_argument("--repeats", type=int, default=12, metavar="N",
                   help="interleaved runs a side (default 12; 9 is the fewest for 0.002)")
    p.add_argument("--metric", action="append", metavar="NAME[,NAME]",
                   help="timing metrics (default train_samples_per_s, infer_samples_per_s, "
                        "latency_ms)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="threshold in percent (at least the measured spread is used)")
    p.add_argument("--timing-significance", type=float, default=0.002, metavar="P")
    p.add_argument("--unstable", action="append", default=[], metavar="PATTERN",
                   help="benchmarks shown but not gated (added to the suite's timing_unstable)")
    p.add_argument("--format", choices=["text", "md"], default="text")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("history", help="a metric across commits, with its steps marked")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR",
                   help="run folders or record files of several commits")
    p.add_argument("--metric", default="acc_target", metavar="NAME",
                   help="the metric to follow (default acc_target)")
    p.add_argument("--task", metavar="PATTERN", help="only tasks matching this pattern")
    p.add_argument("--method", metavar="PATTERN", help="only methods matching this pattern")
    p.add_argument("--threshold", metavar="VALUE",
                   help="step threshold: accuracy points or percent (default: the metric's)")
    p.add_argument("--significance", type=float, default=0.05, metavar="P",
                   help="significance level of the step test (default 0.05)")
    p.add_argument("--format", choices=["text", "md"], default="text")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("data", help="check or describe a dataset read from disk")
    data = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    q = data.add_parser("check", help="verify a data folder: images per domain and class, "
                                      "what is missing (exit 1 if anything is)")
    q.add_argument("name", help="folder, pacs, vlcs, officehome, terraincognita, domainnet, "
                                "office31 or digits_mnist_usps_svhn")
    q.add_argument("--root", required=True, metavar="DIR", help="the dataset's folder")
    q.add_argument("--per-class", action="store_true", help="always print per-class counts")
    q = data.add_parser("info", help="what a dataset is, where it is published, its layout")
    q.add_argument("name", help="a dataset name, as for `xbench data check`")
    p.set_defaults(func=cmd_data)
    return parser


def _selection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--selection", default="all",
                   help="model selection: all (default: every one the records support), "
                        "training_domain, leave_one_domain_out, last, oracle, target_entropy, "
                        "target_im")
    p.add_argument("--cost-across-devices", action="store_true",
                   help="pool and rank cost across different devices (not comparable; off by "
                        "default)")
    p.add_argument("--control", default=None,
                   help="the method every pairwise test is against, fixed in advance "
                        "(default: erm; finetune under fewshot)")


def cmd_list(args: argparse.Namespace) -> ExitCode:
    from tabulate import tabulate

    from xbench.harness.suite import list_suites, load_suite
    from xbench.registry import METHODS, TASKS, load_task
    from xbench.tasks.base import task_protocols

    from xbench.errors import PluginError

    rows: list[list[Any]] = []
    if args.what == "methods":
        headers = ["method", "tags", "protocols", "needs", "origin", "summary"]
        for name in METHODS.list(args.pattern):
            try:
                entry = METHODS.entry(name)
            except PluginError as exc:  # listed as broken; the others are still shown
                rows.append([name, "-", "-", "-", "BROKEN", str(exc)])
                print(f"warning: {exc}", file=sys.stderr)
                continue
            cls = entry.target
            rows.append([name, ",".join(sorted(entry.tags)), ",".join(cls.protocols),
                         ",".join(sorted(cls.needs)) or "-", entry.origin, _summary(cls)])
    elif args.what == "executors":
        from xbench.harness.executors import EXECUTORS

        headers = ["executor", "summary"]
        rows = [[name, _summary(EXECUTORS.get(name))] for name in EXECUTORS.list(args.pattern)]
    elif args.what == "tasks":
        headers = ["task", "kind", "protocols", "domains", "classes", "version",
                   "target: test", "origin", "summary"]
        capped: list[str] = []
        for name in TASKS.list(args.pattern):
            task = load_task(name)
            version = task.version + (f" (old: {','.join(task.old_versions)})"
                                      if task.old_versions else "")
            rows.append([name, task.kind, ",".join(task_protocols(task)), ",".join(task.domains),
                         task.num_classes, version, _target_test(task, capped),
                         TASKS.entry(name).origin, _summary(type(task))])
        footer = "".join(f"\n* {line}" for line in capped)
    else:
        import fnmatch

        headers = ["suite", "tasks", "seeds", "methods", "description"]
        for name in list_suites():
            if fnmatch.fnmatchcase(name, args.pattern):
                suite = load_suite(name)
                rows.append([name, ",".join(t.name for t in suite.tasks), len(suite.seeds),
                             ",".join(suite.methods), suite.description])
    if not rows:
        print(f"no {args.what} match '{args.pattern}'", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
          + (footer if args.what == "tasks" else ""))
    return ExitCode.OK


def _target_test(task: Any, capped: list[str]) -> str:
    """``target: N`` test items in the default target's test split (``-`` where unknown
    without the data), starred where a real pool caps it (the reason goes to ``capped``)."""
    target = ",".join(task.default_target)
    size = task.target_test_size()
    if size is None:
        return f"{target}: -" if target else "-"
    if task.target_test_cap:
        capped.append(f"{task.registered_name}: capped by {task.target_test_cap}")
        return f"{target}: {size}*"
    return f"{target}: {size}"


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text}: seeds must be integers separated by commas, "
                         f"e.g. --seeds 0,1,2") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed, e.g. --seeds 0")
    return seeds


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["erm.lr=1e-4"]`` -> ``{"erm": {"lr": 0.0001}}`` (values read as TOML literals)."""
    from xbench.harness.suite import tomllib

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise UsageError(f"--set {item}: expected METHOD.KEY=VALUE, e.g. --set erm.lr=1e-4")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(method, {})[name] = value
    return out


def cmd_run(args: argparse.Namespace) -> ExitCode:
    from xbench.harness.session import run
    from xbench.harness.plan import split_patterns
    from xbench.analysis.report import accuracy_table, cost_table, failures, load_results

    from xbench.harness.executors import EXECUTORS, ExecutorOptions

    for flag, value in (("--out", args.out), ("--executor", args.executor)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty; give a value or leave the flag out")
    for flag, values in (("--methods", args.methods), ("--tasks", args.tasks)):
        if values is not None and not split_patterns(values):
            raise UsageError(f"{flag} is empty; give names or patterns, e.g. {flag} erm, or "
                             f"leave the flag out")
    EXECUTORS.entry(args.executor)  # unknown executor: one line with did-you-mean
    options = ExecutorOptions(
        jobs=args.jobs, threads=args.threads, address=args.address, cpus_per_job=args.cpus_per_job,
        gpus_per_job=args.gpus_per_job, partition=args.partition, time_min=args.time_min,
        max_parallel=args.max_parallel, cluster=args.cluster, folder=args.slurm_folder)
    summary = run(args.suite, out=args.out, methods=split_patterns(args.methods),
                  tasks=split_patterns(args.tasks), seeds=parse_seeds(args.seeds),
                  device=args.device, overrides=parse_overrides(args.overrides),
                  executor=args.executor, options=options, hparam_samples=args.hparam_samples,
                  leave_one_domain_out=args.leave_one_domain_out,
                  retry_failed=args.retry_failed, progress=not args.quiet,
                  precision=args.precision, timeout_s=args.timeout_s)
    for problem in summary.problems:
        print(f"warning: {problem}", file=sys.stderr)
    skipped: dict[tuple[str, str], list[str]] = {}
    for method, task, reason in summary.plan.not_applicable:
        skipped.setdefault((task, reason), []).append(method)
    for (task, reason), methods in skipped.items():  # one line per task and reason
        print(f"note: not run on {task} ({reason}): {', '.join(methods)}", file=sys.stderr)
    sys.stdout.flush()
    print(f"{summary.planned} jobs planned: {summary.skipped} already finished (skipped), "
          f"{summary.ran} run, {len(summary.failed)} failed. Records: "
          f"{summary.out / 'records.jsonl'}", file=sys.stderr)
    if summary.skipped_failed:
        print(f"note: {summary.skipped_failed} job(s) that failed in an earlier run were skipped; "
              f"add --retry-failed to run them again", file=sys.stderr)
    if summary.parallelism > 1 and summary.speedup is not None:
        print(f"speed-up {summary.speedup:.2f}x: {summary.jobs_wall_s:.0f} s of job wall time "
              f"in {summary.elapsed_s:.0f} s elapsed with {summary.parallelism} jobs in "
              f"parallel", file=sys.stderr)
    ids = {job.job_id for job in summary.plan.jobs}
    df = load_results(summary.out, problems=[])
    df = df[df["job_id"].isin(ids)]
    if (df["status"] == "ok").any():
        print()
        print(accuracy_table(df, args.format))
        print(cost_table(df, args.format))
    for line in failures(df):
        print(f"failed: {line}", file=sys.stderr)
    return ExitCode.FAILURES if (df["status"] != "ok").any() else ExitCode.OK


def cmd_docs(args: argparse.Namespace) -> ExitCode:
    from xbench.docs import methods_markdown

    sys.stdout.write(methods_markdown())
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> ExitCode:
    from tabulate import tabulate

    from xbench.harness.session import status

    rows = status(args.out)
    print(tabulate([[r.task, r.protocol, r.method, r.done, r.failed, r.missing] for r in rows],
                   headers=["task", "protocol", "method", "done", "failed", "missing"],
                   tablefmt="simple"))
    done, failed, missing = (sum(getattr(r, k) for r in rows) for k in ("done", "failed",
                                                                         "missing"))
    complete = failed == 0 and missing == 0
    print(f"\n{done} done, {failed} failed, {missing} missing: "
          f"{'complete' if complete else 'INCOMPLETE'}")
    return ExitCode.OK if complete else ExitCode.FAILURES


def cmd_report(args: argparse.Namespace) -> ExitCode:
    from xbench.analysis.report import report

    # broken lines and invalid records: one warning each (file, line, field), from report()
    print(report(*args.paths, fmt=args.format, selection=args.selection,
                 cost_across_devices=args.cost_across_devices, plots=args.plots,
                 command=_report_command(args), control=args.control, power=args.power,
                 per_target=args.per_target, curves_of=args.curves,
                 agree_with=args.agreement))
    if args.plots:
        print(f"plots written to {args.plots}", file=sys.stderr)
    return ExitCode.OK


def _report_command(args: argparse.Namespace) -> str:
    """The ``xbench report`` command line that rebuilds this output (for its header)."""
    import shlex

    from xbench.analysis.records import display_path

    words = ["xbench", "report", *map(display_path, args.paths), "--format", args.format]
    if args.selection != "all":
        words += ["--selection", args.selection]
    if args.control:
        words += ["--control", args.control]
    if args.per_target:
        words.append("--per-target")
    if args.curves:
        words += ["--curves", args.curves]
    if args.agreement:
        words += ["--agreement", *map(display_path, args.agreement)]
    if args.cost_across_devices:
        words.append("--cost-across-devices")
    return " ".join(shlex.quote(w) for w in words)


def cmd_publish(args: argparse.Namespace) -> ExitCode:
    import shlex

    from xbench.analysis.records import display_path
    from xbench.analysis.site import publish

    command = "xbench publish " + " ".join(shlex.quote(display_path(p)) for p in args.paths) \
        + f" --site {shlex.quote(display_path(args.site))}" + \
        ("" if args.selection == "all" else f" --selection {args.selection}") + \
        (f" --control {shlex.quote(args.control)}" if args.control else "")
    path = publish(*args.paths, site=args.site, selection=args.selection,
                   cost_across_devices=args.cost_across_devices, title=args.title,
                   command=command, control=args.control)
    print(f"leaderboard written to {path}", file=sys.stderr)
    return ExitCode.OK


def cmd_check(args: argparse.Namespace) -> ExitCode:
    """One line per (method, check): PASSED / FAILED / SKIPPED and the reason; then a summary."""
    import time

    from xbench import testing
    from xbench.errors import UnknownNameError
    from xbench.harness.plan import split_patterns
    from xbench.registry import METHODS

    patterns = split_patterns([args.pattern]) or ["*"]
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?[") and pattern not in METHODS:
            METHODS.entry(pattern)  # raises the did-you-mean error
    names = METHODS.list(patterns)
    if not names:
        raise UnknownNameError(f"no registered method matches '{args.pattern}'; "
                               f"see `xbench list methods`")
    checks = testing.select_checks(split_patterns([args.checks]) if args.checks else None)
    width = max(len(name) for name in names) + 1 + max(len(c.name) for c in testing.CHECKS)
    counts = {testing.PASSED: 0, testing.FAILED: 0, testing.SKIPPED: 0}
    failed: list[str] = []
    start = time.perf_counter()
    for name in names:
        for result in testing.iter_checks(name, checks):
            counts[result.status] += 1
            if result.status == testing.FAILED:
                failed.append(result.id)
            print(f"{result.status.upper():<8} {result.id:<{width}} {result.seconds:6.2f}s  "
                  f"{result.reason}", flush=True)
    print(f"{sum(counts.values())} checks on {len(names)} method(s): "
          f"{counts[testing.PASSED]} passed, {counts[testing.FAILED]} failed, "
          f"{counts[testing.SKIPPED]} skipped in {time.perf_counter() - start:.1f}s")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return ExitCode.FAILURES
    return ExitCode.OK


def _split_patterns(values: Sequence[str] | None) -> list[str] | None:
    """``xbench.harness.plan.split_patterns`` without importing the planner (which imports
    the registry and torch: seconds and hundreds of MB for a command that reads records)."""
    if values is None:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def cmd_compare(args: argparse.Namespace) -> ExitCode:
    from xbench.analysis.compare import compare, parse_thresholds, render

    result = compare([args.base], [args.new], metrics=_split_patterns(args.metric),
                     thresholds=parse_thresholds(args.threshold),
                     detect=parse_thresholds(args.detect, "--detect"),
                     significance=args.significance, force_cost=args.force_cost, fdr=args.fdr,
                     allow_missing=args.allow_missing, require_power=args.require_power,
                     exact=args.exact, timing_significance=args.timing_significance,
                     unstable=args.unstable, window=args.window)
    print(render(result, args.format, show_all=args.show_all), end="")
    return result.exit_code


def cmd_bench(args: argparse.Namespace) -> ExitCode:
    from xbench.analysis.compare import parse_thresholds
    from xbench.bench import DEFAULT_METRICS, bench, render
    from xbench.harness.plan import split_patterns
    from xbench.harness.suite import load_suite

    unstable = [*load_suite(args.suite).timing_unstable, *args.unstable]
    result = bench(args.base, args.new, suite=args.suite, methods=args.methods,
                   tasks=args.tasks, seeds=args.seeds, repeats=args.repeats,
                   metrics=split_patterns(args.metric) or DEFAULT_METRICS,
                   thresholds=parse_thresholds(args.threshold),
                   timing_significance=args.timing_significance, unstable=unstable)
    print(render(result, args.format), end="")
    return result.exit_code


def cmd_history(args: argparse.Namespace) -> ExitCode:
    from xbench.analysis.compare import parse_thresholds
    from xbench.analysis.history import history, render

    threshold = None
    if args.threshold is not None:
        threshold = parse_thresholds([f"{args.metric}={args.threshold}"])[args.metric]
    series = history(args.paths, metric=args.metric, task=args.task, method=args.method,
                     threshold=threshold, significance=args.significance)
    print(render(series, args.format), end="")
    return ExitCode.OK


def cmd_data(args: argparse.Namespace) -> ExitCode:
    """``xbench data info NAME``; ``xbench data check NAME --root DIR`` (exit 1: data missing)."""
    from xbench import datasets

    if args.data_command == "info":
        print(datasets.describe(args.name))
        return ExitCode.OK
    report = datasets.check(args.name, args.root)
    print(datasets.format_check(report, per_class=args.per_class or None))
    return ExitCode.OK if report.ok else ExitCode.FAILURES


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xbench`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = args.func(args)
        except XbenchError as exc:
            print(f"xbench: error: {exc}", file=sys.stderr)
            code = exc.exit_code
        except OSError as exc:  # e.g. an --out folder that cannot be written
            where = exc.filename or "a file"
            print(f"xbench: error: {where}: {exc.strerror or exc}; check the path and its "
                  f"permissions", file=sys.stderr)
            code = ExitCode.USAGE_ERROR
        except KeyboardInterrupt:
            print("xbench: interrupted; every finished job is saved; re-run the same command "
                  "to resume", file=sys.stderr)
            code = ExitCode.INTERRUPTED
    shown: set[str] = set()
    for w in caught:  # each distinct warning once
        if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning) \
                and str(w.message) not in shown:
            shown.add(str(w.message))
            print(f"warning: {w.message}", file=sys.stderr)
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
