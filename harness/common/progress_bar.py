"""The one rich progress-bar layout of every long loop: label, bar, done/total, extra text, times."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    label: str = "[bold]{task.description}", extra: str | None = None, console: Console | None = None
) -> Progress:
    """A ``Progress`` with the shared columns; ``extra`` is a text column of task fields."""
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if extra is not None:
        columns.append(TextColumn(extra))
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)
