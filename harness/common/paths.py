"""Where selfalign keeps downloaded data and converted models (never inside the package)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SELFALIGN_CACHE`` or ``$XDG_CACHE_HOME/selfalign`` (default ``~/.cache/selfalign``)."""
    explicit = os.environ.get("SELFALIGN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "selfalign"


def repo_root() -> Path:
    """The checkout this code runs from (used for configs/ and the git hash)."""
    return Path(__file__).resolve().parents[2]
