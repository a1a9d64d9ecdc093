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
from pathlib import Path
from typing import Any

import torch

from harness.bench.flops import floor_flops, model_size
from harness.bench.machine import Clock, machine_info, matmul_gflops
from harness.bench.report import print_table, write_report
from harness.common.registry import lookup

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


def _task_dir() -> Path:
    import tasks

    return Path(tasks.__file__).parent


def build_instances(
    cfg: ScoringBenchConfig, set_name: str, tokenizer_dir: str
) -> list[tuple[Any, Any]]:
    """(task, Instance) pairs for one bench set, exactly as ``simple_evaluate`` would build them."""
    from lm_eval.tasks import TaskManager

    from harness.data import resolve_data_dir

    task_name = lookup("bench task set", set_name, TASK_SETS, "--tasks")
    data_dir = str(resolve_data_dir(cfg.data_dir)[0])
    manager = TaskManager(
        include_path=[str(_task_dir())],
        include_defaults=False,
        metadata={"data_dir": data_dir, "meta_prompt": cfg.meta_prompt, "tokenizer": tokenizer_dir},
    )
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
    tasks = {}
    for (task, inst), result in zip(pairs, results, strict=True):
        by_doc[(task.config.task, inst.doc_id)].append((inst.idx, inst.doc, result))
        tasks[task.config.task] = task
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (name, _), items in sorted(by_doc.items()):
        items.sort(key=lambda t: t[0])
        doc = items[0][1]
        for metric, value in tasks[name].process_results(doc, [r for _, _, r in items]).items():
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


def run_scoring_bench(cfg: ScoringBenchConfig) -> dict[str, Any]:
    """Time both backends on the same requests and report speed, exactness and the FLOP floor.

    The machine is shared, so the two backends run interleaved, a few documents at a time and
    alternating which goes first: a neighbour's burst then slows both alike instead of one.
    """
    from lm_eval.models.huggingface import HFLM

    from harness.backends.selfalign_hf import SelfAlignHFLM
    from harness.models import resolve_pretrained

    for name in cfg.tasks:
        lookup("bench task set", name, TASK_SETS, "--tasks")
    pretrained = str(resolve_pretrained(cfg.model))
    rates = [matmul_gflops()]
    common = dict(pretrained=pretrained, device="cpu", batch_size=cfg.batch_size, dtype=cfg.dtype)
    stock = HFLM(**common)
    ours = SelfAlignHFLM(**common, row_tokens=cfg.row_tokens)
    size = model_size(ours.model)

    measured: dict[str, dict[str, Any]] = {}
    for set_name in cfg.tasks:
        pairs = build_instances(cfg, set_name, pretrained)
        instances = [inst for _, inst in pairs]
        # Untimed warm-up on a couple of requests (thread pools, allocator, lazy init).
        stock.loglikelihood(instances[:2], disable_tqdm=True)
        ours.loglikelihood(instances[:2], disable_tqdm=True)
        ours.clear_prefix_cache()  # the timed run pays for its meta prompt once, like one call
        base_clock, ours_clock = Clock(), Clock()
        base_out: list = [None] * len(instances)
        ours_out: list = [None] * len(instances)
        computed = 0
        for number, chunk in enumerate(_doc_chunks(pairs, cfg.docs_per_chunk)):
            chunk_instances = [instances[i] for i in chunk]
            order = [("base", stock, base_clock, base_out), ("ours", ours, ours_clock, ours_out)]
            for _, lm, clock, out in order if number % 2 == 0 else reversed(order):
                for i, result in zip(
                    chunk, clock.time(lm.loglikelihood, chunk_instances), strict=True
                ):
                    out[i] = result
            stats = ours.last_plan_stats
            computed += stats["computed_tokens"] - stats["top_chain_reused"]
        rates.append(matmul_gflops())
        plan = ours.plan(instances)
        measured[set_name] = {
            "pairs": pairs,
            "base": (base_clock, base_out),
            "ours": (ours_clock, ours_out),
            "plan": plan,
            "computed_tokens": computed,
        }

    gflops = max(rates)  # the attainable rate: the least disturbed measurement
    rows = {name: _row(m, size, gflops) for name, m in measured.items()}
    totals = _totals(rows)
    print_table(
        f"scoring: selfalign-hf vs hf on {cfg.model} (matmul {gflops:.1f} GFLOP/s, "
        f"{torch.get_num_threads()} threads)",
        {**rows, "all": totals},
        [
            ("requests", "requests"),
            ("baseline_s", "hf s"),
            ("ours_s", "ours s"),
            ("baseline_requests_per_s", "hf req/s"),
            ("ours_requests_per_s", "ours req/s"),
            ("speedup", "speedup"),
            ("speedup_cpu", "speedup (cpu)"),
            ("max_abs_logprob_diff", "max |Δlogp|"),
            ("metrics_identical", "same metrics"),
            ("floor_s", "floor s"),
            ("ours_over_floor", "ours/floor"),
        ],
    )
    report = {
        "benchmark": "scoring",
        "config": asdict(cfg),
        "model_path": pretrained,
        "machine": machine_info(),
        "matmul_gflops": gflops,
        "matmul_gflops_measured": rates,
        "non_embedding_params": size.non_embedding_params,
        **totals,
        "results": rows,
    }
    write_report(cfg.json, report)
    return report


