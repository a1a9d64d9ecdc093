"""Runs the SELF-ALIGN stages in order: skip what is done, resume what was cut short.

Output layout (``selfalign pipeline run --output DIR``)::

    DIR/config.yaml                      the resolved configuration of the last run
    DIR/manifest.json                    run summary: per stage status, counts, timings
    DIR/01_tgrt_self_instruct/           prompts.jsonl, candidates.jsonl, topics.jsonl, generations/
    DIR/02_self_align/                   records.jsonl, constitution.txt/.yaml, generations/
    DIR/03_engrave/                      train.jsonl, adapter/ (PEFT), train_log.jsonl
    DIR/04_verbose_clone/                records.jsonl, train.jsonl, adapter/ (the final model)
    DIR/<stage>.stale-<time>/            outputs of an earlier config, moved aside

Every stage directory has a ``manifest.json`` (see ``pipeline.manifest``). Under ``torchrun`` or
``accelerate launch`` every rank runs this same function; generation is sharded by
``pipeline.sharding`` and training by the training library, and only rank 0 writes manifests.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from transformers import AutoTokenizer, GenerationConfig

from harness.common.dirlock import output_lock
from harness.common.errors import UserError
from harness.common.memory import peak_rss_mb, reset_peak_rss
from harness.common.preflight import check_output_dir
from harness.common.provenance import config_hash, run_provenance
from harness.common.registry import lookup
from harness.models import resolve_pretrained
from pipeline.config import PipelineConfig
from pipeline.engine.base import EngineFactory, GenerationEngine
from pipeline.engine.registry import make_engine
from pipeline.manifest import (
    files_hash,
    finish_manifest,
    move_aside,
    read_manifest,
    stage_hash,
    start_manifest,
    write_pipeline_manifest,
)
from pipeline.sharding import DistContext
from pipeline.stages.base import Stage, StageContext, StageProgress, StageResult
from pipeline.stages.engrave import EngraveStage
from pipeline.stages.self_align import SelfAlignStage
from pipeline.stages.tgrt_self_instruct import TGRTSelfInstructStage
from pipeline.stages.verbose_clone import VerboseCloneStage

log = logging.getLogger(__name__)

STAGES: tuple[Stage, ...] = (TGRTSelfInstructStage(), SelfAlignStage(), EngraveStage(), VerboseCloneStage())
STAGES_BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage_dir_name(stage: Stage) -> str:
    return f"{stage.number:02d}_{stage.name}"


def list_stages() -> list[tuple[str, str]]:
    """(name, what it is and where it writes) of every stage, in order: ``selfalign ls stages``."""
    return [(s.name, f"stage {s.number}: {s.title} -> <output>/{stage_dir_name(s)}/") for s in STAGES]


def select_stages(spec: str | Sequence[str | int] | None) -> list[Stage]:
    """``"1,2,4"``, ``"self_align,engrave"``, ``"all"`` or None (all), in pipeline order."""
    if spec is None or spec == "all":
        return list(STAGES)
    items = [x.strip() for x in spec.split(",")] if isinstance(spec, str) else [str(x).strip() for x in spec]
    table = {**{str(s.number): s for s in STAGES}, **STAGES_BY_NAME}
    chosen = {lookup("stage", item, table, "--stages takes numbers 1-4 or names").name for item in items if item}
    if not chosen:
        raise UserError("--stages is empty; give e.g. 1,2,3,4")
    return [s for s in STAGES if s.name in chosen]


# -- engines --------------------------------------------------------------------------------


class EngineCache:
    """One engine per (model, adapter), built on first use and released between stages."""

    def __init__(self, factory: EngineFactory):
        self._factory = factory
        self._engines: dict[tuple[str, str | None], GenerationEngine] = {}

    def __call__(self, model: str, peft: str | None = None) -> GenerationEngine:
        key = (model, peft)
        if key not in self._engines:
            self.release()  # keep one model in memory at a time
            self._engines[key] = self._factory(model, peft)
        return self._engines[key]

    def release(self) -> None:
        if self._engines:
            self._engines.clear()
            gc.collect()


def default_engine_factory(cfg: PipelineConfig, dist: DistContext) -> EngineFactory:
    def make(model: str, peft: str | None) -> GenerationEngine:
        options = dict(cfg.engine.options)
        if cfg.engine.backend == "transformers":
            options.setdefault("progress", False)  # the stage shows one bar per step instead
            options.setdefault("device", _default_device(dist))
        try:
            return make_engine(cfg.engine.backend, model, peft=peft, **options)
        except UserError:
            raise
        except Exception as exc:  # loaders raise many types (OSError, SafetensorError, ValueError...)
            what = f"model.base={model}" + (f" with adapter {peft}" if peft else "")
            raise UserError(
                f"{what}: the {cfg.engine.backend} engine cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "point model.base at a working Hugging Face causal LM directory, .gguf file or alias, and check engine.options"
            ) from None

    return make


def _default_device(dist: DistContext) -> str:
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', dist.rank)) % torch.cuda.device_count()}"
    return "cpu"


@functools.lru_cache(maxsize=8)
def default_eos_tokens(model: str) -> list[str]:
    """End-of-sequence token strings of a model (tokenizer EOS plus generation-config EOS ids)."""
    path = resolve_pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        eos = GenerationConfig.from_pretrained(str(path)).eos_token_id
        ids |= {eos} if isinstance(eos, int) else set(eos or ())
    except OSError:
        pass  # no generation_config.json
    return sorted(t for t in tokenizer.convert_ids_to_tokens(sorted(ids)) if t)


# -- running ---------------------------------------------------------------------------------


def run(
    cfg: PipelineConfig,
    output_dir: str | Path,
    stages: str | Sequence[str | int] | None = None,
    *,
    data_dir: str | Path | None = None,
    dist: DistContext | None = None,
    engine_factory: EngineFactory | None = None,
    eos_tokens: Callable[[str], list[str]] | None = None,
    console: Console | None = None,
    generate_only: bool = False,
) -> dict[str, Any]:
    """Run the selected stages (default: all) into ``output_dir``; returns the run manifest.

    ``generate_only`` stops each stage before training (stage 4 keeps its generations; a later
    run, e.g. under ``accelerate launch``, reuses them and trains). ``engine_factory`` and
    ``eos_tokens`` replace the real engine (tests pass scripted fakes).
    """
    output_dir = Path(output_dir).resolve()
    dist = dist or DistContext.from_env()
    check_output_dir(output_dir)
    select_stages(stages)  # a bad --stages fails before the lock creates the directory
    # One writer per output directory; under several ranks rank 0 holds it for all of them.
    lock = output_lock(output_dir, "selfalign pipeline run") if dist.is_main else contextlib.nullcontext()
    with lock:
        return _run(cfg, output_dir, stages, data_dir, dist, engine_factory, eos_tokens, console, generate_only)


def _run(
    cfg: PipelineConfig,
    output_dir: Path,
    stages: str | Sequence[str | int] | None,
    data_dir: str | Path | None,
    dist: DistContext,
    engine_factory: EngineFactory | None,
    eos_tokens: Callable[[str], list[str]] | None,
    console: Console | None,
    generate_only: bool,
) -> dict[str, Any]:
    selected = select_stages(stages)
    console = console or Console(stderr=True)
    if engine_factory is None:
        _resolve_base_model(cfg.model.base)
        engine_factory = default_engine_factory(cfg, dist)
    engines = EngineCache(engine_factory)
    if dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False), encoding="utf-8")

    summaries: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for stage in selected:
            # Engines stay loaded across stages (1 and 2 share the base model); training stages
            # release them first.
            summaries[stage.name] = _run_stage(
                stage, cfg, output_dir, data_dir, dist, engines, eos_tokens or default_eos_tokens, console, generate_only
            )
    finally:
        engines.release()
    manifest = {
        "kind": "pipeline",
        "config_hash": config_hash(asdict(cfg)),
        "stages": summaries,
        "wall_s": round(time.perf_counter() - started, 2),
        "world_size": dist.world_size,
        "provenance": run_provenance(),
    }
    if dist.is_main:
        previous = read_manifest(output_dir) or {}
        merged_stages = {**previous.get("stages", {}), **summaries}
        write_pipeline_manifest(output_dir, {**manifest, "stages": merged_stages})
    return manifest


def _resolve_base_model(model: str) -> None:
    """Resolve the base model before any work (an alias's GGUF converted once, a directory's
    config and safetensors headers checked), so a bad name fails in one line; nothing is loaded."""
    resolve_pretrained(model)


# -- the skip / resume / fresh decision -------------------------------------------------------


@dataclass(frozen=True)
class ExistingStage:
    """What is on disk for a stage: its manifest's status and config hash, and which of the
    outputs that manifest records are gone."""

    status: str | None
    config_hash: str | None
    missing_outputs: tuple[str, ...] = ()

    @classmethod
    def read(cls, stage_dir: Path, manifest: dict[str, Any] | None) -> ExistingStage | None:
        """From the stage's manifest (None when there is none)."""
        if manifest is None:
            return None
        outputs = manifest.get("outputs") or {}
        missing = tuple(sorted(name for name, rel in outputs.items() if not (stage_dir / rel).exists()))
        return cls(manifest.get("status"), manifest.get("config_hash"), missing)


