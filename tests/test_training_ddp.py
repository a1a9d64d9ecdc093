"""Training runs unchanged under ``accelerate launch``: 2 CPU processes (DDP over gloo) end with
bitwise-identical adapters, equal to a single process training on the same global batch, under
either loss reduction (per answer token, or the reference's per micro-batch)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from pipeline.training import train_lora
from tests.test_training import tiny_config, tiny_examples

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(effective_batch_size=8, micro_batch_size=2, epochs=2)  # 12 examples: steps of 8, 4, 8, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
@pytest.mark.parametrize("loss_reduction", ["per_token", "per_microbatch"])
def test_two_process_ddp_replicas_agree_and_match_one_process(loss_reduction, tiny_model_dir, tmp_path):
    examples = tiny_examples(12)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(ex) + "\n" for ex in examples))
    cfg = tiny_config(**SETTINGS, loss_reduction=loss_reduction)
    overrides = [f"{k}={v}" for k, v in vars(cfg).items() if k in SETTINGS or k in (
        "max_length", "lr", "warmup_steps", "lora_dropout", "gradient_checkpointing", "loss_reduction")]
    cmd = [
        "accelerate", "launch", "--config_file", str(REPO / "configs/accelerate/ddp_cpu_2proc.yaml"),
        "--num_processes", "2", "--main_process_port", str(_free_port()),
        "-m", "pipeline.training", "--data", str(data), "--base-model", str(tiny_model_dir),
        "--output-dir", str(tmp_path / "ddp"), *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ddp = json.loads((tmp_path / "ddp" / "train_result.json").read_text())["result"]
    assert ddp["world_size"] == 2 and ddp["grad_accum_steps"] == 2 and ddp["steps"] == 4
    digests = ddp["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # each rank hashed its own adapter

    # One process with 4 accumulation steps sees the same global batches: same losses and weights.
    single = train_lora(cfg, examples, tiny_model_dir, tmp_path / "single")
    assert single.world_size == 1 and single.grad_accum_steps == 4
    assert ddp["losses"] == pytest.approx(single.losses, rel=1e-5)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(Path(single.adapter_dir) / "adapter_model.safetensors"))
    assert set(a) == set(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # it did train
