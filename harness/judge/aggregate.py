"""From per-order judgments to the Vicuna-80 figures: relative score, wins/ties/losses, consistency.

The paper's "relative score" is FastChat's total-score ratio: the sum of the judged model's
scores over the sum of the baseline's. With both answer orders judged, a question's score for
each side is the mean over the two orders and its outcome compares those means; a question
counts only when every requested order produced a valid verdict (a question judged in one
order only would bring back the position bias the swap exists to cancel). Excluded questions
are listed and counted, never scored as ties.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

ORDERS = ("baseline_first", "model_first")
WIN, TIE, LOSS = "win", "tie", "loss"


def outcome(model_score: float, baseline_score: float) -> str:
    if model_score > baseline_score:
        return WIN
    return LOSS if model_score < baseline_score else TIE


def tally(pairs: Iterable[tuple[float, float]]) -> dict[str, int]:
    """Wins/ties/losses of the model over ``(model_score, baseline_score)`` pairs."""
    counts = {WIN: 0, TIE: 0, LOSS: 0}
    for model_score, baseline_score in pairs:
        counts[outcome(model_score, baseline_score)] += 1
    return {"wins": counts[WIN], "ties": counts[TIE], "losses": counts[LOSS]}


def relative_score(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Sum of model scores / sum of baseline scores (None when there is nothing to divide)."""
    pairs = list(pairs)
    baseline_total = sum(b for _, b in pairs)
    if not pairs or baseline_total == 0:
        return None
    return sum(m for m, _ in pairs) / baseline_total


@dataclass(frozen=True)
class QuestionResult:
    question_id: int
    category: str
    model_score: float  # mean over the judged orders
    baseline_score: float
    outcome: str
    order_outcomes: dict[str, str]
    consistent: bool | None  # all orders agree (None with a single order)


def question_results(judgments: Sequence[dict[str, Any]], orders: Sequence[str]) -> tuple[list[QuestionResult], list[int]]:
    """(scored questions, ids of questions with a failed or missing order)."""
    by_question: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for j in judgments:
        by_question[int(j["question_id"])][j["order"]] = j
    scored, failed = [], []
    for qid in sorted(by_question):
        per_order = by_question[qid]
        if any(per_order.get(o, {}).get("status") != "ok" for o in orders):
            failed.append(qid)
            continue
        model = [per_order[o]["scores"]["model"] for o in orders]
        baseline = [per_order[o]["scores"]["baseline"] for o in orders]
        order_outcomes = {o: outcome(m, b) for o, m, b in zip(orders, model, baseline, strict=True)}
        model_mean, baseline_mean = sum(model) / len(model), sum(baseline) / len(baseline)
        scored.append(
            QuestionResult(
                question_id=qid,
                category=next(iter(per_order.values()))["category"],
                model_score=model_mean,
                baseline_score=baseline_mean,
                outcome=outcome(model_mean, baseline_mean),
                order_outcomes=order_outcomes,
                consistent=len(set(order_outcomes.values())) == 1 if len(orders) > 1 else None,
            )
        )
    return scored, failed


def _block(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "n": len(pairs),
        "relative_score": relative_score(pairs),
        "model_total": sum(m for m, _ in pairs),
        "baseline_total": sum(b for _, b in pairs),
        **tally(pairs),
    }


def _bootstrap_ci(pairs: list[tuple[float, float]], seed: int, n_resamples: int = 2000) -> list[float] | None:
    """95% percentile interval of the relative score, resampling questions."""
    if len(pairs) < 2:
        return None

    data = np.asarray(pairs, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(data), size=(n_resamples, len(data)))
    model_totals = data[idx, 0].sum(axis=1)
    baseline_totals = data[idx, 1].sum(axis=1)
    ratios = model_totals[baseline_totals > 0] / baseline_totals[baseline_totals > 0]
    if len(ratios) == 0:
        return None
    low, high = np.percentile(ratios, [2.5, 97.5])
    return [float(low), float(high)]


def summarize(judgments: Sequence[dict[str, Any]], orders: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """The aggregate block of ``summary.json`` (see ``harness.judge`` for the schema)."""
    scored, failed_questions = question_results(judgments, orders)
    pairs = [(r.model_score, r.baseline_score) for r in scored]
    overall = _block(pairs)
    n = len(scored)
    # alpaca_eval-style preference: win 1, tie 0.5, loss 0; mean and its standard error
    prefs = [1.0 if r.outcome == WIN else 0.5 if r.outcome == TIE else 0.0 for r in scored]
    win_rate = sum(prefs) / n if n else None
    win_rate_stderr = None
    if n > 1:
        mean = win_rate
        win_rate_stderr = (sum((p - mean) ** 2 for p in prefs) / (n - 1) / n) ** 0.5
    sign_test_p = None
    if overall["wins"] + overall["losses"] > 0:
        sign_test_p = float(binomtest(overall["wins"], overall["wins"] + overall["losses"], 0.5).pvalue)
    paired = [r for r in scored if r.consistent is not None]
    by_order = {}
    for order in orders:
        ok = [j for j in judgments if j["order"] == order and j["status"] == "ok"]
        by_order[order] = _block([(j["scores"]["model"], j["scores"]["baseline"]) for j in ok])
    by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in scored:
        by_category[r.category].append((r.model_score, r.baseline_score))
    return {
        **{k: overall[k] for k in ("relative_score", "wins", "ties", "losses", "model_total", "baseline_total")},
        "relative_score_ci95": _bootstrap_ci(pairs, seed),
        "win_rate": win_rate,
        "win_rate_stderr": win_rate_stderr,
        "sign_test_p": sign_test_p,
        "n_scored": n,
        "n_failed_questions": len(failed_questions),
        "failed_question_ids": failed_questions,
        "order_consistency": (sum(r.consistent for r in paired) / len(paired)) if paired else None,
        "n_order_pairs": len(paired),
        "by_order": by_order,
        "by_category": {c: _block(p) for c, p in sorted(by_category.items())},
        "per_question": [asdict(r) for r in scored],
    }
