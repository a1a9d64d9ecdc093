"""``selfalign bench scoring``: selfalign-hf against lm-eval's stock ``hf``, same process, same requests.

Both backends are built from the same ``model_args`` and score the same ``Instance`` list built
by our lm-eval tasks (``truthfulqa_tf``: the paper's true/false protocol; ``hhh``: the A/B
protocol in both orders). Reported per set: wall time and requests/s of each, the ratio, the
largest log-prob difference, whether greedy flags and task metrics are identical, and the FLOP
floor of the work (distinct tokens, LM head at read positions) at the measured matmul rate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from lm_eval.models.huggingface import HFLM

from harness.backends.selfalign_hf import SelfAlignHFLM
from harness.bench.flops import ModelSize, floor_flops, model_size
from harness.bench.machine import Clock, machine_info, matmul_gflops
from harness.bench.report import write_report
from harness.common.errors import UserError
from harness.common.registry import lookup
from harness.data import resolve_data_dir
from harness.models import resolve_pretrained
from harness.task_registry import task_manager

# bench set name -> lm-eval task or group name (tasks/)
TASK_SETS: dict[str, str] = {
    "truthfulqa_tf": "selfalign_truthfulqa_tf",
    "hhh": "selfalign_hhh",
}


@dataclass
class ScoringBenchConfig:
    model: str = "gemma-3-270m"
    tasks: tuple[str, ...] = ("truthfulqa_tf", "hhh")
    limit: int = 5  # documents per task (per HHH category)
    batch_size: int = 8  # both backends; selfalign-hf reads it as packed rows per forward
    row_tokens: int = 512
    docs_per_chunk: int = 2  # documents per interleaved timing chunk
    meta_prompt: str = "verbose"
    data_dir: str | None = None
    dtype: str = "float32"
    json: str | None = None


def build_instances(
    cfg: ScoringBenchConfig, set_name: str, tokenizer_dir: str
) -> list[tuple[Any, Any]]:
    """(task, Instance) pairs for one bench set, exactly as ``simple_evaluate`` would build them."""
    task_name = lookup("bench task set", set_name, TASK_SETS, "--tasks")
    data_dir = str(resolve_data_dir(cfg.data_dir)[0])
    manager = task_manager({"data_dir": data_dir, "meta_prompt": cfg.meta_prompt, "tokenizer": tokenizer_dir})
    pairs = []
    for task in manager.load([task_name])["tasks"].values():
        task.build_all_requests(limit=cfg.limit, rank=0, world_size=1)
        pairs += [(task, inst) for inst in task.instances]
    return pairs


def task_metrics(
    pairs: list[tuple[Any, Any]], results: list[tuple[float, bool]]
) -> dict[str, dict[str, float]]:
    """Per task, the mean over documents of ``process_results`` (what lm-eval aggregates)."""
    by_doc: dict[tuple[str, int], list] = defaultdict(list)
    by_name = {}
    for (task, inst), result in zip(pairs, results, strict=True):
        by_doc[(task.config.task, inst.doc_id)].append((inst.idx, inst.doc, result))
        by_name[task.config.task] = task
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (name, _), items in sorted(by_doc.items()):
        items.sort(key=lambda t: t[0])
        doc = items[0][1]
        for metric, value in by_name[name].process_results(doc, [r for _, _, r in items]).items():
            sums[name][metric].append(float(value))
    return {
        name: {m: sum(v) / len(v) for m, v in metrics.items()} for name, metrics in sums.items()
    }


def _doc_chunks(pairs: list[tuple[Any, Any]], docs_per_chunk: int) -> list[list[int]]:
    """Indices of ``pairs`` cut into runs of whole documents (a document's requests together)."""
    chunks: list[list[int]] = []
    seen: dict[tuple[str, int], int] = {}
    for index, (task, inst) in enumerate(pairs):
        key = (task.config.task, inst.doc_id)
        if key not in seen:
            seen[key] = len(seen)
            if len(seen) % docs_per_chunk == 1 or docs_per_chunk == 1:
                chunks.append([])
        chunks[-1].append(index)
    return chunks


@dataclass
class SetMeasurement:
    """One bench set as measured: its requests, each backend's clock and results, the prefix plan."""

    pairs: list[tuple[Any, Any]]  # (task, Instance)
    base_clock: Clock
    base_out: list[tuple[float, bool]]
    ours_clock: Clock
    ours_out: list[tuple[float, bool]]
    plan: Any  # selfalign-hf's plan of the requests (distinct tokens, read positions)
    computed_tokens: int


@dataclass
class ScoringMeasurement:
    """What ``measure_scoring`` returns: per set, and the machine's matmul rates through the run."""

    model_path: str
    size: ModelSize
    matmul_gflops_measured: list[float]
    sets: dict[str, SetMeasurement]


@dataclass(frozen=True)
class ScoringRow:
    """One bench set in the report (``results[<set>]``)."""

    requests: int
    documents: int
    baseline_s: float
    ours_s: float
    speedup: float
    baseline_cpu_s: float
    ours_cpu_s: float
    speedup_cpu: float
    baseline_requests_per_s: float
    ours_requests_per_s: float
    max_abs_logprob_diff: float
    greedy_flags_identical: bool
    metrics_identical: bool
    baseline_metrics: dict[str, dict[str, float]]
    ours_metrics: dict[str, dict[str, float]]
    floor_s: float
    floor: dict[str, Any]
    ours_over_floor: float
    baseline_over_floor: float
    tokens: dict[str, int]


@dataclass(frozen=True)
class ScoringTotals:
    """All sets together (the report's top level and the table's "all" row)."""

    requests: int
    baseline_s: float
    ours_s: float
    speedup: float | None
    max_abs_logprob_diff: float | None
    speedup_cpu: float
    metrics_identical: bool
    floor_s: float
    ours_over_floor: float | None


@dataclass(frozen=True)
class ScoringRecord:
    """The benchmark's result; ``to_json`` is the report file's layout."""

    config: ScoringBenchConfig
    model_path: str
    machine: dict[str, Any]
    matmul_gflops: float  # the best of the measured rates: the least disturbed one
    matmul_gflops_measured: list[float]
    non_embedding_params: int
    totals: ScoringTotals
    results: dict[str, ScoringRow]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "scoring",
            "config": asdict(self.config),
            "model_path": self.model_path,
            "machine": self.machine,
            "matmul_gflops": self.matmul_gflops,
            "matmul_gflops_measured": self.matmul_gflops_measured,
            "non_embedding_params": self.non_embedding_params,
            **asdict(self.totals),
            "results": {name: asdict(row) for name, row in self.results.items()},
        }


