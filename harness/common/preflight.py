"""Checks run before any work: output paths and numeric flags, each failing in one line.

The argparse types here turn ``--limit -1`` or ``--timeout-s abc`` into argparse's usual one-line
usage error (exit 2) at parse time, before a model is loaded or a request is sent.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from harness.common.errors import UserError


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """``path`` is a directory, or can be created, and is writable; nothing is created here."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is an existing file, not a directory; pass a directory path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {path}: {probe} is a file, so the directory cannot be created; pass another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created ({probe} is not writable)"
        raise UserError(f"{flag} {path} {what}; choose a writable location")
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """``path`` names a file that can be written (not a directory; its directory exists or can be made)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; pass a file path (e.g. {path / 'bench.json'})")
    check_output_dir(path.parent if str(path.parent) else Path("."), f"{flag} (its directory)")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} is not writable; choose another path")
    return path


def _number(kind: type, low: float | None, high: float | None, low_open: bool) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, None, False)
nonnegative_int = _number(int, 0, None, False)
positive_float = _number(float, 0, None, True)
nonnegative_float = _number(float, 0, None, False)
