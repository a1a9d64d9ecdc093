"""``selfalign bench dedup``: stage 1's ROUGE-L novelty filter on a realistic candidate stream.

The stream (deterministic for a seed) mixes what a base model continuing a Self-Instruct list
writes, built from real instructions and questions (Dromedary seed tasks and TGRT seed questions,
TruthfulQA, Vicuna-80, HHH): exact repeats (also with other case or punctuation), near-duplicates
by one to three word edits, paraphrases of another length (a clause added or the end cut off),
and novel instructions (a real instruction's shape with most words replaced from the data's
vocabulary). Repeats and edits draw from earlier candidates as well as the seeds, as a model
re-sampling popular instructions does.

The indexed filter (``pipeline.stages.instruction_filters.NoveltyPool``, seeded with the 175
seed tasks and 20 seed questions as in stage 1) judges all N candidates; the all-pairs loop
with rouge-score's own ``_score_lcs`` judges the first ``--check-prefix`` candidates, and every
verdict (reason, max score, matched instruction) must be equal.
"""

from __future__ import annotations

import random
import re
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from rouge_score import rouge_scorer

from harness import data
from harness.bench.report import write_report
from harness.common.errors import UserError
from pipeline.engine import fake_text
from pipeline.stages.instruction_filters import NoveltyPool, normalize

SEED_TASKS = "dromedary/prompts/self_instruct_seed_tasks.jsonl"
SEED_QUESTIONS = "dromedary/prompts/tgrt_self_instruct_seed_questions.jsonl"
TRUTHFULQA = "truthfulqa/data/v0/mc_task.json"
VICUNA = "vicuna_bench/fastchat/eval/table/question.jsonl"
HHH = "bigbench_hhh/bigbench/benchmark_tasks/hhh_alignment/{}/task.json"

# Stream mix (fractions of candidates). Chosen so that about 40% are dropped as duplicates;
# see the README's `bench dedup` section for how that compares with the reference.
MIX = {"exact_repeat": 0.10, "word_edit": 0.20, "length_variant": 0.12, "novel": 0.58}


MAX_SOURCE_WORDS = 40


@dataclass
class DedupBenchConfig:
    n: int = 300_000
    check_prefix: int = 5_000  # candidates also judged by the all-pairs rouge-score loop
    threshold: float = 0.7
    seed: int = 0
    data_dir: str | None = None
    json: str | None = None


def seed_pool(data_dir: str | None) -> list[str]:
    """What stage 1 seeds its pool with: the seed tasks' and seed questions' instructions."""
    return [t["instruction"] for t in data.read_jsonl(SEED_TASKS, data_dir)] + [
        q["question"] for q in data.read_jsonl(SEED_QUESTIONS, data_dir)
    ]


def source_texts(data_dir: str | None) -> list[str]:
    """Real instructions and questions the stream is made from."""
    texts = seed_pool(data_dir)
    texts += [q["question"] for q in data.read_json(TRUTHFULQA, data_dir)]
    texts += [q["text"] for q in data.read_jsonl(VICUNA, data_dir)]
    for category in ("harmless", "helpful", "honest", "other"):
        texts += [ex["input"] for ex in data.read_json(HHH.format(category), data_dir)["examples"]]
    # Long HHH dialogues are not instructions a Self-Instruct list holds (the reference's
    # instructions are mostly under 40 words); they only serve as vocabulary.
    return [" ".join(t.split()) for t in texts if 0 < len(t.split()) <= MAX_SOURCE_WORDS]


