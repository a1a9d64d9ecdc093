"""Progress is visible when output is not a terminal: plain lines at a steady interval."""

from __future__ import annotations

import io
import time

from rich.console import Console

from harness.common.progress_bar import PlainLineProgress, progress_bar


def test_non_terminal_output_gets_plain_lines_at_an_interval():
    out = io.StringIO()
    progress = progress_bar(extra="{task.fields[rate]}", console=Console(file=out, force_terminal=False), line_interval_s=0.05)
    assert isinstance(progress, PlainLineProgress)
    progress.start()
    task = progress.add_task("loglikelihood requests", total=8, rate="")
    for i in range(8):
        time.sleep(0.04)
        progress.update(task, advance=1, rate=f"{i + 1}.00 req/s")
    time.sleep(0.12)  # nothing moved: no repeated line
    progress.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3, lines  # intermediate lines, not one at the end
    assert all(line.startswith("loglikelihood requests: ") for line in lines)
    assert "\x1b" not in out.getvalue()  # no escape codes in a log
    assert lines[-1].startswith("loglikelihood requests: 8/8 (100%) elapsed 0:00:00") and lines[-1].endswith("8.00 req/s")
    assert len(set(lines)) == len(lines)
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and counts[0] < 8


def test_terminal_output_keeps_the_rich_bar():
    progress = progress_bar(console=Console(file=io.StringIO(), force_terminal=True))
    assert not isinstance(progress, PlainLineProgress)


def test_large_counts_print_as_integers():
    out = io.StringIO()
    progress = progress_bar(console=Console(file=out, force_terminal=False), line_interval_s=0.01)
    progress.start()
    task = progress.add_task("stage 1: novelty filter", total=1_184_000)
    progress.update(task, completed=241_664)
    time.sleep(0.05)
    progress.stop()
    assert "stage 1: novelty filter: 241664/1184000 (20%)" in out.getvalue()
