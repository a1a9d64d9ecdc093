"""Uncertainty for every reported number: 95% intervals and paired tests on the same items (scipy).

* accuracies (0/1 per item): Wilson score interval;
* non-binary means (TruthfulQA MC2) and the Vicuna relative score (a ratio of sums): percentile
  bootstrap over items (``scipy.stats.bootstrap``, fixed seed, so a report is reproducible);
* two checkpoints on the same 0/1 items: exact McNemar test, i.e. a two-sided binomial test on the
  discordant pairs;
* judged outcomes and other paired non-binary comparisons: sign test (binomial on the items where
  one side is better, ties excluded; n says how many remained).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A score with its 95% interval and the number of items behind it."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str  # wilson | bootstrap | none


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of B against A on the items both were scored on."""

    test: str  # mcnemar_exact | sign_test
    n_pairs: int  # items matched by id
    a_better: int  # items where A is right and B wrong (or A's outcome is better)
    b_better: int
    ties: int  # items where both agree (excluded from the test)
    mean_a: float | None
    mean_b: float | None
    p_value: float | None  # None when nothing differs

    @property
    def delta(self) -> float | None:
        if self.mean_a is None or self.mean_b is None:
            return None
        return self.mean_b - self.mean_a


def _bootstrap(data: tuple, statistic, seed: int, **kwargs):
    """``scipy.stats.bootstrap`` with a seeded generator (``rng`` since scipy 1.15, ``random_state`` before)."""
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return stats.bootstrap(
        data, statistic, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
        **{key: np.random.default_rng(seed)}, **kwargs,
    )


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def wilson(successes: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(None, None, None, 0, "none")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), n, "wilson")


def accuracy(values: Sequence[float]) -> Estimate:
    """Wilson interval for a list of 0/1 item scores (rejects anything else)."""
    arr = np.asarray(values, dtype=float)
    if arr.size and not np.all((arr == 0.0) | (arr == 1.0)):
        raise ValueError("accuracy() needs 0/1 item scores; use bootstrap_mean() for graded scores")
    return wilson(int(arr.sum()), int(arr.size))


def bootstrap_mean(values: Sequence[float], seed: int = BOOTSTRAP_SEED) -> Estimate:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return Estimate(None, None, None, 0, "none")
    if arr.size == 1 or np.all(arr == arr[0]):
        # every resample equals the sample: the interval is the point (scipy would warn and give NaN)
        return Estimate(float(arr.mean()), float(arr.mean()), float(arr.mean()), int(arr.size), "bootstrap")
    res = _bootstrap((arr,), np.mean, seed)
    ci = res.confidence_interval
    return Estimate(float(arr.mean()), _nan_to_none(ci.low), _nan_to_none(ci.high), int(arr.size), "bootstrap")


def _ratio_of_sums(numerators: np.ndarray, denominators: np.ndarray, axis: int = -1) -> np.ndarray:
    den = np.sum(denominators, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.sum(numerators, axis=axis) / np.where(den > 0, den, 1), np.nan)


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], seed: int = BOOTSTRAP_SEED) -> Estimate:
    """sum(numerators) / sum(denominators) with a paired percentile bootstrap over items.

    This is the Vicuna "relative score" (model total / baseline total), resampling questions.
    """
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise ValueError("numerators and denominators must pair up item by item")
    n = int(num.size)
    if n == 0 or den.sum() <= 0:
        return Estimate(None, None, None, n, "none")
    value = float(num.sum() / den.sum())
    ratios = num / np.where(den > 0, den, np.nan)
    if n == 1 or (np.all(den > 0) and np.allclose(ratios, ratios[0])):
        return Estimate(value, value, value, n, "bootstrap")
    res = _bootstrap((num, den), _ratio_of_sums, seed, paired=True, vectorized=True)
    ci = res.confidence_interval
    return Estimate(value, _nan_to_none(ci.low), _nan_to_none(ci.high), n, "bootstrap")


def _binom_p(k: int, n: int) -> float | None:
    return float(stats.binomtest(k, n, 0.5).pvalue) if n > 0 else None


def _matched(a: Mapping, b: Mapping) -> list:
    return sorted(set(a) & set(b), key=str)


def mcnemar_exact(a: Mapping[object, float], b: Mapping[object, float]) -> PairedTest:
    """Exact McNemar test of B vs A on 0/1 scores keyed by item id (only ids present in both)."""
    ids = _matched(a, b)
    a_only = sum(1 for i in ids if a[i] == 1 and b[i] == 0)
    b_only = sum(1 for i in ids if a[i] == 0 and b[i] == 1)
    return _binomial_paired_test("mcnemar_exact", ids, a, b, a_better=a_only, b_better=b_only)


def sign_test(a: Mapping[object, float], b: Mapping[object, float]) -> PairedTest:
    """Sign test of B vs A on graded scores keyed by item id (e.g. win=1/tie=0/loss=-1, MC2 mass)."""
    ids = _matched(a, b)
    b_better = sum(1 for i in ids if b[i] > a[i])
    a_better = sum(1 for i in ids if b[i] < a[i])
    return _binomial_paired_test("sign_test", ids, a, b, a_better=a_better, b_better=b_better)


def _binomial_paired_test(
    test: str, ids: list, a: Mapping[object, float], b: Mapping[object, float], *,
    a_better: int, b_better: int,
) -> PairedTest:
    """Both paired tests: an exact two-sided binomial test on the discordant pairs."""
    return PairedTest(
        test=test, n_pairs=len(ids), a_better=a_better, b_better=b_better,
        ties=len(ids) - a_better - b_better,
        mean_a=float(np.mean([a[i] for i in ids])) if ids else None,
        mean_b=float(np.mean([b[i] for i in ids])) if ids else None,
        p_value=_binom_p(b_better, a_better + b_better),
    )


def sign_test_counts(wins: int, losses: int) -> float | None:
    """Two-sided sign test of wins against losses (ties already excluded)."""
    return _binom_p(wins, wins + losses)