@dataclass(frozen=True)
class Skip:
    """Complete with this config and its outputs in place: reuse it."""

    reason: str = "unchanged and complete"


@dataclass(frozen=True)
class Resume:
    """Started with this config but not finished: run it again in the same directory, reusing
    what it already wrote (generations, training checkpoints)."""

    reason: str = "same config, not complete"


@dataclass(frozen=True)
class Fresh:
    """Nothing reusable: move any earlier outputs aside (``reason`` says why) and start over."""

    reason: str


Decision = Skip | Resume | Fresh


def decide(existing: ExistingStage | None, config_hash: str) -> Decision:
    """Skip, resume or start a stage afresh, from what is on disk and the config hash it needs."""
    if existing is None:
        return Fresh("no manifest")
    if existing.config_hash != config_hash:
        return Fresh("config changed")
    if existing.status != "complete":
        return Resume()
    if existing.missing_outputs:
        # A skipped stage whose outputs were deleted would fail the next stage that reads them.
        return Fresh(f"outputs missing: {', '.join(existing.missing_outputs)}")
    return Skip()


# -- one stage ----------------------------------------------------------------------------------


def _run_stage(
    stage: Stage,
    cfg: PipelineConfig,
    output_dir: Path,
    data_dir: str | Path | None,
    dist: DistContext,
    engines: EngineCache,
    eos_tokens: Callable[[str], list[str]],
    console: Console,
    generate_only: bool = False,
) -> dict[str, Any]:
    stage_dir = output_dir / stage_dir_name(stage)
    label = f"stage {stage.number} ({stage.name})"
    upstream_manifests = _upstream_manifests(stage, cfg, output_dir, label)
    upstream_hashes = {name: m["output_hash"] for name, m in upstream_manifests.items()}
    data_files = stage.data_files(cfg, data_dir)
    slice_ = stage.config_slice(cfg)
    cfg_hash = stage_hash(slice_, upstream_hashes, data_files, stage.version)

    existing = read_manifest(stage_dir)
    decision = decide(ExistingStage.read(stage_dir, existing), cfg_hash)
    if isinstance(decision, Skip):
        if dist.is_main:
            console.print(f"[dim]{label}: {decision.reason}, skipped ({stage_dir})[/dim]")
        return _summary(existing, skipped=True)

    if dist.is_main:
        _prepare_stage_dir(stage_dir, decision, label, cfg_hash, console)
        manifest = start_manifest(
            stage_dir, stage=stage.name, number=stage.number, title=stage.title, cfg_hash=cfg_hash, config=slice_,
            upstream=upstream_hashes, data_files=data_files, world_size=dist.world_size,
        )
        manifest["stage_dir"] = stage_dir.name
        manifest["resumed"] = isinstance(decision, Resume)  # then wall_s covers this run only; generation stats all runs
        console.rule(f"{label}: {stage.title}" + (" (resuming)" if manifest["resumed"] else ""))
    else:
        dist.wait_for(lambda: _prepared_by_rank_0(stage_dir, cfg_hash), f"rank 0 to prepare {stage_dir}")
        manifest = read_manifest(stage_dir) or {}

    ctx = StageContext(
        cfg=cfg, output_dir=output_dir, stage_dir=stage_dir, data_dir=data_dir, dist=dist, engine=engines,
        progress=StageProgress(enabled=dist.is_main, console=console), eos_tokens=eos_tokens,
        upstream=upstream_manifests, generate_only=generate_only,
    )
    result, wall, resources = _execute(stage, ctx)
    if result is None:  # stopped before training on request; the manifest stays "running"
        if dist.is_main:
            console.print(f"{label}: generation done in {wall:.1f}s; training left for a run without --generate-only")
        return {**_summary(manifest, skipped=False), "status": "generated"}
    if not dist.is_main:
        dist.wait_for(lambda: (read_manifest(stage_dir) or {}).get("status") == "complete", f"rank 0 to finish {label}")
        return _summary(read_manifest(stage_dir) or {}, skipped=False)
    done = _finish(stage_dir, manifest, result, wall, resources)
    console.print(f"{label}: done in {wall:.1f}s, peak RSS {resources['peak_rss_mb']:.0f} MiB; {_count_line(result.counts)}")
    return _summary(done, skipped=False)


