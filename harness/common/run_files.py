"""Where an evaluation's files lie in a model directory, for every reader of them."""

from __future__ import annotations

from pathlib import Path


def samples_path(model_dir: str | Path, task: str) -> Path:
    """The per-sample log of ``task`` (short name, e.g. ``truthfulqa_tf``) in a model directory."""
    return Path(model_dir) / f"samples_{task}.jsonl"
