"""The contract every pipeline stage follows (a Protocol, not a base class) and what it is given.

A stage declares the stages whose outputs it reads and the slice of the config that decides its
outputs (the cache key); ``run(ctx)`` reads its inputs, writes its outputs under
``ctx.stage_dir``, and returns what goes into its manifest. The runner does the rest: skipping,
resuming, moving stale outputs aside, timing, manifests, and waiting between ranks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.progress import Progress

from harness.common.errors import UserError
from harness.common.jsonl import iter_typed, write_jsonl_atomic
from harness.common.progress_bar import progress_bar
from harness.common.records import AnswerRecord
from pipeline.config import PipelineConfig
from pipeline.engine.base import EngineFactory, GenerationEngine
from pipeline.manifest import DropCounter
from pipeline.sharding import DistContext

R = TypeVar("R", bound=BaseModel)


@dataclass
class StageResult:
    """What a stage reports; the runner stores it in the stage manifest."""

    outputs: dict[str, str]  # name -> path relative to the stage directory
    primary: list[str]  # output names whose content downstream stages depend on (hashed)
    counts: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    cfg: PipelineConfig
    output_dir: Path
    stage_dir: Path
    data_dir: str | Path | None
    dist: DistContext
    engine: EngineFactory
    progress: StageProgress
    # Stop before training: generation stages complete, training stages are left incomplete
    # (generation and training often need different process layouts; see paper.yaml).
    generate_only: bool = False
    # model -> the token strings that end generation (for the reference's EOS suppression)
    eos_tokens: Callable[[str], list[str]] = lambda model: []
    # upstream stage name -> its completed manifest
    upstream: dict[str, dict[str, Any]] = field(default_factory=dict)

    def base_engine(self) -> GenerationEngine:
        return self.engine(self.cfg.model.base, None)

    def release_engines(self) -> None:
        """Free cached engines (before training, which needs the memory)."""
        release = getattr(self.engine, "release", None)
        if release is not None:
            release()

    def upstream_path(self, stage: str, output: str) -> Path:
        """A completed upstream stage's output file (the runner guarantees it is complete)."""
        manifest = self.upstream.get(stage)
        if manifest is None or output not in manifest.get("outputs", {}):
            raise UserError(f"stage output {stage}/{output} is not available; run that stage first")
        return self.output_dir / manifest["stage_dir"] / manifest["outputs"][output]

    def progress_callback(self, description: str) -> Callable[[int, int], None]:
        return self.progress.callback(description)


class StageProgress:
    """Rich progress bars for a stage's generation steps, shown on the main rank only.

    Started on first use and closed before training (the trainer shows its own live bar, and
    rich allows one live display at a time).
    """

    def __init__(self, enabled: bool, console: Console | None = None):
        self.enabled = enabled
        self.console = console
        self._progress: Progress | None = None

    def callback(self, description: str) -> Callable[[int, int], None]:
        if not self.enabled:
            return lambda done, total: None
        if self._progress is None:
            self._progress = progress_bar(console=self.console)
            self._progress.start()
        progress = self._progress
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return update

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class Stage(Protocol):
    number: int
    name: str  # also the directory suffix: <output>/<NN>_<name>
    title: str
    # Bump when the stage's parsing/filtering/prompting code changes what it outputs: the
    # salt is part of the cache key, so old outputs are not reused.
    version: str

    def requires(self, cfg: PipelineConfig) -> tuple[str, ...]:
        """Names of the stages whose outputs this stage reads."""
        ...

    def config_slice(self, cfg: PipelineConfig) -> dict[str, Any]:
        """The config that decides this stage's outputs (hashed into its cache key)."""
        ...

    def data_files(self, cfg: PipelineConfig, data_dir: str | Path | None) -> dict[str, str]:
        """``{input reference: sha256}`` of the files the stage reads (part of its cache key)."""
        ...

    def run(self, ctx: StageContext) -> StageResult | None:
        """Do the work; None means "stopped early on purpose" (``generate_only``): not complete."""
        ...


def read_upstream(
    path: Path, model: type[R], what: str, fix: str, *, kept_only: bool = True, project: Callable[[R], Any] | None = None,
) -> list[Any]:
    """The (kept) records of an upstream stage's JSONL, typed, failing with one line when there
    are none. ``project`` maps each record as it is read (stage-2 records hold raw outputs that
    a reader of 360k records should not keep)."""
    records = [
        r if project is None else project(r) for r in iter_typed(path, model) if not kept_only or getattr(r, "kept", True)
    ]
    if not records:
        raise UserError(f"{path}: no {what}; {fix}")
    return records


def write_records(path: Path, records: Iterable[dict[str, Any] | BaseModel], model: type[BaseModel]) -> None:
    """Write a derived JSONL of ``model`` records in one go, atomically (readers never see a
    half-written file); each record is validated as it is written (a dict becomes a ``model``).
    ``records`` may be a generator, so nothing needs to hold them all."""
    write_jsonl_atomic(path, (r if isinstance(r, model) else model.model_validate(r) for r in records))


def write_answer_records(ctx: StageContext, records: Iterable[AnswerRecord]) -> DropCounter:
    """Write a stage's judged answers to ``records.jsonl`` as they are judged (never held as a list
    of 360k records, each with its raw output) and count them; other ranks only count."""
    counter = DropCounter()

    def counted() -> Iterable[AnswerRecord]:
        for rec in records:
            counter.keep() if rec.kept else counter.drop(rec.drop_reason)
            yield rec

    if ctx.dist.is_main:
        write_records(ctx.stage_dir / "records.jsonl", counted(), AnswerRecord)
    else:
        deque(counted(), maxlen=0)
    return counter
