"""``selfalign judge``: pairwise GPT-4-style review of Vicuna-80 answers; ``judge parse-reviews``.

Thin: parse flags into a ``JudgeConfig`` (dataclass defaults < ``--config`` YAML < flags) and
call ``run_judge``; or re-parse a recorded review file with ``reparse_reviews``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.common.config import build_dataclass, load_config, read_yaml
from harness.common.jsonl import write_json_atomic
from harness.common.preflight import (
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)

# flag dest -> JudgeConfig field (same name); these flags default to None = "not given"
_FIELDS = (
    "answers", "baseline", "output", "judge_model", "judge_base_url", "api_key_env", "prompt_version",
    "parser", "orders", "temperature", "max_tokens", "parse_attempts", "max_retries", "concurrency",
    "timeout_s", "limit", "question_ids", "data_dir", "seed", "retry_failed",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "judge",
        help="judge Vicuna-80 answers against a baseline with an OpenAI-compatible LLM judge",
        description=(
            "Judge Vicuna-80 answers pairwise (both answer orders) against a baseline with the FastChat "
            "GPT-4 reviewer prompts. Writes OUT/judgments.jsonl, OUT/summary.json and a reply cache in OUT. "
            "Example: selfalign judge --answers runs/eval/gemma-3-270m --baseline gpt35 --judge-model gpt-4 "
            "--judge-base-url https://api.openai.com/v1 --output runs/judge/gemma-vs-gpt35"
        ),
    )
    p.add_argument("--config", help="YAML file of JudgeConfig fields (flags override it)")
    p.add_argument("--answers", help="answers to judge: run dir DIR/<model_id>, samples or answer file, or a recorded name")
    p.add_argument("--baseline", help="answers to compare with (default gpt35): same forms as --answers")
    p.add_argument("--output", help="output directory")
    p.add_argument("--judge-model", dest="judge_model", help="judge model name (default gpt-4; a local server wants its model path or our alias)")
    p.add_argument("--judge-base-url", dest="judge_base_url", help="OpenAI-compatible base URL (default https://api.openai.com/v1)")
    p.add_argument("--api-key-env", dest="api_key_env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--prompt-version", dest="prompt_version", help="reviewer prompts: revised_2023-04-05 (default) or original_2023-03-30")
    p.add_argument("--parser", help="score parser: vicuna (default) or first_line (FastChat's rule only)")
    p.add_argument("--orders", help="both (default), baseline_first (FastChat's single order) or model_first")
    p.add_argument("--temperature", type=nonnegative_float, help="judge temperature (default: the reviewer's, 0.2)")
    p.add_argument("--max-tokens", dest="max_tokens", type=positive_int, help="judge max tokens (default: the reviewer's, 1024)")
    p.add_argument("--parse-attempts", dest="parse_attempts", type=positive_int, help="replies asked per judgment until one parses (default 3)")
    p.add_argument("--max-retries", dest="max_retries", type=nonnegative_int, help="retries per request on 429/5xx/timeouts (default 5)")
    p.add_argument("--concurrency", type=positive_int, help="requests in flight (default 4)")
    p.add_argument("--timeout-s", dest="timeout_s", type=positive_float, help="per-request timeout in seconds (default 120)")
    p.add_argument("--limit", type=positive_int, help="judge only the first N questions")
    p.add_argument("--question-ids", dest="question_ids", type=positive_int, nargs="+", help="judge only these question ids")
    p.add_argument("--data-dir", dest="data_dir", help="data directory laid out like shared/data")
    p.add_argument("--seed", type=int, help="seed of the bootstrap confidence interval (default 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.add_argument("--retry-failed", dest="retry_failed", action="store_true", default=None,
                   help="ask the judge again for the judgments recorded as failed in OUT/judgments.jsonl (ignoring cached replies); the rest come from the cache")
    p.set_defaults(func=_run)

    sub = p.add_subparsers(dest="judge_command", metavar="ACTION")
    r = sub.add_parser(
        "parse-reviews",
        help="re-parse a recorded FastChat review file; print the tallies, write per-question scores",
        description="Re-parse a recorded FastChat GPT-4 review file (review_<A>_<B>.jsonl) and compare with its stored scores.",
    )
    r.add_argument("file", help="review_<A>_<B>.jsonl path, or its data-relative name")
    r.add_argument("--json", dest="json_out", help="write the per-question scores and tallies to this JSON file")
    r.add_argument("--parser", dest="review_parser", default=None, help="score parser (default vicuna)")
    r.add_argument("--data-dir", dest="review_data_dir", help="data directory laid out like shared/data")
    r.set_defaults(func=_parse_reviews)

    # Own dest names: a subcommand's flags must not clobber the Vicuna judge's (same namespace).
    t = sub.add_parser(
        "truthfulqa",
        help="judge TruthfulQA generation answers with a truth judge and an info judge (P(' yes') > 0.5)",
        description=(
            "TruthfulQA's judge protocol on the answers of `selfalign eval --tasks truthfulqa_gen`: the truth judge "
            "reads 'Q: ...\\nA: ...\\nTrue:', the info judge '...\\nHelpful:'. Writes OUT/judgments.jsonl and "
            "OUT/summary.json; a rerun is served from OUT/lm_cache. Example: selfalign judge truthfulqa --answers "
            "runs/eval/gemma-3-270m --truth-judge pretrained=gemma-3-270m,peft=judges/truth/adapter "
            "--info-judge pretrained=gemma-3-270m,peft=judges/info/adapter --output runs/judge/tqa-gemma"
        ),
    )
    t.add_argument("--answers", dest="tqa_answers", required=True, help="run dir DIR/<model_id> (or its samples_truthfulqa_gen.jsonl)")
    t.add_argument("--truth-judge", dest="tqa_truth_judge", required=True, help="model_args of the truth judge, as --model_args takes it")
    t.add_argument("--info-judge", dest="tqa_info_judge", required=True, help="model_args of the info judge")
    t.add_argument("--judge-backend", dest="tqa_judge_backend", default="selfalign-hf",
                   help="lm-eval backend of both judges: selfalign-hf (default), hf, or local-completions (an endpoint returning logprobs)")
    t.add_argument("--output", dest="tqa_output", required=True, help="output directory")
    t.add_argument("--batch-size", dest="tqa_batch_size", type=positive_int, default=8)
    t.add_argument("--device", dest="tqa_device", default="cpu")
    t.set_defaults(func=_truthfulqa)

    tt = sub.add_parser(
        "train-truthfulqa",
        help="fine-tune an open TruthfulQA truth or info judge (LoRA) on TruthfulQA's judge data",
        description=(
            "LoRA fine-tuning of a TruthfulQA judge on truthfulqa/data/finetune_{truth,info}.jsonl with the pipeline's "
            "trainer; holds out a question-disjoint split and writes DIR/metrics.json (accuracy, ROC AUC, majority "
            "baseline). Example: selfalign judge train-truthfulqa --kind truth --base gemma-3-270m --output judges/truth "
            "--config configs/judge/truthfulqa_gemma_cpu.yaml"
        ),
    )
    tt.add_argument("--kind", dest="tqa_kind", required=True, choices=("truth", "info"))
    tt.add_argument("--base", dest="tqa_base", required=True, help="base model: alias, HF directory or .gguf")
    tt.add_argument("--output", dest="tqa_train_output", required=True, help="judge directory (adapter/, metrics.json)")
    tt.add_argument("--config", dest="tqa_config", default=None, help="YAML of JudgeTrainConfig fields (configs/judge/)")
    tt.add_argument("--data-dir", dest="tqa_data_dir", default=None, help="data directory laid out like shared/data")
    tt.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_steps=2")
    tt.set_defaults(func=_train_truthfulqa)


def _run(args: argparse.Namespace) -> int:
    # deferred: the judge client imports openai, numpy and scipy (seconds); `--help` needs none
    from harness.judge.run import JUDGMENTS_FILE, JudgeConfig, all_failed_message, run_judge

    data = read_yaml(args.config) if args.config else {}
    for name in (*_FIELDS, "progress"):
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    cfg = build_dataclass(JudgeConfig, data, args.config or "judge flags")
    s = run_judge(cfg)
    failed_all = all_failed_message(s, Path(cfg.output) / JUDGMENTS_FILE)
    rel = "n/a" if s["relative_score"] is None else f"{s['relative_score']:.3f}"
    print(
        f"{s['model']['name']} vs {s['baseline']['name']}: relative score {rel}, "
        f"wins {s['wins']} ties {s['ties']} losses {s['losses']} over {s['n_scored']}/{s['n_questions']} questions; "
        f"n_failed {s['n_failed']} judgments; requests {s['n_requests']} (cache hits {s['n_cache_hits']}); "
        f"wrote {Path(cfg.output) / 'summary.json'}"
    )
    if failed_all:
        print(f"error: {failed_all}", file=sys.stderr)
        return 1
    return 0


def _parse_reviews(args: argparse.Namespace) -> int:
    # deferred: the review statistics import numpy and scipy (seconds); `--help` needs neither
    from harness.judge.parse import DEFAULT_PARSER
    from harness.judge.reviews import reparse_reviews, resolve_review_file

    path = resolve_review_file(args.file, args.review_data_dir)
    result = reparse_reviews(path, args.review_parser or DEFAULT_PARSER)
    rec = result["recorded"]
    print(
        f"{path.name}: {result['n_reviews']} reviews, {result['n_failed']} unparseable; "
        f"{result['answer2']} vs {result['answer1']}: wins {result['wins']} ties {result['ties']} losses {result['losses']} "
        f"(stored scores: {rec['wins']}/{rec['ties']}/{rec['losses']}); "
        f"{result['n_disagreeing']} differ from the stored scores {result['disagreeing_question_ids']}"
    )
    if args.json_out:
        write_json_atomic(args.json_out, result)
    else:
        print(json.dumps({k: result[k] for k in ("wins", "ties", "losses", "relative_score")}))
    return 0


def _truthfulqa(args: argparse.Namespace) -> int:
    # deferred: the TruthfulQA judges import torch, transformers and lm-eval (seconds)
    from harness.judge.truthfulqa.run import TruthfulQAJudgeConfig, run_truthfulqa_judge

    cfg = TruthfulQAJudgeConfig(
        answers=args.tqa_answers, truth_judge=args.tqa_truth_judge, info_judge=args.tqa_info_judge,
        output=args.tqa_output, judge_backend=args.tqa_judge_backend, batch_size=args.tqa_batch_size,
        device=args.tqa_device,
    )
    s = run_truthfulqa_judge(cfg)

    def fmt(measure: str) -> str:
        lo, hi = s[f"{measure}_ci95"] or (float("nan"), float("nan"))
        return f"{measure} {s[measure]:.3f} [{lo:.3f}, {hi:.3f}]"

    print(
        f"{s['answers']['model_id']}: {fmt('truthful')}, {fmt('informative')}, {fmt('truthful_informative')} "
        f"over n={s['n']}; scored {s['n_scored']} requests; wrote {Path(cfg.output) / 'summary.json'}"
    )
    return 0


def _train_truthfulqa(args: argparse.Namespace) -> int:
    # deferred: judge training imports torch and the pipeline's LoRA trainer (seconds)
    from harness.judge.truthfulqa.train import JudgeTrainConfig, train_judge

    cfg = load_config(JudgeTrainConfig, args.tqa_config, args.overrides)
    m = train_judge(args.tqa_kind, args.tqa_base, args.tqa_train_output, cfg, args.tqa_data_dir)
    if m:
        h = m["heldout"]
        auc = "n/a" if h["auc"] is None else f"{h['auc']:.3f}"
        print(
            f"{args.tqa_kind} judge: held-out accuracy {h['accuracy']:.3f} (majority {h['majority_accuracy']:.3f}, "
            f"{h['accuracy_minus_majority']:+.3f}), AUC {auc} over {h['n']} examples of {m['n_heldout_questions']} "
            f"questions; trained on {m['n_train_examples']} in {m['timing_s']['train']:.0f} s; "
            f"judge spec: {m['spec']}; wrote {Path(args.tqa_train_output) / 'metrics.json'}"
        )
    return 0
