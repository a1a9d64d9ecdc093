"""Bench output: a rich table on the terminal and a JSON file with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.common.jsonl import write_json_atomic
from harness.common.provenance import run_provenance


def print_table(
    title: str, rows: dict[str, dict[str, Any]], columns: list[tuple[str, str]]
) -> None:
    """One row per measured set; ``columns`` are (key, header) pairs."""
    table = Table(title=title)
    table.add_column("set")
    for _, header in columns:
        table.add_column(header, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(_fmt(row.get(key)) for key, _ in columns))
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_report(path: str | Path | None, report: dict[str, Any]) -> None:
    if not path:
        return
    report = {**report, "provenance": run_provenance()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)
