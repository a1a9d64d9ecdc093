"""Stage 4's n-gram frequency penalties: the engine's penalised logits, step by step, equal a direct
port of the reference's rule (IBM/Dromedary 39a2b1c, llama_dromedary/llama_dromedary/generation.py)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

import pipeline.engine.transformers_engine as transformers_engine
from harness.common.ngram_penalty import NGramCounts, NGramPenalties, word_initial_ids, word_marker
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.engine.registry import make_engine

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is the capital of France? Answer:",
    "Human: Can you help me? Assistant: Sure!",
    "1. Write a poem. 2. List three colors.",
]
MIN_ID = 256  # the tiny vocabulary has 384 pieces; the reference's 1024 would exempt them all


def reference_starting_pieces(tokenizer, marker: str) -> set[int]:
    """generation.py lines 308-317 (get_frequency_penalty_set), over a HF tokenizer's pieces."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return {i for i, p in enumerate(pieces) if p.startswith(marker) and not p.endswith(marker)}


def reference_penalised_logits(raw_logits, prompt_ids, new_ids, penalties, starting_pieces, min_range):
    """A direct port of generation.py lines 65 and 129-188 for one row (bsz = 1, no prefix cache).

    ``raw_logits[k]`` are the model's logits after ``prompt_ids + new_ids[:k]``; the token chosen
    at each step is taken from ``new_ids`` (what the engine chose). Returns the penalised logits
    of every step."""
    uni, bi, tri, quad = penalties
    tokens = list(prompt_ids) + list(new_ids)
    prompt_len = len(prompt_ids)
    token_seq_freq = defaultdict(int)
    out = []
    for k, cur_pos in enumerate(range(prompt_len, len(tokens))):
        logits = raw_logits[k].clone()
        for frequency_penalty, history_length in [(uni, 0), (bi, 1), (tri, 2), (quad, 3)]:
            if frequency_penalty > 0.0 and cur_pos > history_length + prompt_len:
                total_length = history_length + 1
                history_token_seq = tuple(s for s in token_seq_freq if len(s) == total_length)
                if history_length == 0:
                    history_token_freq = tuple(token_seq_freq[s] for s in history_token_seq)
                    history_token_seq = tuple(s[0] for s in history_token_seq)
                else:
                    history_prefix = tuple(tokens[cur_pos - history_length : cur_pos])
                    history_token_freq = tuple(
                        token_seq_freq[s] for s in history_token_seq if s[:-1] == history_prefix
                    )
                    history_token_seq = tuple(s[-1] for s in history_token_seq if s[:-1] == history_prefix)
                if history_token_seq:
                    history_token_freq = tuple(
                        freq if (token in starting_pieces and token > min_range) else 0
                        for freq, token in zip(history_token_freq, history_token_seq, strict=True)
                    )
                    logits[torch.tensor(history_token_seq)] -= frequency_penalty * torch.tensor(
                        history_token_freq, dtype=torch.float32
                    )
        out.append(logits)
        for frequency_penalty, history_length in [(uni, 0), (bi, 1), (tri, 2), (quad, 3)]:
            if frequency_penalty > 0.0 and cur_pos > history_length + prompt_len:
                token_seq_freq[tuple(tokens[cur_pos - history_length : cur_pos + 1])] += 1
    return out


