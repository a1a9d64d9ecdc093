"""The pipeline runner itself under ``accelerate launch`` (2 CPU processes, gloo): stage 3 trains
with DDP, rank 0 alone writes the manifest, and both replicas end with the same adapter."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline_runner import Harness, make_cfg

REPO = Path(__file__).resolve().parents[1]
TRAIN = "{max_identity_examples: 2, train: {max_steps: 2, micro_batch_size: 1, effective_batch_size: 4, warmup_steps: 1, max_length: 640, gradient_checkpointing: false}}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_stage3_under_accelerate_launch_with_two_processes(tmp_path, tiny_model_dir, data_dir):
    harness = Harness(tmp_path / "run", data_dir)
    overrides = ["stage2.max_prompts=4", f"stage3={TRAIN}"]
    cfg = make_cfg(tiny_model_dir, *overrides)
    harness.run(cfg, "1,2")  # scripted generations, in this process
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(asdict(cfg)))

    cmd = [
        "accelerate", "launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp_cpu_2proc.yaml"),
        "--main_process_port", str(_free_port()),
        "-m", "pipeline", "run", "--config", str(cfg_file), "--output", str(harness.out), "--stages", "3", "--data-dir", str(data_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    manifest = json.loads((harness.out / "03_engrave" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["dist"]["world_size"] == 2
    training = manifest["training"]
    assert training["world_size"] == 2 and training["steps"] == 2
    digests = training["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert (harness.out / "03_engrave" / "adapter" / "adapter_config.json").is_file()
