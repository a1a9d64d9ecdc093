"""The transformers engine on tiny random models: exactness of shared-prefix reuse, seeds, stops."""

from __future__ import annotations

import pytest
import torch

from harness.common.errors import UserError
from pipeline.engine.base import GenerationEngine, GenerationRequest, SamplingParams
from pipeline.engine.registry import make_engine
from tests.tiny_model import build_random_lora, build_tiny_gemma3

PREFIX = (
    "Question: What is the capital of France? Answer: Paris is the capital of France. "
    "Human: Can you help me? Assistant: Sure! The correct option would be A B. "
)
QUESTIONS = [
    "Can you help me?",
    "The quick brown fox jumps over the lazy dog.",
    "1. Write a poem. 2. List three colors. 3. Explain gravity.",
    "Sure!",
    "Summarize the text.",
    "Topic: science, history. Instruction: Summarize the text. Input: none.",
    "true",
]


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny_gemma3"))


def _requests(prefix=PREFIX, questions=QUESTIONS):
    return [GenerationRequest(f"q{i}", prefix + q, seed=100 + i) for i, q in enumerate(questions)]


def _reference_greedy(engine, requests, max_new_tokens):
    """Plain left-padded ``model.generate`` over the whole list in one batch."""
    tokenizer = engine.tokenizer
    tokenizer.padding_side = "left"
    batch = tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = engine.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    texts = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        ids = []
        for token in row:
            if token in engine.eos_ids:
                break
            ids.append(token)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts


@pytest.mark.parametrize("which", ["llama", "gemma3"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_with_shared_prefix_equals_generate(which, batch_size, tiny_model_dir, gemma_dir):
    model_dir = tiny_model_dir if which == "llama" else gemma_dir
    engine = make_engine("transformers", str(model_dir), batch_size=batch_size, progress=False)
    # Three times the prefix puts it well past the tiny Gemma's 8-token sliding window.
    requests = _requests(prefix=PREFIX * 3)
    params = SamplingParams(max_new_tokens=24)
    ours = engine.generate(requests, params, shared_prefix=PREFIX * 3)
    assert engine.stats["prefix_tokens"] > 50, "the shared prefix was not reused"
    assert [c.text for c in ours] == _reference_greedy(engine, requests, 24)
    assert [c.id for c in ours] == [r.id for r in requests]


@pytest.mark.parametrize("which", ["llama", "gemma3"])
def test_rows_that_end_early_are_replaced_and_every_step_sees_its_own_context(
    which, tiny_model_dir, gemma_dir
):
    """Continuous batching: each step's logits equal a plain forward over prompt + tokens so far.

    Random tiny models barely look at their context, so comparing texts alone would miss a row
    fed another row's positions or cache; comparing every step's logits does not.
    """
    model_dir = tiny_model_dir if which == "llama" else gemma_dir
    engine = make_engine("transformers", str(model_dir), batch_size=3, progress=False)
    requests = _requests(prefix=PREFIX * 3, questions=QUESTIONS * 2)
    free = [c.text for c in engine.generate(requests, SamplingParams(max_new_tokens=12))]
    # A stop string some completions reach early and others never: rows end at different steps.
    stop = next(
        text[i : i + 2]
        for text in free
        for i in range(len(text) // 3)
        if 2 <= sum(text[i : i + 2] in t for t in free) <= len(free) - 3
    )
    step_logits: dict[tuple[int, int], torch.Tensor] = {}
    choose = engine._choose

    def recording_choose(rows, logits, *args):
        for row, row_logits in zip(rows, logits, strict=True):
            step_logits[row.index, len(row.new_ids)] = row_logits.clone()
        return choose(rows, logits, *args)

    engine._choose = recording_choose
    out = engine.generate(requests, SamplingParams(max_new_tokens=12, stop=(stop,)))
    assert [c.text for c in out] == [t[: t.index(stop)] if stop in t else t for t in free]
    assert engine.stats["rows_joined_running_batch"] > 0
    assert len({c.completion_tokens for c in out}) > 1
    for index, (request, completion) in enumerate(zip(requests, out, strict=True)):
        steps = [step_logits[index, s] for s in range(completion.completion_tokens)]
        new_ids = [int(logits.argmax()) for logits in steps]
        prompt_ids = engine.tokenizer(request.prompt)["input_ids"]
        with torch.no_grad():
            reference = engine.model(torch.tensor([prompt_ids + new_ids[:-1]])).logits[0]
        expected = reference[len(prompt_ids) - 1 :]
        assert torch.allclose(torch.stack(steps), expected, atol=1e-4), (index, request.prompt)


def test_prefix_reuse_off_gives_same_greedy_outputs(gemma_dir):
    shared = make_engine("transformers", str(gemma_dir), batch_size=4, progress=False)
    plain = make_engine(
        "transformers", str(gemma_dir), batch_size=4, progress=False, share_prefix=False
    )
    params = SamplingParams(max_new_tokens=16)
    requests = _requests(prefix=PREFIX * 2)
    assert [c.text for c in shared.generate(requests, params)] == [
        c.text for c in plain.generate(requests, params)
    ]
    assert plain.stats["prefix_tokens"] == 0 and shared.stats["prefix_tokens"] > 0
    # The prefix is computed once and reused by a later call with the same preamble.
    computed = shared.stats["prefix_tokens"]
    shared.generate(requests[:2], params)
    assert shared.stats["prefix_tokens"] == computed


def test_prompts_without_common_prefix_still_match_generate(tiny_model_dir):
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=4, progress=False)
    requests = [GenerationRequest(str(i), q) for i, q in enumerate(QUESTIONS)]
    out = engine.generate(requests, SamplingParams(max_new_tokens=12))
    assert engine.stats["prefix_tokens"] == 0
    assert [c.text for c in out] == _reference_greedy(engine, requests, 12)


def test_sampling_depends_only_on_prompt_params_and_seed(gemma_dir):
    engine = make_engine("transformers", str(gemma_dir), batch_size=4, progress=False)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95)
    requests = _requests()
    first = [c.text for c in engine.generate(requests, params)]
    engine.batch_size = 1
    reordered = engine.generate(list(reversed(requests)), params)
    assert [c.text for c in reversed(reordered)] == first
    reseeded = [GenerationRequest(r.id, r.prompt, seed=r.seed + 1) for r in requests]
    assert [c.text for c in engine.generate(reseeded, params)] != first


def test_stop_strings_cut_the_text(tiny_model_dir):
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=4, progress=False)
    requests = _requests()
    free = engine.generate(requests, SamplingParams(max_new_tokens=20))
    # Stop at a piece of text the free-running completions actually produce.
    probe = next(c.text for c in free if len(c.text) > 6)
    stop = probe[3:6]
    stopped = engine.generate(requests, SamplingParams(max_new_tokens=20, stop=(stop,)))
    for full, cut in zip(free, stopped, strict=True):
        if stop in full.text:
            assert cut.text == full.text[: full.text.index(stop)]
            assert cut.finish_reason == "stop" and cut.completion_tokens <= full.completion_tokens
            assert cut.stop_string == stop  # stage 2 puts it back before judging the answer
        else:
            assert cut.text == full.text and cut.finish_reason == full.finish_reason
            assert cut.stop_string is None
    assert any(stop in c.text for c in free)


