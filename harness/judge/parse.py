"""Score-pair parsers for the Vicuna reviewer replies: named rules, and failures that say why.

FastChat's ``parse_score`` took the reply's first line, turned commas into spaces and read two
floats, returning ``[-1, -1]`` on anything else; the -1s were then averaged or filtered
downstream. Here a reply that yields no valid pair is a ``ParseResult`` with ``scores=None`` and
an ``error``: the caller retries it and counts it as failed, never as a tie or a score.

Rules, tried in order (``PARSERS`` names the chains):

* ``first_line``: the first non-blank line is exactly two numbers separated by spaces and/or a
  comma (the general and coding prompts ask for this);
* ``labels``: the last ``Assistant 1: X`` and ``Assistant 2: Y`` (optionally ``X/10``);
* ``tuple``: the last ``(X, Y)`` (the math prompt asks for "a Python tuple" at the end);
* ``score_of``: "... Assistant 1 a score of X and Assistant 2 a score of Y".

The later rules are what the recorded GPT-4 math reviews need (their first line is "First, I
will solve the problem independently"); ``tests/test_judge_parse.py`` checks every rule
against all recorded review files. Scores must lie on 0-10 (the prompts say 1-10; the recorded GPT-4 reviews also use 0).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.common.registry import lookup

# The prompts ask for 1-10, but GPT-4 gives 0 to an empty answer in the recorded reviews
# (llama-13b, question 74), and FastChat kept it: 0 is on the scale.
SCALE = (0.0, 10.0)

_NUM = r"(\d+(?:\.\d+)?)"
_FIRST_LINE = re.compile(rf"^\s*{_NUM}\s*(?:,\s*|\s+){_NUM}\s*$")
_LABEL = {
    1: re.compile(rf"Assistant 1[ \t]*:[ \t]*{_NUM}(?:[ \t]*/[ \t]*10)?(?!\.?\d)"),
    2: re.compile(rf"Assistant 2[ \t]*:[ \t]*{_NUM}(?:[ \t]*/[ \t]*10)?(?!\.?\d)"),
}
_TUPLE = re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")
_SCORE_OF = re.compile(
    rf"Assistant 1 (?:a|an overall) score of {_NUM}.{{0,80}}?Assistant 2 (?:a|an overall) score of {_NUM}",
    re.DOTALL,
)


@dataclass(frozen=True)
class ParseResult:
    scores: tuple[float, float] | None  # (Assistant 1, Assistant 2) as the judge gave them
    rule: str | None  # which rule matched
    error: str | None  # why no pair was found (None when scores is set)

    @property
    def ok(self) -> bool:
        return self.scores is not None


def _first_line(text: str) -> tuple[float, float] | None:
    stripped = text.strip()
    if not stripped:
        return None
    match = _FIRST_LINE.match(stripped.splitlines()[0])
    return (float(match.group(1)), float(match.group(2))) if match else None


def _labels(text: str) -> tuple[float, float] | None:
    found = [list(_LABEL[i].finditer(text)) for i in (1, 2)]
    if not found[0] or not found[1]:
        return None
    return float(found[0][-1].group(1)), float(found[1][-1].group(1))


def _tuple(text: str) -> tuple[float, float] | None:
    matches = list(_TUPLE.finditer(text))
    return (float(matches[-1].group(1)), float(matches[-1].group(2))) if matches else None


def _score_of(text: str) -> tuple[float, float] | None:
    matches = list(_SCORE_OF.finditer(text))
    return (float(matches[-1].group(1)), float(matches[-1].group(2))) if matches else None


RULES: dict[str, Callable[[str], tuple[float, float] | None]] = {
    "first_line": _first_line,
    "labels": _labels,
    "tuple": _tuple,
    "score_of": _score_of,
}

# parser name -> rules tried in order
PARSERS: dict[str, tuple[str, ...]] = {
    # FastChat's rule alone
    "first_line": ("first_line",),
    # default: FastChat's rule, then what the math prompt's free-form replies need
    "vicuna": ("first_line", "labels", "tuple", "score_of"),
}
DEFAULT_PARSER = "vicuna"


def parse_scores(text: str | None, parser: str = DEFAULT_PARSER) -> ParseResult:
    """The (Assistant 1, Assistant 2) scores of a reviewer reply, or the reason there are none."""
    rules = lookup("score parser", parser, PARSERS)
    if text is None or not text.strip():
        return ParseResult(None, None, "empty reply")
    for name in rules:
        pair = RULES[name](text)
        if pair is None:
            continue
        low, high = SCALE
        bad = [s for s in pair if not low <= s <= high]
        if bad:
            return ParseResult(None, name, f"{name}: score {bad[0]:g} outside the {low:g}-{high:g} scale")
        return ParseResult(pair, name, None)
    first = text.strip().splitlines()[0][:80]
    return ParseResult(None, None, f"no score pair ({'/'.join(rules)}); first line: {first!r}")
