"""``selfalign lm-eval``: lm-eval's own CLI, unchanged arguments, our backend and tasks registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.common.errors import UserError
from harness.lm_eval_cli import lm_eval_argv
from harness.task_registry import TASKS_DIR


def test_arguments_pass_through_with_our_include_path():
    args = ["--model", "selfalign-hf", "--model_args", "pretrained=x", "--tasks", "selfalign_hhh"]
    assert lm_eval_argv(args) == ["lm-eval", "run", *args, "--include_path", str(TASKS_DIR)]
    assert lm_eval_argv(["ls", "tasks"]) == ["lm-eval", "ls", "tasks", "--include_path", str(TASKS_DIR)]
    with pytest.raises(UserError, match="--include_path"):
        lm_eval_argv([*args, "--include_path", "mine"])


def test_lm_eval_cli_runs_our_backend_and_tasks(tiny_model_dir, data_dir, tmp_path):
    from lm_eval.utils import get_latest_filename, get_results_filenames

    env = {**os.environ, "SELFALIGN_DATA_DIR": str(data_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "lm-eval", "--model", "selfalign-hf",
         "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "selfalign_truthfulqa_mc1,selfalign_hhh_other",
         "--limit", "2", "--device", "cpu", "--output_path", str(tmp_path / "out"), "--log_samples"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "selfalign_truthfulqa_mc1" in proc.stdout  # lm-eval's own results table
    files = [str(p) for p in (tmp_path / "out").rglob("*.json")]
    results = json.loads(open(get_latest_filename(get_results_filenames(files))).read())
    assert results["config"]["model"] == "selfalign-hf"
    samples = [json.loads(line) for p in (tmp_path / "out").rglob("samples_selfalign_truthfulqa_mc1_*.jsonl")
               for line in p.read_text().splitlines()]
    assert len(samples) == 2 and results["n-samples"]["selfalign_truthfulqa_mc1"]["effective"] == 2
    assert results["results"]["selfalign_truthfulqa_mc1"]["acc,none"] == sum(s["acc"] for s in samples) / 2
    # no tokenizer in the metadata: HHH says that the reference's truncation was not applied
    assert results["results"]["selfalign_hhh_other"]["truncation_applied,none"] == 0.0
    assert "token truncation is NOT applied" in proc.stderr and "--metadata" in proc.stderr
