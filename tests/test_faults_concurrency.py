"""Two writers on one output directory: the second stops at once naming the first; a lock left by
a dead process is taken over, and this is said."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.common.dirlock import LOCK_FILE, DirectoryLockedError, output_lock
from tests.servers import chat_reply, scripted_servers

REPO = Path(__file__).resolve().parents[1]
HOLD = "import sys, time\nfrom harness.common.dirlock import output_lock\nwith output_lock(sys.argv[1], 'test holder'):\n    print('held', flush=True)\n    time.sleep(120)\n"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture
def holder():
    """``hold(dir)`` starts a process holding ``dir``'s lock; all are killed at the end."""
    procs = []

    def hold(directory: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True, env=_env())
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, holder, capsys):
    proc = holder(tmp_path)
    with pytest.raises(DirectoryLockedError, match=rf"is in use by pid {proc.pid} on .*test holder"):
        with output_lock(tmp_path, "second"):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with output_lock(tmp_path, "third"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"took over the lock of {tmp_path} left by pid {proc.pid}" in err
    assert not (tmp_path / LOCK_FILE).exists()  # a clean release leaves nothing to take over
    with output_lock(tmp_path, "fourth"), output_lock(tmp_path, "nested in the same process"):
        pass
    assert "took over" not in capsys.readouterr().err


def test_every_writing_command_refuses_a_locked_directory(tmp_path, holder, tiny_model_dir, data_dir, capsys):
    from tests.test_pipeline_runner import Harness, make_cfg

    # a finished stage and an evaluation that a second writer must not touch
    harness = Harness(tmp_path / "pipe", data_dir)
    harness.run(make_cfg(tiny_model_dir, "stage1.tgrt.enabled=false", "stage2.max_prompts=2"), "1,2")
    pipecfg = tmp_path / "p.yaml"
    pipecfg.write_text(f"model:\n  base: {tiny_model_dir}\n")
    runcfg = tmp_path / "r.yaml"
    runcfg.write_text(f"name: r\noutput: {tmp_path / 'runs'}\npipeline:\n  enabled: false\n  config: {pipecfg}\n"
                      "checkpoints: [base]\neval:\n  tasks: [truthfulqa_mc1]\njudge:\n  enabled: false\n")
    report_in = tmp_path / "evalout" / "m"
    report_in.mkdir(parents=True)
    model_out = tmp_path / "evalout" / Path(tiny_model_dir).name
    commands = {
        "eval": (model_out, ["eval", "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "truthfulqa_mc1", "--limit", "1",
                             "--output", str(tmp_path / "evalout"), "--data-dir", str(data_dir)]),
        "judge": (tmp_path / "j", ["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(tmp_path / "j"),
                                   "--judge-base-url", "http://127.0.0.1:9/v1", "--data-dir", str(data_dir), "--limit", "1"]),
        "pipeline run": (harness.out, ["pipeline", "run", "--config", str(pipecfg), "--output", str(harness.out), "--stages", "2",
                                       "--data-dir", str(data_dir), "--set", "stage2.max_prompts=3"]),
        "run": (tmp_path / "runs" / "r", ["run", "--config", str(runcfg), "--data-dir", str(data_dir)]),
        "report": (tmp_path / "rep", ["report", str(_scored_eval_dir(report_in)), "--output", str(tmp_path / "rep"), "--quiet"]),
    }
    capsys.readouterr()
    for name, (directory, argv) in commands.items():
        proc = holder(directory)
        before = sorted(str(p) for p in directory.rglob("*"))
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (name, err)
        assert f"is in use by pid {proc.pid}" in err[0], (name, err)
        assert sorted(str(p) for p in directory.rglob("*")) == before, name
        assert not any(".stale-" in p.name for p in harness.out.iterdir())


def _scored_eval_dir(d: Path) -> Path:
    (d / "results.json").write_text(json.dumps({
        "results": {"selfalign_truthfulqa_mc1": {"alias": "truthfulqa_mc1", "acc,none": 0.5, "acc_stderr,none": 0.5}},
        "n-samples": {"selfalign_truthfulqa_mc1": {"effective": 2, "original": 817}},
        "selfalign": {"model_id": "m", "task_versions": {"selfalign_truthfulqa_mc1": 2.0}},
    }))
    rows = [{"doc_id": i, "acc": float(i % 2), "doc": {}, "arguments": [], "resps": []} for i in range(2)]
    (d / "samples_truthfulqa_mc1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_two_concurrent_judges_on_one_directory(tmp_path, data_dir):
    """The probe's scenario: two `selfalign judge` processes on one output directory."""
    with scripted_servers() as make:
        server = make(lambda payload, n: chat_reply(f"{1 + n % 9} {9 - n % 9}\nreason"), delay_s=0.05)
        out = tmp_path / "j"
        argv = [sys.executable, "-m", "harness.cli", "judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(out),
                "--judge-model", "m", "--judge-base-url", server.base_url, "--data-dir", str(data_dir), "--limit", "20",
                "--concurrency", "1", "--no-progress"]
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        _wait_for(lambda: len(server.requests) >= 2)
        second = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300)
        out_first, err_first = first.communicate(timeout=300)
    assert first.returncode == 0, err_first
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1 and f"is in use by pid {first.pid}" in lines[0], second.stderr
    cache = [json.loads(line) for line in (out / "judge_cache.jsonl").read_text().splitlines()]
    keys = Counter((c["key"], c["attempt"]) for c in cache)
    assert len(cache) == 40 and max(keys.values()) == 1  # no interleaved second writer: 0 duplicated keys
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len({j["id"] for j in judgments}) == len(judgments) == 40


def test_pipeline_rank_0_holds_the_lock_for_all_ranks(tmp_path, holder, tiny_model_dir, data_dir):
    from pipeline.runner import run
    from pipeline.sharding import DistContext
    from tests.test_pipeline_runner import Harness, make_cfg

    harness = Harness(tmp_path / "pipe", data_dir)
    cfg = make_cfg(tiny_model_dir, "stage1.tgrt.enabled=false", "stage2.max_prompts=2")
    harness.run(cfg, "1,2")
    holder(harness.out)  # stands for rank 0 of a running job
    kwargs = dict(data_dir=data_dir, engine_factory=harness.factory, eos_tokens=lambda m: ["</s>"])
    summary = run(cfg, harness.out, "1,2", dist=DistContext(rank=1, world_size=2), **kwargs)
    assert all(s["skipped"] for s in summary["stages"].values())  # rank 1 took no lock
    with pytest.raises(DirectoryLockedError):
        run(cfg, harness.out, "1,2", dist=DistContext(rank=0, world_size=2), **kwargs)


def test_other_ranks_wait_for_rank_0_to_restart_a_complete_stage_whose_outputs_went_missing(tmp_path):
    # The earlier run's complete manifest has the very hash of the restart: until rank 0 has moved
    # it aside and started afresh, the other ranks must not take it for this run's.
    from pipeline.manifest import finish_manifest, start_manifest
    from pipeline.runner import _prepared_by_rank_0

    stage_dir = tmp_path / "01_stage"
    stage_dir.mkdir()
    fields = dict(stage="tgrt_self_instruct", number=1, title="t", config={}, upstream={}, data_files={}, world_size=2)
    started = start_manifest(stage_dir, cfg_hash="h1", **fields)
    assert _prepared_by_rank_0(stage_dir, "h1") and not _prepared_by_rank_0(stage_dir, "h2")
    finish_manifest(stage_dir, started, {"outputs": {}, "output_hash": "x", "counts": {}}, 1.0)
    assert not _prepared_by_rank_0(stage_dir, "h1")
    start_manifest(stage_dir, cfg_hash="h1", **fields)  # rank 0's restart
    assert _prepared_by_rank_0(stage_dir, "h1")
