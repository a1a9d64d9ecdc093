"""Name lookups that fail with "did you mean" suggestions instead of a KeyError."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

from harness.common.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """A hint like ``did you mean 'hhh'?`` (empty when nothing is close)."""
    close = difflib.get_close_matches(name, sorted(known), n=n, cutoff=0.5)
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name_error(kind: str, name: str, known: Iterable[str], where: str = "") -> UserError:
    known = sorted(known)
    hint = did_you_mean(name, known)
    listing = ", ".join(known) if len(known) <= 12 else ", ".join(known[:12]) + ", ..."
    msg = f"unknown {kind} {name!r}"
    if where:
        msg += f" ({where})"
    msg += f"; {hint} " if hint else "; "
    msg += f"known: {listing}"
    return UserError(msg)


def lookup(kind: str, name: str, table: Mapping[str, T], where: str = "") -> T:
    """``table[name]`` or a UserError naming the closest known names."""
    try:
        return table[name]
    except KeyError:
        raise unknown_name_error(kind, name, table.keys(), where) from None
