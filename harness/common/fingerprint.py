"""Content fingerprints of model files: what a model *is*, not what it is called or where it lies.

A fingerprint is the sha256 of every weight, config and tokenizer file (relative name + bytes;
a safetensors file's digest covers its header, so dtype and shapes too). Digests are cached in
the user cache by file identity (path, size, mtime_ns, inode), so a 1 GB model is read once and
later runs cost a ``stat`` per file. Anything that changes the bytes changes the fingerprint;
moving or renaming a model directory does not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.common.paths import cache_root

# Files that make up a model or adapter: weights, configs, tokenizer, chat templates.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt", ".jinja", ".tiktoken")
# Bookkeeping written beside the weights that does not change what the model computes.
IGNORED_NAMES = frozenset({"selfalign_source.json", "selfalign_adapter.json", "training_state.json"})
_CHUNK = 1 << 22
# Bump when the digest recipe changes, so cached digests of the old recipe are not reused.
_DIGEST_VERSION = "1"


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{_DIGEST_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _digest_cache_file(identity: str) -> Path:
    return cache_root() / "fingerprints" / hashlib.sha256(identity.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, memoized in the user cache by (path, size, mtime_ns, inode)."""
    path = Path(path)
    identity = _identity(path)
    memo = _digest_cache_file(identity)
    try:
        cached = memo.read_text().strip()
        if len(cached) == 64:
            return cached
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if _identity(path) == identity:  # not rewritten while we read it
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f"{memo.name}.tmp{os.getpid()}")
            tmp.write_text(digest + "\n")
            os.replace(tmp, memo)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return digest


def model_files(path: Path) -> list[Path]:
    """The files of a model directory (or the file itself) that the fingerprint covers, sorted."""
    if path.is_file():
        return [path]
    return sorted(
        f for f in path.rglob("*")
        if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES and f.name not in IGNORED_NAMES
        and not any(part.startswith(".") for part in f.relative_to(path).parts)
    )


def content_fingerprint(path: str | Path) -> str:
    """sha256 over (relative name, content digest) of every model file under ``path``."""
    root = Path(path).expanduser().resolve()
    h = hashlib.sha256(b"selfalign-model-content-v" + _DIGEST_VERSION.encode())
    files = model_files(root)
    for f in files:
        rel = f.name if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}\0{file_digest(f)}\n".encode())
    return h.hexdigest()
