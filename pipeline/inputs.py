"""The pipeline's human inputs: prompt templates, seed tasks, seed questions, prompt files.

A config names each input either by its data-manifest path (``dromedary/prompts/...``, read
through ``harness.data`` with its sha256 checked) or by a path on disk (a user's own seeds).
Loaders validate every record and fail with one line naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import data
from harness.common.errors import UserError
from harness.common.jsonl import iter_numbered
from harness.common.provenance import sha256_file
from harness.common.records import Origin, PromptRecord


def resolve_input(ref: str, data_dir: str | Path | None, field: str) -> Path:
    if ref in data.manifest():
        return data.data_file(ref, data_dir)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise UserError(
            f"{field}={ref!r}: neither a known data file (harness/data_manifest.json) nor an existing file; fix the path"
        )
    return path.resolve()


def fingerprint(ref: str, data_dir: str | Path | None, field: str) -> str:
    """sha256 of an input (from the manifest for data files: they are verified on read)."""
    if ref in data.manifest():
        return data.manifest()[ref].sha256
    return sha256_file(resolve_input(ref, data_dir, field))


def read_input_text(ref: str, data_dir: str | Path | None, field: str) -> str:
    return resolve_input(ref, data_dir, field).read_text(encoding="utf-8")


def _jsonl_objects(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for lineno, obj in iter_numbered(path, strict=True):
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object ({what}), got {type(obj).__name__}")
        out.append((lineno, obj))
    if not out:
        raise UserError(f"{path}: no {what} records; the file is empty")
    return out


def _string(path: Path, lineno: int, obj: dict[str, Any], key: str, fix: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise UserError(f"{path}:{lineno}: field {key!r} is missing or not a non-empty string; {fix}")
    return value


@dataclass(frozen=True)
class SeedTask:
    instruction: str
    input: str


def load_seed_tasks(ref: str, data_dir: str | Path | None, field: str = "stage1.self_instruct.seed_tasks") -> list[SeedTask]:
    """Self-Instruct seed tasks: ``{"instruction", "instances": [{"input", "output"}, ...]}`` per line."""
    path = resolve_input(ref, data_dir, field)
    fix = 'each line needs {"instruction": str, "instances": [{"input": str, "output": str}]}'
    tasks = []
    for lineno, obj in _jsonl_objects(path, "seed task"):
        instruction = _string(path, lineno, obj, "instruction", fix)
        instances = obj.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise UserError(f"{path}:{lineno}: field 'instances' must be a non-empty list of objects; {fix}")
        tasks.append(SeedTask(instruction, _string(path, lineno, instances[0], "input", fix, allow_empty=True)))
    return tasks


@dataclass(frozen=True)
class SeedQuestion:
    topic: str
    question_type: str
    question: str


def load_seed_questions(ref: str, data_dir: str | Path | None, field: str = "stage1.tgrt.seed_questions") -> list[SeedQuestion]:
    """TGRT seed questions: ``{"topic", "question_type", "question"}`` per line."""
    path = resolve_input(ref, data_dir, field)
    fix = 'each line needs {"topic": str, "question_type": str, "question": str}'
    return [
        SeedQuestion(*(_string(path, lineno, obj, k, fix) for k in ("topic", "question_type", "question")))
        for lineno, obj in _jsonl_objects(path, "seed question")
    ]


def load_prompts_file(ref: str, field: str = "stage2.prompts_file") -> list[PromptRecord]:
    """User prompts for stage 2: ``{"id", "instruction", "input"?}`` per line, unique ids."""
    path = resolve_input(ref, None, field)
    fix = 'each line needs {"id": str, "instruction": str, "input": str (optional)}'
    out, seen = [], set()
    for lineno, obj in _jsonl_objects(path, "prompt"):
        pid = obj.get("id")
        if not isinstance(pid, (str, int)) or str(pid) in seen:
            raise UserError(f"{path}:{lineno}: field 'id' is missing or repeats an earlier id; {fix}")
        seen.add(str(pid))
        out.append(PromptRecord(
            id=str(pid),
            instruction=_string(path, lineno, obj, "instruction", fix),
            input=_string(path, lineno, obj, "input", fix, allow_empty=True) if "input" in obj else "",
            origin=Origin(source="prompts_file"),
        ))
    return out
