"""``selfalign bench generation``: the transformers engine against plain ``model.generate`` on stage-2 prompts.

Stage-2 prompts are the Watson constitution with a question appended, assembled as IBM/Dromedary
``generate_self_align_response.py`` does (``f"{meta_prompt} {instruction}\\n\\nWatson (internal
thoughts):"``, meta prompt stripped), over the TGRT seed questions. Both paths decode greedily
with the same model object, batch size and token budget; reported: wall time, tokens/s, the
ratio, whether every output is identical, and the FLOP floor (constitution once, each distinct
suffix token once, each generated token once; LM head per generated token).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from harness.bench.flops import floor_flops, model_size
from harness.bench.machine import Clock, machine_info, matmul_gflops
from harness.bench.report import print_table, write_report
from harness.common.errors import UserError

WATSON_PROMPT = "dromedary/prompts/watson_self_align_prompt.txt"
SEED_QUESTIONS = "dromedary/prompts/tgrt_self_instruct_seed_questions.jsonl"


@dataclass
class GenerationBenchConfig:
    model: str = "gemma-3-270m"
    limit: int = 8  # prompts
    batch_size: int = 8
    max_new_tokens: int = 64
    data_dir: str | None = None
    dtype: str = "float32"
    json: str | None = None


def stage2_prompts(limit: int, data_dir: str | None) -> tuple[str, list[str]]:
    """(constitution, prompts): the constitution followed by ``limit`` seed questions."""
    from harness import data

    constitution = data.read_text(WATSON_PROMPT, data_dir).strip()
    questions = [row["question"] for row in data.read_jsonl(SEED_QUESTIONS, data_dir)][:limit]
    if len(questions) < limit:
        raise UserError(
            f"--limit {limit}: only {len(questions)} seed questions in {SEED_QUESTIONS}"
        )
    return constitution, [f"{constitution} {q}\n\nWatson (internal thoughts):" for q in questions]


@torch.inference_mode()
def plain_generate(
    model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int, eos_ids: set[int]
):
    """Left-padded batched ``model.generate`` (greedy): (texts, generated token counts)."""
    tokenizer.padding_side = "left"
    texts, counts = [], []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in out[:, batch["input_ids"].shape[1] :].tolist():
            ids = []
            for token in row:
                ids.append(token)
                if token in eos_ids:
                    break
            counts.append(len(ids))
            texts.append(
                tokenizer.decode([t for t in ids if t not in eos_ids], skip_special_tokens=True)
            )
    return texts, counts


def run_generation_bench(cfg: GenerationBenchConfig) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models import resolve_pretrained
    from pipeline.engine.base import GenerationRequest, SamplingParams
    from pipeline.engine.transformers_engine import DTYPES, TransformersEngine

    pretrained = str(resolve_pretrained(cfg.model))
    constitution, prompts = stage2_prompts(cfg.limit, cfg.data_dir)
    gflops = matmul_gflops()
    model = AutoModelForCausalLM.from_pretrained(
        pretrained, dtype=DTYPES[cfg.dtype], attn_implementation="sdpa"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    engine = TransformersEngine(model, tokenizer, batch_size=cfg.batch_size, progress=False)
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(prompts)]
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens)

    # Untimed warm-up on a short prompt (thread pools, allocator).
    plain_generate(model, tokenizer, ["Hello"], 1, 2, engine.eos_ids)
    # Batch by batch, alternating which path goes first, so a neighbour's burst on this shared
    # machine slows both alike. The engine keeps the constitution's cache across its calls,
    # exactly as in one call over all prompts.
    base_clock, ours_clock = Clock(), Clock()
    base_texts: list[str] = []
    base_counts: list[int] = []
    completions = []
    for number, start in enumerate(range(0, len(prompts), cfg.batch_size)):
        batch = slice(start, start + cfg.batch_size)

        def run_base(batch=batch):
            texts, counts = plain_generate(
                model, tokenizer, prompts[batch], cfg.batch_size, cfg.max_new_tokens, engine.eos_ids
            )
            base_texts.extend(texts)
            base_counts.extend(counts)

        def run_ours(batch=batch):
            completions.extend(engine.generate(requests[batch], params, shared_prefix=constitution))

        steps = [(base_clock, run_base), (ours_clock, run_ours)]
        for clock, run in steps if number % 2 == 0 else reversed(steps):
            clock.time(run)
    base_s, ours_s = base_clock.wall_s, ours_clock.wall_s
    gflops = max(gflops, matmul_gflops())

    generated = sum(c.completion_tokens for c in completions)
    prompt_tokens = [c.prompt_tokens for c in completions]
    prefix_tokens = engine.stats["prefix_tokens"]
    forward_tokens = (
        prefix_tokens + sum(n - prefix_tokens for n in prompt_tokens) + generated - len(prompts)
    )
    floor = floor_flops(model_size(model), forward_tokens, generated)
    floor_s = floor["total_flops"] / (gflops * 1e9)
    row = {
        "prompts": len(prompts),
        "constitution_tokens": prefix_tokens,
        "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "generated_tokens": generated,
        "baseline_generated_tokens": sum(base_counts),
        "baseline_s": base_s,
        "ours_s": ours_s,
        "baseline_tokens_per_s": sum(base_counts) / base_s,
        "ours_tokens_per_s": generated / ours_s,
        "speedup": (generated / ours_s) / (sum(base_counts) / base_s),
        "baseline_cpu_s": base_clock.cpu_s,
        "ours_cpu_s": ours_clock.cpu_s,
        "speedup_cpu": (generated / ours_clock.cpu_s) / (sum(base_counts) / base_clock.cpu_s),
        "outputs_identical": [c.text for c in completions] == base_texts,
        "floor_s": floor_s,
        "floor": floor,
        "ours_over_floor": ours_s / floor_s,
        "baseline_over_floor": base_s / floor_s,
        "engine_tokens": dict(engine.stats),
    }
    print_table(
        f"generation: engine vs model.generate on {cfg.model}, stage-2 prompts "
        f"(matmul {gflops:.1f} GFLOP/s, {torch.get_num_threads()} threads)",
        {"stage2": row},
        [
            ("prompts", "prompts"),
            ("mean_prompt_tokens", "prompt tok"),
            ("generated_tokens", "new tok"),
            ("baseline_s", "generate s"),
            ("ours_s", "ours s"),
            ("baseline_tokens_per_s", "generate tok/s"),
            ("ours_tokens_per_s", "ours tok/s"),
            ("speedup", "speedup"),
            ("speedup_cpu", "speedup (cpu)"),
            ("outputs_identical", "identical"),
            ("floor_s", "floor s"),
            ("ours_over_floor", "ours/floor"),
        ],
    )
    report = {
        "benchmark": "generation",
        "config": asdict(cfg),
        "model_path": pretrained,
        "machine": machine_info(),
        "matmul_gflops": gflops,
        **{
            k: row[k]
            for k in (
                "speedup",
                "baseline_s",
                "ours_s",
                "outputs_identical",
                "floor_s",
                "ours_over_floor",
            )
        },
        "results": {"stage2": row},
    }
    write_report(cfg.json, report)
    return report