def test_eos_and_logit_bias(tiny_model_dir):
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=4, progress=False)
    requests = _requests()
    eos = engine.tokenizer.eos_token
    ended = engine.generate(requests, SamplingParams(max_new_tokens=10, logit_bias={eos: 100.0}))
    assert all(
        c.text == "" and c.completion_tokens == 1 and c.finish_reason == "stop" for c in ended
    )
    no_eos = {eos: -100.0}
    free = engine.generate(requests[:1], SamplingParams(max_new_tokens=10, logit_bias=no_eos))[0]
    assert free.finish_reason == "length" and free.completion_tokens == 10
    first_token = engine.tokenizer.encode(free.text, add_special_tokens=False)[0]
    banned = engine.tokenizer.convert_ids_to_tokens(first_token)
    biased = engine.generate(
        requests[:1], SamplingParams(max_new_tokens=10, logit_bias={**no_eos, banned: -100.0})
    )[0]
    assert biased.text != free.text
    assert first_token not in engine.tokenizer.encode(biased.text, add_special_tokens=False)[:1]


def test_token_counts(tiny_model_dir):
    engine = make_engine("transformers", str(tiny_model_dir), progress=False)
    requests = _requests()
    no_eos = {engine.tokenizer.eos_token: -100.0}
    out = engine.generate(requests, SamplingParams(max_new_tokens=5, logit_bias=no_eos))
    assert [c.prompt_tokens for c in out] == [
        len(engine.tokenizer(r.prompt)["input_ids"]) for r in requests
    ]
    assert all(c.completion_tokens == 5 and c.finish_reason == "length" for c in out)
    assert isinstance(engine, GenerationEngine)


def test_peft_adapter_is_applied(tiny_model_dir, tmp_path):
    adapter = build_random_lora(tiny_model_dir, tmp_path / "lora")
    base = make_engine("transformers", str(tiny_model_dir), batch_size=4, progress=False)
    tuned = make_engine(
        "transformers", str(tiny_model_dir), peft=str(adapter), batch_size=4, progress=False
    )
    requests = _requests()
    params = SamplingParams(max_new_tokens=12)
    tuned_out = [c.text for c in tuned.generate(requests, params)]
    assert tuned_out == _reference_greedy(tuned, requests, 12)
    assert tuned_out != [c.text for c in base.generate(requests, params)]


def test_unknown_backend_suggests_the_closest(tiny_model_dir):
    with pytest.raises(UserError, match="did you mean 'transformers'"):
        make_engine("transformer", str(tiny_model_dir))


def test_bad_arguments_are_user_errors(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="dtype"):
        make_engine("transformers", str(tiny_model_dir), dtype="fp8")
    with pytest.raises(UserError, match="model is required"):
        make_engine("transformers")
    with pytest.raises(UserError, match="not a PEFT adapter"):
        make_engine("transformers", str(tiny_model_dir), peft=str(tmp_path))


def test_vllm_backend_is_lazy():
    import importlib.util
    import sys

    import pipeline.engine.vllm_engine  # noqa: F401  (must import without vLLM)

    assert "vllm" not in sys.modules or importlib.util.find_spec("vllm") is not None
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(UserError, match="vLLM"):
            pipeline.engine.vllm_engine.VLLMEngine("/nonexistent")
