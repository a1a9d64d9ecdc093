"""Resumable checkpoints: ``<output_dir>/checkpoints/step_<N>/`` holds what update N needs.

Without DeepSpeed (single process, DDP) a checkpoint is the adapter weights
(``adapter.safetensors``, in the training model's parameter names), the optimizer state
(``optimizer.pt``) and ``trainer_state.json``, written by the main process into a temporary
directory and renamed, so a checkpoint directory is either complete or absent. Under DeepSpeed the
optimizer is sharded across processes, so ``accelerator.save_state`` writes it (every process
its shard, frozen weights excluded). ``trainer_state.json`` is written last and marks a complete
checkpoint. The learning rate and the data order are functions of the step, so nothing else is
needed to continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from harness.common.jsonl import write_json_atomic

STATE_FILE = "trainer_state.json"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


def checkpoints_root(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def _step_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith("step_") and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The complete checkpoint with the highest step, with its trainer state; None if there is none."""
    for _, path in reversed(_step_dirs(output_dir)):
        state_file = path / STATE_FILE
        if state_file.is_file():
            return path, json.loads(state_file.read_text(encoding="utf-8"))
    return None


def save_checkpoint(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: Any,
    adapter_state: dict[str, torch.Tensor] | None,
    output_dir: Path,
    trainer_state: dict[str, Any],
    *,
    keep: int,
) -> Path:
    """Write checkpoint ``step_<trainer_state['step']>`` (collective: call on every process).

    ``adapter_state`` is the trainable weights on the main process (ignored elsewhere and under
    DeepSpeed, whose own checkpoint holds them).
    """
    step = int(trainer_state["step"])
    final = checkpoints_root(output_dir) / f"step_{step:07d}"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.save_state(str(final), exclude_frozen_parameters=True)
        if accelerator.is_main_process:
            write_json_atomic(final / STATE_FILE, trainer_state)
    elif accelerator.is_main_process:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in adapter_state.items()}, str(tmp / ADAPTER_FILE))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        write_json_atomic(tmp / STATE_FILE, trainer_state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    if accelerator.is_main_process:
        for _, old in _step_dirs(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_adapter_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Copy a non-DeepSpeed checkpoint's adapter weights into the (unprepared) training model."""
    saved = load_file(str(checkpoint / ADAPTER_FILE))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        raise RuntimeError(
            f"checkpoint {checkpoint} holds weights {sorted(set(saved) ^ set(params))[:4]}... that do not "
            "match the model's adapter; delete the checkpoints directory to start over"
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)


def load_optimizer_state(optimizer: Any, checkpoint: Path) -> None:
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_FILE, map_location="cpu", weights_only=True))


def remove_checkpoints(output_dir: Path) -> None:
    shutil.rmtree(checkpoints_root(output_dir), ignore_errors=True)
