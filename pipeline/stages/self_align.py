"""Stage 2 — Principle-Driven Self-Alignment: the base model answers under the constitution.

Each synthetic prompt goes into the open ``User:`` slot of the rendered constitution, followed
by ``{assistant} (internal thoughts):``; the model writes its thoughts and its answer. Answers
are kept or dropped as IBM/Dromedary's merge_and_fileter_self_align_with_dummy.py does: the
self-identification must open the thoughts, the answer follows ``\\n\\n{assistant}:``,
repetition is cut, an answer that ended its turn gets ``### User`` appended (and must be 160+
characters), exemplar phrases and apologetic openings are rejected, the name is changed to
Dromedary.

Outputs: ``records.jsonl`` (one per prompt: id, prompt fields, raw output, finish reason, kept,
answer or drop reason), ``constitution.txt`` (the rendered prompt) and ``constitution.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.common.records import AnswerRecord, PromptRecord
from pipeline import constitution as const
from pipeline.config import PipelineConfig, SelfAlignConfig
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.inputs import fingerprint, load_prompts_file
from pipeline.sharding import LazyRequests, generate_sharded, request_seed
from pipeline.stages.answer_filters import (
    END_OF_TURN,
    SELF_ALIGN_BOUNDARIES,
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

NEXT_TURN = "\n\nUser:"
WIKIPEDIA_PREFIX = "According to my knowledge from Wikipedia, here"


def self_align_prompt(rendered_constitution: str, assistant_name: str, instruction: str, input_text: str = "") -> str:
    """The reference's ``generate_prompt``: the prompt fills the constitution's open ``User:`` slot."""
    body = f"{instruction}\n\n{input_text}" if input_text else instruction
    return f"{rendered_constitution} {body}\n\n{assistant_name} (internal thoughts):"


def parse_self_align_output(
    raw: str,
    finish_reason: str,
    *,
    assistant_name: str,
    self_identification: str,
    cfg: SelfAlignConfig,
    stop_string: str | None = None,
) -> AnswerVerdict:
    """Keep or drop one stage-2 output, as merge_and_fileter_self_align_with_dummy.py lines 88-140.

    ``stop_string`` is the stop string generation ended at (``\\n\\nUser:`` with
    ``stop_at_next_turn``). It is put back before judging, so the repetition cut sees the same
    segments as the reference's post-hoc cut of the full output: a repeat that ends right before
    the turn ("foo\\n" against "foo") still cuts it, and an answer whose turn end was cut away
    loses its last word instead of gaining "### User", exactly as there.
    """
    # The reference's SentencePiece decoding dropped the space after "(internal thoughts):";
    # Hugging Face tokenizers keep it.
    text = raw.lstrip()
    if stop_string == NEXT_TURN:
        text += NEXT_TURN
    if not text.startswith(self_identification):
        return AnswerVerdict(None, "no_self_identification")
    marker = f"\n\n{assistant_name}:"
    if marker not in text:
        # Only internal thoughts. (Had generation gone on past a stop at the next turn, the
        # reference could have taken a later, invented turn's answer; see README.)
        return AnswerVerdict(None, "no_answer")
    answer = cut_repetition(text.split(marker, 1)[1].strip(), SELF_ALIGN_BOUNDARIES)
    # The turn ended when the next "User:" turn began (and survived the repetition cut), or,
    # unless reproducing the reference exactly, when the model stopped by itself (EOS).
    stopped_by_model = finish_reason == "stop" and stop_string is None
    ended_turn = NEXT_TURN in answer or (stopped_by_model and not cfg.drop_final_word_always)
    if ended_turn:
        answer = answer.split(NEXT_TURN, 1)[0].strip() + END_OF_TURN
        if len(answer) < cfg.min_chars_when_turn_ended:
            return AnswerVerdict(None, "too_short")
    else:
        answer = drop_truncated_word(answer)
    for phrase in cfg.blacklist:
        if phrase in answer:
            return AnswerVerdict(None, "exemplar_leak", phrase)
    for prefix in cfg.blacklist_prefixes:
        if answer.startswith(prefix):
            return AnswerVerdict(None, "apology_prefix", prefix)
    if not answer:
        return AnswerVerdict(None, "empty")
    if cfg.rename_to:
        answer = answer.replace(assistant_name, cfg.rename_to)
    # The reference does not want the model to claim it recites Wikipedia.
    if answer.startswith(WIKIPEDIA_PREFIX):
        answer = "Here" + answer[len(WIKIPEDIA_PREFIX):]
    return AnswerVerdict(answer)


class SelfAlignStage:
    number = 2
    name = "self_align"
    title = "Principle-Driven Self-Alignment"
    version = "2"  # 2: the stop string is put back before the turn rule (issue 11)
    trains = False

    def config_slice(self, cfg: PipelineConfig) -> dict[str, Any]:
        return {
            "seed": cfg.seed,
            "generation": generation_identity(cfg),
            "constitution": asdict(cfg.constitution),
            "stage2": asdict(cfg.stage2),
        }

    def data_files(self, cfg: PipelineConfig, data_dir: Any = None) -> dict[str, str]:
        ref = cfg.constitution.path or const.WATSON_PROMPT
        files = {ref: fingerprint(ref, data_dir, "constitution.path")}
        if cfg.stage2.prompts_file:
            files[cfg.stage2.prompts_file] = fingerprint(cfg.stage2.prompts_file, data_dir, "stage2.prompts_file")
        return files

    def requires(self, cfg: PipelineConfig) -> tuple[str, ...]:
        # With a prompts file, stage 1 is not needed.
        return () if cfg.stage2.prompts_file else ("tgrt_self_instruct",)

    def load_constitution(self, cfg: PipelineConfig, data_dir: Any) -> const.Constitution:
        c = cfg.constitution
        ablation = const.Ablation(c.drop_principles, c.drop_exemplars, c.replace_principles, c.replace_exemplars)
        return const.load_constitution(c.path, ablation, data_dir)

    def run(self, ctx: StageContext) -> StageResult:
        s2 = ctx.cfg.stage2
        if s2.prompts_file:
            prompts = load_prompts_file(s2.prompts_file)
        else:
            prompts = read_upstream(
                ctx.upstream_path("tgrt_self_instruct", "prompts"), PromptRecord, "synthetic prompts",
                "stage 1 kept none (see its manifest.json counts); raise stage1.self_instruct.num_requests or the TGRT counts",
            )
        if s2.max_prompts is not None:
            prompts = prompts[: s2.max_prompts]
        constitution = self.load_constitution(ctx.cfg, ctx.data_dir)
        rendered = const.render(constitution)
        if ctx.dist.is_main:
            (ctx.stage_dir / "constitution.txt").write_text(rendered, encoding="utf-8")
            const.dump_file(constitution, ctx.stage_dir / "constitution.yaml")

        name = constitution.assistant_name
        requests = LazyRequests(
            prompts,
            lambda p: GenerationRequest(p.id, self_align_prompt(rendered, name, p.instruction, p.input), request_seed(ctx.cfg.seed, f"self_align:{p.id}")),
            [p.id for p in prompts],
        )
        params = SamplingParams(
            max_new_tokens=s2.max_new_tokens, temperature=s2.temperature, top_p=s2.top_p,
            stop=(NEXT_TURN,) if s2.stop_at_next_turn else (), logit_bias=dict(s2.logit_bias),
            **budget_params(ctx.cfg, "self_align"),
        )
        outputs, stats = generate_sharded(
            "self_align", requests, params, gen_dir=ctx.stage_dir / "generations", dist=ctx.dist, engine=ctx.base_engine,
            shared_prefix=rendered + " ", chunk_size=ctx.cfg.engine.chunk_size,
            on_progress=ctx.progress_callback("stage 2: self-aligned answers"),
        )
        def judged():
            for prompt, out in zip(prompts, outputs, strict=True):
                verdict = parse_self_align_output(
                    out["text"], out["finish_reason"], assistant_name=name,
                    self_identification=constitution.self_identification, cfg=s2,
                    stop_string=out.get("stop_string"),
                )
                yield AnswerRecord(
                    id=prompt.id, instruction=prompt.instruction, input=prompt.input, origin=prompt.origin,
                    raw_output=out["text"], finish_reason=out["finish_reason"], kept=verdict.reason is None,
                    answer=verdict.answer, drop_reason=verdict.reason, drop_detail=verdict.detail,
                )

        counter = write_answer_records(ctx, judged())
        return StageResult(
            outputs={"records": "records.jsonl", "constitution": "constitution.txt", "generations": "generations"},
            primary=["records"],
            counts=counter.as_dict(),
            generation=stats.as_dict(),
            extra={
                "constitution": {
                    "assistant_name": name,
                    "principles": constitution.principle_ids(),
                    "exemplars": constitution.exemplar_ids(),
                    "rendered_chars": len(rendered),
                }
            },
        )
