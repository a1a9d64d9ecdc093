"""Exact ROUGE-L near-duplicate search over a growing pool of texts, without scoring every pair.

The question stage 1 asks of each candidate is "does any pool member have ROUGE-L F > t?"
(rouge-score's ``RougeScorer(["rougeL"], use_stemmer=False)``: lower-cased alphanumeric tokens,
F = 2·LCS/(|a|+|b|)). Scoring every pair is quadratic: 3.6e10 pairs at the paper's scale. Two
bounds that hold for every pair decide which pairs can pass, so only those are scored:

- LCS ≤ min(|a|, |b|), so F > t needs ``|b| ≥ r·|a|`` with ``r = t / (2 − t)`` (length filter);
- LCS ≤ the multiset overlap O of the two token lists, so F > t needs ``O ≥ t·(|a|+|b|)/2``,
  at least ``α(|a|) = ⌈r·|a|⌉`` whatever the partner's length; and at the first common element
  of the two sorted lists, at positions (i, j), O ≤ 1 + min(|a|−1−i, |b|−1−j) (PPJoin's
  positional filter).

A multiset is made a set by numbering repeats (the 2nd "the" is the element ("the", 2)), so
set-similarity-join prefix filtering applies: with every set sorted by one global element order,
two sets sharing at least α elements share an element among the first ``|x| − α + 1`` of each.
Each pool member is indexed under the elements of that prefix (grouped by its length); a
candidate looks up its own prefix in the lengths the length filter allows. Only those pairs get
an exact LCS, computed by rapidfuzz (compiled) on token ids. The element order is rarest first
when a vocabulary is given (short posting lists), but any fixed order gives the same answers.

The bounds use ``t − 1e-9`` and the final score is computed with rouge-score's own floating-point
formula, so a pair at exactly the threshold (F = 0.7 as a fraction, which may round either way
in floating point) is decided as rouge-score decides it.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

# rouge_score.tokenize.tokenize(text, stemmer=None), without importing rouge_score's nltk stack:
# lower case, non-alphanumerics to spaces, split, keep [a-z0-9]+ tokens.
_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_VALID_TOKEN = re.compile(r"^[a-z0-9]+$")

# Bounds are loosened by this much so that floating-point rounding can never prune a pair that
# rouge-score's float arithmetic would put above the threshold.
_MARGIN = 1e-9

# Token ids travel to rapidfuzz as the characters of a str (its fastest path), skipping surrogates.
_CHAR_BASE = 0x100
_SURROGATES = (0xD800, 0xE000)
_MAX_ID = 0x10FFFF - _CHAR_BASE - (_SURROGATES[1] - _SURROGATES[0])


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer (no stemming)."""
    return [t for t in _NON_ALPHANUM.sub(" ", text.lower()).split() if _VALID_TOKEN.match(t)]


def rouge_l_fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's ``_score_lcs(...).fmeasure`` given the LCS length, in its float arithmetic."""
    if not target_len or not prediction_len:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _char(token_id: int) -> str:
    code = token_id + _CHAR_BASE
    return chr(code if code < _SURROGATES[0] else code + _SURROGATES[1] - _SURROGATES[0])


