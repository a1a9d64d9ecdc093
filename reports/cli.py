"""``selfalign report RUN_DIR... --output DIR``: the paper's tables from our runs (thin wrapper over reports.build)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="regenerate the paper's tables (TruthfulQA, HHH, Vicuna-80) from run directories, with CIs and paired tests",
        description="Build report.md / report.csv / report.html (+ figures/) from `selfalign run`, `selfalign eval` "
        "or `selfalign judge` output directories. Systems keep the order given; paired tests compare consecutive "
        "checkpoints.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run, eval (DIR or DIR/<model_id>) or judge output directories")
    p.add_argument("--output", required=True, help="directory for report.md, report.csv, report.html, report.json, figures/")
    p.add_argument("--baselines", default="", help="comma-separated model ids that are baselines (excluded from stage-to-stage tests)")
    p.add_argument("--title", default="SELF-ALIGN evaluation report")
    p.add_argument("--no-reported", dest="include_reported", action="store_false", help="leave out the paper-reported rows")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # deferred: the report imports matplotlib and scipy (seconds); `selfalign report --help` does not
    from reports.build import ReportOptions, build_report

    options = ReportOptions(
        title=args.title, baseline_ids=[b for b in args.baselines.split(",") if b],
        include_reported=args.include_reported, terminal=not args.quiet,
    )
    outputs = build_report(args.runs, args.output, options)
    print(f"report: {outputs.html}  (also {outputs.markdown.name}, {outputs.csv.name}, {outputs.json.name})")
    return 0
