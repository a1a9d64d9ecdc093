"""Provenance recorded with every output: git hash, package versions, file hashes, config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.common.paths import repo_root

_PACKAGES = ("selfalign", "lm_eval", "torch", "transformers", "peft", "openai", "vllm")


def git_hash(path: str | Path | None = None) -> str | None:
    """Short commit of the checkout (with ``-dirty`` when it has uncommitted changes)."""
    cwd = Path(path) if path else repo_root()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(config: Any, salt: str = "") -> str:
    """Stable hash of a config (dataclass or dict) plus a version salt: the cache key of outputs."""
    payload = json.dumps(to_jsonable(config), sort_keys=True, default=str) + "|" + salt
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_provenance() -> dict[str, Any]:
    return {
        "git_hash": git_hash(),
        "versions": package_versions(),
        "argv": sys.argv,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }
