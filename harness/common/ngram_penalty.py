"""The reference's n-gram frequency penalties (IBM/Dromedary 39a2b1c, llama_dromedary/generation.py).

Shared by the pipeline's engines (stage 4) and the ``selfalign-hf`` backend (Vicuna-80 presets).

Stage 4 of the reference decodes with a tri-token penalty of 1.0 and a quad-token penalty of 2.0
(``verbose_response_generate_65b_dromedary_non_verbose.sh``); its Vicuna demo uses a uni-token
penalty of 0.3 (``run_chatbot_demo.py``). The rule, read from ``generate()`` lines 129-188:

- for an n-gram length n (1..4) with penalty a, the logit of candidate token t drops by
  ``a x count(prefix + (t,))``, where prefix is the last n-1 generated tokens and count is how
  often that n-gram has occurred so far;
- n-grams are counted over generated tokens only, and only those starting at the *second*
  generated token or later (the reference's ``cur_pos > history_length + len(prompt)``); the
  prefix that selects them obeys the same rule;
- only candidates that are word-initial pieces are penalised (``frequency_penalty_starts_only``):
  a piece that starts with the word marker and is not only markers, with an id above
  ``frequency_penalty_min_range`` = 1024 (``get_frequency_penalty_set``, lines 308-317).

SentencePiece vocabularies (LLaMA, Gemma) mark a word start with "▁"; byte-level BPE ones (GPT-2,
Llama 3, our tiny test model) with "Ġ". Counts are kept incrementally per row (a dict from prefix
to {next token: count}), so a step costs O(distinct continuations of one prefix), not a rescan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

WORD_MARKERS = ("▁", "Ġ")  # SentencePiece, byte-level BPE

# NGramPenalties field -> the generation kwarg / SamplingParams field that sets it (the reference's names).
NGRAM_GEN_KWARGS = {
    "unitoken": "unitoken_frequency_penalty",
    "bitoken": "bitoken_frequency_penalty",
    "tritoken": "tritoken_frequency_penalty",
    "quadtoken": "quadtoken_frequency_penalty",
    "starts_only": "frequency_penalty_starts_only",
    "min_token_id": "frequency_penalty_min_id",
}


@dataclass(frozen=True)
class NGramPenalties:
    """Additive frequency penalties by n-gram length (the reference's argument names)."""

    unitoken: float = 0.0
    bitoken: float = 0.0
    tritoken: float = 0.0
    quadtoken: float = 0.0
    starts_only: bool = True  # penalise only word-initial candidates (the reference's default)
    min_token_id: int = 1024  # ... with an id above this (the reference's frequency_penalty_min_range)

    @classmethod
    def from_sampling(cls, params) -> NGramPenalties:
        """The penalties of a ``SamplingParams``."""
        return cls(**{field: getattr(params, name) for field, name in NGRAM_GEN_KWARGS.items()})

    def __post_init__(self) -> None:
        # Values from lm-eval's --gen_kwargs arrive as strings or ints; normalize the types.
        for name in ("unitoken", "bitoken", "tritoken", "quadtoken"):
            object.__setattr__(self, name, float(getattr(self, name)))
        starts_only = self.starts_only
        if isinstance(starts_only, str):
            starts_only = starts_only.strip().lower() in ("1", "true", "yes", "on")
        object.__setattr__(self, "starts_only", bool(starts_only))
        object.__setattr__(self, "min_token_id", int(self.min_token_id))

    @property
    def by_history(self) -> tuple[tuple[int, float], ...]:
        """(history length n-1, penalty) for every active n-gram length."""
        pairs = ((0, self.unitoken), (1, self.bitoken), (2, self.tritoken), (3, self.quadtoken))
        return tuple((h, float(a)) for h, a in pairs if a > 0.0)

    @property
    def active(self) -> bool:
        return bool(self.by_history)


def word_marker(pieces: Sequence[str]) -> str:
    """The word-start marker this vocabulary uses ("▁" or "Ġ")."""
    counts = {m: sum(1 for p in pieces if p and p.startswith(m)) for m in WORD_MARKERS}
    return max(WORD_MARKERS, key=lambda m: counts[m])


def word_initial_ids(tokenizer, min_token_id: int) -> frozenset[int]:
    """Ids of word-initial pieces above ``min_token_id`` (generation.py get_frequency_penalty_set)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    pieces = [p if isinstance(p, str) else "" for p in pieces]
    marker = word_marker(pieces)
    return frozenset(
        i
        for i, piece in enumerate(pieces)
        if i > min_token_id and piece.startswith(marker) and not piece.endswith(marker)
    )


class NGramCounts:
    """One row's n-gram counts over its generated tokens, updated one token at a time."""

    def __init__(self, penalties: NGramPenalties, eligible: frozenset[int] | None):
        self.by_history = penalties.by_history
        # None = every candidate is penalised (starts_only off)
        self.eligible = eligible
        # history length -> prefix -> {next token: count}; only eligible next tokens are stored,
        # since the reference zeroes the frequency of every other candidate.
        self.counts: dict[int, dict[tuple[int, ...], dict[int, int]]] = {
            h: defaultdict(dict) for h, _ in self.by_history
        }

    def add(self, generated: Sequence[int]) -> None:
        """Count the n-grams that end at the newest of ``generated`` (all generated tokens so far)."""
        g = len(generated) - 1
        token = generated[g]
        if self.eligible is not None and token not in self.eligible:
            return
        for h, _ in self.by_history:
            if g > h:  # the n-gram starts at generated index >= 1 (the reference's cur_pos > h + P)
                nexts = self.counts[h][tuple(generated[g - h : g])]
                nexts[token] = nexts.get(token, 0) + 1

    def penalties_for_next(self, generated: Sequence[int]) -> dict[int, float]:
        """{token id: amount to subtract} for the token that follows ``generated``."""
        g = len(generated)  # generated index of the token being chosen
        out: dict[int, float] = {}
        for h, alpha in self.by_history:
            if g > h:
                nexts = self.counts[h].get(tuple(generated[g - h : g]))
                if nexts:
                    for token, count in nexts.items():
                        out[token] = out.get(token, 0.0) + alpha * count
        return out


def apply_ngram_penalties(
    logits: torch.Tensor, counts: Sequence[NGramCounts | None], generated: Sequence[Sequence[int]]
) -> torch.Tensor:
    """(B, V) logits with each row's penalties subtracted (a new tensor when any applies)."""
    rows: list[int] = []
    tokens: list[int] = []
    amounts: list[float] = []
    for r, (row_counts, row_generated) in enumerate(zip(counts, generated, strict=True)):
        if row_counts is None:
            continue
        for token, amount in row_counts.penalties_for_next(row_generated).items():
            if token < logits.shape[-1]:
                rows.append(r)
                tokens.append(token)
                amounts.append(amount)
    if not rows:
        return logits
    logits = logits.clone()
    index = (torch.tensor(rows, device=logits.device), torch.tensor(tokens, device=logits.device))
    logits.index_put_(index, -torch.tensor(amounts, dtype=logits.dtype, device=logits.device), accumulate=True)
    return logits


def hf_logits_processor(penalties: NGramPenalties, tokenizer, prompt_length: int):
    """The penalties as a ``transformers`` LogitsProcessor for ``model.generate``.

    ``generate`` calls it once per step with every row's whole sequence; the rows' prompts
    (left-padded) take the first ``prompt_length`` positions, so what follows is generated."""
    eligible = word_initial_ids(tokenizer, penalties.min_token_id) if penalties.starts_only else None

    class _NGramPenaltyProcessor(LogitsProcessor):
        def __init__(self) -> None:
            self.counts: list[NGramCounts] = []

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            generated = input_ids[:, prompt_length:].tolist()
            if not self.counts:
                self.counts = [NGramCounts(penalties, eligible) for _ in generated]
            elif generated and generated[0]:
                for row_counts, row in zip(self.counts, generated, strict=True):
                    row_counts.add(row)  # the token sampled at the previous step
            return apply_ngram_penalties(scores, self.counts, generated)

    return _NGramPenaltyProcessor()
