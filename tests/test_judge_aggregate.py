"""Aggregation of per-order judgments: relative score, outcomes, consistency, failures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness.judge.aggregate import (
    ORDERS,
    outcome,
    question_results,
    relative_score,
    summarize,
    tally,
)


def judgment(qid: int, order: str, model: float | None, baseline: float | None, category: str = "generic") -> dict:
    ok = model is not None
    return {
        "question_id": qid,
        "category": category,
        "order": order,
        "status": "ok" if ok else "parse_failed",
        "scores": {"model": model, "baseline": baseline} if ok else None,
    }


def test_outcome_tally_and_ratio():
    assert [outcome(9, 8), outcome(8, 8), outcome(7, 8)] == ["win", "tie", "loss"]
    pairs = [(9, 8), (8, 8), (7, 8), (6.5, 9)]
    assert tally(pairs) == {"wins": 1, "ties": 1, "losses": 2}
    assert relative_score(pairs) == pytest.approx(30.5 / 33)
    assert relative_score([]) is None
    assert relative_score([(3, 0)]) is None  # nothing to divide by: no ratio, not infinity


def test_both_orders_are_averaged_and_consistency_counted():
    judgments = [
        judgment(1, "baseline_first", 9, 7),
        judgment(1, "model_first", 8, 7),  # win in both orders: consistent
        judgment(2, "baseline_first", 6, 8),
        judgment(2, "model_first", 9, 7),  # loss then win: inconsistent; mean 7.5 vs 7.5: tie
        judgment(3, "baseline_first", 5, 5, "math"),
        judgment(3, "model_first", 5, 5, "math"),
    ]
    s = summarize(judgments, ORDERS)
    assert (s["wins"], s["ties"], s["losses"]) == (1, 2, 0)
    assert s["model_total"] == pytest.approx(8.5 + 7.5 + 5)
    assert s["relative_score"] == pytest.approx((8.5 + 7.5 + 5) / (7 + 7.5 + 5))
    assert s["order_consistency"] == pytest.approx(2 / 3)
    assert s["n_order_pairs"] == 3
    assert s["by_order"]["baseline_first"] == {
        "n": 3, "relative_score": pytest.approx(20 / 20), "model_total": 20, "baseline_total": 20,
        "wins": 1, "ties": 1, "losses": 1,
    }
    assert s["by_category"]["math"]["n"] == 1 and s["by_category"]["generic"]["n"] == 2
    assert [q["question_id"] for q in s["per_question"]] == [1, 2, 3]
    assert s["per_question"][1]["order_outcomes"] == {"baseline_first": "loss", "model_first": "win"}


def test_a_failed_order_excludes_the_question_and_is_listed():
    judgments = [
        judgment(1, "baseline_first", 9, 7),
        judgment(1, "model_first", None, None),  # failed: never a tie, never a 0
        judgment(2, "baseline_first", 4, 8),
        judgment(2, "model_first", 5, 8),
    ]
    s = summarize(judgments, ORDERS)
    assert s["failed_question_ids"] == [1] and s["n_failed_questions"] == 1
    assert (s["wins"], s["ties"], s["losses"], s["n_scored"]) == (0, 0, 1, 1)
    assert s["relative_score"] == pytest.approx(4.5 / 8)
    # the per-order view still uses the order that did succeed
    assert s["by_order"]["baseline_first"]["n"] == 2 and s["by_order"]["model_first"]["n"] == 1


def test_missing_order_counts_as_failed():
    scored, failed = question_results([judgment(1, "baseline_first", 9, 7)], ORDERS)
    assert scored == [] and failed == [1]
    scored, failed = question_results([judgment(1, "baseline_first", 9, 7)], ("baseline_first",))
    assert len(scored) == 1 and scored[0].consistent is None and failed == []


def test_uncertainty_fields():
    judgments = [judgment(q, o, 8 if q % 3 else 5, 7) for q in range(1, 31) for o in ORDERS]
    s = summarize(judgments, ORDERS, seed=0)
    assert s["wins"] == 20 and s["losses"] == 10
    assert s["relative_score"] == 1.0  # (20 * 8 + 10 * 5) / (30 * 7)
    # the report's estimator (paired percentile bootstrap over questions, seed 0), as scipy computes it
    model, base = np.array([8.0 if q % 3 else 5.0 for q in range(1, 31)]), np.full(30, 7.0)
    ci = scipy_stats.bootstrap((model, base), lambda m, b, axis=-1: m.sum(axis) / b.sum(axis), paired=True, vectorized=True,
                               n_resamples=2000, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert s["relative_score_ci95"] == pytest.approx([ci.low, ci.high], abs=1e-12)
    assert s["relative_score_ci95"][0] < 1.0 < s["relative_score_ci95"][1]
    assert s["win_rate"] == pytest.approx(20 / 30)
    assert s["win_rate_stderr"] == pytest.approx(scipy_stats.sem([1.0] * 20 + [0.0] * 10), abs=1e-12)
    assert s["sign_test_p"] == pytest.approx(scipy_stats.binomtest(20, 30).pvalue, abs=1e-12)
    assert s["sign_test_p"] == pytest.approx(0.0987, abs=1e-4)
    empty = summarize([], ORDERS)
    assert empty["relative_score"] is None and empty["relative_score_ci95"] is None and empty["win_rate"] is None
