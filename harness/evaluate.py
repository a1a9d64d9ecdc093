"""Run lm-eval on one model (checkpoint or baseline) over our tasks and write a run directory.

Output layout (documented in README; lm-eval's own, so its result tooling reads it):
``<output>/<model_id>/results_<date>.json``  lm-eval's result schema (``results``, ``groups``,
                                       ``configs``, ``config``, ``versions``, ``n-samples``,
                                       ``task_hashes``, model fields, ...) plus ``selfalign`` provenance
``<output>/<model_id>/samples_<task>_<date>.jsonl``  lm-eval's on-disk per-sample log, one per task
``<output>/<model_id>/results.json``   a copy of the latest ``results_<date>.json``
``<output>/<model_id>/lm_cache/``      lm-eval's response cache, one database per cache key
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness import data
from harness.backends.registry import build_lm as build_backend_lm
from harness.common import run_files
from harness.common.dirlock import output_lock
from harness.common.errors import UserError
from harness.common.jsonl import write_json_atomic, write_jsonl_atomic, write_text_atomic
from harness.common.provenance import run_provenance
from harness.common.registry import unknown_name_error
from harness.eval_preflight import preflight_eval
from harness.models import (
    BATCHING_ARGS,
    LOCAL_BACKENDS,
    parse_model_args,
    resolve_model_args,
    weights_fingerprint,
)
from harness.models import model_id as default_model_id
from harness.task_registry import resolve_task_names, short_name, task_manager, task_versions
from tasks.vicuna80.utils import GEN_PRESETS, PENALTY_KWARGS, preset_gen_kwargs

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
    device: str | None = None  # None: cuda when available, else cpu (as lm-eval's hf backend)
    meta_prompt: str | None = None  # None: each task's paper default (verbose)
    apply_chat_template: bool = False
    tf_reference_half_candidates: bool = False
    gen_kwargs: str | None = None
    # Vicuna-80 generation preset (tasks.vicuna80.utils.GEN_PRESETS): "paper" or "reference_demo".
    gen_preset: str = "paper"
    use_cache: bool = True
    model_id: str | None = None
    seed: int | str = 1234  # or lm-eval's four-value form "python,numpy,torch,fewshot"


# Bump when the response-cache key's recipe changes: old databases are then never reused.
RESPONSE_CACHE_KEY_VERSION = "2"


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _covered_task_versions(task_names: list[str]) -> dict[str, Any]:
    """Versions of the named tasks and, for a group, of its subtasks (ours are named group_*)."""
    versions = task_versions()
    return {t: v for t, v in sorted(versions.items()) if any(t == n or t.startswith(n + "_") for n in task_names)}


def response_cache_key(cfg: EvalConfig, args: dict[str, Any], task_names: list[str]) -> tuple[str, dict[str, Any]]:
    """``(key, what it covers)`` for the response cache.

    lm-eval's CachingLM keys each entry by the request alone, so anything else that changes a
    response must be in the database's name: the model (backend, every resolved model_arg
    including max_length, the weights' and tokenizer's content), the library versions that turn
    a request into tokens, the tasks' versions and the prompt settings. The batch size is not:
    scores do not depend on it.
    """
    payload: dict[str, Any] = {
        "key_version": RESPONSE_CACHE_KEY_VERSION,
        "model": weights_fingerprint(args, cfg.model),
        "model_args": {k: str(v) for k, v in sorted(args.items()) if k not in BATCHING_ARGS},
        "device": cfg.device,
        "versions": {name: _package_version(name) for name in ("lm_eval", "transformers", "peft")},
        "tasks": _covered_task_versions(task_names),
        "prompt": {
            "meta_prompt": cfg.meta_prompt,
            "apply_chat_template": cfg.apply_chat_template,
            "tf_reference_half_candidates": cfg.tf_reference_half_candidates,
            "gen_kwargs": cfg.gen_kwargs,
            "seed": cfg.seed,  # sampled generations are not determined by the request alone
        },
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, payload


def build_lm(cfg: EvalConfig, args: dict[str, Any]):
    return build_backend_lm(cfg.model, args, batch_size=cfg.batch_size, device=cfg.device)


def _metadata(cfg: EvalConfig, args: dict[str, Any]) -> dict[str, Any]:
    # seed: generation tasks copy it into each doc, so the sample log records it; gen_preset is
    # recorded in every vicuna80 doc.
    meta: dict[str, Any] = {
        "data_dir": cfg.data_dir, "reference_half_candidates": cfg.tf_reference_half_candidates, "seed": cfg.seed,
        "gen_preset": cfg.gen_preset,
    }
    if cfg.meta_prompt:
        meta["meta_prompt"] = cfg.meta_prompt
    elif cfg.apply_chat_template:
        # A chat baseline gets its own template, not a Dromedary prompt nested inside it.
        meta["meta_prompt"] = "none"
    # HHH truncates by the evaluated model's tokens: a local backend's own tokenizer, or the
    # tokenizer=... that API backends take (without one, the results say truncation did not run).
    tokenizer = args.get("tokenizer") or (args.get("pretrained") if cfg.model in LOCAL_BACKENDS else None)
    if tokenizer:
        meta["tokenizer"] = str(tokenizer)
    return meta


def _gen_kwargs(cfg: EvalConfig) -> str | None:
    """lm-eval's gen_kwargs: the generation preset's (unless "paper", the task YAML's own), then
    the explicit --gen_kwargs, which win key by key."""
    if cfg.gen_preset not in GEN_PRESETS:
        raise unknown_name_error("generation preset", cfg.gen_preset, list(GEN_PRESETS), "--gen-preset")
    if cfg.gen_preset == "paper":
        return cfg.gen_kwargs
    if cfg.model != "selfalign-hf" and any(k in GEN_PRESETS[cfg.gen_preset] for k in PENALTY_KWARGS):
        raise UserError(
            f"--gen-preset {cfg.gen_preset} uses the reference's n-gram frequency penalty, which only "
            f"--model selfalign-hf applies (got --model {cfg.model})"
        )
    return ",".join(p for p in (preset_gen_kwargs(cfg.gen_preset), cfg.gen_kwargs) if p)


def _prompt_format(cfg: EvalConfig) -> str:
    meta_prompt = cfg.meta_prompt or ("none" if cfg.apply_chat_template else "task default")
    wrapper = "chat_template" if cfg.apply_chat_template else "plain"
    return f"{wrapper}+dromedary:{meta_prompt}" if meta_prompt != "none" else wrapper


def eval_output_dir(cfg: EvalConfig) -> Path:
    """``<output>/<model_id>``: the directory one evaluation writes (and locks)."""
    raw_args = parse_model_args(cfg.model_args)
    return Path(cfg.output) / (cfg.model_id or default_model_id(raw_args or {"pretrained": cfg.model}))


def run_eval(cfg: EvalConfig, progress=None) -> dict[str, Any]:
    """Evaluate and write ``<output>/<model_id>/``; returns the results dict that was written.

    Bad input fails before any work (``harness.eval_preflight``); one process at a time writes
    a given output directory (``harness.common.dirlock``).
    """
    preflight_eval(cfg)
    with output_lock(eval_output_dir(cfg), "selfalign eval"):
        return _run_eval(cfg, progress)


def _run_eval(cfg: EvalConfig, progress=None) -> dict[str, Any]:
    # deferred: lm-eval's evaluator pulls datasets, pandas, sacrebleu and torch (seconds), and
    # harness.progress subclasses lm-eval's LM (numpy); `selfalign eval --help` and `selfalign
    # run`'s config checks import this module
    from lm_eval import simple_evaluate
    from lm_eval.api.model import CachingLM
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    from harness.progress import ProgressLM, make_progress

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if cfg.device is None:
        cfg = dataclasses.replace(cfg, device=default_device())
    task_names = resolve_task_names(cfg.tasks)
    data.resolve_data_dir(cfg.data_dir)  # fail on a bad --data-dir before loading a model
    raw_args = parse_model_args(cfg.model_args)
    args = resolve_model_args(raw_args) if cfg.model in LOCAL_BACKENDS else raw_args
    mid = cfg.model_id or default_model_id(raw_args or {"pretrained": cfg.model})
    out_dir = Path(cfg.output) / mid
    out_dir.mkdir(parents=True, exist_ok=True)

    gen_kwargs = _gen_kwargs(cfg)
    tm = task_manager(_metadata(cfg, args))

    tracker = GeneralConfigTracker()  # lm-eval's model fields and total_evaluation_time_seconds
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
        key, covered = response_cache_key(cfg, args, task_names)
        write_json_atomic(cache_dir / f"{key}.key.json", covered)  # what this database is valid for
        lm = CachingLM(lm, str(cache_dir / f"{key}_rank{lm.rank}.db"))
    lm = ProgressLM(lm, progress)
    seeds = four_seeds(cfg.seed)
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
            gen_kwargs=gen_kwargs,
            bootstrap_iters=1000,
            random_seed=seeds[0],
            numpy_random_seed=seeds[1],
            torch_random_seed=seeds[2],
            fewshot_random_seed=seeds[3],
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
        "gen_preset": cfg.gen_preset,
        "task_versions": {t: versions.get(t) for t in versions if t in results.get("results", {})},
        "data_sha256": data.files_read(),
        "config": dataclasses.asdict(cfg),
        "timing_s": {"model_load": round(load_s, 2), "evaluate": round(eval_s, 2)},
    }
    # lm-eval's CLI fills these from its arguments; handed a model object it leaves them empty.
    results["config"].update({
        "model": cfg.model, "model_args": cfg.model_args, "batch_size": cfg.batch_size, "device": cfg.device,
    })
    tracker.log_experiment_args(
        model_source=cfg.model,
        model_args=cfg.model_args,  # as given: an alias or original path, not this machine's cache
        system_instruction=None,
        chat_template=lm.chat_template(cfg.apply_chat_template) if cfg.apply_chat_template else None,
        fewshot_as_multiturn=False,
    )
    tracker.model_name_sanitized = mid  # lm-eval names the directory after this: ours is <model_id>
    write_outputs(out_dir, results, samples, tracker)
    return results


def write_outputs(out_dir: Path, results: dict[str, Any], samples: dict[str, list], tracker) -> Path:
    """lm-eval's files, as ``EvaluationTracker.save_results_aggregated``/``save_results_samples``
    write them (same names, fields and sample sanitization), but atomically and failing loudly
    (the tracker logs a warning and carries on); then ``results.json``, a copy of the new results
    file. Returns the results file."""
    # deferred: as _run_eval's lm-eval imports
    from lm_eval.utils import handle_non_serializable, hash_string, sanitize_list

    tracker.log_end_time()
    date = run_files.date_id()
    results["task_hashes"] = {
        task: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
        for task, rows in samples.items()
    }
    results.update(dataclasses.asdict(tracker))
    for task, rows in samples.items():
        on_disk = []
        for sample in rows:
            sample = dict(sample)
            sample["arguments"] = {
                f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(arg)}
                for i, arg in enumerate(sample["arguments"])
            }
            sample["resps"] = sanitize_list(sample["resps"])
            sample["filtered_resps"] = sanitize_list(sample["filtered_resps"])
            sample["target"] = str(sample["target"])
            on_disk.append(sample)
        write_jsonl_atomic(out_dir / run_files.samples_filename(task, date), on_disk, default=handle_non_serializable)
    dumped = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    results_file = out_dir / run_files.results_filename(date)
    write_text_atomic(results_file, dumped)
    write_text_atomic(out_dir / run_files.LATEST_RESULTS, dumped)
    return results_file


def default_device() -> str:
    import torch  # deferred: as _run_eval's lm-eval imports

    return "cuda" if torch.cuda.is_available() else "cpu"


def four_seeds(seed: int | str | list[int]) -> list[int | None]:
    """lm-eval's ``--seed``: one int for all four (python, numpy, torch, fewshot), or four
    comma-separated values where ``None`` leaves that generator unseeded."""
    if isinstance(seed, int):
        return [seed] * 4
    parts = [p.strip() for p in seed.split(",")] if isinstance(seed, str) else [str(p) for p in seed]
    try:
        values = [None if p == "None" else int(p) for p in parts]
    except ValueError:
        values = []
    if any(v is not None and v < 0 for v in values):
        raise UserError(f"--seed {seed}: seeds must be >= 0 (numpy rejects negative seeds)")
    if len(values) == 1 and values[0] is not None:
        return values * 4
    if len(values) != 4:
        raise UserError(f"--seed {seed}: expected one integer or four comma-separated values (int or None), e.g. 0,1234,1234,1234")
    return values


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (task, metric, value, stderr, n) for tables, groups included."""
    rows = []
    n_samples = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
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
