"""The generation-engine contract shared by every backend (transformers, vLLM, test fakes).

Stages call ``engine.generate(requests, params)``. Each request carries its own seed, so a
sampled output depends only on (model, prompt, params, seed) and not on batch composition or
on which rank produced it: that is what makes sharded generation merge deterministically.
``shared_prefix`` is a hint: when every prompt starts with it (the constitution, a meta
prompt), a backend may encode it once and reuse its cache; outputs must not change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    # Added to the logits of these token strings' ids (the reference biases "Sorry" by -100).
    logit_bias: dict[str, float] = field(default_factory=dict)
    # The reference's additive n-gram frequency penalties (llama_dromedary/generation.py): the
    # logit of a candidate drops by penalty x how often it already followed the last n-1
    # generated tokens. Only word-initial pieces with an id above frequency_penalty_min_id are
    # penalised unless frequency_penalty_starts_only is off (harness/common/ngram_penalty.py).
    unitoken_frequency_penalty: float = 0.0
    bitoken_frequency_penalty: float = 0.0
    tritoken_frequency_penalty: float = 0.0
    quadtoken_frequency_penalty: float = 0.0
    frequency_penalty_starts_only: bool = True
    frequency_penalty_min_id: int = 1024
    # The reference generator's budget (llama_dromedary/generation.py lines 69-111): max_seq_len
    # counts a prompt's tokens after the shared prefix (at most max_shared_seq_len tokens) as
    # well as the new ones. When set, each request gets min(max_new_tokens, max_seq_len - those
    # prompt tokens), at least 1 (the reference would cut the prompt instead).
    reference_max_seq_len: int | None = None
    reference_max_shared_seq_len: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def request_budgets(params: SamplingParams, prompt_lengths: Sequence[int], prefix_tokens: int) -> list[int]:
    """Each request's new-token budget: ``max_new_tokens``, or the reference's effective budget.

    ``prefix_tokens``: the tokens the prompts share (the shared prefix, BOS included)."""
    if params.reference_max_seq_len is None:
        return [params.max_new_tokens] * len(prompt_lengths)
    shared = min(prefix_tokens, params.reference_max_shared_seq_len or prefix_tokens)
    return [
        max(1, min(params.max_new_tokens, params.reference_max_seq_len - (n - shared)))
        for n in prompt_lengths
    ]


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    prompt: str
    seed: int = 0


@dataclass
class Completion:
    id: str
    text: str  # the new text, cut before the first stop string
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop string or EOS) or "length"
    stop_string: str | None = None  # the stop string that ended it (None: EOS or length)


@runtime_checkable
class GenerationEngine(Protocol):
    name: str

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        params: SamplingParams,
        *,
        shared_prefix: str = "",
    ) -> list[Completion]:
        """One completion per request, in request order."""
        ...


# (model, PEFT adapter directory or None) -> a ready engine; the runner's is cached per pair
EngineFactory = Callable[[str, "str | None"], GenerationEngine]
