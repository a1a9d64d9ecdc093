"""Resumable generation, sharded across ranks, merged deterministically.

Rank ``r`` of ``w`` (``RANK``/``WORLD_SIZE`` as set by ``torchrun`` or ``accelerate launch``)
generates requests ``i`` with ``i % w == r`` and appends one JSONL line per completion to its own
shard file. When it is done it writes a marker; every rank then waits for all markers and reads
all shard files, so every rank sees the same merged result (ordered by the caller's request
order, never by completion order). Coordination is through files in the output directory: no
process group is needed, and multi-node runs need only a shared filesystem.

Each request carries a seed derived from (global seed, request id), so a sampled completion does
not depend on the batch it ran in or on the rank that ran it. Resuming skips every id already
present in any shard file of the step, whatever world size wrote it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.jsonl import JsonlWriter, iter_records, write_json_atomic
from pipeline.engine.base import GenerationEngine, GenerationRequest, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    poll_s: float = 1.0
    # Waiting for other ranks has no limit by default: a generation shard can take hours, and
    # torchrun/accelerate tear the whole job down when one rank fails.
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UserError(f"rank {self.rank} / world size {self.world_size}: need 0 <= rank < world size")

    @classmethod
    def from_env(cls, rank: int | None = None, world_size: int | None = None) -> DistContext:
        """Explicit values, else ``RANK``/``WORLD_SIZE`` from the launcher, else a single process."""
        if rank is None:
            rank = int(os.environ.get("RANK", "0"))
        if world_size is None:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(rank=rank, world_size=world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        return index % self.world_size == self.rank

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Poll until ``ready()``; a single process never waits."""
        start = time.monotonic()
        announced = False
        while not ready():
            if self.timeout_s is not None and time.monotonic() - start > self.timeout_s:
                raise UserError(f"rank {self.rank}: gave up after {self.timeout_s:.0f}s waiting for {what}")
            if not announced:
                log.warning("rank %d waiting for %s", self.rank, what)
                announced = True
            time.sleep(self.poll_s)


def request_seed(global_seed: int, request_id: str) -> int:
    """A 63-bit seed from (global seed, id): independent of order, batching and sharding."""
    digest = hashlib.sha256(f"{global_seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class GenerationStats:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.requests += 1
        self.prompt_tokens += int(record.get("prompt_tokens", 0))
        self.completion_tokens += int(record.get("completion_tokens", 0))
        self.seconds += float(record.get("gen_seconds", 0.0))

    def merge(self, other: GenerationStats) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, Any]:
        # Engine seconds summed over ranks: tokens/s is per-process throughput, not wall-clock.
        rate = self.completion_tokens / self.seconds if self.seconds > 0 else None
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "engine_seconds": round(self.seconds, 2),
            "completion_tokens_per_s": round(rate, 2) if rate is not None else None,
        }


def _shard_name(step: str, rank: int, world_size: int) -> str:
    return f"{step}.shard{rank:03d}-of-{world_size:03d}"


def _step_files(gen_dir: Path, step: str) -> list[Path]:
    # Sorted by name: a fixed order decides which copy of an id wins after a world-size change.
    return sorted(gen_dir.glob(f"{step}.shard*-of-*.jsonl"))


def _ids_done(gen_dir: Path, step: str) -> set[str]:
    return {str(r["id"]) for p in _step_files(gen_dir, step) for r in iter_records(p) if "id" in r}


class LazyRequests(Sequence[GenerationRequest]):
    """Requests built when read: ``make(item)`` for each of ``items``.

    A stage-2 prompt embeds the whole constitution (~7 kB); 360k of them would take gigabytes if
    built up front. ``generate_sharded`` builds only the chunk it is sending to the engine.
    """

    def __init__(self, items: Sequence[Any], make: Callable[[Any], GenerationRequest], ids: Sequence[str]):
        if len(ids) != len(items):
            raise ValueError("LazyRequests: one id per item")
        self._items, self._make, self.ids = items, make, list(ids)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._make(item) for item in self._items[index]]
        return self._make(self._items[index])


def generate_sharded(
    step: str,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    *,
    gen_dir: Path,
    dist: DistContext,
    engine: Callable[[], GenerationEngine],
    shared_prefix: str = "",
    chunk_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], GenerationStats]:
    """Completion records (``id, text, finish_reason, prompt_tokens, completion_tokens``) for
    ``requests``, in request order, generated by all ranks together; plus their statistics.

    ``engine`` is called only when this rank has work left, so a resumed or finished step never
    loads a model. ``on_progress(done, total)`` reports this rank's share.
    """
    ids = requests.ids if isinstance(requests, LazyRequests) else [r.id for r in requests]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"step {step}: request id {dup!r} is not unique")
    gen_dir.mkdir(parents=True, exist_ok=True)
    done = _ids_done(gen_dir, step)
    mine = [i for i in range(len(ids)) if dist.owns(i)]
    todo = [i for i in mine if ids[i] not in done]
    del done
    total = len(mine)
    if on_progress:
        on_progress(total - len(todo), total)
    if todo:
        eng = engine()
        with JsonlWriter(gen_dir / f"{_shard_name(step, dist.rank, dist.world_size)}.jsonl") as out:
            for start in range(0, len(todo), max(1, chunk_size)):
                chunk = [requests[i] for i in todo[start : start + chunk_size]]
                t0 = time.perf_counter()
                completions = eng.generate(chunk, params, shared_prefix=shared_prefix)
                per_request = (time.perf_counter() - t0) / max(1, len(chunk))
                if [c.id for c in completions] != [r.id for r in chunk]:
                    raise RuntimeError(f"engine {getattr(eng, 'name', eng)!r} returned completions out of request order")
                for c in completions:
                    out.write({
                        "id": c.id, "text": c.text, "finish_reason": c.finish_reason, "stop_string": c.stop_string,
                        "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                        # the chunk's engine time, shared equally: sums stay right across resumes
                        "gen_seconds": round(per_request, 4),
                    })
                if on_progress:
                    on_progress(total - len(todo) + start + len(chunk), total)
    marker = gen_dir / f"{_shard_name(step, dist.rank, dist.world_size)}.done"
    write_json_atomic(marker, {"rank": dist.rank, "world_size": dist.world_size, "requests": total})

    markers = [gen_dir / f"{_shard_name(step, r, dist.world_size)}.done" for r in range(dist.world_size)]
    dist.wait_for(lambda: all(m.exists() for m in markers), f"all {dist.world_size} ranks to finish step {step}")

    # Only the ids asked for: a shard file may hold records of requests no longer asked for.
    wanted = set(ids)
    merged: dict[str, dict[str, Any]] = {}
    for path in _step_files(gen_dir, step):
        for rec in iter_records(path):
            rid = str(rec["id"])
            if rid in wanted and rid not in merged:
                merged[rid] = rec
    del wanted
    missing = [i for i in ids if i not in merged]
    if missing:
        raise UserError(
            f"step {step}: {len(missing)} requests have no completion after all ranks finished "
            f"(first: {missing[0]!r}); a shard file in {gen_dir} was removed or truncated; rerun to fill it"
        )
    records = [merged.pop(i) for i in ids]
    stats = GenerationStats()
    for rec in records:
        stats.add(rec)
    return records, stats
