"""Stage manifests: what a stage ran with, what it produced, and whether it can be skipped.

Each stage directory holds a ``manifest.json`` (schema below), written atomically: first with
``status: "running"`` when the stage starts (so a later run knows the directory's config), then
``status: "complete"`` at the end. A stage whose manifest is complete with the same config hash
is skipped; a running one with the same hash resumes; any other directory content is moved
aside (never mixed with new outputs).

Schema (``harness.common.records.StageManifest``, ``kind: "stage"``, ``schema_version`` 1)::

    kind, stage, number, title, status ("running" | "complete"), config_hash, config,
    upstream {stage: output_hash}, data_files {rel: sha256}, outputs {name: relative path},
    output_hash, counts {produced, kept, dropped {reason: n}, ...}, generation {...},
    training {...}, timings {started, finished, wall_s}, resources {peak_rss_mb, peak_rss_scope, cpu_s},
    dist {world_size}, provenance {...}

The pipeline output's own ``manifest.json`` (a summary per stage) is a ``PipelineManifest``
(``kind: "pipeline"``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.jsonl import manifest_kind, read_manifest_file, write_json_atomic
from harness.common.provenance import config_hash, run_provenance, to_jsonable
from harness.common.records import SCHEMA_VERSION, PipelineManifest, StageManifest

MANIFEST = "manifest.json"


@dataclass
class DropCounter:
    """Produced / kept / dropped-by-reason counts of one filtering pass."""

    produced: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def keep(self) -> None:
        self.produced += 1
        self.kept += 1

    def drop(self, reason: str) -> None:
        self.produced += 1
        self.dropped[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"produced": self.produced, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_typed_manifest(directory: Path) -> StageManifest | PipelineManifest | None:
    """The manifest of a stage directory or a pipeline output, typed (None when there is none)."""
    path = directory / MANIFEST
    # Written atomically, so only a foreign file can be unreadable or of no known kind: the
    # runner then treats the directory as holding no stage (and moves it aside).
    if not path.is_file() or manifest_kind(path) is None:
        return None
    manifest = read_manifest_file(path)
    if not isinstance(manifest, (StageManifest, PipelineManifest)):
        raise UserError(f"{path}: a {manifest.kind} manifest where a pipeline's was expected; point --output at a pipeline output")
    return manifest


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """``read_typed_manifest`` as a dict (the runner's view)."""
    manifest = read_typed_manifest(directory)
    return None if manifest is None else manifest.model_dump(mode="json")


def write_pipeline_manifest(output_dir: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(output_dir / MANIFEST, PipelineManifest.model_validate(manifest))


def stage_hash(stage_config: Any, upstream: dict[str, str], data_files: dict[str, str], salt: str) -> str:
    """Cache key of a stage: its config, its inputs' hashes, the data it reads, its code version."""
    return config_hash({"config": to_jsonable(stage_config), "upstream": upstream, "data": data_files}, salt)


_DESCRIPTIVE_FILES = frozenset({"README.md", "selfalign_adapter.json"})


def _canonical_json(value: Any) -> Any:
    """Sorted keys (by json.dumps) and sorted lists of strings: sets that libraries write in any order."""
    if isinstance(value, dict):
        return {k: _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical_json(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def _canonical_json_bytes(path: Path) -> bytes:
    """A ``.json`` file in canonical form (its bytes if it does not parse).

    peft writes ``adapter_config.json``'s ``target_modules`` from a set, so byte-identical
    adapters get differently ordered configs from run to run; hashing the canonical form keeps
    the hash (and every downstream stage's reuse key) a function of what was computed.
    """
    data = path.read_bytes()
    try:
        return json.dumps(_canonical_json(json.loads(data)), sort_keys=True, ensure_ascii=False).encode()
    except ValueError:
        return data


def files_hash(paths: list[Path]) -> str:
    """One hash over the contents of a stage's primary outputs (what downstream stages key on)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        if p.is_dir():
            # An adapter's model card and selfalign_adapter.json record the command and this
            # machine's paths: they describe the output, they are not part of it.
            for sub in sorted(x for x in p.rglob("*") if x.is_file() and x.name not in _DESCRIPTIVE_FILES):
                h.update(str(sub.relative_to(p)).encode() + b"\0")
                _hash_file(h, sub)
        elif p.is_file():
            _hash_file(h, p)
    return h.hexdigest()[:16]


def _hash_file(h: Any, path: Path) -> None:
    """Feed a file in 1 MiB blocks (a stage's records can be gigabytes); a ``.json`` file (small:
    configs) in its canonical form."""
    if path.suffix == ".json":
        h.update(_canonical_json_bytes(path))
        return
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)


def move_aside(stage_dir: Path, why: str) -> Path | None:
    """Rename a stage directory out of the way (``<dir>.stale-<time>``); returns the new path."""
    if not stage_dir.exists() or not any(stage_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = stage_dir.with_name(f"{stage_dir.name}.stale-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = stage_dir.with_name(f"{stage_dir.name}.stale-{stamp}-{n}")
    stage_dir.rename(target)
    (target / "STALE.txt").write_text(f"moved aside: {why}\n", encoding="utf-8")
    return target


def start_manifest(
    stage_dir: Path, *, stage: str, number: int, title: str, cfg_hash: str, config: Any,
    upstream: dict[str, str], data_files: dict[str, str], world_size: int,
) -> dict[str, Any]:
    manifest = {
        "kind": "stage",
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "number": number,
        "title": title,
        "status": "running",
        "config_hash": cfg_hash,
        "config": to_jsonable(config),
        "upstream": upstream,
        "data_files": data_files,
        "timings": {"started": now_iso()},
        "dist": {"world_size": world_size},
        "provenance": run_provenance(),
    }
    write_json_atomic(stage_dir / MANIFEST, StageManifest.model_validate(manifest))
    return manifest


def finish_manifest(stage_dir: Path, manifest: dict[str, Any], result: dict[str, Any], wall_s: float) -> dict[str, Any]:
    manifest = dict(manifest)
    manifest.update(to_jsonable(result))
    manifest["status"] = "complete"
    manifest["timings"] = {**manifest.get("timings", {}), "finished": now_iso(), "wall_s": round(wall_s, 2)}
    write_json_atomic(stage_dir / MANIFEST, StageManifest.model_validate(manifest))
    return manifest
