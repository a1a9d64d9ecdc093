"""``selfalign bench generation``: the transformers engine against plain ``model.generate`` on stage-2 prompts.

Stage-2 prompts are the Watson constitution with a seed instruction in its open ``User:`` slot
(``pipeline.stages.self_align.self_align_prompt``, as IBM/Dromedary assembles them). Both paths
decode greedily with the same model object, batch size and token budget, and by default stop
where stage 2 stops, at the next ``User:`` turn: ``generate`` through its ``stop_strings``, the
engine through ``SamplingParams.stop``. Each path runs over all prompts once; ``generate`` in
consecutive batches, the engine with its queue (finished rows are replaced at once). Reported:
wall time, tokens/s (tokens up to and including each completion's end), the ratio, whether every
output is identical, and the FLOP floor (constitution once, each distinct suffix token once,
each generated token once; LM head per generated token) beside the roofline floor: the larger
of that and the bytes the decode steps must read (all weights per step, plus the KV cache each
row attends over) over the measured memory read bandwidth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness import data
from harness.bench.flops import decode_bytes, decode_shape, floor_flops, model_size
from harness.bench.machine import Clock, machine_info, matmul_gflops, memory_bandwidth_gbs
from harness.bench.report import write_report
from harness.common.errors import UserError
from harness.models import resolve_pretrained
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.engine.transformers_engine import DTYPES, TransformersEngine, completion_end
from pipeline.stages.self_align import NEXT_TURN, self_align_prompt

WATSON_PROMPT = "dromedary/prompts/watson_self_align_prompt.txt"
SEED_QUESTIONS = "dromedary/prompts/tgrt_self_instruct_seed_questions.jsonl"
SEED_TASKS = "dromedary/prompts/self_instruct_seed_tasks.jsonl"


@dataclass
class GenerationBenchConfig:
    model: str = "gemma-3-270m"
    limit: int = 16  # prompts
    batch_size: int = 8
    max_new_tokens: int = 256  # stage 2's budget
    stop_at_next_turn: bool = True  # stage 2's stop; False: every row runs to max_new_tokens
    data_dir: str | None = None
    dtype: str = "float32"
    json: str | None = None


def stage2_prompts(limit: int, data_dir: str | None) -> tuple[str, list[str]]:
    """(constitution, prompts): the constitution with ``limit`` instructions in its ``User:`` slot.

    The instructions stand in for stage 1's output: the 20 TGRT seed questions, then the 175
    self-instruct seed tasks (instruction and input), the two kinds of prompt stage 1 writes.
    """
    constitution = data.read_text(WATSON_PROMPT, data_dir).strip()
    instructions = [(row["question"], "") for row in data.read_jsonl(SEED_QUESTIONS, data_dir)]
    instructions += [
        (task["instruction"], task["instances"][0]["input"] if task.get("instances") else "")
        for task in data.read_jsonl(SEED_TASKS, data_dir)
    ]
    if len(instructions) < limit:
        raise UserError(
            f"--limit {limit}: only {len(instructions)} seed questions and tasks "
            f"({SEED_QUESTIONS}, {SEED_TASKS})"
        )
    return constitution, [
        self_align_prompt(constitution, "Watson", instruction, input_text)
        for instruction, input_text in instructions[:limit]
    ]


@torch.inference_mode()
def plain_generate(model, tokenizer, prompts: list[str], batch_size: int, params) -> list[list[int]]:
    """Left-padded batched greedy ``model.generate``: each row's new token ids."""
    tokenizer.padding_side = "left"
    stop = {"stop_strings": list(params.stop), "tokenizer": tokenizer} if params.stop else {}
    rows: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        out = model.generate(
            **batch,
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            **stop,
        )
        rows.extend(out[:, batch["input_ids"].shape[1] :].tolist())
    return rows


def cut_completions(rows: list[list[int]], tokenizer, eos_ids: set[int], params):
    """(texts, token counts) of ``generate``'s rows, ended by the engine's own rule."""
    texts, counts = [], []
    for ids in rows:
        for n in range(1, len(ids) + 1):
            end = completion_end(ids[:n], tokenizer, eos_ids, params)
            if end is not None:
                break
        else:  # generate stopped a row that our rule did not: the outputs will differ
            end, n = (tokenizer.decode(ids, skip_special_tokens=True), "?"), len(ids)
        texts.append(end[0])
        counts.append(n)
    return texts, counts