def candidate_stream(n: int, seed: int, sources: list[str]) -> tuple[list[str], dict[str, int]]:
    """``n`` candidates in a fixed order, and how many of each kind."""
    rng = random.Random(seed)
    vocabulary = sorted({w for t in sources for w in re.findall(r"[A-Za-z]{3,}", t.lower())})
    kinds, weights = list(MIX), list(MIX.values())
    out: list[str] = []
    made = dict.fromkeys(MIX, 0)
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        # Re-use earlier candidates (recent ones more often) as well as the real texts.
        if out and rng.random() < 0.7:
            base = out[max(0, len(out) - 1 - int(rng.expovariate(1 / 2000)))]
        else:
            base = rng.choice(sources)
        if kind == "exact_repeat":
            text = fake_text.surface_variant(base, rng)
        elif kind == "word_edit":
            text = fake_text.word_edits(base, rng, vocabulary, rng.randint(1, 3))
        elif kind == "length_variant":
            text = fake_text.vary_length(base, rng)
        else:
            text = fake_text.novel(rng.choice(sources), rng, vocabulary)
        made[kind] += 1
        out.append(text)
    return out, made


def naive_verdicts(seeds: list[str], candidates: list[str], threshold: float) -> list[tuple[Any, ...]]:
    """The all-pairs loop: exact-key duplicates, then rouge-score's LCS against every pool member."""
    tokenizer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer
    pool, tokens, keys = list(seeds), [tokenizer.tokenize(t) for t in seeds], {}
    for i, t in enumerate(seeds):
        keys.setdefault(normalize(t), i)
    out = []
    for cand in candidates:
        key = normalize(cand)
        if key in keys:
            out.append(("duplicate", 1.0, pool[keys[key]]))
            continue
        toks = tokenizer.tokenize(cand)
        scores = [rouge_scorer._score_lcs(toks, other).fmeasure for other in tokens]
        top = max(scores, default=0.0)
        if top > threshold:
            out.append(("rouge_l_similar", top, pool[scores.index(top)]))
            continue
        out.append((None, None, None))
        keys.setdefault(key, len(pool))
        pool.append(cand)
        tokens.append(toks)
    return out


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass(frozen=True)
class DedupMeasurement:
    """What ``measure_dedup`` measured: the indexed filter on the stream, the all-pairs loop on its prefix."""

    seeds: int
    kinds: dict[str, int]  # candidates of each kind in the stream
    stream_s: float  # building the stream
    reasons: dict[str, int]  # verdicts: "kept" or the drop reason
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    pairs_exact: int  # pairs the index scored exactly
    pairs_all_pairs_equivalent: int  # pairs the all-pairs loop would score on the whole stream
    check_prefix: int
    decisions_identical: bool | None  # None: no prefix checked
    first_difference: dict[str, Any] | None
    naive_wall_s: float | None
    naive_cpu_s: float | None
    naive_pairs: int | None


@dataclass(frozen=True)
class DedupRecord:
    """The report file's fields, in its order (``asdict`` is the JSON)."""

    config: dict[str, Any]
    stream: dict[str, Any]
    n: int
    seeds: int
    kept: int
    dropped: dict[str, int]
    drop_rate: float
    wall_s: float
    cpu_s: float  # the machine is shared: CPU seconds say what the filter costs
    us_per_candidate: float
    peak_rss_mb: float
    pairs_exact: int
    pairs_all_pairs_equivalent: int
    check_prefix: int
    decisions_identical: bool | None
    first_difference: dict[str, Any] | None
    naive_wall_s: float | None
    naive_cpu_s: float | None
    naive_pairs: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_dedup_bench(cfg: DedupBenchConfig) -> DedupRecord:
    """Measure, derive the record, write it to ``cfg.json`` (when set); printing is the CLI's."""
    record = dedup_record(cfg, measure_dedup(cfg))
    write_report(cfg.json, record.to_json())
    return record