def _row(m: dict[str, Any], size, gflops: float) -> dict[str, Any]:
    pairs, plan = m["pairs"], m["plan"]
    (base_clock, base_out), (ours_clock, ours_out) = m["base"], m["ours"]
    n = len(pairs)
    floor = floor_flops(size, plan.num_nodes, len(plan.readers))
    floor_s = floor["total_flops"] / (gflops * 1e9)
    base_metrics = task_metrics(pairs, base_out)
    ours_metrics = task_metrics(pairs, ours_out)
    both = list(zip(base_out, ours_out, strict=True))
    return {
        "requests": n,
        "documents": len({(t.config.task, i.doc_id) for t, i in pairs}),
        "baseline_s": base_clock.wall_s,
        "ours_s": ours_clock.wall_s,
        "speedup": base_clock.wall_s / ours_clock.wall_s,
        "baseline_cpu_s": base_clock.cpu_s,
        "ours_cpu_s": ours_clock.cpu_s,
        "speedup_cpu": base_clock.cpu_s / ours_clock.cpu_s,
        "baseline_requests_per_s": n / base_clock.wall_s,
        "ours_requests_per_s": n / ours_clock.wall_s,
        "max_abs_logprob_diff": max(abs(a[0] - b[0]) for a, b in both),
        "greedy_flags_identical": all(a[1] == b[1] for a, b in both),
        "metrics_identical": base_metrics == ours_metrics,
        "baseline_metrics": base_metrics,
        "ours_metrics": ours_metrics,
        "floor_s": floor_s,
        "floor": floor,
        "ours_over_floor": ours_clock.wall_s / floor_s,
        "baseline_over_floor": base_clock.wall_s / floor_s,
        "tokens": {
            "request_tokens": plan.num_request_tokens,
            "distinct_tokens": plan.num_nodes,
            "computed_tokens": m["computed_tokens"],
            "scored_positions": sum(len(r) for r in plan.readers.values()),
            "distinct_scored_positions": len(plan.readers),
        },
    }


def _totals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base = sum(r["baseline_s"] for r in rows.values())
    ours = sum(r["ours_s"] for r in rows.values())
    floor = sum(r["floor_s"] for r in rows.values())
    return {
        "requests": sum(r["requests"] for r in rows.values()),
        "baseline_s": base,
        "ours_s": ours,
        "speedup": base / ours if ours else None,
        "max_abs_logprob_diff": max(
            (r["max_abs_logprob_diff"] for r in rows.values()), default=None
        ),
        "speedup_cpu": sum(r["baseline_cpu_s"] for r in rows.values())
        / sum(r["ours_cpu_s"] for r in rows.values()),
        "metrics_identical": all(r["metrics_identical"] for r in rows.values()),
        "floor_s": floor,
        "ours_over_floor": ours / floor if floor else None,
    }