@dataclass(frozen=True)
class GenerationMeasurement:
    """What one run of both paths measured (``measure_generation``); no derived figures."""

    model_path: str
    prompts: int
    stop: list[str]
    ended_by_stop: int  # engine completions ended by the stop string
    constitution_tokens: int  # the shared prefix, encoded once by the engine
    prompt_tokens: list[int]  # per prompt, constitution included
    generated_tokens: int  # engine
    baseline_generated_tokens: int  # model.generate, cut by the engine's rule
    baseline_s: float
    ours_s: float
    baseline_cpu_s: float
    ours_cpu_s: float
    outputs_identical: bool
    floor: dict[str, Any]  # FLOP counts of the work (``flops.floor_flops``)
    decode_bytes: dict[str, Any]  # bytes the decode steps read (``flops.decode_bytes``)
    engine_tokens: dict[str, Any]  # the engine's stats: prefix, decode steps and tokens...
    matmul_gflops: float  # best measured rate, before and after the run
    memory_read_gbs: float


@dataclass(frozen=True)
class GenerationRow:
    """One row of the report (``results["stage2"]``): the measurement and the figures derived from it."""

    prompts: int
    stop: list[str]
    ended_by_stop: int
    constitution_tokens: int
    mean_prompt_tokens: float
    generated_tokens: int
    baseline_generated_tokens: int
    baseline_s: float
    ours_s: float
    baseline_tokens_per_s: float
    ours_tokens_per_s: float
    speedup: float  # of tokens/s
    baseline_cpu_s: float
    ours_cpu_s: float
    speedup_cpu: float  # of tokens per CPU second
    outputs_identical: bool
    floor_s: float  # FLOP floor at the measured matmul rate
    floor: dict[str, Any]
    ours_over_floor: float
    decode_bytes: dict[str, Any]
    bytes_floor_s: float  # bytes read at the measured bandwidth
    roofline_floor_s: float  # the larger floor
    roofline_bound: str  # "memory" or "compute"
    ours_over_roofline: float
    baseline_over_floor: float
    engine_tokens: dict[str, Any]
    mean_rows_per_decode_step: float


HEADLINE = ("speedup", "baseline_s", "ours_s", "outputs_identical", "floor_s", "ours_over_floor",
            "roofline_floor_s", "ours_over_roofline")


@dataclass(frozen=True)
class GenerationRecord:
    """The benchmark's result; ``to_json`` is the report file's layout."""

    config: GenerationBenchConfig
    model_path: str
    machine: dict[str, Any]
    matmul_gflops: float
    memory_read_gbs: float
    row: GenerationRow

    def to_json(self) -> dict[str, Any]:
        row = asdict(self.row)
        return {
            "benchmark": "generation",
            "config": asdict(self.config),
            "model_path": self.model_path,
            "machine": self.machine,
            "matmul_gflops": self.matmul_gflops,
            "memory_read_gbs": self.memory_read_gbs,
            **{k: row[k] for k in HEADLINE},
            "results": {"stage2": row},
        }


def run_generation_bench(cfg: GenerationBenchConfig) -> GenerationRecord:
    """Measure, derive the record, write it to ``cfg.json`` (when set); printing is the CLI's."""
    record = generation_record(cfg, measure_generation(cfg), machine_info())
    write_report(cfg.json, record.to_json())
    return record


