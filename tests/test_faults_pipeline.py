"""Pipeline reliability: a deterministic stage-3 hash, and bad config values that stop before
anything is moved aside (issue 15, items 3 and 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from pipeline.manifest import files_hash
from tests.test_pipeline_runner import Harness, make_cfg


def _start_child(out: Path, model: Path, data: Path, stages: str, hashseed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "tests.fault_child", str(out), str(model), str(data), stages],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def test_adapter_config_key_and_list_order_do_not_change_the_hash(tmp_path):
    a, b = tmp_path / "a" / "adapter", tmp_path / "b" / "adapter"
    for d, modules in ((a, ["q_proj", "v_proj", "k_proj"]), (b, ["k_proj", "q_proj", "v_proj"])):
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"same weights")
        config = {"r": 4, "target_modules": modules, "layers_to_transform": [3, 1]}
        (d / "adapter_config.json").write_text(json.dumps(dict(reversed(config.items())) if d == b else config))
    assert files_hash([a]) == files_hash([b])
    (b / "adapter_model.safetensors").write_bytes(b"other weights")
    assert files_hash([a]) != files_hash([b])  # contents still count


@pytest.mark.slow  # two launches that each import torch, transformers and peft and train
def test_two_runs_of_stage_3_give_the_same_output_hash(tmp_path, tiny_model_dir, data_dir):
    # peft writes target_modules from a set, whose order follows the interpreter's string hashing:
    # stage 3 runs twice, in two launches with different PYTHONHASHSEEDs, on the same stage 1-2 outputs.
    from tests.fault_child import TINY_STAGES

    first = Harness(tmp_path / "prepared", data_dir)
    first.run(make_cfg(tiny_model_dir, *TINY_STAGES), "1,2")
    runs = {}
    for seed in ("1", "4"):
        out = tmp_path / f"run{seed}"
        shutil.copytree(first.out, out)
        runs[seed] = (out, _start_child(out, tiny_model_dir, data_dir, "3", seed))
    for _out, proc in runs.values():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    manifests = [json.loads((out / "03_engrave" / "manifest.json").read_text()) for out, _ in runs.values()]
    configs = [(out / "03_engrave" / "adapter" / "adapter_config.json").read_text() for out, _ in runs.values()]
    assert configs[0] != configs[1], "the two launches must write differently ordered configs, or the test proves nothing"
    weights = [(out / "03_engrave" / "adapter" / "adapter_model.safetensors").read_bytes() for out, _ in runs.values()]
    assert weights[0] == weights[1]
    assert manifests[0]["output_hash"] == manifests[1]["output_hash"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("stage2.max_prompts=-5", "stage2.max_prompts: must be >= 0, got -5"),
        ("stage2.max_prompts=[1, 2]", "stage2.max_prompts: expected an integer, got [1, 2]"),
        ("stage3=5", "stage3: expected a mapping of EngraveConfig fields, got 5"),
        ("stage2.logit_bias=5", "stage2.logit_bias: expected a mapping of strings to numbers, got 5"),
    ],
)
def test_bad_values_stop_before_a_complete_stage_is_moved_aside(tmp_path, data_dir, tiny_model_dir, capsys, override, expected):
    harness = Harness(tmp_path / "run", data_dir)
    harness.run(make_cfg(tiny_model_dir, "stage1.tgrt.enabled=false"), "1,2")
    before = sorted(p.name for p in harness.out.iterdir())
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"model:\n  base: {tiny_model_dir}\n")
    capsys.readouterr()
    rc = main(["pipeline", "run", "--config", str(cfg_file), "--output", str(harness.out), "--stages", "2",
               "--data-dir", str(data_dir), "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert sorted(p.name for p in harness.out.iterdir()) == before
    assert not any(".stale-" in p.name for p in harness.out.iterdir())
