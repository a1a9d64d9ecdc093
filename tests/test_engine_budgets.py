"""generation_budgets: reference — the released generator's effective new-token budgets
(IBM/Dromedary 39a2b1c llama_dromedary/llama_dromedary/generation.py), per request."""

from __future__ import annotations

import random

import pytest

from harness.common.errors import UserError
from pipeline.config import REFERENCE_SEQ_LENS, PipelineConfig
from pipeline.engine.base import GenerationRequest, SamplingParams, request_budgets
from pipeline.engine.registry import make_engine
from pipeline.stages.common import budget_params, generation_identity


def reference_new_tokens(prompt_lengths, common_prefix, max_gen_len, max_seq_len, max_shared_seq_len):
    """generation.py lines 86-111 and 215-220 for one batch (prefix cache on, no prompt cut):
    how many tokens each row gets to generate."""
    max_prompt_size = max(prompt_lengths)
    total_len = min(max_seq_len + max_shared_seq_len, max_gen_len + max_prompt_size)
    prev_pos = min(common_prefix, min(prompt_lengths) - 2, max_shared_seq_len)  # lines 101-108
    total_len = min(total_len, max_seq_len + prev_pos)  # line 111
    return [min(max_gen_len, total_len - n) for n in prompt_lengths]  # lines 118 and 220


@pytest.mark.parametrize("step, prefix, max_gen_len", [
    ("self_align", 1700, 256),  # the constitution; paper: 256 - (question + ~9)
    ("verbose_clone", 600, 512),
    ("tgrt_questions", 200, 384),
    ("self_instruct", 517, 1024),  # the meta prompt is longer than the 512-token shared limit
])  # fmt: skip
def test_budgets_equal_the_reference_generators(step, prefix, max_gen_len):
    max_seq_len, max_shared = REFERENCE_SEQ_LENS[step]
    rng = random.Random(step)
    for _ in range(20):
        lengths = [prefix + rng.randint(3, 150) for _ in range(rng.randint(1, 8))]
        params = SamplingParams(
            max_new_tokens=max_gen_len, reference_max_seq_len=max_seq_len, reference_max_shared_seq_len=max_shared
        )
        expected = reference_new_tokens(lengths, prefix, max_gen_len, max_seq_len, max_shared)
        assert request_budgets(params, lengths, prefix) == expected
    flat = SamplingParams(max_new_tokens=max_gen_len)
    assert request_budgets(flat, [prefix + 9, prefix + 99], prefix) == [max_gen_len] * 2


def test_engine_stops_each_request_at_its_budget(tiny_model_dir):
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=3, progress=False)
    prefix = "Question: What is the capital of France? Answer: Paris is the capital of France. "
    questions = ["Why?", "The quick brown fox jumps over the lazy dog.", "1. Write a poem. 2. List three colors."]
    requests = [GenerationRequest(f"q{i}", prefix + q) for i, q in enumerate(questions)]
    params = SamplingParams(max_new_tokens=30, reference_max_seq_len=24, reference_max_shared_seq_len=1000)
    out = engine.generate(requests, params, shared_prefix=prefix)
    prefix_len = len(engine.tokenizer(prefix)["input_ids"])
    budgets = [min(30, 24 - (len(engine.tokenizer(r.prompt)["input_ids"]) - prefix_len)) for r in requests]
    assert len(set(budgets)) == 3
    for completion, budget in zip(out, budgets, strict=True):
        assert completion.completion_tokens == budget or completion.finish_reason == "stop"
        assert completion.completion_tokens <= budget
    assert any(c.finish_reason == "length" for c in out)


def test_pipeline_option_selects_the_reference_budgets():
    cfg = PipelineConfig()
    assert budget_params(cfg, "self_align") == {} and "budgets" not in generation_identity(cfg)
    cfg.generation_budgets = "reference"
    assert budget_params(cfg, "self_align") == {"reference_max_seq_len": 256, "reference_max_shared_seq_len": 1792}
    assert generation_identity(cfg)["budgets"] == "reference"  # a changed stage hash: stages rerun
    cfg.generation_budgets = "script"
    with pytest.raises(UserError, match="generation_budgets='script': use one of paper, reference"):
        budget_params(cfg, "self_align")
