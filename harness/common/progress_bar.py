"""The one rich progress-bar layout of every long loop: label, bar, done/total, extra text, times.

When the output is not a terminal (CI logs, ``nohup``, a pipe) rich draws nothing until the end;
there the same ``Progress`` API prints one plain line per changed task at a steady interval.
"""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Seconds between plain progress lines when the output is not a terminal.
DEFAULT_LINE_INTERVAL_S = 30.0


def progress_bar(
    label: str = "[bold]{task.description}", extra: str | None = None, console: Console | None = None,
    line_interval_s: float = DEFAULT_LINE_INTERVAL_S,
) -> Progress:
    """A ``Progress`` with the shared columns; ``extra`` is a text column of task fields. On a
    non-terminal console, a ``PlainLineProgress`` printing every ``line_interval_s`` seconds."""
    console = console or Console()
    if not console.is_terminal:
        return PlainLineProgress(label, extra, console=console, interval_s=line_interval_s)
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if extra is not None:
        columns.append(TextColumn(extra))
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainLineProgress(Progress):
    """Tracks tasks like ``Progress`` but draws no live display; a background thread prints
    ``label: done/total (pct) elapsed eta extra`` for each task that moved, every ``interval_s``
    seconds, and once more on ``stop()``."""

    def __init__(self, label: str, extra: str | None, *, console: Console, interval_s: float) -> None:
        super().__init__(console=console, disable=True)
        self._label, self._extra, self._interval_s = label, extra, interval_s
        self._printed: dict[int, float] = {}
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, task: Task) -> str:
        label = Text.from_markup(self._label.format(task=task)).plain
        done = f"{_count(task.completed)}/{_count(task.total)} ({task.percentage:.0f}%)" if task.total else _count(task.completed)
        text = f"{label}: {done} elapsed {_duration(task.elapsed)} eta {_duration(task.time_remaining)}"
        if self._extra is not None:
            text += " " + Text.from_markup(self._extra.format(task=task)).plain
        return text.rstrip()

    def print_changed(self) -> None:
        with self._lock:
            tasks = [t for t in self.tasks if self._printed.get(t.id) != t.completed]
            for t in tasks:
                self._printed[t.id] = t.completed
            lines = [self.line(t) for t in tasks]
        for line in lines:
            self.console.file.write(line + "\n")
        self.console.file.flush()

    def _loop(self) -> None:
        while not self._halt.wait(self._interval_s):
            self.print_changed()

    def start(self) -> None:
        super().start()
        if self._thread is None:
            self._halt.clear()
            self._thread = threading.Thread(target=self._loop, name="progress-lines", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None
        self.print_changed()
        super().stop()


def _count(value: float) -> str:
    """1184000 as ``1184000``, not ``1.184e+06`` (rich keeps counts as floats)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
