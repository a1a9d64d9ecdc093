"""``selfalign bench scoring|generation|dedup``: run a benchmark (which writes its JSON record)
and render the record as a table."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from harness.common.errors import UserError
from harness.common.preflight import check_output_file
from harness.eval_preflight import check_meta_prompt

if TYPE_CHECKING:
    from harness.bench.dedup import DedupRecord
    from harness.bench.generation import GenerationRecord
    from harness.bench.scoring import ScoringRecord


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
    if args.json:
        check_output_file(args.json, "--json")
    check_meta_prompt(getattr(args, "meta_prompt", None))


def _run_scoring(args) -> int:
    # deferred: the bench modules load torch, transformers and lm-eval; `selfalign bench --help`
    # must stay cheap
    from harness.bench.scoring import ScoringBenchConfig, run_scoring_bench

    _preflight(args)
    record = run_scoring_bench(
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
    render_scoring(record)
    return 0


def _run_generation(args) -> int:
    # deferred: as in _run_scoring
    from harness.bench.generation import GenerationBenchConfig, run_generation_bench

    _preflight(args)
    record = run_generation_bench(
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
    render_generation(record)
    return 0


def _run_dedup(args) -> int:
    # deferred: as in _run_scoring (the stream's sources and the filter load rouge-score)
    from harness.bench.dedup import DedupBenchConfig, run_dedup_bench

    _preflight(args)
    record = run_dedup_bench(
        DedupBenchConfig(
            n=_positive("--n", args.n),
            check_prefix=args.check_prefix,
            seed=args.seed,
            data_dir=args.data_dir,
            json=args.json,
        )
    )
    render_dedup(record)
    return 0 if record.decisions_identical is not False else 1


# -- rendering ---------------------------------------------------------------------------------


def render_scoring(record: ScoringRecord) -> None:
    rows = {name: asdict(row) for name, row in record.results.items()}
    print_table(
        f"scoring: selfalign-hf vs hf on {record.config.model} (matmul {record.matmul_gflops:.1f} GFLOP/s, "
        f"{record.machine['torch_threads']} threads)",
        {**rows, "all": asdict(record.totals)},
        [
            ("requests", "requests"),
            ("baseline_s", "hf s"),
            ("ours_s", "ours s"),
            ("baseline_requests_per_s", "hf req/s"),
            ("ours_requests_per_s", "ours req/s"),
            ("speedup", "speedup"),
            ("speedup_cpu", "speedup (cpu)"),
            ("max_abs_logprob_diff", "max |Δlogp|"),
            ("metrics_identical", "same metrics"),
            ("floor_s", "floor s"),
            ("ours_over_floor", "ours/floor"),
        ],
    )


def render_generation(record: GenerationRecord) -> None:
    cfg, row = record.config, record.row
    print_table(
        f"generation: engine vs model.generate on {cfg.model}, stage-2 prompts, "
        f"batch {cfg.batch_size}, {'stop at next turn' if row.stop else 'no stop'} (matmul {record.matmul_gflops:.1f} GFLOP/s, "
        f"read {record.memory_read_gbs:.1f} GB/s, {record.machine['torch_threads']} threads)",
        {"stage2": asdict(row)},
        [
            ("prompts", "prompts"),
            ("mean_prompt_tokens", "prompt tok"),
            ("generated_tokens", "new tok"),
            ("ended_by_stop", "ended by stop"),
            ("baseline_s", "generate s"),
            ("ours_s", "ours s"),
            ("baseline_tokens_per_s", "generate tok/s"),
            ("ours_tokens_per_s", "ours tok/s"),
            ("speedup", "speedup"),
            ("speedup_cpu", "speedup (cpu)"),
            ("outputs_identical", "identical"),
            ("floor_s", "floor s"),
            ("ours_over_floor", "ours/floor"),
            ("bytes_floor_s", "bytes floor s"),
            ("roofline_floor_s", "roofline s"),
            ("ours_over_roofline", "ours/roofline"),
        ],
    )


DEDUP_COLUMNS = ("n", "kept", "drop_rate", "wall_s", "cpu_s", "peak_rss_mb", "pairs_exact", "pairs_all_pairs_equivalent",
                 "check_prefix", "decisions_identical", "naive_wall_s", "naive_cpu_s")


def render_dedup(record: DedupRecord) -> None:
    print_table(
        f"ROUGE-L novelty filter (threshold {record.config['threshold']}), indexed vs rouge-score all pairs",
        {"stream": asdict(record)},
        [(k, k) for k in DEDUP_COLUMNS],
    )
    if record.first_difference:
        print(f"first difference: {record.first_difference}")


def print_table(title: str, rows: dict[str, dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """One row per measured set; ``columns`` are (key, header) pairs."""
    table = Table(title=title)
    table.add_column("set")
    for _, header in columns:
        table.add_column(header, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(_fmt(row.get(key)) for key, _ in columns))
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
