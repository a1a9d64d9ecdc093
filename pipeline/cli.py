"""``selfalign pipeline``: run the SELF-ALIGN stages, list them, inspect the constitution.

    selfalign pipeline run --config configs/pipeline/demo.yaml --output runs/demo [--stages 1,2]
    selfalign pipeline stages
    selfalign pipeline constitution [--config FILE] [--render | --export FILE]

Multi-process: ``torchrun --nproc_per_node N -m pipeline run ...`` or ``accelerate launch
--config_file configs/accelerate/<cfg>.yaml -m pipeline run ...``: ranks come from the launcher.
"""

from __future__ import annotations

import argparse
import sys

from harness.common.config import load_config
from harness.common.preflight import nonnegative_int, positive_int
from harness.common.shipped_configs import resolve_config
from pipeline import constitution as const


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="SELF-ALIGN pipeline: synthetic prompts -> Dromedary adapters")
    sub = parser.add_subparsers(dest="pipeline_command", metavar="ACTION")

    run = sub.add_parser("run", help="run stages 1-4 (skips complete ones, resumes interrupted ones)")
    run.add_argument("--config", required=True, help="pipeline YAML path, or a shipped name (demo, paper)")
    run.add_argument("--output", required=True, help="output directory (one subdirectory per stage)")
    run.add_argument("--stages", default="all", help="comma-separated stage numbers or names (default: all)")
    _add_overrides(run)
    run.add_argument("--data-dir", default=None, help="directory laid out like shared/data (default: $SELFALIGN_DATA_DIR or the download cache)")
    run.add_argument("--rank", type=nonnegative_int, default=None, help="this process's rank (default: $RANK, else 0)")
    run.add_argument("--world-size", type=positive_int, default=None, help="number of processes (default: $WORLD_SIZE, else 1)")
    run.add_argument(
        "--generate-only", action="store_true",
        help="stop every stage before training (generation and training often need different launchers; see configs/pipeline/paper.yaml)",
    )
    run.set_defaults(func=_run)

    stages = sub.add_parser("stages", help="list the stages, their directories and what they read")
    stages.set_defaults(func=_stages)

    constitution = sub.add_parser("constitution", help="show the (ablated) constitution's principles and exemplars")
    constitution.add_argument("--config", default=None, help="pipeline YAML whose constitution section to apply")
    _add_overrides(constitution)
    constitution.add_argument("--data-dir", default=None)
    what = constitution.add_mutually_exclusive_group()
    what.add_argument("--render", action="store_true", help="print the rendered stage-2 prompt")
    what.add_argument("--export", metavar="FILE", help="write it as an editable .yaml/.json constitution")
    constitution.set_defaults(func=_constitution)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="config override, repeatable (e.g. --set stage2.max_prompts=8)",
    )


def _load(args) -> object:
    # deferred: pipeline.config and the runner import torch (seconds); `selfalign pipeline --help` does not
    from pipeline.config import PipelineConfig

    return load_config(PipelineConfig, _config_path(args.config), args.overrides)


def _config_path(value: str | None):
    return resolve_config(value, "pipeline") if value else None


def _run(args) -> int:
    # deferred: pipeline.config and the runner import torch (seconds); `selfalign pipeline --help` does not
    from pipeline.runner import run
    from pipeline.sharding import DistContext

    cfg = _load(args)
    dist = DistContext.from_env(args.rank, args.world_size)
    manifest = run(cfg, args.output, args.stages, data_dir=args.data_dir, dist=dist, generate_only=args.generate_only)
    if dist.is_main:
        for name, s in manifest["stages"].items():
            state = "skipped (complete)" if s["skipped"] else s["status"]
            print(f"{name}: {state}; wall {s['wall_s']}s; {args.output}/{s['stage_dir']}")
    return 0


def _stages(args) -> int:
    # deferred: pipeline.config and the runner import torch (seconds); `selfalign pipeline --help` does not
    from pipeline.runner import list_stages

    for name, details in list_stages():
        print(f"{name:<20} {details}")
    return 0


def _constitution(args) -> int:
    # deferred: pipeline.config and the runner import torch (seconds); `selfalign pipeline --help` does not
    from pipeline.config import PipelineConfig
    from pipeline.stages.self_align import SelfAlignStage

    cfg = load_config(PipelineConfig, _config_path(args.config), args.overrides)
    c = SelfAlignStage().load_constitution(cfg, args.data_dir)
    if args.render:
        sys.stdout.write(const.render(c) + "\n")
        return 0
    if args.export:
        const.dump_file(c, args.export)
        print(f"wrote {args.export}: {len(c.principles)} principles, {len(c.exemplars)} exemplars; use it with --set constitution.path={args.export}")
        return 0
    print(f"assistant: {c.assistant_name}   source: {c.source}")
    print("principles (id: name):")
    for i, p in enumerate(c.principles, 1):
        print(f"  {i:2d}. {p.id}: {p.name}")
    print("exemplars (id: first user turn):")
    for e in c.exemplars:
        print(f"  {e.id}: {e.user.splitlines()[0][:60]}  [cites {', '.join(e.internal_thoughts.rules) or 'no rules'}]")
    return 0
