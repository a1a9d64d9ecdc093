"""Append-only JSONL records keyed by a stable id: the resume mechanism of every stage.

A writer appends one record per line and flushes it, so an interrupted run loses at most
the line being written; ``read_records`` ignores a torn final line and says so (a warning
naming the file and line), and resuming means skipping the ids already present. Only a writer
repairs a torn line (``JsonlWriter`` on our own append-only logs); a file that is merely read,
such as a user's input, is never modified.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.common.errors import UserError

log = logging.getLogger(__name__)
_reported: set[tuple[str, int]] = set()  # (path, size): one warning per torn file state


def iter_records(path: str | Path, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file. A torn last line (an interrupted write) is skipped unless strict."""
    path = Path(path)
    if not path.exists():
        return
    # Line by line: a stage's JSONL can hold hundreds of thousands of records.
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                # Only the last line can lack its newline: a torn tail.
                if not line.endswith("\n") and not strict:
                    _report_torn(path, lineno)
                    return
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or delete that line") from None


def _report_torn(path: Path, lineno: int) -> None:
    key = (str(path.resolve()), path.stat().st_size)
    if key not in _reported:
        _reported.add(key)
        log.warning("%s:%d: the last line is incomplete (an interrupted write?); it is ignored", path, lineno)


def read_records(path: str | Path, *, strict: bool = False) -> list[dict[str, Any]]:
    return list(iter_records(path, strict=strict))


def read_ids(path: str | Path, key: str = "id") -> set[str]:
    return {str(r[key]) for r in iter_records(path) if key in r}


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

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]], default: Any = str) -> None:
    """Write a whole JSONL file via a temporary file and rename (for derived, not appended, files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, default=default) + "\n")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