def run_scoring_bench(cfg: ScoringBenchConfig) -> ScoringRecord:
    """Measure, derive the record, write it to ``cfg.json`` (when set); printing is the CLI's."""
    record = scoring_record(cfg, measure_scoring(cfg), machine_info())
    write_report(cfg.json, record.to_json())
    return record


def measure_scoring(cfg: ScoringBenchConfig) -> ScoringMeasurement:
    """Time both backends on the same requests, set by set.

    The machine is shared, so the two backends run interleaved, a few documents at a time and
    alternating which goes first: a neighbour's burst then slows both alike instead of one.
    """
    if not cfg.tasks:
        raise UserError(f"--tasks names no set; name one or more of {', '.join(TASK_SETS)}")
    for name in cfg.tasks:
        lookup("bench task set", name, TASK_SETS, "--tasks")
    pretrained = str(resolve_pretrained(cfg.model))
    rates = [matmul_gflops()]
    common = dict(pretrained=pretrained, device="cpu", batch_size=cfg.batch_size, dtype=cfg.dtype)
    stock = HFLM(**common)
    ours = SelfAlignHFLM(**common, row_tokens=cfg.row_tokens)
    sets = {}
    for set_name in cfg.tasks:
        sets[set_name] = _measure_set(build_instances(cfg, set_name, pretrained), stock, ours, cfg.docs_per_chunk)
        rates.append(matmul_gflops())
    return ScoringMeasurement(pretrained, model_size(ours.model), rates, sets)