def _upstream_manifests(stage: Stage, cfg: PipelineConfig, output_dir: Path, label: str) -> dict[str, dict[str, Any]]:
    """The complete manifests of the stages this one reads; a one-line error for one that is not."""
    manifests: dict[str, dict[str, Any]] = {}
    for name in stage.requires(cfg):
        up = STAGES_BY_NAME[name]
        manifest = read_manifest(output_dir / stage_dir_name(up))
        if manifest is None or manifest.get("status") != "complete":
            raise UserError(
                f"{label} needs the outputs of stage {up.number} ({up.name}) in {output_dir / stage_dir_name(up)}, "
                f"which is not complete; run with --stages {up.number},{stage.number}"
            )
        manifests[name] = manifest
    return manifests


def _prepare_stage_dir(stage_dir: Path, decision: Resume | Fresh, label: str, cfg_hash: str, console: Console) -> None:
    """Move earlier outputs aside for a fresh start (a resumed stage keeps them), then make the directory."""
    if isinstance(decision, Fresh):
        moved = move_aside(stage_dir, f"{decision.reason}; new config hash {cfg_hash}")
        if moved:
            console.print(f"[yellow]{label}: earlier outputs ({decision.reason}) moved to {moved.name}[/yellow]")
    stage_dir.mkdir(parents=True, exist_ok=True)


