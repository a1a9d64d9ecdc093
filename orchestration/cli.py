"""``selfalign run --config FILE``: pipeline, evaluations, judge and report in one resumable command."""

from __future__ import annotations

import argparse

from harness.common.shipped_configs import resolve_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the pipeline stages not yet done, evaluate base + every checkpoint + baselines, judge, write the report",
        description="Everything from a run config (configs/run/*.yaml): `selfalign pipeline run`, `selfalign eval` per "
        "model and task, `selfalign judge` against the configured opponents (a local judge server is started and "
        "stopped), then `selfalign report`. Finished units are reused; rerun the same command to resume.",
    )
    p.add_argument("--config", required=True, help="run YAML path, or a shipped name (demo)")
    p.add_argument("--output", default=None, help="parent directory of the run (overrides `output`); the run goes to OUTPUT/<name>/")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None, help="directory laid out like shared/data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set eval.limits.hhh=5 --set judge.enabled=false)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # deferred: a run imports the pipeline, lm-eval and the report (torch, matplotlib: seconds);
    # `selfalign run --help` needs none of them
    from orchestration.run import load_run_config, run

    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output={args.output}")
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    manifest = run(load_run_config(resolve_config(args.config, "run"), overrides))
    timings = manifest["timings_s"]
    print(f"done in {timings['total']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total") + ")")
    if "report" in manifest:
        print(f"report: {manifest['report']['html']}")
    return 0
