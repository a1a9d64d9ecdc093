"""``selfalign eval``: evaluate one model on our lm-eval tasks (thin wrapper over harness.evaluate)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from harness.evaluate import DEFAULT_TASKS, EvalConfig, four_seeds, run_eval, summary_rows


def _limit(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit {value!r}: expected a number of documents (or a fraction < 1)") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("--limit must be positive")
    return int(number) if number >= 1 else number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on TruthfulQA / HHH / Vicuna-80 through lm-eval",
        description="Evaluate a model through lm-evaluation-harness; writes OUTPUT/<model_id>/results.json "
        "and samples_<task>.jsonl.",
    )
    p.add_argument("--model", "-M", default="hf", help="lm-eval backend: hf (default), selfalign-hf (fast scoring), vllm, local-completions, ...")
    p.add_argument("--model_args", "--model-args", "-a", dest="model_args", default="",
                   help="lm-eval key=value list: pretrained=<alias|HF dir|.gguf>[,peft=DIR][,dtype=...]")
    p.add_argument("--tasks", "-t", default=",".join(DEFAULT_TASKS), help="comma-separated; see `selfalign ls tasks`")
    p.add_argument("--limit", "-L", type=_limit, default=None, help="documents per task (testing only)")
    p.add_argument("--batch_size", "--batch-size", "-b", dest="batch_size", default="8")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="directory laid out like shared/data (default: $SELFALIGN_DATA_DIR, else download)")
    p.add_argument("--output", "--output_path", "-o", dest="output", default="runs/eval",
                   help="results go to OUTPUT/<model_id>/ (lm-eval's layout: results_<date>.json, samples_<task>_<date>.jsonl)")
    p.add_argument("--log_samples", "-s", action="store_true",
                   help="accepted for lm-eval compatibility; samples are always logged")
    p.add_argument("--device", default=None, help="cuda when available, else cpu (default); any torch device")
    p.add_argument("--meta-prompt", dest="meta_prompt", default=None,
                   help="Dromedary inference prompt wrapping questions: verbose (paper), standard_distill, concise_distill, none")
    p.add_argument("--apply_chat_template", "--apply-chat-template", dest="apply_chat_template", action="store_true",
                   help="use the tokenizer's chat template (instruction-tuned baselines)")
    p.add_argument("--tf-reference-half-candidates", dest="tf_reference_half_candidates", action="store_true",
                   help="truthfulqa_tf: make `acc` the IBM/Dromedary number, which scores only the first ceil(N/2) candidates")
    p.add_argument("--gen_kwargs", "--gen-kwargs", dest="gen_kwargs", default=None)
    p.add_argument("--gen-preset", "--gen_preset", dest="gen_preset", default="paper",
                   help="generation preset of the generation tasks (vicuna80): paper (T 0.7; default) or reference_demo "
                   "(IBM/Dromedary run_chatbot_demo.py: T 0.1, top-p 0.75, uni-token frequency penalty 0.3; "
                   "needs --model selfalign-hf); --gen_kwargs overrides it key by key")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="do not reuse or write the response cache")
    p.add_argument("--model-id", dest="model_id", default=None, help="name of the output subdirectory")
    p.add_argument("--seed", default="1234",
                   help="one integer for every generator, or lm-eval's four values python,numpy,torch,fewshot (None leaves one unseeded)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    batch_size: int | str = int(args.batch_size) if str(args.batch_size).isdigit() else args.batch_size
    seeds = four_seeds(args.seed)  # a malformed --seed fails before any model loads
    seed: int | str = seeds[0] if len(set(seeds)) == 1 and seeds[0] is not None else args.seed
    cfg = EvalConfig(
        model=args.model, model_args=args.model_args, tasks=args.tasks.split(","), output=args.output,
        limit=args.limit, batch_size=batch_size, data_dir=args.data_dir, device=args.device,
        meta_prompt=args.meta_prompt, apply_chat_template=args.apply_chat_template,
        tf_reference_half_candidates=args.tf_reference_half_candidates, gen_kwargs=args.gen_kwargs,
        gen_preset=args.gen_preset, use_cache=args.use_cache, model_id=args.model_id, seed=seed,
    )
    results = run_eval(cfg)
    if not results:
        return 0
    console = Console()
    meta = results["selfalign"]
    table = Table(title=f"{meta['model_id']}  ({meta['backend']}, {meta['timing_s']['evaluate']:.0f} s)")
    for col in ("task", "metric", "value", "± stderr", "n"):
        table.add_column(col, justify="right" if col not in ("task", "metric") else "left")
    for row in summary_rows(results):
        stderr = f"{row['stderr']:.4f}" if row["stderr"] is not None else "-"
        table.add_row(row["task"], row["metric"], f"{row['value']:.4f}", stderr, str(row["n"] or "-"))
    console.print(table)
    console.print(f"results: {cfg.output}/{meta['model_id']}/results.json (latest of results_<date>.json)")
    return 0
