"""The checkpoints a pipeline output holds: the base model and each training stage's adapter.

What ``selfalign run`` (and any other consumer) asks instead of reading stage manifests itself::

    found, missing = list_checkpoints(output_dir, base="gemma-3-270m")
    for c in found:  # Checkpoint(name, label, base, adapter_dir, manifest)
        ...

A stage's checkpoint exists once its manifest is complete and its ``adapter`` output holds an
``adapter_config.json``; otherwise the stage is listed in ``missing`` with the reason.
"""

from __future__ import annotations

from pathlib import Path

from harness.common.records import Checkpoint, StageManifest
from harness.common.registry import lookup
from pipeline.manifest import read_typed_manifest
from pipeline.runner import STAGES, stage_dir_name
from pipeline.stages.base import Stage

BASE = "base"
TRAINING_STAGES: dict[str, Stage] = {s.name: s for s in STAGES if s.trains}
# base, then the training stages in pipeline order: the names `selfalign run` accepts in `checkpoints`
CHECKPOINT_NAMES: tuple[str, ...] = (BASE, *TRAINING_STAGES)


def checkpoint_label(name: str) -> str:
    """``base`` or e.g. ``stage 3: principle engraving``; the last training stage is marked final.
    An unknown name fails with the closest known ones."""
    lookup("checkpoint", name, dict.fromkeys(CHECKPOINT_NAMES), "checkpoints: " + ", ".join(CHECKPOINT_NAMES))
    if name == BASE:
        return BASE
    stage = TRAINING_STAGES[name]
    final = " (final)" if name == CHECKPOINT_NAMES[-1] else ""
    return f"stage {stage.number}: {stage.title.lower()}{final}"


def stage_checkpoint(output_dir: str | Path, name: str, base: str) -> Checkpoint | str:
    """The checkpoint of one training stage, or why there is none (one line)."""
    checkpoint_label(name)
    stage_dir = Path(output_dir) / stage_dir_name(TRAINING_STAGES[name])
    manifest = read_typed_manifest(stage_dir)
    adapter = manifest.outputs.get("adapter") if isinstance(manifest, StageManifest) else None
    if not isinstance(manifest, StageManifest) or manifest.status != "complete" or not adapter:
        return f"{name} (no complete adapter in {stage_dir})"
    adapter_dir = (stage_dir / adapter).resolve()
    if not (adapter_dir / "adapter_config.json").is_file():
        return f"{name} (no complete adapter in {stage_dir})"
    return Checkpoint(name=name, label=checkpoint_label(name), base=base, adapter_dir=adapter_dir, manifest=manifest)


def list_checkpoints(output_dir: str | Path, base: str, names: list[str] | tuple[str, ...] = CHECKPOINT_NAMES) -> tuple[list[Checkpoint], list[str]]:
    """``(checkpoints found, one line per requested checkpoint that is missing)``, in ``names`` order.

    ``base`` is the model the pipeline trained on (its ``model.base``); it is the ``base``
    checkpoint and the model every adapter loads on.
    """
    found: list[Checkpoint] = []
    missing: list[str] = []
    for name in names:
        if name == BASE:
            found.append(Checkpoint(name=BASE, label=f"base ({base})", base=base, adapter_dir=None, manifest=None))
            continue
        checkpoint = stage_checkpoint(output_dir, name, base)
        if isinstance(checkpoint, Checkpoint):
            found.append(checkpoint)
        else:
            missing.append(checkpoint)
    return found, missing
