"""``python -m pipeline.training``: train a LoRA adapter from a JSONL of {prompt, answer} records.

This is what ``accelerate launch`` runs for multi-process training; every process runs it and
the library coordinates them::

    accelerate launch --config_file configs/accelerate/ddp_multigpu.yaml -m pipeline.training \\
        --data stage3/train.jsonl --base-model /models/llama-65b --output-dir runs/x/stage3 \\
        --config configs/pipeline/engrave.yaml dtype=bfloat16 micro_batch_size=16

Settings come from LoraTrainConfig defaults, then --config YAML, then KEY=VALUE overrides. The
result is ``<output-dir>/train_result.json`` (its path is printed by the main process).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from accelerate import PartialState

from harness.common.config import load_config
from harness.common.errors import UserError
from harness.models import resolve_pretrained
from pipeline.training import LoraTrainConfig, load_examples_jsonl, train_lora


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.training",
        description="LoRA fine-tuning on {prompt, answer} JSONL (loss on answers only); runs under accelerate launch.",
    )
    parser.add_argument("--data", required=True, help="JSONL of {id?, prompt, answer} records")
    parser.add_argument("--base-model", required=True, help="model directory, .gguf file or alias (e.g. gemma-3-270m)")
    parser.add_argument("--output-dir", required=True, help="where adapter/, train_log.jsonl and train_result.json go")
    parser.add_argument("--config", default=None, help="YAML of LoraTrainConfig fields")
    parser.add_argument("--peft-init", default=None, help="start from this adapter instead of a fresh one")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. max_steps=2")
    return parser


def main(argv: list[str] | None = None) -> int:
    # The hub is unreachable where this runs; without these, loads stall on network timeouts.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(LoraTrainConfig, args.config, args.overrides)
        examples = load_examples_jsonl(args.data)
        base = resolve_pretrained(args.base_model)
        result = train_lora(cfg, examples, base, args.output_dir, peft_init=args.peft_init, base_name=args.base_model)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130

    if PartialState().is_main_process:
        print(f"{args.output_dir}/train_result.json: {result.steps} steps, loss {result.first_loss} -> {result.last_loss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
