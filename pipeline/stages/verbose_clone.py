"""Stage 4 — Verbose Cloning: the engraved model answers at length; a fresh LoRA learns those answers.

The stage-3 model (base + engraving adapter) answers every stage-2 prompt, plus the identity
questions, under the verbose prompt (``### Dromedary (extensive)``). Outputs are cleaned and
filtered as IBM/Dromedary's merge_and_filter_verbose_clone_output.py does (turn cut, repetition
cut, 12-item list cap, 128-character floor, wiki-style endings and prompt leaks rejected), and a
new adapter is trained on the base model, as the reference's final fine-tune does, under the
short distill prompts.

Outputs: ``records.jsonl`` (one per prompt: raw output, kept, answer or drop reason),
``train.jsonl``, ``adapter/`` (the final Dromedary adapter), trainer logs.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.common.errors import UserError
from harness.common.records import AnswerRecord
from harness.prompts import META_PROMPTS, dromedary_prompt
from pipeline.config import PipelineConfig, VerboseCloneConfig
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.inputs import fingerprint, read_input_text
from pipeline.manifest import DropCounter
from pipeline.sharding import GenerationStats, LazyRequests, generate_sharded, request_seed
from pipeline.stages.answer_filters import (
    END_OF_TURN,
    VERBOSE_BOUNDARIES,
    AnswerVerdict,
    cut_repetition,
    drop_truncated_word,
)
from pipeline.stages.base import (
    StageContext,
    StageResult,
    read_upstream,
    write_answer_records,
)
from pipeline.stages.common import budget_params, generation_identity
from pipeline.stages.engrave import (
    meta_prompt_texts,
    train_stage_adapter,
    training_examples,
    write_train_records,
)
from pipeline.stages.identity import IDENTITY_DATA, load_identity_examples

TURN_MARKER = "### User\n"
LIST_CAP = "\n13. "  # the reference keeps at most 12 numbered items


def verbose_prompt(meta_prompt: str, instruction: str, input_text: str = "") -> str:
    """The reference's generate_verbose_response.py prompt: ``... ### Dromedary (extensive)``."""
    return dromedary_prompt(meta_prompt, instruction, input_text) + " (extensive)"


def parse_verbose_output(
    raw: str, finish_reason: str, *, instruction: str, input_text: str, cfg: VerboseCloneConfig
) -> AnswerVerdict:
    text = raw.strip()
    ended_turn = TURN_MARKER in text or (finish_reason == "stop" and not cfg.drop_final_word_always)
    if ended_turn:
        answer = text.split(TURN_MARKER)[0].strip() + END_OF_TURN
    else:
        answer = drop_truncated_word(text)
    # As in the reference, the repetition cut runs after the turn marker is appended (and its
    # final strip removes the marker's newline).
    answer = cut_repetition(answer, VERBOSE_BOUNDARIES)
    for key, canned in cfg.canned_answers.items():
        if key in instruction or key in input_text:
            answer = canned
    for key in cfg.canned_answers:
        if key in answer and answer != cfg.canned_answers[key]:
            # The reference stops with an error here; an exemplar's name in an answer is a leak.
            return AnswerVerdict(None, "exemplar_leak", key)
    answer = answer.split(LIST_CAP)[0]
    if len(answer) < cfg.min_chars and "### User" not in answer:
        return AnswerVerdict(None, "too_short")
    body = answer.split("### User")[0]
    for marker in cfg.bad_markers:
        if marker in body:
            return AnswerVerdict(None, "bad_marker", marker[:40])
    return AnswerVerdict(answer)


