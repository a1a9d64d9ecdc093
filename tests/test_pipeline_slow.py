"""The shipped demo on the real base model (gemma-3-270m), end to end, then both adapters in eval.

Minutes on a 2-core CPU: run with ``flock /tmp/selfalign-heavy.lock pytest -m slow tests/test_pipeline_slow.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "pipeline" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["pipeline", "run", "--config", str(DEMO), "--output", str(out), "--data-dir", str(data_dir)]) == 0
    return out


@pytest.mark.slow
def test_demo_runs_all_four_stages(demo_run, data_dir):
    run = json.loads((demo_run / "manifest.json").read_text())
    assert list(run["stages"]) == ["tgrt_self_instruct", "self_align", "engrave", "verbose_clone"]
    for name, stage in run["stages"].items():
        manifest = json.loads((demo_run / stage["stage_dir"] / "manifest.json").read_text())
        assert manifest["status"] == "complete", name
    s1, s2 = run["stages"]["tgrt_self_instruct"], run["stages"]["self_align"]
    assert s1["counts"]["kept"] > 0 and s1["generation"]["total"]["completion_tokens"] > 0
    assert s2["counts"]["produced"] == min(s1["counts"]["kept"], 24)  # demo: stage2.max_prompts=24
    for name in ("engrave", "verbose_clone"):
        training = run["stages"][name]["training"]
        assert training["steps"] >= 1 and training["first_loss"] > 0
        assert (demo_run / run["stages"][name]["stage_dir"] / "adapter" / "adapter_config.json").is_file()
    # Rerunning the unchanged demo costs nothing.
    assert main(["pipeline", "run", "--config", str(DEMO), "--output", str(demo_run), "--data-dir", str(data_dir)]) == 0
    again = json.loads((demo_run / "manifest.json").read_text())
    assert all(s["skipped"] for s in again["stages"].values())


@pytest.mark.slow
@pytest.mark.parametrize("stage_dir", ["03_engrave", "04_verbose_clone"])
def test_demo_adapters_load_in_selfalign_eval(demo_run, stage_dir, tmp_path, data_dir):
    adapter = demo_run / stage_dir / "adapter"
    rc = main([
        "eval", "--model", "hf", "--model_args", f"pretrained=gemma-3-270m,peft={adapter}",
        "--tasks", "truthfulqa_mc1", "--limit", "2", "--output", str(tmp_path), "--data-dir", str(data_dir), "--no-cache",
    ])
    assert rc == 0
    [results] = list(tmp_path.glob("*/results.json"))
    data = json.loads(results.read_text())
    assert "truthfulqa_mc1" in json.dumps(data)
