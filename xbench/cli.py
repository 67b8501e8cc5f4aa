"""The ``xbench`` command: list | run | report | data.

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
    p.add_argument("what", choices=["methods", "tasks", "suites"])
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
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="tables from results folders or record files")
    p.add_argument("paths", nargs="+", metavar="DIR")
    p.add_argument("--format", choices=["md", "csv", "latex"], default="md")
    p.add_argument("--selection", default="training_domain",
                   help="model selection: training_domain (default), last, oracle")
    p.set_defaults(func=cmd_report)

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


def cmd_list(args: argparse.Namespace) -> ExitCode:
    from tabulate import tabulate

    from xbench.harness.suite import list_suites, load_suite
    from xbench.registry import METHODS, TASKS, load_task

    rows: list[list[Any]] = []
    if args.what == "methods":
        headers = ["method", "tags", "protocols", "needs", "origin", "summary"]
        for name in METHODS.list(args.pattern):
            entry = METHODS.entry(name)
            cls = entry.target
            rows.append([name, ",".join(sorted(entry.tags)), ",".join(cls.protocols),
                         ",".join(sorted(cls.needs)) or "-", entry.origin, _summary(cls)])
    elif args.what == "tasks":
        headers = ["task", "kind", "protocols", "domains", "classes", "version", "origin",
                   "summary"]
        for name in TASKS.list(args.pattern):
            task = load_task(name)
            rows.append([name, task.kind, ",".join(task.protocols), ",".join(task.domains),
                         task.num_classes, task.version, TASKS.entry(name).origin,
                         _summary(type(task))])
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
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    return ExitCode.OK


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
    from xbench.report import accuracy_table, cost_table, failures, load_results

    summary = run(args.suite, out=args.out, methods=split_patterns(args.methods),
                  tasks=split_patterns(args.tasks), seeds=parse_seeds(args.seeds),
                  device=args.device, overrides=parse_overrides(args.overrides),
                  progress=not args.quiet)
    for problem in summary.problems:
        print(f"warning: {problem}", file=sys.stderr)
    for method, task, protocol in summary.plan.not_applicable:
        print(f"note: {method} does not support protocol '{protocol}'; not run on {task}",
              file=sys.stderr)
    sys.stdout.flush()
    print(f"{summary.planned} jobs planned: {summary.skipped} already finished (skipped), "
          f"{summary.ran} run, {len(summary.failed)} failed. Records: "
          f"{summary.out / 'records.jsonl'}", file=sys.stderr)
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


def cmd_report(args: argparse.Namespace) -> ExitCode:
    from xbench.report import report

    problems: list[str] = []
    from xbench.report import load_results

    load_results(*args.paths, problems=problems)  # validates paths, collects broken lines
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(report(*args.paths, fmt=args.format, selection=args.selection))
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
        except KeyboardInterrupt:
            print("xbench: interrupted; every finished job is saved; re-run the same command "
                  "to resume", file=sys.stderr)
            code = ExitCode.INTERRUPTED
    for w in caught:
        if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