class VerboseCloneStage:
    number = 4
    name = "verbose_clone"
    title = "Verbose Cloning"
    version = "2"  # 2: train.jsonl records name their source (the TrainRecord shape of stage 3)
    trains = True  # saves a LoRA adapter: a checkpoint (pipeline.checkpoints)

    def requires(self, cfg: PipelineConfig) -> tuple[str, ...]:
        return ("self_align", "engrave")

    def config_slice(self, cfg: PipelineConfig) -> dict[str, Any]:
        stage4 = {**asdict(cfg.stage4), "train": {**cfg.stage4.train.identity(), "merge": cfg.stage4.train.merge}}
        return {"seed": cfg.seed, "generation": generation_identity(cfg), "stage4": stage4}

    def data_files(self, cfg: PipelineConfig, data_dir: Any = None) -> dict[str, str]:
        s4 = cfg.stage4
        files = {s4.prompt: fingerprint(s4.prompt, data_dir, "stage4.prompt")}
        rels = [META_PROMPTS[n] for n in s4.meta_prompts if n in META_PROMPTS]
        if s4.include_identity_prompts:
            rels.append(IDENTITY_DATA)
        return {**files, **{rel: fingerprint(rel, data_dir, 'data file') for rel in rels}}

    def run(self, ctx: StageContext) -> StageResult | None:
        s4 = ctx.cfg.stage4
        kept, counter, stats = judged_verbose_answers(ctx)
        if not kept:
            raise UserError(
                f"{ctx.stage_dir / 'records.jsonl'}: all {counter.produced} verbose answers were dropped "
                f"({_reasons(counter)}); nothing to train on; answer more prompts (stage4.max_prompts, stage 2 counts)"
            )
        examples = training_examples(kept, meta_prompt_texts(s4.meta_prompts, ctx.data_dir, "stage4.meta_prompts"))
        del kept  # 358k dicts at paper scale; training needs only the examples
        if ctx.dist.is_main:
            write_train_records(ctx.stage_dir / "train.jsonl", examples, ["verbose_clone"] * len(examples))
        if ctx.generate_only:
            return None
        result, summary = train_stage_adapter(ctx, s4.train, examples)
        outputs_map = {
            "records": "records.jsonl", "train": "train.jsonl", "adapter": "adapter", "generations": "generations",
            "train_log": "train_log.jsonl", "train_result": "train_result.json",
        }
        if result.merged_dir:
            outputs_map["merged"] = "merged"
        return StageResult(outputs=outputs_map, primary=["adapter"], counts=counter.as_dict(), generation=stats.as_dict(), training=summary)


def judged_verbose_answers(ctx: StageContext) -> tuple[list[dict[str, Any]], DropCounter, GenerationStats]:
    """Generate (or resume) the verbose answers, judge them, and write ``records.jsonl``; returns
    the kept ``{id, instruction, input, output}`` pairs. The prompts and raw outputs stay in here,
    so they are freed before training."""
    s4 = ctx.cfg.stage4
    # Every prompt stage 2 answered, kept or not (the reference reused all its inputs).
    prompts = read_answered_prompts(ctx)
    if s4.include_identity_prompts:
        prompts += load_identity_examples(ctx.data_dir, s4.max_identity_prompts)
    if s4.max_prompts is not None:
        prompts = prompts[: s4.max_prompts]
    meta = read_input_text(s4.prompt, ctx.data_dir, "stage4.prompt").strip()
    requests = LazyRequests(
        prompts,
        lambda p: GenerationRequest(p["id"], verbose_prompt(meta, p["instruction"], p.get("input", "")), request_seed(ctx.cfg.seed, f"verbose:{p['id']}")),
        [p["id"] for p in prompts],
    )
    params = SamplingParams(
        max_new_tokens=s4.max_new_tokens, temperature=s4.temperature, top_p=s4.top_p,
        stop=(TURN_MARKER,) if s4.stop_at_next_turn else (),
        tritoken_frequency_penalty=s4.tritoken_frequency_penalty,
        quadtoken_frequency_penalty=s4.quadtoken_frequency_penalty,
        frequency_penalty_min_id=s4.frequency_penalty_min_id,
        **budget_params(ctx.cfg, "verbose_clone"),
    )
    adapter = ctx.upstream_path("engrave", "adapter")
    outputs, stats = generate_sharded(
        "verbose_clone", requests, params, gen_dir=ctx.stage_dir / "generations", dist=ctx.dist,
        engine=lambda: ctx.engine(ctx.cfg.model.base, str(adapter)), shared_prefix=meta,
        chunk_size=ctx.cfg.engine.chunk_size, on_progress=ctx.progress_callback("stage 4: verbose answers"),
    )
    ctx.release_engines()  # free the engraved model before training
    kept: list[dict[str, Any]] = []

    def judged():
        for prompt, out in zip(prompts, outputs, strict=True):
            v = parse_verbose_output(out["text"], out["finish_reason"], instruction=prompt["instruction"], input_text=prompt.get("input", ""), cfg=s4)
            if v.reason is None:
                kept.append({"id": prompt["id"], "instruction": prompt["instruction"], "input": prompt.get("input", ""), "output": v.answer})
            yield AnswerRecord(
                id=prompt["id"], instruction=prompt["instruction"], input=prompt.get("input", ""),
                origin=prompt["origin"], raw_output=out["text"], finish_reason=out["finish_reason"],
                kept=v.reason is None, answer=v.answer, drop_reason=v.reason, drop_detail=v.detail,
            )

    counter = write_answer_records(ctx, judged())
    return kept, counter, stats


def _reasons(counter: DropCounter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.dropped.items()))


def read_answered_prompts(ctx: StageContext) -> list[dict[str, Any]]:
    """Every prompt stage 2 answered, kept or dropped (the prompt fields only: the records also
    hold every raw output)."""
    path = ctx.upstream_path("self_align", "records")
    return read_upstream(
        path, AnswerRecord, "stage-2 records", "rerun stage 2", kept_only=False,
        project=lambda r: {"id": r.id, "instruction": r.instruction, "input": r.input, "origin": r.origin},
    )
