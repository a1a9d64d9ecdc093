"""Stage-1 filters on generated instructions: length, keywords, first character, ROUGE-L novelty.

Reproduces ``post_process_gpt3_response`` and the ROUGE-L > 0.7 rejection of IBM/Dromedary's
``generate_vanilla_instruction.py``, with one pool of kept instructions for the whole run (the
reference kept one per shard and then deduplicated across shards by exact match, missing
duplicates inside a shard). Candidates are judged in a fixed order, so the kept set does not
depend on how generation was sharded. The ROUGE-L check is exact but indexed
(``pipeline.stages.rouge_index``): it scores only the pairs that can exceed the threshold.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.config import InstructionFilterConfig
from pipeline.stages.rouge_index import RougeLIndex


def find_word(word: str, text: str) -> bool:
    """Whole-word, case-insensitive match (the reference's ``find_word_in_string``)."""
    return re.search(rf"\b({re.escape(word)})\b", text, flags=re.IGNORECASE) is not None


@functools.lru_cache(maxsize=8)
def _any_word_pattern(words: tuple[str, ...]) -> re.Pattern | None:
    """One compiled regex matching when ``find_word`` matches any of ``words`` (a million
    candidates at paper scale: compiling per word and text dominated stage 1's filters)."""
    if not words:
        return None
    return re.compile("|".join(rf"\b({re.escape(w)})\b" for w in words), flags=re.IGNORECASE)


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
    blacklist = _any_word_pattern(tuple(cfg.keyword_blacklist))
    if blacklist is not None and (blacklist.search(instruction) or blacklist.search(input_text)):
        return "keyword_blacklist"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "non_ascii_start"
    return None


@dataclass
class Verdict:
    """One novelty decision. For a drop, ``rouge_l_max`` is the exact highest ROUGE-L F against
    the pool and ``matched`` the pool instruction reaching it (the first in pool order on a tie;
    an exact duplicate records 1.0 and the instruction it repeats). For a kept instruction both
    are None: pairs that cannot reach the threshold are never scored, so no max is known."""

    reason: str | None  # None: kept
    rouge_l_max: float | None = None
    matched: str | None = None


class NoveltyPool(RougeLIndex):
    """Instructions kept so far (seeds included); rejects exact and ROUGE-L near duplicates.

    ``judge`` gives the same decision as scoring the candidate against every pool member with
    rouge-score's ROUGE-L F-measure (``RougeScorer(["rougeL"], use_stemmer=False)``) and dropping
    it when the maximum is ``> threshold``; see ``pipeline.stages.rouge_index`` for how it avoids
    scoring almost all pairs. ``vocabulary`` (e.g. every candidate of the run) only orders tokens
    rarest first, which makes the index faster; decisions never depend on it.
    """

    def __init__(self, threshold: float, initial: Sequence[str] = (), vocabulary: Iterable[str] = ()):
        super().__init__(threshold, vocabulary)
        self._keys: dict[str, int] = {}
        for text in initial:
            self.add(text)

    def add(self, instruction: str) -> None:
        self._keys.setdefault(normalize(instruction), len(self))
        self.insert(instruction)

    def judge(self, instruction: str) -> Verdict:
        same = self._keys.get(normalize(instruction))
        if same is not None:
            return Verdict("duplicate", 1.0, self.text(same))
        best = self.best_match(instruction)
        if best is not None:
            score, index = best
            return Verdict("rouge_l_similar", score, self.text(index))
        return Verdict(None)

    def admit(self, instruction: str) -> Verdict:
        """Judge and, when kept, add to the pool."""
        verdict = self.judge(instruction)
        if verdict.reason is None:
            self.add(instruction)
        return verdict
