"""``selfalign bench scoring|generation``: speed benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse

from harness.common.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="speed benchmarks: scoring backend and generation engine vs the stock paths; stage 1's dedup filter",
        description="Compare selfalign-hf with lm-eval's hf backend (scoring) or the transformers "
        "engine with model.generate (generation), same process, same inputs.",
    )
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)

    scoring = sub.add_parser("scoring", help="selfalign-hf vs hf on truthfulqa_tf and hhh requests")
    _common(scoring, default_limit=5)
    scoring.add_argument(
        "--tasks", default="truthfulqa_tf,hhh", help="comma-separated sets: truthfulqa_tf, hhh"
    )
    scoring.add_argument(
        "--row-tokens", type=int, default=512, help="selfalign-hf packed row length"
    )
    scoring.add_argument(
        "--meta-prompt", default="verbose", help="Dromedary meta prompt for the tasks"
    )
    scoring.add_argument(
        "--docs-per-chunk",
        type=int,
        default=2,
        help="documents per interleaved timing chunk (both backends run each chunk in turn)",
    )
    scoring.set_defaults(func=_run_scoring)

    generation = sub.add_parser("generation", help="engine vs model.generate on stage-2 prompts")
    _common(generation, default_limit=16)
    generation.add_argument(
        "--max-new-tokens", type=int, default=256, help="token budget (stage 2's: 256)"
    )
    generation.add_argument(
        "--no-stop",
        action="store_true",
        help="do not stop at the next 'User:' turn as stage 2 does: every row decodes all tokens",
    )
    generation.set_defaults(func=_run_generation)

    dedup = sub.add_parser(
        "dedup", help="stage 1's ROUGE-L novelty filter on a synthetic candidate stream, checked against rouge-score"
    )
    dedup.add_argument("--n", type=int, default=300_000, help="candidates in the stream")
    dedup.add_argument(
        "--check-prefix", type=int, default=5_000,
        help="candidates also judged by the all-pairs rouge-score loop (quadratic; 0 skips it)",
    )
    dedup.add_argument("--seed", type=int, default=0, help="stream seed")
    dedup.add_argument("--data-dir", default=None, help="data directory (default: $SELFALIGN_DATA_DIR)")
    dedup.add_argument("--json", default=None, help="write the full report here")
    dedup.set_defaults(func=_run_dedup)


def _common(parser: argparse.ArgumentParser, default_limit: int) -> None:
    parser.add_argument("--model", default="gemma-3-270m", help="alias, HF directory or .gguf")
    parser.add_argument(
        "--limit", type=int, default=default_limit, help="documents per task / prompts"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--data-dir", default=None, help="data directory (default: $SELFALIGN_DATA_DIR)"
    )
    parser.add_argument("--json", default=None, help="write the full report here")


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise UserError(f"{name} {value}: must be at least 1")
    return value


def _preflight(args) -> None:
    """Bad paths and names fail before minutes of benchmarking, not after."""
    from harness.common.preflight import check_output_file
    from harness.eval_preflight import check_meta_prompt

    if args.json:
        check_output_file(args.json, "--json")
    check_meta_prompt(getattr(args, "meta_prompt", None))


def _run_scoring(args) -> int:
    from harness.bench.scoring import ScoringBenchConfig, run_scoring_bench

    _preflight(args)

    run_scoring_bench(
        ScoringBenchConfig(
            model=args.model,
            tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
            limit=_positive("--limit", args.limit),
            batch_size=_positive("--batch-size", args.batch_size),
            row_tokens=_positive("--row-tokens", args.row_tokens),
            docs_per_chunk=_positive("--docs-per-chunk", args.docs_per_chunk),
            meta_prompt=args.meta_prompt,
            data_dir=args.data_dir,
            dtype=args.dtype,
            json=args.json,
        )
    )
    return 0


def _run_generation(args) -> int:
    from harness.bench.generation import GenerationBenchConfig, run_generation_bench

    _preflight(args)

    run_generation_bench(
        GenerationBenchConfig(
            model=args.model,
            limit=_positive("--limit", args.limit),
            batch_size=_positive("--batch-size", args.batch_size),
            max_new_tokens=_positive("--max-new-tokens", args.max_new_tokens),
            stop_at_next_turn=not args.no_stop,
            data_dir=args.data_dir,
            dtype=args.dtype,
            json=args.json,
        )
    )
    return 0


def _run_dedup(args) -> int:
    from harness.bench.dedup import DedupBenchConfig, run_dedup_bench

    report = run_dedup_bench(
        DedupBenchConfig(
            n=_positive("--n", args.n),
            check_prefix=max(0, args.check_prefix),
            seed=args.seed,
            data_dir=args.data_dir,
            json=args.json,
        )
    )
    return 0 if report["decisions_identical"] is not False else 1
