"""Run lm-eval on one model (checkpoint or baseline) over our tasks and write a run directory.

Output layout (documented in README):
``<output>/<model_id>/results.json``   lm-eval's result schema (``results``, ``groups``, ``configs``,
                                       ``versions``, ``n-samples``, ...) plus ``selfalign`` provenance
``<output>/<model_id>/samples_<task>.jsonl``  lm-eval's per-sample log, one file per task
``<output>/<model_id>/lm_cache/``      lm-eval's response cache, one per model fingerprint
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import data
from harness.common.errors import UserError
from harness.common.jsonl import write_json_atomic, write_jsonl_atomic
from harness.common.provenance import run_provenance
from harness.models import LOCAL_BACKENDS, parse_model_args, resolve_model_args, weights_fingerprint
from harness.models import build_lm as build_backend_lm
from harness.models import model_id as default_model_id
from harness.models import register_backends as _register_backends  # noqa: F401  (ls, baselines)
from harness.task_registry import resolve_task_names, short_name, task_manager, task_versions

DEFAULT_TASKS = ("truthfulqa_mc1", "truthfulqa_tf", "hhh")


@dataclass
class EvalConfig:
    model: str = "hf"
    model_args: str = ""
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    output: str = "runs/eval"
    limit: float | None = None
    batch_size: int | str = 8
    data_dir: str | None = None
    device: str = "cpu"
    meta_prompt: str | None = None  # None: each task's paper default (verbose)
    apply_chat_template: bool = False
    tf_reference_half_candidates: bool = False
    gen_kwargs: str | None = None
    use_cache: bool = True
    model_id: str | None = None
    seed: int = 1234


def build_lm(cfg: EvalConfig, args: dict[str, Any]):
    return build_backend_lm(cfg.model, args, batch_size=cfg.batch_size, device=cfg.device)


def _metadata(cfg: EvalConfig, args: dict[str, Any]) -> dict[str, Any]:
    # seed: generation tasks copy it into each doc, so the sample log records it.
    meta: dict[str, Any] = {
        "data_dir": cfg.data_dir, "reference_half_candidates": cfg.tf_reference_half_candidates, "seed": cfg.seed,
    }
    if cfg.meta_prompt:
        meta["meta_prompt"] = cfg.meta_prompt
    elif cfg.apply_chat_template:
        # A chat baseline gets its own template, not a Dromedary prompt nested inside it.
        meta["meta_prompt"] = "none"
    tokenizer = args.get("tokenizer") or args.get("pretrained")
    if cfg.model in LOCAL_BACKENDS and tokenizer:
        meta["tokenizer"] = str(tokenizer)
    return meta


def _prompt_format(cfg: EvalConfig) -> str:
    meta_prompt = cfg.meta_prompt or ("none" if cfg.apply_chat_template else "task default")
    wrapper = "chat_template" if cfg.apply_chat_template else "plain"
    return f"{wrapper}+dromedary:{meta_prompt}" if meta_prompt != "none" else wrapper


def run_eval(cfg: EvalConfig, progress=None) -> dict[str, Any]:
    """Evaluate and write ``<output>/<model_id>/``; returns the results dict that was written."""
    from lm_eval import simple_evaluate
    from lm_eval.api.model import CachingLM

    from harness.progress import ProgressLM, make_progress

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    task_names = resolve_task_names(cfg.tasks)
    data.resolve_data_dir(cfg.data_dir)  # fail on a bad --data-dir before loading a model
    raw_args = parse_model_args(cfg.model_args)
    args = resolve_model_args(raw_args) if cfg.model in LOCAL_BACKENDS else raw_args
    mid = cfg.model_id or default_model_id(raw_args or {"pretrained": cfg.model})
    out_dir = Path(cfg.output) / mid
    out_dir.mkdir(parents=True, exist_ok=True)

    tm = task_manager(_metadata(cfg, args))
    started = time.perf_counter()
    lm = build_lm(cfg, args)
    load_s = time.perf_counter() - started
    own_progress = progress is None
    progress = progress or make_progress()
    if cfg.use_cache:
        # CachingLM is not an LM subclass, so it sits inside the progress wrapper. It writes as
        # it goes: an interrupted run resumes from the requests already answered.
        cache_dir = out_dir / "lm_cache"
        cache_dir.mkdir(exist_ok=True)
        lm = CachingLM(lm, str(cache_dir / f"{weights_fingerprint(args, cfg.model)}_rank{lm.rank}.db"))
    lm = ProgressLM(lm, progress)
    try:
        if own_progress:
            progress.start()
        results = simple_evaluate(
            model=lm,
            tasks=task_names,
            task_manager=tm,
            limit=cfg.limit,
            log_samples=True,
            apply_chat_template=cfg.apply_chat_template,
            gen_kwargs=cfg.gen_kwargs,
            bootstrap_iters=1000,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed,
        )
    except ValueError as exc:
        if "Duplicate task" in str(exc):
            raise UserError(f"--tasks {','.join(cfg.tasks)}: {exc}; list a group or its subtasks, not both") from None
        raise
    finally:
        if own_progress:
            progress.stop()
    if results is None:  # non-zero ranks under data parallelism
        return {}
    eval_s = time.perf_counter() - started - load_s
    samples = results.pop("samples", {})
    versions = task_versions()
    results["selfalign"] = {
        **run_provenance(),
        "model_id": mid,
        "backend": cfg.model,
        "model_args": {k: str(v) for k, v in args.items()},
        "prompt_format": _prompt_format(cfg),
        "task_versions": {t: versions.get(t) for t in versions if t in results.get("results", {})},
        "data_sha256": data.files_read(),
        "config": dataclasses.asdict(cfg),
        "timing_s": {"model_load": round(load_s, 2), "evaluate": round(eval_s, 2)},
    }
    _write_outputs(out_dir, results, samples)
    return results


def _write_outputs(out_dir: Path, results: dict[str, Any], samples: dict[str, list]) -> None:
    from lm_eval.utils import handle_non_serializable

    write_json_atomic(out_dir / "results.json", json.loads(json.dumps(results, default=handle_non_serializable)))
    for task, rows in samples.items():
        write_jsonl_atomic(out_dir / f"samples_{short_name(task)}.jsonl", rows, default=handle_non_serializable)


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (task, metric, value, stderr, n) for tables, groups included."""
    rows = []
    n_samples = results.get("n-samples", {})
    for section in ("results",):
        for task, metrics in results.get(section, {}).items():
            for key, value in metrics.items():
                if key in ("alias", "sample_len") or "_stderr" in key or not isinstance(value, (int, float)):
                    continue
                metric, _, filt = key.partition(",")
                stderr = metrics.get(f"{metric}_stderr,{filt}")
                n = n_samples.get(task, {}).get("effective")
                if n is None and task in results.get("group_subtasks", {}):
                    n = sum(n_samples.get(t, {}).get("effective", 0) for t in results["group_subtasks"][task])
                rows.append({
                    "task": short_name(task),
                    "metric": key,
                    "value": value,
                    "stderr": stderr if isinstance(stderr, (int, float)) else None,
                    "n": n,
                })
    return rows