def _execute(stage: Stage, ctx: StageContext) -> tuple[StageResult | None, float, dict[str, Any]]:
    """Run the stage; returns (its result, wall seconds, this rank's resources)."""
    per_stage_peak = reset_peak_rss()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        result = stage.run(ctx)
    finally:
        ctx.progress.close()
    wall = time.perf_counter() - started
    # This rank's peak resident memory during the stage (since process start where the OS
    # cannot reset the peak), and its CPU seconds (all threads): on a shared machine wall time
    # alone says more about the neighbours than about the stage.
    resources = {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_scope": "stage" if per_stage_peak else "process",
        "cpu_s": round(time.process_time() - cpu_started, 2),
    }
    return result, wall, resources


def _finish(stage_dir: Path, manifest: dict[str, Any], result: StageResult, wall: float, resources: dict[str, Any]) -> dict[str, Any]:
    """Mark the stage complete: its outputs, output hash, counts, statistics and resources."""
    outputs = {name: rel for name, rel in result.outputs.items() if (stage_dir / rel).exists()}
    return finish_manifest(
        stage_dir,
        manifest,
        {
            "stage_dir": stage_dir.name,
            "outputs": outputs,
            "output_hash": files_hash([stage_dir / result.outputs[name] for name in result.primary]),
            "counts": result.counts,
            "generation": result.generation,
            "training": result.training,
            "resources": resources,
            **result.extra,
        },
        wall,
    )


def _prepared_by_rank_0(stage_dir: Path, cfg_hash: str) -> bool:
    """Rank 0 has started (or resumed) this run of the stage. A complete manifest with the same
    hash is the earlier run's, still there while rank 0 moves it aside (its outputs went missing)."""
    manifest = read_manifest(stage_dir) or {}
    return manifest.get("config_hash") == cfg_hash and manifest.get("status") != "complete"


def _count_line(counts: dict[str, Any]) -> str:
    if "produced" not in counts:
        return ", ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, dict))
    dropped = ", ".join(f"{k} {v}" for k, v in counts.get("dropped", {}).items()) or "none"
    return f"kept {counts['kept']} of {counts['produced']} (dropped: {dropped})"


def _summary(manifest: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    return {
        "status": manifest.get("status"),
        "skipped": skipped,
        "stage_dir": manifest.get("stage_dir"),
        "config_hash": manifest.get("config_hash"),
        "counts": manifest.get("counts", {}),
        "wall_s": manifest.get("timings", {}).get("wall_s"),
        "peak_rss_mb": manifest.get("resources", {}).get("peak_rss_mb"),
        "cpu_s": manifest.get("resources", {}).get("cpu_s"),
        "generation": manifest.get("generation", {}),
        "training": {k: v for k, v in manifest.get("training", {}).items() if k != "losses"},
    }
