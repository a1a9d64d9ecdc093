"""Bench output: the JSON report file with provenance (the terminal table is ``harness.bench.cli``'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.common.jsonl import write_json_atomic
from harness.common.provenance import run_provenance


def write_report(path: str | Path | None, report: dict[str, Any]) -> None:
    """Write a bench record's JSON (``record.to_json()``) with this run's provenance; no path, no file."""
    if not path:
        return
    report = {**report, "provenance": run_provenance()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)
