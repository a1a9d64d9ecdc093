"""Benchmark and prompt files: read from a data directory, or downloaded at pinned commits.

A data directory is laid out like the upstream repositories (see ``data_manifest.json``):
``truthfulqa/data/v0/mc_task.json``, ``bigbench_hhh/bigbench/benchmark_tasks/hhh_alignment/...``,
``vicuna_bench/fastchat/eval/table/...``, ``dromedary/prompts/...``.

Resolution order: ``--data-dir`` (passed explicitly), then ``$SELFALIGN_DATA_DIR``, then the
download cache ``<cache>/data`` filled from the upstream repositories on first use. Every file
is checked against its pinned sha256 once per process.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.common.errors import UserError
from harness.common.jsonl import read_records
from harness.common.paths import cache_root
from harness.common.provenance import sha256_file

DATA_DIR_ENV = "SELFALIGN_DATA_DIR"
_MANIFEST_PATH = Path(__file__).with_name("data_manifest.json")
_RAW_URL = "https://raw.githubusercontent.com/{repo}/{ref}/{path}"


@dataclass(frozen=True)
class DataFile:
    rel: str
    repo: str
    path: str
    ref: str
    sha256: str

    @property
    def url(self) -> str:
        return _RAW_URL.format(repo=self.repo, ref=self.ref, path=self.path)


@functools.cache
def manifest() -> dict[str, DataFile]:
    raw = json.loads(_MANIFEST_PATH.read_text())["files"]
    return {rel: DataFile(rel, e["repo"], e["path"], e["ref"], e["sha256"]) for rel, e in raw.items()}


def resolve_data_dir(data_dir: str | Path | None = None) -> tuple[Path, bool]:
    """(directory, may_download). An explicit or env directory is never written to."""
    if data_dir:
        path = Path(data_dir).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"--data-dir {data_dir}: no such directory; point it at a copy laid out like shared/data")
        return path, False
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"${DATA_DIR_ENV}={env}: no such directory; unset it or point it at a data directory")
        return path, False
    return cache_root() / "data", True


_verified: set[tuple[str, str]] = set()
_read: dict[str, str] = {}  # rel -> sha256 of every file served in this process (provenance)


def _download(entry: DataFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(entry.url, timeout=30) as resp, tmp.open("wb") as out:
            out.write(resp.read())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"data file {entry.rel} is missing and could not be downloaded ({getattr(exc, 'reason', exc)}); "
            f"pass --data-dir DIR (or set ${DATA_DIR_ENV}) to a directory laid out like shared/data"
        ) from None
    os.replace(tmp, dest)


def data_file(rel: str, data_dir: str | Path | None = None) -> Path:
    """Absolute path of a manifest file, downloading it if needed, with its sha256 verified."""
    entry = manifest().get(rel)
    if entry is None:
        raise UserError(f"{rel} is not a known data file; see harness/data_manifest.json")
    root, may_download = resolve_data_dir(data_dir)
    path = root / rel
    if not path.is_file():
        if not may_download:
            raise UserError(
                f"data file {rel} not found under {root}; copy it there (upstream {entry.repo}:{entry.path}) "
                f"or drop --data-dir/${DATA_DIR_ENV} to download it"
            )
        _download(entry, path)
    key = (str(path), entry.sha256)
    if key not in _verified:
        actual = sha256_file(path)
        if actual != entry.sha256:
            fix = "delete it to re-download" if may_download else "restore the upstream file"
            raise UserError(
                f"data file {path} is corrupt or a different version (sha256 {actual[:12]}..., "
                f"expected {entry.sha256[:12]}...); {fix}"
            )
        _verified.add(key)
    _read[rel] = entry.sha256
    return path


def files_read() -> dict[str, str]:
    """``{relative path: sha256}`` of every data file served (and verified) in this process."""
    return dict(sorted(_read.items()))


def read_text(rel: str, data_dir: str | Path | None = None) -> str:
    return data_file(rel, data_dir).read_text(encoding="utf-8")


def read_json(rel: str, data_dir: str | Path | None = None):
    return json.loads(data_file(rel, data_dir).read_text(encoding="utf-8-sig"))


def read_jsonl(rel: str, data_dir: str | Path | None = None) -> list[dict]:
    """A data file's JSONL records (read whole: a torn last line is an error, not skipped)."""
    return read_records(data_file(rel, data_dir), strict=True)
