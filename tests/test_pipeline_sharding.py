"""Sharded generation: ranks split requests, merge deterministically, and match one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.common.config import load_config
from harness.common.jsonl import read_records
from pipeline.config import PipelineConfig
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.runner import run
from pipeline.sharding import DistContext, generate_sharded, request_seed
from tests.pipeline_fakes import ScriptedEngine

REPO = Path(__file__).resolve().parents[1]


def seeded_echo(request: GenerationRequest, params: SamplingParams) -> tuple[str, str]:
    # Output depends on the request's own seed only, like a real sampled completion.
    return f"{request.id}:{request.seed % 1000}", "stop"


def test_request_seed_depends_on_global_seed_and_id_only():
    assert request_seed(42, "a") == request_seed(42, "a")
    assert len({request_seed(42, "a"), request_seed(43, "a"), request_seed(42, "b")}) == 3
    assert 0 <= request_seed(1, "x") < 2**63


def test_dist_context_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert DistContext.from_env() == DistContext(1, 3)
    assert DistContext.from_env(rank=0, world_size=1) == DistContext(0, 1)
    with pytest.raises(Exception, match="need 0 <= rank < world size"):
        DistContext(2, 2)


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"r{i:02d}", f"prompt {i}", request_seed(7, f"r{i:02d}")) for i in range(n)]


def test_two_ranks_split_the_work_and_merge_to_the_single_process_result(tmp_path):
    requests = _requests(7)
    params = SamplingParams(max_new_tokens=4, temperature=1.0)
    single, _ = generate_sharded("step", requests, params, gen_dir=tmp_path / "one", dist=DistContext(), engine=lambda: ScriptedEngine(seeded_echo))

    engines = {r: ScriptedEngine(seeded_echo) for r in (0, 1)}
    results: dict[int, list] = {}

    def rank(r: int) -> None:
        dist = DistContext(r, 2, poll_s=0.01, timeout_s=30)
        results[r], _ = generate_sharded("step", requests, params, gen_dir=tmp_path / "two", dist=dist, engine=lambda: engines[r], chunk_size=2)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engines[0].requested_ids == ["r00", "r02", "r04", "r06"]
    assert engines[1].requested_ids == ["r01", "r03", "r05"]
    strip = lambda recs: [(r["id"], r["text"], r["finish_reason"]) for r in recs]  # noqa: E731
    assert strip(results[0]) == strip(results[1]) == strip(single)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "step.shard000-of-002.done", "step.shard000-of-002.jsonl", "step.shard001-of-002.done", "step.shard001-of-002.jsonl",
    ]


def test_resume_with_a_different_world_size_reuses_finished_work(tmp_path):
    requests = _requests(6)
    params = SamplingParams(max_new_tokens=4)
    gen = tmp_path / "gen"
    # rank 1 of 2 finishes its share, rank 0 never runs; then the job restarts as one process
    first = ScriptedEngine(seeded_echo)
    with pytest.raises(Exception, match="gave up"):
        generate_sharded("step", requests, params, gen_dir=gen, dist=DistContext(1, 2, timeout_s=0.05, poll_s=0.01), engine=lambda: first)
    assert first.requested_ids == ["r01", "r03", "r05"]
    second = ScriptedEngine(seeded_echo)
    merged, stats = generate_sharded("step", requests, params, gen_dir=gen, dist=DistContext(), engine=lambda: second)
    assert second.requested_ids == ["r00", "r02", "r04"]
    assert [r["id"] for r in merged] == [r.id for r in requests] and stats.requests == 6


def _run_cli(out: Path, cfg: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--output", str(out), "--stages", "2", "--data-dir", str(data_dir), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_stage2_over_two_processes_equals_one_process_greedy(tmp_path, tiny_model_dir, data_dir):
    """Real engine (tiny model), greedy: the merged 2-rank output equals the 1-process output."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"Question number {i}: what is {i} plus {i}?"}) + "\n" for i in range(5)))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{base: {tiny_model_dir}}}\n"
        "engine: {options: {batch_size: 2}, chunk_size: 2}\n"
        f"stage2: {{prompts_file: {prompts}, temperature: 0.0, max_new_tokens: 8}}\n"
    )
    ranks = [_run_cli(tmp_path / "two", cfg, data_dir, "--rank", str(r), "--world-size", "2") for r in (0, 1)]
    # meanwhile, the single-process reference, in this process
    run(load_config(PipelineConfig, cfg), tmp_path / "one", "2", data_dir=data_dir, dist=DistContext())
    for p in ranks:
        assert p.wait(timeout=120) == 0, p.stderr.read()

    one = read_records(tmp_path / "one" / "02_self_align" / "records.jsonl")
    two = read_records(tmp_path / "two" / "02_self_align" / "records.jsonl")
    assert [r["id"] for r in one] == [f"p{i}" for i in range(5)]
    assert one == two
    assert any(r["raw_output"] for r in one)  # the model really generated text
    shards = sorted(p.name for p in (tmp_path / "two" / "02_self_align" / "generations").glob("*.jsonl"))
    assert shards == ["self_align.shard000-of-002.jsonl", "self_align.shard001-of-002.jsonl"]
    manifest = json.loads((tmp_path / "two" / "02_self_align" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["dist"]["world_size"] == 2