class RougeLIndex:
    """A pool of texts that answers "which member has the highest ROUGE-L F above ``threshold``
    against this text?" exactly, scoring only the pairs the bounds cannot rule out."""

    def __init__(self, threshold: float, vocabulary: Iterable[str] = ()):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"ROUGE-L threshold {threshold} must be in (0, 1)")
        self.threshold = threshold
        bound = threshold - _MARGIN
        self._ratio = bound / (2.0 - bound)  # length filter and α(n) = ⌈ratio·n⌉
        self._half_bound = bound / 2.0
        self._token_ids: dict[str, int] = {}
        self._rank: dict[tuple[int, int], int] = {}  # (token id, occurrence) -> order; lower = rarer
        self._unseen = 0
        self._texts: list[str] = []
        self._seqs: list[str] = []
        self._lens = array("I")  # token count of each member
        # element -> pool indices (ascending) of the members with that element in their prefix
        self._postings: dict[int, array] = {}
        self.pairs_exact = 0  # pairs whose LCS was computed
        self._learn_order(vocabulary)

    def __len__(self) -> int:
        return len(self._texts)

    def text(self, index: int) -> str:
        return self._texts[index]

    # -- element order -------------------------------------------------------------------------

    def _learn_order(self, vocabulary: Iterable[str]) -> None:
        """Rank elements by their frequency in ``vocabulary`` (ascending), ties by first sight."""
        freq: Counter[tuple[int, int]] = Counter()
        for text in vocabulary:
            for tok, count in Counter(self._ids(rouge_tokens(text))).items():
                for k in range(1, count + 1):
                    freq[(tok, k)] += 1
        # Counter keeps first-insertion order, and sorted() is stable: ties by first sight.
        for rank, element in enumerate(sorted(freq, key=freq.__getitem__)):
            self._rank[element] = rank

    def _ids(self, tokens: list[str]) -> list[int]:
        ids = self._token_ids
        out = []
        for t in tokens:
            i = ids.get(t)
            if i is None:
                i = ids[t] = len(ids)
                if i > _MAX_ID:
                    raise RuntimeError(f"ROUGE-L index: more than {_MAX_ID} distinct tokens")
            out.append(i)
        return out

    def _elements(self, ids: list[int]) -> list[int]:
        """The multiset as ranked elements, rarest first."""
        seen: Counter[int] = Counter()
        ranks = []
        for tok in ids:
            seen[tok] += 1
            element = (tok, seen[tok])
            rank = self._rank.get(element)
            if rank is None:
                # Never seen in the vocabulary: rarer than everything known. A fixed position,
                # assigned once, keeps the order one total order for the whole run.
                self._unseen += 1
                rank = self._rank[element] = -self._unseen
            ranks.append(rank)
        ranks.sort()
        return ranks

    def _prefix_len(self, n: int) -> int:
        alpha = max(1, math.ceil(self._ratio * n - _MARGIN))
        return max(1, n - alpha + 1)

    # -- pool ------------------------------------------------------------------------------------

    def insert(self, text: str) -> int:
        """Add ``text`` to the pool; returns its index."""
        ids = self._ids(rouge_tokens(text))
        index = len(self._texts)
        self._texts.append(text)
        self._seqs.append("".join(map(_char, ids)))
        n = len(ids)
        self._lens.append(n)
        if n:
            postings = self._postings
            for position, element in enumerate(self._elements(ids)[: self._prefix_len(n)]):
                lst = postings.get(element)
                if lst is None:
                    lst = postings[element] = array("I")
                lst.append(index)
                lst.append(position)
        return index

    def best_match(self, text: str) -> tuple[float, int] | None:
        """``(F, index)`` of the pool member with the highest ROUGE-L F against ``text`` when that
        F exceeds the threshold (the lowest index on a tie), else None."""
        ids = self._ids(rouge_tokens(text))
        m = len(ids)
        if not m:
            return None  # rouge-score scores an empty text 0 against anything
        prefix = self._elements(ids)[: self._prefix_len(m)]
        # Postings hold (pool index, position in that member's sorted elements) pairs. Views on
        # the arrays live only inside this call (an exported buffer cannot grow).
        found, x_rest = [], []
        for i, lst in enumerate(map(self._postings.get, prefix)):
            if lst is not None:
                found.append(np.frombuffer(lst, dtype=np.uint32).reshape(-1, 2))
                x_rest.append(np.full(len(lst) // 2, m - 1 - i, dtype=np.int64))
        if not found:
            return None
        hits = np.concatenate(found)
        index, y_pos = hits[:, 0], hits[:, 1].astype(np.int64)
        lens = np.frombuffer(self._lens, dtype=np.uint32)[index].astype(np.int64)
        n_lo = math.ceil(self._ratio * m - _MARGIN)
        n_hi = math.floor(m / self._ratio + _MARGIN)
        # Positional filter (PPJoin): at the pair's first common element, at positions (i, j) of
        # the two sorted element lists, the overlap is at most 1 + min(m-1-i, n-1-j); later
        # common elements give smaller bounds, so a pair that can pass passes at some hit.
        overlap_bound = 1 + np.minimum(np.concatenate(x_rest), lens - 1 - y_pos)
        need = np.ceil(self._half_bound * (m + lens) - _MARGIN)
        keep = (lens >= n_lo) & (lens <= n_hi) & (overlap_bound >= need)
        del found, hits
        index = np.unique(index[keep])
        if not index.size:
            return None
        lens = np.frombuffer(self._lens, dtype=np.uint32)[index].astype(np.int64)
        # The smallest LCS that can give F >= the (loosened) threshold, per pair.
        need = np.ceil(self._half_bound * (m + lens) - _MARGIN).astype(np.int64)
        seqs = self._seqs
        choices = [seqs[i] for i in index.tolist()]
        self.pairs_exact += len(choices)
        lcs = process.cdist(
            ["".join(map(_char, ids))], choices, scorer=LCSseq.similarity,
            score_cutoff=int(need.min()), dtype=np.int32, workers=1,
        )[0]
        best_f, best_index = -1.0, -1
        for hit in np.flatnonzero(lcs >= need).tolist():  # ascending pool index: ties keep the first
            f = rouge_l_fmeasure(int(lcs[hit]), m, int(lens[hit]))
            if f > self.threshold and f > best_f:
                best_f, best_index = f, int(index[hit])
        return (best_f, best_index) if best_index >= 0 else None