def measure_dedup(cfg: DedupBenchConfig) -> DedupMeasurement:
    """Run the indexed filter on the stream (and the all-pairs loop on its prefix); no printing."""
    if cfg.n < 1 or cfg.check_prefix < 0:
        raise UserError(f"--n {cfg.n} / --check-prefix {cfg.check_prefix}: need n >= 1 and check-prefix >= 0")
    seeds = seed_pool(cfg.data_dir)
    t0 = time.perf_counter()
    stream, made = candidate_stream(cfg.n, cfg.seed, source_texts(cfg.data_dir))
    stream_s = time.perf_counter() - t0

    t0, cpu0 = time.perf_counter(), time.process_time()
    pool = NoveltyPool(cfg.threshold, seeds, vocabulary=stream)
    verdicts = [pool.admit(c) for c in stream]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = _peak_rss_mb()
    reasons: dict[str, int] = {}
    for v in verdicts:
        key = v.reason or "kept"
        reasons[key] = reasons.get(key, 0) + 1
    prefix = min(cfg.check_prefix, cfg.n)
    check = _check_prefix(seeds, stream[:prefix], verdicts[:prefix], cfg.threshold) if prefix else {}
    return DedupMeasurement(
        seeds=len(seeds), kinds=made, stream_s=stream_s, reasons=reasons, wall_s=wall, cpu_s=cpu,
        peak_rss_mb=peak, pairs_exact=pool.pairs_exact,
        pairs_all_pairs_equivalent=_all_pairs_count(len(seeds), (v.reason for v in verdicts)), check_prefix=prefix,
        decisions_identical=check.get("identical"), first_difference=check.get("first_difference"),
        naive_wall_s=check.get("wall_s"), naive_cpu_s=check.get("cpu_s"), naive_pairs=check.get("pairs"),
    )


def _check_prefix(seeds: list[str], candidates: list[str], verdicts: list[Any], threshold: float) -> dict[str, Any]:
    """Judge ``candidates`` with the all-pairs loop and compare with the indexed ``verdicts``."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    expected = naive_verdicts(seeds, candidates, threshold)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    got = [(v.reason, v.rouge_l_max, v.matched) for v in verdicts]
    first_difference = None
    if got != expected:
        i = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        first_difference = {"index": i, "candidate": candidates[i], "indexed": got[i], "all_pairs": expected[i]}
    pairs = _all_pairs_count(len(seeds), (reason for reason, _, _ in expected))
    return {"identical": got == expected, "first_difference": first_difference, "wall_s": wall, "cpu_s": cpu, "pairs": pairs}


def dedup_record(cfg: DedupBenchConfig, m: DedupMeasurement) -> DedupRecord:
    """The report: counts, rates and rounded timings derived from the measurement (pure)."""
    kept = m.reasons.get("kept", 0)
    return DedupRecord(
        config=asdict(cfg),
        stream={"kinds": m.kinds, "build_s": round(m.stream_s, 2)},
        n=cfg.n,
        seeds=m.seeds,
        kept=kept,
        dropped={k: v for k, v in sorted(m.reasons.items()) if k != "kept"},
        drop_rate=round(1 - kept / cfg.n, 4),
        wall_s=round(m.wall_s, 2),
        cpu_s=round(m.cpu_s, 2),
        us_per_candidate=round(m.wall_s / cfg.n * 1e6, 1),
        peak_rss_mb=round(m.peak_rss_mb, 1),
        pairs_exact=m.pairs_exact,
        pairs_all_pairs_equivalent=m.pairs_all_pairs_equivalent,
        check_prefix=m.check_prefix,
        decisions_identical=m.decisions_identical,
        first_difference=m.first_difference,
        naive_wall_s=round(m.naive_wall_s, 2) if m.naive_wall_s is not None else None,
        naive_cpu_s=round(m.naive_cpu_s, 2) if m.naive_cpu_s is not None else None,
        naive_pairs=m.naive_pairs,
    )


def _all_pairs_count(seeds: int, reasons: Iterable[str | None]) -> int:
    """Pairs the all-pairs loop scores over a run of verdicts (their drop reasons, None = kept):
    each non-duplicate candidate against the pool of its time."""
    pool, total = seeds, 0
    for reason in reasons:
        if reason != "duplicate":
            total += pool
        if reason is None:
            pool += 1
    return total
