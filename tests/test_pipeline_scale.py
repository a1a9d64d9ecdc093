"""The pipeline's bookkeeping at scale: the fake engine, the paper-count dry run scaled down, and
a kill -9 in the middle of stage 2 followed by a rerun."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.common.jsonl import iter_records, read_records
from pipeline.engine.base import GenerationRequest, SamplingParams
from pipeline.engine.registry import make_engine

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN = ROOT / "configs" / "pipeline" / "scale_dry_run.yaml"

# configs/pipeline/scale_dry_run.yaml at 1/50 of the paper's counts
ONE_FIFTIETH = [
    "stage1.self_instruct.num_requests=3600",
    "stage1.self_instruct.max_instructions=5352",
    "stage1.tgrt.max_topic_prompts_per_type=14",
    "stage1.tgrt.max_topics_per_type=110",  # 2,200 questions: the 1,982 cap binds
    "stage1.tgrt.max_questions=1982",
    "stage2.max_prompts=7200",
    "stage4.max_prompts=7176",
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_fake_engine_is_deterministic_per_seed_and_speaks_each_stage_format():
    engine = make_engine("fake", "unused")
    prompt = "meta\n###\n1. Instruction: Write a poem about the sea\n1. Input:\n<noinput>\n###\n2. Instruction:"
    params = SamplingParams(max_new_tokens=64)
    a = engine.generate([GenerationRequest("x", prompt, 1), GenerationRequest("y", prompt, 2)], params)
    b = engine.generate([GenerationRequest("y", prompt, 2)], params)
    assert a[1].text == b[0].text and a[0].text != a[1].text
    from pipeline.stages import self_instruct

    parsed = self_instruct.parse_completion(a[0].text, 1, a[0].finish_reason)
    assert [p.reason for p in parsed] == [None] * 5 + ["truncated"]
    stop = engine.generate([GenerationRequest("z", "...\n\nWatson (internal thoughts):", 3)], SamplingParams(stop=("\n\nUser:",)))
    assert stop[0].finish_reason == "stop" and "\n\nWatson: " in stop[0].text and "User:" not in stop[0].text


def _prompts_file(path: Path, n: int) -> Path:
    rng = random.Random(0)
    words = "river planet budget poem recipe theorem history climate market garden".split()
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i:06d}", "instruction": "Explain " + " ".join(rng.choices(words, k=6)), "input": ""}) + "\n")
    return path


def _stage2_cmd(tiny_model_dir, data_dir, prompts, out) -> list[str]:
    return _cli(
        "pipeline", "run", "--config", str(DRY_RUN), "--output", str(out), "--stages", "2", "--data-dir", str(data_dir),
        "--set", f"model.base={tiny_model_dir}", "--set", f"stage2.prompts_file={prompts}", "--set", "engine.chunk_size=50",
    )


def test_kill_9_during_stage_2_then_rerun_loses_and_duplicates_nothing(tiny_model_dir, data_dir, tmp_path):
    n = 6000
    prompts = _prompts_file(tmp_path / "prompts.jsonl", n)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_stage2_cmd(tiny_model_dir, data_dir, prompts, reference), env=_env(), check=True, capture_output=True)

    # Kill at a random point of the generation (a random number of records already written).
    target = random.Random(time.time_ns()).randint(n // 10, 9 * n // 10)
    proc = subprocess.Popen(_stage2_cmd(tiny_model_dir, data_dir, prompts, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gen = killed / "02_self_align" / "generations"
    written = 0
    while proc.poll() is None:
        shards = list(gen.glob("self_align.shard*.jsonl")) if gen.exists() else []
        written = sum(1 for s in shards for _ in s.open("rb"))
        if written >= target:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill (wrote {written} of {n})"
    assert not (killed / "02_self_align" / "records.jsonl").exists()

    subprocess.run(_stage2_cmd(tiny_model_dir, data_dir, prompts, killed), env=_env(), check=True, capture_output=True)
    shard_ids = Counter(r["id"] for s in gen.glob("self_align.shard*.jsonl") for r in iter_records(s, strict=True))
    assert len(shard_ids) == n and set(shard_ids.values()) == {1}, "a completion was lost or generated twice"
    records = read_records(killed / "02_self_align" / "records.jsonl", strict=True)
    assert [r["id"] for r in records] == [f"p{i:06d}" for i in range(n)]
    # The same records as the uninterrupted run, byte for byte.
    assert (killed / "02_self_align" / "records.jsonl").read_bytes() == (reference / "02_self_align" / "records.jsonl").read_bytes()
    manifest = json.loads((killed / "02_self_align" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] is True


@pytest.mark.slow
def test_dry_run_at_one_fiftieth_of_the_paper_counts(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "dry"
    sets = [x for s in [*ONE_FIFTIETH, f"model.base={tiny_model_dir}"] for x in ("--set", s)]
    subprocess.run(
        _cli("pipeline", "run", "--config", str(DRY_RUN), "--output", str(out), "--data-dir", str(data_dir), *sets),
        env=_env(), check=True, capture_output=True,
    )
    manifests = {d.name: json.loads((d / "manifest.json").read_text()) for d in sorted(out.iterdir()) if (d / "manifest.json").exists()}
    assert [m["status"] for m in manifests.values()] == ["complete"] * 4
    for m in manifests.values():
        assert m["timings"]["wall_s"] > 0 and 0 < m["resources"]["peak_rss_mb"] < 4096
    s1 = manifests["01_tgrt_self_instruct"]["counts"]
    assert s1["by_source"]["self_instruct"]["kept"] == 5352 and s1["by_source"]["tgrt"]["kept"] == 1982
    assert s1["produced"] > 20_000  # ~1/50 of the ~1M candidates
    assert sum(1 for _ in (out / "01_tgrt_self_instruct" / "prompts.jsonl").open()) == 5352 + 1982
    assert manifests["02_self_align"]["counts"]["produced"] == 7200
    assert manifests["04_verbose_clone"]["counts"]["produced"] == 7176
    for stage in ("03_engrave", "04_verbose_clone"):
        assert manifests[stage]["training"]["steps"] == 2
