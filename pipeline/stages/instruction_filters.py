"""Stage-1 filters on generated instructions: length, keywords, first character, ROUGE-L novelty.

Reproduces ``post_process_gpt3_response`` and the ROUGE-L > 0.7 rejection of IBM/Dromedary's
``generate_vanilla_instruction.py``, with one pool of kept instructions for the whole run (the
reference kept one per shard and then deduplicated across shards by exact match, missing
duplicates inside a shard). Candidates are judged in a fixed order, so the kept set does not
depend on how generation was sharded.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.config import InstructionFilterConfig


def find_word(word: str, text: str) -> bool:
    """Whole-word, case-insensitive match (the reference's ``find_word_in_string``)."""
    return re.search(rf"\b({re.escape(word)})\b", text, flags=re.IGNORECASE) is not None


def normalize(text: str) -> str:
    """The reference merge step's exact-duplicate key: lower case, non-alphanumerics as spaces."""
    return " ".join(re.sub(r"[^a-zA-Z0-9]", " ", text).lower().split())


def static_drop_reason(instruction: str, input_text: str, cfg: InstructionFilterConfig) -> str | None:
    """Why a parsed instruction is rejected before the similarity check (None: it passes)."""
    n_words = len(instruction.split())
    if n_words < cfg.min_words:
        return "too_short"
    if n_words > cfg.max_words:
        return "too_long"
    for text in (instruction, input_text):
        if any(find_word(w, text) for w in cfg.keyword_blacklist):
            return "keyword_blacklist"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "non_ascii_start"
    return None


@dataclass
class Verdict:
    reason: str | None  # None: kept
    rouge_l_max: float | None = None
    rouge_l_mean: float | None = None


class NoveltyPool:
    """Instructions kept so far (seeds included); rejects exact and ROUGE-L near duplicates."""

    def __init__(self, threshold: float, initial: Sequence[str] = ()):
        from rouge_score import rouge_scorer  # imports nltk: ~1 s, only when filtering

        self.threshold = threshold
        self._lcs = rouge_scorer._score_lcs
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._keys: set[str] = set()
        self._tokens: list[list[str]] = []
        for text in initial:
            self.add(text)

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, instruction: str) -> None:
        self._keys.add(normalize(instruction))
        self._tokens.append(self._scorer._tokenizer.tokenize(instruction))

    def judge(self, instruction: str) -> Verdict:
        if normalize(instruction) in self._keys:
            return Verdict("duplicate", 1.0, None)
        tokens = self._scorer._tokenizer.tokenize(instruction)
        scores = [self._lcs(tokens, other).fmeasure for other in self._tokens]
        top = max(scores, default=0.0)
        mean = sum(scores) / len(scores) if scores else 0.0
        if top > self.threshold:
            return Verdict("rouge_l_similar", round(top, 4), round(mean, 4))
        return Verdict(None, round(top, 4), round(mean, 4))

    def admit(self, instruction: str) -> Verdict:
        """Judge and, when kept, add to the pool."""
        verdict = self.judge(instruction)
        if verdict.reason is None:
            self.add(instruction)
        return verdict
