"""Stage 1 — Topic-Guided Red-Teaming Self-Instruct: synthetic prompts from 195 human seeds.

Self-Instruct: the base model continues the Self-Instruct prompt after 5 sampled seed tasks.
TGRT: topics are brainstormed per question type over rounds, then the model writes questions
for (type, topic) hints. Parsed instructions are judged in a fixed order (Self-Instruct first,
then TGRT, each by id): parse failures, length and keyword rules, one question per (type,
topic), and ROUGE-L novelty against everything kept so far, seeds included. As in the
reference, TGRT questions skip the length, keyword and ROUGE-L rules unless
``stage1.tgrt.self_instruct_filters`` is set.

Outputs: ``prompts.jsonl`` (kept prompts: id, instruction, input, origin), ``candidates.jsonl``
(every parsed instruction with its verdict), ``topics.jsonl`` (the final TGRT topic pool) and
the raw completions under ``generations/``.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

from harness.common.errors import UserError
from harness.common.records import CandidateRecord, PromptRecord, TopicRecord
from harness.common.registry import unknown_name_error
from pipeline.config import PipelineConfig, TGRTConfig
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.inputs import (
    SeedQuestion,
    fingerprint,
    load_seed_questions,
    load_seed_tasks,
    read_input_text,
)
from pipeline.manifest import DropCounter
from pipeline.sharding import GenerationStats, generate_sharded, request_seed
from pipeline.stages import self_instruct, tgrt
from pipeline.stages.base import StageContext, StageResult, write_records
from pipeline.stages.common import budget_params, eos_bias, generation_identity
from pipeline.stages.instruction_filters import NoveltyPool, static_drop_reason


class TGRTSelfInstructStage:
    number = 1
    name = "tgrt_self_instruct"
    title = "Topic-Guided Red-Teaming Self-Instruct"
    version = "2"  # 2: rouge_l_max recorded for drops only, with rouge_l_match
    trains = False

    def requires(self, cfg: PipelineConfig) -> tuple[str, ...]:
        return ()

    def config_slice(self, cfg: PipelineConfig) -> dict[str, Any]:
        return {"seed": cfg.seed, "generation": generation_identity(cfg), "stage1": asdict(cfg.stage1)}

    def input_refs(self, cfg: PipelineConfig) -> dict[str, str]:
        si, tg = cfg.stage1.self_instruct, cfg.stage1.tgrt
        # Seeds of both sources are always read: they seed the novelty pool.
        refs = {"stage1.self_instruct.seed_tasks": si.seed_tasks, "stage1.tgrt.seed_questions": tg.seed_questions}
        if si.enabled:
            refs["stage1.self_instruct.prompt"] = si.prompt
        if tg.enabled:
            refs["stage1.tgrt.topic_prompt"] = tg.topic_prompt
            refs["stage1.tgrt.question_prompt"] = tg.question_prompt
        return refs

    def data_files(self, cfg: PipelineConfig, data_dir: Any = None) -> dict[str, str]:
        return {ref: fingerprint(ref, data_dir, field) for field, ref in self.input_refs(cfg).items()}

    def run(self, ctx: StageContext) -> StageResult:
        s1 = ctx.cfg.stage1
        if not (s1.self_instruct.enabled or s1.tgrt.enabled):
            raise UserError("stage1: both self_instruct.enabled and tgrt.enabled are false; enable at least one")
        seed_tasks = load_seed_tasks(s1.self_instruct.seed_tasks, ctx.data_dir)
        seed_questions = load_seed_questions(s1.tgrt.seed_questions, ctx.data_dir)
        gen_dir = ctx.stage_dir / "generations"
        generation: dict[str, Any] = {}
        candidates: list[dict[str, Any]] = []
        counts: dict[str, Any] = {}

        if s1.self_instruct.enabled:
            si_candidates, stats = self._self_instruct(ctx, seed_tasks, gen_dir)
            candidates += si_candidates
            generation["self_instruct"] = stats.as_dict()
        topics: list[dict[str, str]] = []
        if s1.tgrt.enabled:
            topics, topic_counts, topic_stats = self._brainstorm_topics(ctx, seed_questions, gen_dir)
            counts["tgrt_topics"] = topic_counts
            generation["tgrt_topics"] = topic_stats.as_dict()
            q_candidates, q_stats = self._tgrt_questions(ctx, seed_questions, topics, gen_dir)
            candidates += q_candidates
            generation["tgrt_questions"] = q_stats.as_dict()
        total = GenerationStats()
        for g in generation.values():
            total.merge(GenerationStats(g["requests"], g["prompt_tokens"], g["completion_tokens"], g["engine_seconds"]))
        generation["total"] = total.as_dict()

        if ctx.dist.is_main:
            # The filter runs once, on the merged candidates of all ranks in their fixed order;
            # other ranks only wait for rank 0's manifest.
            kept, counters, pairs_exact = self._filter(
                ctx.cfg, candidates, seed_tasks, seed_questions,
                ctx.progress_callback("stage 1: novelty filter (candidates judged)"),
            )
            counts = {**counters.pop("all").as_dict(), "by_source": {k: c.as_dict() for k, c in counters.items()}, **counts}
            # How many pairs the ROUGE-L index scored exactly: the filter's cost, which depends on
            # how much the candidates' words overlap (see `selfalign bench dedup`).
            counts["rouge_l_pairs_exact"] = pairs_exact
            write_records(ctx.stage_dir / "candidates.jsonl", candidates, CandidateRecord)
            write_records(ctx.stage_dir / "topics.jsonl", topics, TopicRecord)
            write_records(ctx.stage_dir / "prompts.jsonl", kept, PromptRecord)
        return StageResult(
            outputs={"prompts": "prompts.jsonl", "candidates": "candidates.jsonl", "topics": "topics.jsonl", "generations": "generations"},
            primary=["prompts"],
            counts=counts,
            generation=generation,
        )

    # -- Self-Instruct ----------------------------------------------------------------------

    def _self_instruct(self, ctx: StageContext, seed_tasks, gen_dir) -> tuple[list[dict[str, Any]], GenerationStats]:
        si = ctx.cfg.stage1.self_instruct
        if si.seeds_per_prompt > len(seed_tasks):
            raise UserError(f"stage1.self_instruct.seeds_per_prompt={si.seeds_per_prompt} exceeds the {len(seed_tasks)} seed tasks")
        meta = read_input_text(si.prompt, ctx.data_dir, "stage1.self_instruct.prompt")
        requests = []
        for n in range(si.num_requests):
            rid = f"si-{n:06d}"
            rng = random.Random(request_seed(ctx.cfg.seed, f"{rid}:seeds"))
            prompt = self_instruct.encode_prompt(meta, rng.sample(seed_tasks, si.seeds_per_prompt))
            requests.append(GenerationRequest(rid, prompt, request_seed(ctx.cfg.seed, rid)))
        params = SamplingParams(
            max_new_tokens=si.max_new_tokens, temperature=si.temperature, top_p=si.top_p,
            logit_bias=eos_bias(ctx) if si.suppress_eos else {}, **budget_params(ctx.cfg, "self_instruct"),
        )
        records, stats = generate_sharded(
            "self_instruct", requests, params, gen_dir=gen_dir, dist=ctx.dist, engine=ctx.base_engine,
            shared_prefix=meta, chunk_size=ctx.cfg.engine.chunk_size,
            on_progress=ctx.progress_callback("stage 1: self-instruct completions"),
        )
        candidates = []
        for rec in records:
            for p in self_instruct.parse_completion(rec["text"], si.seeds_per_prompt, rec["finish_reason"]):
                candidates.append({
                    "id": f"{rec['id']}-{p.position:02d}",
                    "instruction": p.instruction,
                    "input": p.input,
                    "origin": {"source": "self_instruct", "request_id": rec["id"]},
                    "parse_error": p.reason,
                })
        return candidates, stats

    # -- TGRT -------------------------------------------------------------------------------

    def _question_types(self, tg: TGRTConfig, seed_questions: list[SeedQuestion]) -> list[str]:
        known = list(dict.fromkeys(q.question_type for q in seed_questions))
        if not tg.question_types:
            return known
        for qt in tg.question_types:
            if qt not in known:
                raise unknown_name_error("question type", qt, known, "stage1.tgrt.question_types")
        return list(dict.fromkeys(tg.question_types))

    def _brainstorm_topics(self, ctx: StageContext, seed_questions, gen_dir):
        tg = ctx.cfg.stage1.tgrt
        meta = read_input_text(tg.topic_prompt, ctx.data_dir, "stage1.tgrt.topic_prompt").strip()
        types = self._question_types(tg, seed_questions)
        pool = {qt: [q.topic for q in seed_questions if q.question_type == qt] for qt in types}
        counter = DropCounter()
        stats = GenerationStats()
        per_round = []
        params = SamplingParams(
            max_new_tokens=tg.topic_max_new_tokens, temperature=tg.topic_temperature, top_p=tg.topic_top_p,
            logit_bias=eos_bias(ctx) if tg.suppress_eos else {}, **budget_params(ctx.cfg, "tgrt_topics"),
        )
        for rnd in range(tg.topic_rounds):
            pool = tgrt.balance_topic_pool(pool)
            requests, request_type = [], {}
            for ti, qt in enumerate(types):
                topics = pool[qt]
                if len(topics) < 2 * tg.topics_per_prompt:
                    groups = [[t] for t in topics]
                else:
                    groups = []
                    for i in range(len(topics)):
                        rng = random.Random(request_seed(ctx.cfg.seed, f"topics-r{rnd}-t{ti}-{i}:shuffle"))
                        groups.append(rng.sample(topics, tg.topics_per_prompt))
                if tg.max_topic_prompts_per_type is not None:
                    groups = groups[: tg.max_topic_prompts_per_type]
                for i, group in enumerate(groups):
                    rid = f"topics-r{rnd}-t{ti:02d}-{i:05d}"
                    requests.append(GenerationRequest(rid, tgrt.topic_prompt(meta, qt, group), request_seed(ctx.cfg.seed, rid)))
                    request_type[rid] = qt
            records, round_stats = generate_sharded(
                f"tgrt_topics_round{rnd}", requests, params, gen_dir=gen_dir, dist=ctx.dist, engine=ctx.base_engine,
                chunk_size=ctx.cfg.engine.chunk_size,
                on_progress=ctx.progress_callback(f"stage 1: TGRT topics, round {rnd + 1}/{tg.topic_rounds}"),
            )
            stats.merge(round_stats)
            new = 0
            for rec in records:
                for t in tgrt.parse_topics(rec["text"], rec["finish_reason"]):
                    if t.reason:
                        counter.drop(t.reason)
                    else:
                        counter.keep()
                        pool[request_type[rec["id"]]].append(t.topic)
                        new += 1
            per_round.append({"round": rnd, "requests": len(requests), "topics_parsed": new})
        pool = tgrt.balance_topic_pool(pool)
        if tg.max_topics_per_type is not None:
            pool = {qt: v[: tg.max_topics_per_type] for qt, v in pool.items()}
        pairs = [{"question_type": qt, "topic": t} for qt in types for t in pool[qt]]
        # The reference shuffles the pool before grouping topics into question prompts.
        random.Random(request_seed(ctx.cfg.seed, "tgrt-topic-order")).shuffle(pairs)
        counts = {**counter.as_dict(), "per_round": per_round, "topics_per_type": len(pool[types[0]]) if types else 0}
        return pairs, counts, stats

    def _tgrt_questions(self, ctx: StageContext, seed_questions, topics, gen_dir):
        tg = ctx.cfg.stage1.tgrt
        meta = read_input_text(tg.question_prompt, ctx.data_dir, "stage1.tgrt.question_prompt").strip()
        n_examples = min(tg.seed_examples_per_prompt, len(seed_questions))
        requests, expected = [], {}
        for j, start in enumerate(range(0, len(topics), tg.questions_per_prompt)):
            rid = f"tgrt-q-{j:06d}"
            rng = random.Random(request_seed(ctx.cfg.seed, f"{rid}:examples"))
            targets = [(p["question_type"], p["topic"]) for p in topics[start : start + tg.questions_per_prompt]]
            prompt, expected[rid] = tgrt.question_prompt(meta, rng.sample(seed_questions, n_examples), targets)
            requests.append(GenerationRequest(rid, prompt, request_seed(ctx.cfg.seed, rid)))
        params = SamplingParams(
            max_new_tokens=tg.question_max_new_tokens, temperature=tg.question_temperature, top_p=tg.question_top_p,
            logit_bias=eos_bias(ctx) if tg.suppress_eos else {}, **budget_params(ctx.cfg, "tgrt_questions"),
        )
        records, stats = generate_sharded(
            "tgrt_questions", requests, params, gen_dir=gen_dir, dist=ctx.dist, engine=ctx.base_engine,
            chunk_size=ctx.cfg.engine.chunk_size, on_progress=ctx.progress_callback("stage 1: TGRT questions"),
        )
        candidates = []
        for rec in records:
            for q in tgrt.parse_questions(rec["text"], rec["finish_reason"], expected[rec["id"]]):
                candidates.append({
                    "id": f"{rec['id']}-{q.position:02d}",
                    "instruction": q.instruction,
                    "input": "",
                    "origin": {"source": "tgrt", "question_type": q.question_type, "topic": q.topic, "request_id": rec["id"]},
                    "parse_error": q.reason,
                })
        return candidates, stats

    # -- filters ----------------------------------------------------------------------------

    def _filter(self, cfg: PipelineConfig, candidates, seed_tasks, seed_questions, on_progress=None):
        """Judge candidates in order; annotate each with kept/drop_reason; return the kept prompts,
        the drop counters and the number of pairs the novelty index scored exactly."""
        filters = cfg.stage1.filters
        pool = NoveltyPool(
            filters.rouge_l_threshold,
            [t.instruction for t in seed_tasks] + [q.question for q in seed_questions],
            # token frequencies over the whole run order the index (speed only, not decisions)
            vocabulary=(c["instruction"] for c in candidates),
        )
        counters = {"all": DropCounter(), "self_instruct": DropCounter(), "tgrt": DropCounter()}
        caps = {"self_instruct": cfg.stage1.self_instruct.max_instructions, "tgrt": cfg.stage1.tgrt.max_questions}
        seen_topics: set[tuple[str, str]] = set()
        kept = []
        for n_judged, cand in enumerate(candidates):
            if on_progress is not None and n_judged % 4096 == 0:
                on_progress(n_judged, len(candidates))
            source = cand["origin"]["source"]
            # The reference judges TGRT questions by (type, topic) only (stage1.tgrt.self_instruct_filters).
            instruction_filters = source != "tgrt" or cfg.stage1.tgrt.self_instruct_filters
            reason = cand.pop("parse_error")
            if reason is None and instruction_filters:
                reason = static_drop_reason(cand["instruction"], cand["input"], filters)
            if reason is None and source == "tgrt":
                key = (cand["origin"]["question_type"], cand["origin"]["topic"])
                # One question per (type, topic), as the reference's merge_tgrt_question.py.
                reason = "duplicate_topic" if key in seen_topics else None
            if reason is None and caps[source] is not None and counters[source].kept >= caps[source]:
                reason = "over_max_count"
            if reason is None and instruction_filters:
                verdict = pool.admit(cand["instruction"])
                reason = verdict.reason
                # Dropped: the exact max ROUGE-L F and the pool instruction reaching it. Kept:
                # both null (pairs that cannot pass the threshold are never scored).
                cand["rouge_l_max"] = verdict.rouge_l_max
                cand["rouge_l_match"] = verdict.matched
            cand["kept"] = reason is None
            cand["drop_reason"] = reason
            for name in ("all", source):
                counters[name].drop(reason) if reason else counters[name].keep()
            if reason is None:
                if source == "tgrt":
                    seen_topics.add((cand["origin"]["question_type"], cand["origin"]["topic"]))
                kept.append({k: cand[k] for k in ("id", "instruction", "input", "origin")})
        if on_progress is not None:
            on_progress(len(candidates), len(candidates))
        return kept, counters, pool.pairs_exact
