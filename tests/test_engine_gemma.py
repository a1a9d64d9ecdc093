"""The engine on the real Gemma 3 270M (slow): the constitution as a shared prefix, exact greedy."""

from __future__ import annotations

import pytest

from pipeline.engine.base import GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow


def test_gemma_greedy_with_constitution_prefix_equals_generate(data_dir):
    from harness.bench.generation import cut_completions, plain_generate, stage2_prompts
    from pipeline.engine.registry import make_engine

    engine = make_engine("transformers", "gemma-3-270m", batch_size=2, progress=False)
    constitution, prompts = stage2_prompts(3, str(data_dir))
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(prompts)]
    # Stopping at the end of the internal thoughts ends rows at different steps, so the third
    # prompt joins a running batch.
    params = SamplingParams(max_new_tokens=64, stop=("\n\n",))
    ours = engine.generate(requests, params, shared_prefix=constitution)
    # The constitution (~1.6k tokens) is far past Gemma's 512-token sliding window.
    assert engine.stats["prefix_tokens"] > 1000
    assert engine.stats["rows_joined_running_batch"] == 1
    rows = plain_generate(engine.model, engine.tokenizer, prompts, 2, params)
    texts, counts = cut_completions(rows, engine.tokenizer, engine.eos_ids, params)
    assert [c.text for c in ours] == texts
    assert [c.completion_tokens for c in ours] == counts