def measure_generation(cfg: GenerationBenchConfig) -> GenerationMeasurement:
    """Both paths over the same stage-2 prompts with the same model object, and the machine's rates."""
    pretrained = str(resolve_pretrained(cfg.model))
    constitution, prompts = stage2_prompts(cfg.limit, cfg.data_dir)
    gflops, bandwidth = matmul_gflops(), memory_bandwidth_gbs()
    model = AutoModelForCausalLM.from_pretrained(
        pretrained, dtype=DTYPES[cfg.dtype], attn_implementation="sdpa"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    engine = TransformersEngine(model, tokenizer, batch_size=cfg.batch_size, progress=False)
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(prompts)]
    stop = (NEXT_TURN,) if cfg.stop_at_next_turn else ()
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, stop=stop)

    # Untimed warm-up on a short prompt (thread pools, allocator).
    plain_generate(model, tokenizer, ["Hello"], 1, SamplingParams(max_new_tokens=2))
    base_clock, ours_clock = Clock(), Clock()
    base_rows = base_clock.time(plain_generate, model, tokenizer, prompts, cfg.batch_size, params)
    completions = ours_clock.time(lambda: engine.generate(requests, params, shared_prefix=constitution))
    base_texts, base_counts = cut_completions(base_rows, tokenizer, engine.eos_ids, params)

    generated = sum(c.completion_tokens for c in completions)
    prompt_tokens = [c.prompt_tokens for c in completions]
    prefix_tokens = engine.stats["prefix_tokens"]
    forward_tokens = prefix_tokens + sum(n - prefix_tokens for n in prompt_tokens) + generated - len(prompts)
    return GenerationMeasurement(
        model_path=pretrained,
        prompts=len(prompts),
        stop=list(params.stop),
        ended_by_stop=sum(c.finish_reason == "stop" for c in completions),
        constitution_tokens=prefix_tokens,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated,
        baseline_generated_tokens=sum(base_counts),
        baseline_s=base_clock.wall_s,
        ours_s=ours_clock.wall_s,
        baseline_cpu_s=base_clock.cpu_s,
        ours_cpu_s=ours_clock.cpu_s,
        outputs_identical=[c.text for c in completions] == base_texts,
        floor=floor_flops(model_size(model), forward_tokens, generated),
        decode_bytes=decode_bytes(
            decode_shape(model), engine.stats["decode_steps"], prefix_tokens,
            [(c.prompt_tokens, c.completion_tokens) for c in completions],
        ),
        engine_tokens=dict(engine.stats),
        matmul_gflops=max(gflops, matmul_gflops()),
        memory_read_gbs=max(bandwidth, memory_bandwidth_gbs()),
    )


def generation_record(
    cfg: GenerationBenchConfig, m: GenerationMeasurement, machine: dict[str, Any]
) -> GenerationRecord:
    """The report: rates, ratios and floors derived from the measurement (pure)."""
    floor_s = m.floor["total_flops"] / (m.matmul_gflops * 1e9)
    # Roofline: decoding also cannot be faster than reading what each step needs. Both are
    # lower bounds on the whole run, so their larger one is too.
    bytes_s = m.decode_bytes["total_bytes"] / (m.memory_read_gbs * 1e9)
    roofline_s = max(floor_s, bytes_s)
    row = GenerationRow(
        prompts=m.prompts,
        stop=m.stop,
        ended_by_stop=m.ended_by_stop,
        constitution_tokens=m.constitution_tokens,
        mean_prompt_tokens=sum(m.prompt_tokens) / len(m.prompt_tokens),
        generated_tokens=m.generated_tokens,
        baseline_generated_tokens=m.baseline_generated_tokens,
        baseline_s=m.baseline_s,
        ours_s=m.ours_s,
        baseline_tokens_per_s=m.baseline_generated_tokens / m.baseline_s,
        ours_tokens_per_s=m.generated_tokens / m.ours_s,
        speedup=(m.generated_tokens / m.ours_s) / (m.baseline_generated_tokens / m.baseline_s),
        baseline_cpu_s=m.baseline_cpu_s,
        ours_cpu_s=m.ours_cpu_s,
        speedup_cpu=(m.generated_tokens / m.ours_cpu_s) / (m.baseline_generated_tokens / m.baseline_cpu_s),
        outputs_identical=m.outputs_identical,
        floor_s=floor_s,
        floor=m.floor,
        ours_over_floor=m.ours_s / floor_s,
        decode_bytes=m.decode_bytes,
        bytes_floor_s=bytes_s,
        roofline_floor_s=roofline_s,
        roofline_bound="memory" if bytes_s > floor_s else "compute",
        ours_over_roofline=m.ours_s / roofline_s,
        baseline_over_floor=m.baseline_s / floor_s,
        engine_tokens=m.engine_tokens,
        mean_rows_per_decode_step=m.engine_tokens["decode_tokens"] / max(1, m.engine_tokens["decode_steps"]),
    )
    return GenerationRecord(cfg, m.model_path, machine, m.matmul_gflops, m.memory_read_gbs, row)
