"""Mask credentials in text before it is stored or printed (error bodies can echo request headers)."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# "Authorization: Bearer <token>" echoed by a server, and OpenAI-style keys (sk-..., sk-proj-...).
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s\"',;]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}")


def mask_secrets(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """``text`` with each given secret, bearer tokens and ``sk-...`` keys replaced by ``***``.

    Secrets shorter than 4 characters (``EMPTY`` placeholders are longer, but "" or "x" are not
    secrets) are left alone: masking them would garble ordinary text.
    """
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _SK_KEY.sub(f"sk-{MASK}", text)