def _params(penalties, **kw) -> SamplingParams:
    uni, bi, tri, quad = penalties
    return SamplingParams(
        unitoken_frequency_penalty=uni, bitoken_frequency_penalty=bi, tritoken_frequency_penalty=tri,
        quadtoken_frequency_penalty=quad, frequency_penalty_min_id=MIN_ID, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("penalties", [(0.0, 0.0, 1.0, 2.0), (0.3, 0.5, 1.0, 2.0)], ids=["stage4", "all"])
def test_penalised_logits_equal_the_reference_rule_step_by_step(penalties, tiny_model_dir, monkeypatch):
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=3, progress=False)
    requests = [GenerationRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    recorded: dict[tuple[int, int], torch.Tensor] = {}  # (request index, step) -> penalised logits
    in_flight: list = []
    apply, choose = transformers_engine.apply_ngram_penalties, engine._choose

    def recording_choose(rows, *args):
        in_flight[:] = rows
        return choose(rows, *args)

    def recording_apply(logits, counts, generated):
        out = apply(logits, counts, generated)
        for row, row_logits in zip(in_flight, out, strict=True):
            recorded[row.index, len(row.new_ids)] = row_logits.clone()
        return out

    engine._choose = recording_choose
    monkeypatch.setattr(transformers_engine, "apply_ngram_penalties", recording_apply)
    plain = engine.generate(requests, SamplingParams(max_new_tokens=32))
    recorded.clear()
    out = engine.generate(requests, _params(penalties, max_new_tokens=32))
    assert [c.text for c in out] != [c.text for c in plain], "the penalties never changed a choice"

    starting = reference_starting_pieces(engine.tokenizer, "Ġ")
    n_penalised_steps = 0
    for index, (request, completion) in enumerate(zip(requests, out, strict=True)):
        prompt_ids = engine.tokenizer(request.prompt)["input_ids"]
        ours = [recorded[index, k] for k in range(completion.completion_tokens)]
        new_ids = [int(logits.argmax()) for logits in ours]  # greedy: the engine's choices
        # Re-run the prompt + the engine's tokens in one plain forward: the unpenalised logits.
        with torch.no_grad():
            raw = engine.model(torch.tensor([prompt_ids + new_ids])).logits[0, len(prompt_ids) - 1 :].float()
        expected = reference_penalised_logits(raw, prompt_ids, new_ids, penalties, starting, MIN_ID)
        for k, (got, want) in enumerate(zip(ours, expected, strict=True)):
            assert torch.allclose(got, want, atol=1e-4), (request.id, k)
            n_penalised_steps += not torch.allclose(want, raw[k], atol=1e-6)
    assert n_penalised_steps >= 3


def test_greedy_with_penalties_does_not_depend_on_batch_composition(tiny_model_dir):
    requests = [GenerationRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    params = _params((0.3, 0.0, 1.0, 2.0), max_new_tokens=32)
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=1, progress=False)
    one_by_one = [c.text for c in engine.generate(requests, params)]
    engine.batch_size = 3  # rows join and leave a running batch
    assert [c.text for c in engine.generate(requests, params)] == one_by_one
    assert engine.generate(requests[2:3], params)[0].text == one_by_one[2]


def test_counts_follow_the_reference_offsets_and_word_initial_rule():
    # Tokens 1000+ are eligible; 7 is not (an id at or below the minimum, or not word-initial).
    counts = NGramCounts(NGramPenalties(tritoken=1.0, quadtoken=2.0), frozenset(range(1000, 1010)))
    generated: list[int] = []
    for token in [1001, 1002, 1003, 1001, 1002, 1003, 7, 1002, 1003]:
        generated.append(token)
        counts.add(generated)
    # The first generated token starts no n-gram (cur_pos > history_length + len(prompt)):
    # (1001, 1002, 1003) occurred once only, from generated index 3.
    assert counts.counts[2][(1001, 1002)] == {1003: 1}
    assert counts.counts[3][(1003, 1001, 1002)] == {1003: 1}
    assert counts.penalties_for_next(generated[:5]) == {1003: 1.0 + 2.0}  # tri + quad
    assert (7 not in counts.counts[2].get((1003, 1001), {})) and counts.counts[2][(1002, 1003)] == {1001: 1}
    assert NGramCounts(NGramPenalties(tritoken=1.0), None).penalties_for_next([1, 2]) == {}


def test_word_initial_pieces_per_tokenizer_family(tiny_model_dir):
    assert word_marker(["▁the", "s", "▁a", "Ġx"]) == "▁"
    assert word_marker(["Ġthe", "s", "Ġa"]) == "Ġ"
    engine = make_engine("transformers", str(tiny_model_dir), batch_size=1, progress=False)
    ids = word_initial_ids(engine.tokenizer, MIN_ID)
    assert ids == {i for i in reference_starting_pieces(engine.tokenizer, "Ġ") if i > MIN_ID} and ids


def test_selfalign_hf_generation_applies_the_same_penalties(tiny_model_dir):
    """The HF LogitsProcessor (selfalign-hf's generate_until, the Vicuna reference_demo preset)
    chooses what the engine chooses, which the test above ties to the reference's rule."""
    from transformers import LogitsProcessorList

    from harness.common.ngram_penalty import hf_logits_processor

    engine = make_engine("transformers", str(tiny_model_dir), batch_size=2, progress=False)
    params = _params((0.3, 0.0, 1.0, 2.0), max_new_tokens=32)
    requests = [GenerationRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    ours = [c.text for c in engine.generate(requests, params)]
    tokenizer = engine.tokenizer
    tokenizer.padding_side = "left"
    batch = tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    processor = hf_logits_processor(NGramPenalties.from_sampling(params), tokenizer, width)
    with torch.no_grad():
        out = engine.model.generate(
            **batch, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([processor]),
        )  # fmt: skip
    texts = []
    for row in out[:, width:].tolist():
        ids = row[: next((i for i, t in enumerate(row) if t in engine.eos_ids), len(row))]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    assert texts == ours
    plain = [c.text for c in engine.generate(requests, SamplingParams(max_new_tokens=32))]
    assert plain != ours
