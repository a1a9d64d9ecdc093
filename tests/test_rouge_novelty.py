"""The indexed ROUGE-L novelty filter decides exactly as rouge-score's all-pairs loop."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from harness.bench.dedup import naive_verdicts
from pipeline.stages.instruction_filters import NoveltyPool
from pipeline.stages.rouge_index import RougeLIndex, rouge_l_fmeasure, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def naive_filter(seeds: list[str], candidates: list[str], threshold: float = 0.7) -> list[tuple]:
    """The pre-index filter (rouge-score against every pool member), as `selfalign bench dedup` checks it."""
    return naive_verdicts(seeds, candidates, threshold)


def indexed_filter(seeds, candidates, threshold=0.7, vocabulary=()):
    pool = NoveltyPool(threshold, seeds, vocabulary=vocabulary)
    return [(v.reason, v.rouge_l_max, v.matched) for v in map(pool.admit, candidates)]


def test_tokenizer_is_rouge_scores():
    for text in ["Hello, World! It's 2023.", "  ", "", "Ünïcode İstanbul straße", "a_b-c d\te\nf", "e.g. 3.14"]:
        assert rouge_tokens(text) == SCORER._tokenizer.tokenize(text)


def test_fmeasure_is_rouge_scores_float_arithmetic():
    for m in range(1, 30):
        for n in range(1, 30):
            for lcs in range(0, min(m, n) + 1):
                a = ["x"] * lcs + ["a"] * (m - lcs)
                b = ["x"] * lcs + ["b"] * (n - lcs)
                assert rouge_l_fmeasure(lcs, m, n) == rouge_scorer._score_lcs(a, b).fmeasure


def test_ties_at_exactly_the_threshold_follow_rouge_scores_float_comparison():
    # 2·7/20 = 0.7 exactly as a fraction; the float formula may land on either side of 0.7.
    seed = "a b c d e f g h i j"
    cases = ["a b c d e f g k l m", "a b c d e f g x", "a b c d e f g h i j k l m n"]
    assert indexed_filter([seed], cases) == naive_filter([seed], cases)
    ties = [c for c in cases if abs(2 * 7 / (10 + len(c.split())) - 0.7) < 1e-12]
    assert ties, "the case list must contain an exact tie"


def _adversarial(rng: random.Random, n: int) -> list[str]:
    vocab = ["the", "a", "of", "x", "y", "z", "write", "poem", "list", "ten", "why", "2", "3"]
    out: list[str] = []
    for _ in range(n):
        kind = rng.random()
        if out and kind < 0.35:  # near-duplicate of an earlier one: word edits
            words = rng.choice(out).split() or ["x"]
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                i = rng.randrange(len(words) + 1)
                if op < 0.4:
                    words.insert(i, rng.choice(vocab))
                elif op < 0.7 and len(words) > 1:
                    del words[min(i, len(words) - 1)]
                else:
                    words[min(i, len(words) - 1)] = rng.choice(vocab)
            out.append(" ".join(words))
        elif kind < 0.45:  # repeated tokens
            out.append(" ".join([rng.choice(vocab)] * rng.randint(1, 8) + rng.choices(vocab, k=rng.randint(0, 4))))
        elif kind < 0.5:  # empty or punctuation-only token lists, very short ones
            out.append(rng.choice(["", "!!!", "?", "x", "x y", "The.", "a a"]))
        else:
            out.append(" ".join(rng.choices(vocab, k=rng.randint(1, 14))))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_decisions_scores_and_matches_equal_the_all_pairs_loop_on_adversarial_streams(seed):
    rng = random.Random(seed)
    seeds = _adversarial(rng, 20)
    candidates = _adversarial(rng, 300)
    expected = naive_filter(seeds, candidates)
    assert indexed_filter(seeds, candidates) == expected
    # The vocabulary only orders the index: any (even a misleading) one gives the same answers.
    assert indexed_filter(seeds, candidates, vocabulary=candidates[::-1] + ["the the the x"]) == expected
    assert {r for r, _, _ in expected} >= {None, "duplicate", "rouge_l_similar"}


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9])
def test_other_thresholds_are_exact_too(threshold):
    rng = random.Random(7)
    seeds, candidates = _adversarial(rng, 10), _adversarial(rng, 250)
    assert indexed_filter(seeds, candidates, threshold) == naive_filter(seeds, candidates, threshold)


def test_the_index_scores_few_pairs_on_distinct_texts():
    rng = random.Random(3)
    words = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.sample(words, 12)) for _ in range(2000)]
    index = RougeLIndex(0.7, vocabulary=texts)
    for t in texts:
        assert index.best_match(t) is None  # 12 random words of 3,000: no near duplicates
        index.insert(t)
    assert index.best_match(texts[5] + " extra") == (rouge_l_fmeasure(12, 13, 12), 5)
    # all pairs would be ~2e6
    assert index.pairs_exact < 50_000
