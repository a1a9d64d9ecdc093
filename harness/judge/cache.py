"""The judge's reply cache: every reply ever received, keyed by request, under the output directory.

A key is the hash of (judge model, rendered messages, temperature, max_tokens); it holds the
replies in the order they were requested (attempt 0, 1, ...). A judgment that needed a second
reply because the first did not parse therefore replays identically on a rerun, and a rerun of
an unchanged judgment sends nothing. Failed requests (errors, and 200s without a usable
completion) are never cached, so a rerun retries them; a later line for the same (key,
attempt) replaces an earlier one (``--retry-failed`` re-asks and appends). Append-only JSONL, flushed per reply: an interrupted run keeps what it paid for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.common.jsonl import JsonlWriter, iter_records

CACHE_FILE = "judge_cache.jsonl"
# Bump when the key's payload changes, so old entries are not matched by accident.
_KEY_VERSION = "1"


def request_key(model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int) -> str:
    payload = json.dumps(
        {"v": _KEY_VERSION, "model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ReplyCache:
    def __init__(self, directory: str | Path):
        self.path = Path(directory) / CACHE_FILE
        self._entries: dict[tuple[str, int], dict[str, Any]] = {}
        for record in iter_records(self.path):
            # Entries without a usable reply (written by versions before 2) are not replayed:
            # they would turn a transient fault into a permanent failure.
            if isinstance(record.get("reply"), str) and record["reply"].strip():
                self._entries[(record["key"], int(record["attempt"]))] = record
        self._writer: JsonlWriter | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, attempt: int) -> dict[str, Any] | None:
        return self._entries.get((key, attempt))

    def put(self, key: str, attempt: int, entry: dict[str, Any]) -> None:
        record = {"key": key, "attempt": attempt, **entry}
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        self._writer.write(record)
        self._entries[(key, attempt)] = record

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
