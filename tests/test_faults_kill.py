"""kill -9 at seeded random moments of a judge run, an evaluation and a tiny pipeline; the rerun
must give what an uninterrupted run gives: same verdicts and metrics, no lost or duplicated ids.

Each killed process is a real ``selfalign`` (or pipeline) child; the moment is chosen by a seeded
RNG among progress points (cache lines written, generations written) so the test is repeatable.
"""

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

from harness.common.run_files import samples_path
from harness.judge.run import JudgeConfig, run_judge
from tests.servers import chat_reply, scripted_servers
from tests.test_faults_judge import verdict

REPO = Path(__file__).resolve().parents[1]
SEED = 20231121


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> bool:
    """SIGKILL ``proc`` once ``ready()``; False when it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the child neither reached the kill point nor finished")
        time.sleep(0.01)
    return False


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if not (k.endswith("_s") or "seconds" in k or k in ("cached", "http_attempts"))}


def test_judge_killed_three_times_then_resumed_equals_an_uninterrupted_run(tmp_path, data_dir):
    rng = random.Random(SEED)
    with scripted_servers() as make:
        server = make(lambda payload, n: chat_reply(verdict(payload)), delay_s=0.03)
        base = dict(answers="alpaca-13b", baseline="gpt35", judge_model="m", judge_base_url=server.base_url, data_dir=str(data_dir),
                    limit=15, concurrency=2, progress=False)
        run_judge(JudgeConfig(**base, output=str(tmp_path / "clean")))
        out = tmp_path / "killed"
        argv = [sys.executable, "-m", "harness.cli", "judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(out),
                "--judge-model", "m", "--judge-base-url", server.base_url, "--data-dir", str(data_dir), "--limit", "15",
                "--concurrency", "2", "--no-progress"]
        kills = 0
        for at in sorted(rng.sample(range(1, 30), 3)):  # cache lines written when each kill lands
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
            kills += _kill_when(proc, lambda at=at: _lines(out / "judge_cache.jsonl") >= at)
        summary = run_judge(JudgeConfig(**base, output=str(out)))
    assert kills == 3
    clean, resumed = _records(tmp_path / "clean" / "judgments.jsonl"), _records(out / "judgments.jsonl")
    ids = [r["id"] for r in resumed]
    assert len(ids) == len(set(ids)) == 30  # none lost, none duplicated
    assert [(r["id"], r["scores"]) for r in resumed] == [(r["id"], r["scores"]) for r in clean]
    cache = Counter((c["key"], c["attempt"]) for c in _records(out / "judge_cache.jsonl"))
    assert max(cache.values()) == 1 and len(cache) == 30
    assert summary["n_failed"] == 0
    print(f"FAULT-SUITE judge kill: kills={kills} judgments={len(ids)} lost=0 duplicated=0")


@pytest.mark.slow  # ~40 s on an idle 2-core machine: lm-eval indexes its task registry in each of the three processes
def test_eval_killed_then_resumed_gives_the_uninterrupted_metrics(tmp_path, tiny_model_dir, data_dir):
    from harness.evaluate import EvalConfig, run_eval

    rng = random.Random(SEED)
    common = dict(model_args=f"pretrained={tiny_model_dir}", tasks=["truthfulqa_mc1"], limit=8, data_dir=str(data_dir), batch_size=1)
    clean = run_eval(EvalConfig(**common, output=str(tmp_path / "clean"), use_cache=False))
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "harness.cli", "eval", "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "truthfulqa_mc1",
            "--limit", "8", "--batch_size", "1", "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    delay = rng.uniform(0.0, 1.5)
    started: list[float] = []

    def ready() -> bool:  # a seeded moment after the model is loaded and requests are being answered
        if not started and list(out.glob("*/lm_cache/*.db")):
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] >= delay

    killed = _kill_when(proc, ready)
    resumed = run_eval(EvalConfig(**common, output=str(out)))
    assert killed, "the eval finished before the kill point; lower the delay"
    assert resumed["results"] == clean["results"]
    mid = resumed["selfalign"]["model_id"]
    tasks = sorted(resumed["results"])
    assert tasks
    for task in tasks:
        samples = samples_path(out / mid, task)  # the latest (resumed) run's timestamped log
        doc_ids = [r["doc_id"] for r in _records(samples)]
        assert len(doc_ids) == len(set(doc_ids)) == len(_records(samples_path(tmp_path / "clean" / mid, task))), samples.name
    print(f"FAULT-SUITE eval kill: kills=1 at={delay:.2f}s lost=0 duplicated=0")


def test_pipeline_killed_mid_generation_then_resumed_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, data_dir):
    from tests.fault_child import TINY_STAGES
    from tests.test_pipeline_runner import Harness, make_cfg

    rng = random.Random(SEED)
    clean = Harness(tmp_path / "clean", data_dir)
    clean.run(make_cfg(tiny_model_dir, *TINY_STAGES), "1,2")
    out = tmp_path / "killed"

    def generated() -> int:
        return sum(_lines(p) for p in out.glob("*/generations/*.jsonl"))

    total = sum(_lines(p) for p in clean.out.glob("*/generations/*.jsonl"))
    at = rng.randint(1, total - 1)
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_child", str(out), str(tiny_model_dir), str(data_dir), "1,2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(SELFALIGN_TEST_ENGINE_DELAY_S="0.2"))
    assert _kill_when(proc, lambda: generated() >= at)
    resumed = Harness(out, data_dir)
    resumed.run(make_cfg(tiny_model_dir, *TINY_STAGES), "1,2")
    assert resumed.requested, "the rerun resumed nothing"
    for rel in ("01_tgrt_self_instruct/prompts.jsonl", "02_self_align/records.jsonl"):
        a, b = _records(clean.out / rel), _records(out / rel)
        ids = [r["id"] for r in b]
        assert len(ids) == len(set(ids)), rel
        assert [_without_timings(r) for r in b] == [_without_timings(r) for r in a], rel
    for stage in ("01_tgrt_self_instruct", "02_self_align"):
        assert json.loads((out / stage / "manifest.json").read_text())["counts"] == json.loads((clean.out / stage / "manifest.json").read_text())["counts"]
    print(f"FAULT-SUITE pipeline kill: killed after {at} of {total} generations; lost=0 duplicated=0")
