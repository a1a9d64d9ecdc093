"""Reading and writing JSONL and JSON records: the one module every file of records goes through.

Append-only JSONL records keyed by a stable id are the resume mechanism of every stage.

A writer appends one record per line and flushes it, so an interrupted run loses at most
the line being written; ``read_records`` ignores a torn final line and says so (a warning
naming the file and line), and resuming means skipping the ids already present. Only a writer
repairs a torn line (``JsonlWriter`` on our own append-only logs); a file that is merely read,
such as a user's input, is never modified.

Typed records (``harness.common.records``) are read with ``iter_typed`` / ``read_json_record``,
validated by pydantic's JSON parser, and a record with a wrong field fails with one line naming
the file, the line and the field. ``strict=True`` treats a torn last line as an error too (inputs
written whole, such as data files); the default skips it with a warning (our own append-only logs).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from harness.common.errors import UserError
from harness.common.records import (
    JUDGE_SUMMARY_KINDS,
    MANIFEST_KINDS,
    JudgeSummary,
    PipelineManifest,
    RunManifest,
    StageManifest,
    TruthfulQAJudgeSummary,
    infer_judge_summary_kind,
    infer_manifest_kind,
)

log = logging.getLogger(__name__)
_reported: set[tuple[str, int]] = set()  # (path, size): one warning per torn file state
M = TypeVar("M", bound=BaseModel)
REGENERATE = "the file was not written by this version of selfalign, or was edited; regenerate it"


def iter_numbered(path: str | Path, *, strict: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSONL file (nothing when it is absent).
    A torn last line (an interrupted write) is skipped with a warning unless strict."""
    path = Path(path)
    if not path.exists():
        return
    # Line by line: a stage's JSONL can hold hundreds of thousands of records.
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                if _torn(path, lineno, line, strict):
                    return
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or delete that line") from None


def iter_records(path: str | Path, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file, as parsed (for files in another program's format: lm-eval's samples)."""
    for _, record in iter_numbered(path, strict=strict):
        yield record


def iter_typed(path: str | Path, model: type[M], *, strict: bool = False, fix: str = REGENERATE) -> Iterator[M]:
    """Records of a JSONL file of ``model`` records, each validated by pydantic's JSON parser;
    a line that does not fit fails with one line: file, line, field, and ``fix``."""
    path = Path(path)
    if not path.exists():
        return
    validate = model.model_validate_json
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield validate(line)
            except ValidationError as exc:
                if exc.errors()[0]["type"] == "json_invalid":
                    if _torn(path, lineno, line, strict):
                        return
                    raise UserError(f"{path}:{lineno}: not valid JSON; fix or delete that line") from None
                raise UserError(validation_message(f"{path}:{lineno}", exc, model.__name__, fix)) from None


def read_typed(path: str | Path, model: type[M], *, strict: bool = False, fix: str = REGENERATE) -> list[M]:
    return list(iter_typed(path, model, strict=strict, fix=fix))


def validation_message(where: str, exc: ValidationError, what: str, fix: str) -> str:
    """One line for a pydantic error: where, the first bad field and why, how many more, the fix."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "(record)"
    value = "" if first["type"] == "missing" else f" (got {_short(first.get('input'))})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: field {field!r}: {first['msg'].lower()}{value}{more}; not a valid {what}: {fix}"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _torn(path: Path, lineno: int, line: str, strict: bool) -> bool:
    """Whether a line that does not parse is a torn tail to skip: only the last line can lack
    its newline, and only a lenient reader skips it (and says so, once per file state)."""
    if line.endswith("\n") or strict:
        return False
    _report_torn(path, lineno)
    return True


def _report_torn(path: Path, lineno: int) -> None:
    key = (str(path.resolve()), path.stat().st_size)
    if key not in _reported:
        _reported.add(key)
        log.warning("%s:%d: the last line is incomplete (an interrupted write?); it is ignored", path, lineno)


def read_records(path: str | Path, *, strict: bool = False) -> list[dict[str, Any]]:
    return list(iter_records(path, strict=strict))


def repair_torn_tail(path: str | Path) -> None:
    """Drop a partially written last line so that appends start on a fresh line."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        fh.seek(cut)
        fh.truncate()
    log.warning("%s: dropped its incomplete last line (%d bytes) before appending", path, len(data) - cut)


class JsonlWriter:
    """Appends records, one flushed line each; use as a context manager."""

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: dict[str, Any] | BaseModel) -> None:
        self._fh.write(_line(record))
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _line(record: dict[str, Any] | BaseModel, default: Any = str) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json() + "\n"
    return json.dumps(record, ensure_ascii=False, default=default) + "\n"


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any] | BaseModel], default: Any = str) -> None:
    """Write a whole JSONL file via a temporary file and rename (for derived, not appended, files);
    typed records are written by pydantic (compact JSON, UTF-8 unescaped)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(_line(record, default))
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path, fix: str = REGENERATE) -> Any:
    """A JSON file; one line naming it when it does not parse."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}); {fix}") from None


def read_json_record(path: str | Path, model: type[M], fix: str = REGENERATE) -> M:
    """A JSON file holding one ``model`` record, validated (one line naming the file and field)."""
    return _validate(path, model, read_json(path, fix), model.__name__, fix)


def manifest_kind(path: str | Path) -> str | None:
    """The ``kind`` of a ``manifest.json`` (inferred for one written before kinds existed); None
    for a file that is not a selfalign manifest."""
    try:
        data = read_json(path)
    except UserError:
        return None
    if not isinstance(data, dict):
        return None
    return data.get("kind") or infer_manifest_kind(data)


def read_manifest_file(path: str | Path) -> StageManifest | PipelineManifest | RunManifest:
    """A ``manifest.json`` of any kind (StageManifest, PipelineManifest or RunManifest), told apart
    by its ``kind``. Manifests written before ``kind`` existed are recognised, once, here: by
    their ``systems`` (run), ``stages`` (pipeline) or ``stage`` and ``status`` (stage) keys."""
    return _read_by_kind(path, MANIFEST_KINDS, infer_manifest_kind, "manifest", "rerun the command that wrote it")


def read_judge_summary(path: str | Path) -> JudgeSummary | TruthfulQAJudgeSummary:
    """A judge's ``summary.json`` (Vicuna-80 pairwise or TruthfulQA), told apart by its ``kind``;
    summaries written before ``kind`` existed are recognised here by their fields."""
    return _read_by_kind(
        path, JUDGE_SUMMARY_KINDS, infer_judge_summary_kind, "judge summary",
        "rerun `selfalign judge` or `selfalign judge truthfulqa`",
    )


def _read_by_kind(path, kinds: dict[str, type[M]], infer, what: str, fix: str) -> M:
    data = read_json(path)
    kind = (data.get("kind") or infer(data)) if isinstance(data, dict) else None
    if kind not in kinds:
        raise UserError(f"{path}: not a selfalign {what} (kind {kind!r}; expected one of {', '.join(kinds)}); {fix}")
    return _validate(path, kinds[kind], {**data, "kind": kind}, f"{kind} {what}", REGENERATE)


def _validate(path: str | Path, model: type[M], data: Any, what: str, fix: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc, what, fix)) from None
