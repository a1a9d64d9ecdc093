"""Shared by the answer stages (2 and 4): repetition cut, truncated-word trim and the keep/drop verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Segment boundaries of the reference's ``dedup`` (stage 4 adds the backtick).
SELF_ALIGN_BOUNDARIES = "\n.?!;:,"
VERBOSE_BOUNDARIES = "\n.?!;:,`"

# Appended to an answer that ended its turn: the reference trains the model to end its turn by
# starting the next one, and cuts generation at "### User" at inference.
END_OF_TURN = "\n\n### User\n"


@dataclass(frozen=True)
class AnswerVerdict:
    """One generated answer kept (``answer``) or dropped (``reason``), as stages 2 and 4 decide."""

    answer: str | None
    reason: str | None = None  # None: kept
    detail: str | None = None  # e.g. the blacklisted phrase found


def cut_repetition(text: str, boundaries: str = SELF_ALIGN_BOUNDARIES) -> str:
    """Keep ``text`` up to the first segment that repeats an earlier one (the reference's ``dedup``).

    Segments end after each boundary character. Empty segments and segments made only of
    boundary characters may repeat (the reference tests ``segment in boundaries``, a substring
    test, which this keeps so that outputs match).
    """
    pieces = re.split(f"(?<=[{re.escape(boundaries)}])", text)
    kept: list[str] = []
    for piece in pieces:
        if piece not in kept or piece == "" or piece in boundaries:
            kept.append(piece)
        else:
            break
    return "".join(kept).strip()


def drop_truncated_word(text: str) -> str:
    """Drop the last, possibly cut-off word of an answer that hit the token limit."""
    return text.rsplit(" ", 1)[0]
