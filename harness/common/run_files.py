"""Where an evaluation's files lie in a model directory, for every reader of them.

``selfalign eval`` writes lm-eval's layout: ``results_<date>.json`` and
``samples_<task>_<date>.jsonl`` per run (``<task>`` is lm-eval's full name, e.g.
``selfalign_truthfulqa_tf``; ``<date>`` is ``datetime.isoformat()`` with ``:`` replaced by ``-``),
plus ``results.json``, a copy of the latest results file. Directories written before that layout
hold ``samples_<short name>.jsonl``; readers accept both.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from harness.common.errors import UserError

TASK_PREFIX = "selfalign_"
LATEST_RESULTS = "results.json"


def date_id(now: datetime | None = None) -> str:
    """lm-eval's file timestamp (``EvaluationTracker.date_id``)."""
    return (now or datetime.now()).isoformat().replace(":", "-")


def results_filename(date: str) -> str:
    return f"results_{date}.json"


def samples_filename(task: str, date: str) -> str:
    return f"samples_{task}_{date}.jsonl"


def _split_samples_name(name: str) -> tuple[str, str] | None:
    """``(task, date)`` of ``samples_<task>_<date>.jsonl`` (lm-eval's get_file_task_name/datetime)."""
    if not (name.startswith("samples_") and name.endswith(".jsonl")):
        return None
    stem = name.removesuffix(".jsonl")
    task, _, date = stem.removeprefix("samples_").rpartition("_")
    if not task or not date[:4].isdigit() or "T" not in date:
        return None
    return task, date


def timestamped_samples(model_dir: str | Path, task: str) -> list[Path]:
    """Every ``samples_<task>_<date>.jsonl`` of ``task`` (short or full name), oldest first."""
    names = {task, TASK_PREFIX + task} if not task.startswith(TASK_PREFIX) else {task}
    found = []
    for path in Path(model_dir).glob("samples_*.jsonl"):
        parts = _split_samples_name(path.name)
        if parts and parts[0] in names:
            found.append((parts[1], path))
    return [p for _, p in sorted(found)]


def samples_path(model_dir: str | Path, task: str) -> Path:
    """The latest per-sample log of ``task`` (short or full name); the pre-timestamp name when
    there is no timestamped one (a path that may not exist, for error messages)."""
    stamped = timestamped_samples(model_dir, task)
    if stamped:
        return stamped[-1]
    return Path(model_dir) / f"samples_{task.removeprefix(TASK_PREFIX)}.jsonl"


def latest_samples(directory: str | Path, task: str, *, nested: bool = False) -> list[Path]:
    """The samples file of ``task`` to read in ``directory`` (or, ``nested``, in each of its
    subdirectories): the latest run's when runs are timestamped, else the pre-timestamp file."""
    short = task.removeprefix(TASK_PREFIX)
    patterns = (f"samples_{short}.jsonl", f"samples_{TASK_PREFIX}{short}*.jsonl")
    prefix = "*/" if nested else ""
    found = sorted({p for pattern in patterns for p in Path(directory).glob(prefix + pattern)})
    latest: list[Path] = []
    for parent in sorted({p.parent for p in found}):
        stamped = timestamped_samples(parent, short)
        latest += stamped[-1:] or [p for p in found if p.parent == parent]
    return latest


def judged_samples_file(path: str | Path, task: str, flag: str) -> Path:
    """The samples file of ``task`` that a judge reads from ``path``: the file itself,
    ``DIR/<model_id>`` (its latest run), or ``DIR`` holding one model directory."""
    path = Path(path).expanduser()
    short = task.removeprefix(TASK_PREFIX)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{flag} {path}: no such directory or file; pass DIR/<model_id> of `selfalign eval --tasks {short}`")
    found = latest_samples(path, task)
    if not found:
        nested = latest_samples(path, task, nested=True)
        if len({p.parent for p in nested}) == 1:
            found = nested
    if not found:
        others = sorted(p.name for p in path.glob("samples_*.jsonl"))
        have = f" (it holds {', '.join(others[:4])}: answers of another task)" if others else ""
        raise UserError(
            f"{flag} {path}: no {short} samples (samples_{TASK_PREFIX}{short}_<date>.jsonl){have}; generate them with "
            f"`selfalign eval --tasks {short} --output DIR` and pass DIR/<model_id>"
        )
    if len(found) > 1:
        raise UserError(f"{flag} {path}: {len(found)} {short} sample files ({', '.join(p.name for p in found)}); pass the one to judge as a file path")
    return found[0]