def _measure_set(pairs: list[tuple[Any, Any]], stock: Any, ours: Any, docs_per_chunk: int) -> SetMeasurement:
    instances = [inst for _, inst in pairs]
    # Untimed warm-up on a couple of requests (thread pools, allocator, lazy init).
    stock.loglikelihood(instances[:2], disable_tqdm=True)
    ours.loglikelihood(instances[:2], disable_tqdm=True)
    ours.clear_prefix_cache()  # the timed run pays for its meta prompt once, like one call
    base_clock, ours_clock = Clock(), Clock()
    base_out: list = [None] * len(instances)
    ours_out: list = [None] * len(instances)
    computed = 0
    for number, chunk in enumerate(_doc_chunks(pairs, docs_per_chunk)):
        chunk_instances = [instances[i] for i in chunk]
        order = [(stock, base_clock, base_out), (ours, ours_clock, ours_out)]
        for lm, clock, out in order if number % 2 == 0 else reversed(order):
            for i, result in zip(chunk, clock.time(lm.loglikelihood, chunk_instances), strict=True):
                out[i] = result
        stats = ours.last_plan_stats
        computed += stats["computed_tokens"] - stats["top_chain_reused"]
    return SetMeasurement(pairs, base_clock, base_out, ours_clock, ours_out, ours.plan(instances), computed)


def scoring_record(cfg: ScoringBenchConfig, m: ScoringMeasurement, machine: dict[str, Any]) -> ScoringRecord:
    """The report: per-set rows and totals derived from the measurement (pure)."""
    gflops = max(m.matmul_gflops_measured)  # the attainable rate: the least disturbed measurement
    rows = {name: scoring_row(s, m.size, gflops) for name, s in m.sets.items()}
    return ScoringRecord(
        config=cfg,
        model_path=m.model_path,
        machine=machine,
        matmul_gflops=gflops,
        matmul_gflops_measured=m.matmul_gflops_measured,
        non_embedding_params=m.size.non_embedding_params,
        totals=scoring_totals(rows),
        results=rows,
    )


def scoring_row(m: SetMeasurement, size: ModelSize, gflops: float) -> ScoringRow:
    pairs, plan = m.pairs, m.plan
    base_clock, ours_clock = m.base_clock, m.ours_clock
    n = len(pairs)
    floor = floor_flops(size, plan.num_nodes, len(plan.readers))
    floor_s = floor["total_flops"] / (gflops * 1e9)
    base_metrics = task_metrics(pairs, m.base_out)
    ours_metrics = task_metrics(pairs, m.ours_out)
    both = list(zip(m.base_out, m.ours_out, strict=True))
    return ScoringRow(
        requests=n,
        documents=len({(t.config.task, i.doc_id) for t, i in pairs}),
        baseline_s=base_clock.wall_s,
        ours_s=ours_clock.wall_s,
        speedup=base_clock.wall_s / ours_clock.wall_s,
        baseline_cpu_s=base_clock.cpu_s,
        ours_cpu_s=ours_clock.cpu_s,
        speedup_cpu=base_clock.cpu_s / ours_clock.cpu_s,
        baseline_requests_per_s=n / base_clock.wall_s,
        ours_requests_per_s=n / ours_clock.wall_s,
        max_abs_logprob_diff=max(abs(a[0] - b[0]) for a, b in both),
        greedy_flags_identical=all(a[1] == b[1] for a, b in both),
        metrics_identical=base_metrics == ours_metrics,
        baseline_metrics=base_metrics,
        ours_metrics=ours_metrics,
        floor_s=floor_s,
        floor=floor,
        ours_over_floor=ours_clock.wall_s / floor_s,
        baseline_over_floor=base_clock.wall_s / floor_s,
        tokens={
            "request_tokens": plan.num_request_tokens,
            "distinct_tokens": plan.num_nodes,
            "computed_tokens": m.computed_tokens,
            "scored_positions": sum(len(r) for r in plan.readers.values()),
            "distinct_scored_positions": len(plan.readers),
        },
    )


def scoring_totals(rows: dict[str, ScoringRow]) -> ScoringTotals:
    base = sum(r.baseline_s for r in rows.values())
    ours = sum(r.ours_s for r in rows.values())
    floor = sum(r.floor_s for r in rows.values())
    return ScoringTotals(
        requests=sum(r.requests for r in rows.values()),
        baseline_s=base,
        ours_s=ours,
        speedup=base / ours if ours else None,
        max_abs_logprob_diff=max((r.max_abs_logprob_diff for r in rows.values()), default=None),
        speedup_cpu=sum(r.baseline_cpu_s for r in rows.values()) / sum(r.ours_cpu_s for r in rows.values()),
        metrics_identical=all(r.metrics_identical for r in rows.values()),
        floor_s=floor,
        ours_over_floor=ours / floor if floor else None,
    )
