"""`selfalign run` on tiny models: checkpoints from pipeline stage dirs, evaluations, judge, report, reuse.

The pipeline itself is replaced by a fake runner that writes what the real one leaves behind (stage
manifests and PEFT adapters trained on the base model), so these tests stay fast; the judge is a
scripted OpenAI-compatible server. The real stack runs in the slow demo test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.common.errors import UserError
from orchestration.run import RUN_KEY_FILE, RunConfig, load_run_config, run
from tests.schema_check import validate_file
from tests.servers import chat_reply, scripted_servers

REPO = Path(__file__).resolve().parents[1]
TASKS = ["truthfulqa_mc1", "truthfulqa_tf", "hhh", "vicuna80"]


def write_adapter(base: Path, out: Path, seed: int) -> None:
    """A random (non-zero) LoRA adapter on the base model, as stages 3/4 save theirs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(str(out))


class FakePipeline:
    """Writes 03_engrave/ and 04_verbose_clone/ with the pipeline's own manifest writer; records its calls."""

    def __init__(self, base: Path):
        self.base = base
        self.calls: list[tuple] = []

    def __call__(self, cfg, output_dir, stages, data_dir=None):
        from pipeline.checkpoints import TRAINING_STAGES
        from pipeline.manifest import finish_manifest, start_manifest
        from pipeline.runner import stage_dir_name

        self.calls.append((cfg.model.base, str(output_dir), stages))
        for seed, stage in enumerate(TRAINING_STAGES.values(), start=1):
            stage_dir = Path(output_dir) / stage_dir_name(stage)
            if (stage_dir / "manifest.json").is_file():
                continue  # complete: the real runner skips it too
            write_adapter(self.base, stage_dir / "adapter", seed)
            manifest = start_manifest(
                stage_dir, stage=stage.name, number=stage.number, title=stage.title, cfg_hash=f"fake{seed}",
                config={}, upstream={}, data_files={}, world_size=1,
            )
            finish_manifest(stage_dir, manifest, {"stage_dir": stage_dir.name, "outputs": {"adapter": "adapter"}}, 0.0)
        return {"kind": "pipeline", "config_hash": "fake", "stages": {}, "wall_s": 0.0}


@pytest.fixture
def judge_server():
    with scripted_servers() as make:
        yield make(lambda payload, n: chat_reply("7 6\nThe first assistant is better."))


def _config(tmp_path: Path, tiny_model_dir: Path, data_dir: Path, server, baseline_file: Path) -> RunConfig:
    return load_run_config(None, [
        f"output={tmp_path / 'runs'}", "name=t", f"data_dir={data_dir}",
        "pipeline.config=null", f"pipeline.overrides=[model.base={tiny_model_dir}]",
        "baselines=[tiny-baseline]", f"baseline_files=[{baseline_file}]",
        "eval.backend=selfalign-hf", f"eval.tasks=[{','.join(TASKS)}]",
        "eval.limits={truthfulqa_mc1: 4, truthfulqa_tf: 3, hhh: 2, vicuna80: 2}",
        "eval.gen_kwargs={vicuna80: 'max_gen_toks=6'}",
        f"judge.base_url={server.base_url}", "judge.judge_model=scripted", "judge.opponents=[chatgpt]",
        "judge.head_to_head=true", "report.title=tiny run",
    ])


@pytest.fixture
def baseline_file(tmp_path, tiny_model_dir) -> Path:
    path = tmp_path / "extra_baselines.yaml"
    path.write_text(f"baselines:\n  tiny-baseline:\n    description: a tiny chat baseline\n"
                    f"    model: {{model_args: 'pretrained={tiny_model_dir}', apply_chat_template: true, meta_prompt: none}}\n")
    return path


def test_run_evaluates_every_checkpoint_judges_and_reports_then_reuses(tmp_path, tiny_model_dir, data_dir, judge_server, baseline_file):
    cfg = _config(tmp_path, tiny_model_dir, data_dir, judge_server, baseline_file)
    fake = FakePipeline(tiny_model_dir)
    from rich.console import Console

    manifest = run(cfg, Console(file=open(os.devnull, "w")), pipeline_runner=fake)
    run_dir = tmp_path / "runs" / "t"
    assert fake.calls and fake.calls[0][0] == str(tiny_model_dir)

    # systems: base, stage 3, stage 4 (checkpoints, in stage order), then the baseline
    systems = manifest["systems"]
    assert [s["role"] for s in systems] == ["checkpoint", "checkpoint", "checkpoint", "baseline"]
    assert [s["label"].split(":")[0] for s in systems[:3]] == [f"base ({tiny_model_dir})", "stage 3", "stage 4"]
    assert "peft=" in systems[1]["model_args"] and systems[1]["model_args"].endswith("03_engrave/adapter")
    assert systems[3]["apply_chat_template"] and systems[3]["meta_prompt"] == "none"
    for s in systems:
        assert len(s["eval_dirs"]) == len(TASKS)
        for rel in s["eval_dirs"]:
            results = json.loads((run_dir / rel / "results.json").read_text())
            assert results["selfalign"]["model_id"] == s["model_id"]
            assert results["selfalign"]["backend"] == "selfalign-hf"
            assert (run_dir / rel / RUN_KEY_FILE).is_file()
    hhh = json.loads((run_dir / "eval" / "hhh" / systems[0]["model_id"] / "results.json").read_text())
    assert hhh["n-samples"]["selfalign_hhh_helpful"]["effective"] == 2
    # judged against the opponent, and stage-to-stage head to head
    assert set(systems[0]["judge_dirs"]) == {"chatgpt"}
    assert set(systems[2]["judge_dirs"]) == {"chatgpt", systems[1]["model_id"]}
    summary = json.loads((run_dir / systems[2]["judge_dirs"]["chatgpt"] / "summary.json").read_text())
    assert summary["n_scored"] == 2 and summary["baseline"]["name"] == "gpt35"
    n_judge_requests = len(judge_server.requests)
    assert n_judge_requests == 2 * 2 * (len(systems) + 2)  # questions x orders x comparisons

    # the report has every system and the paired tests of consecutive checkpoints only
    report = (run_dir / "report" / "report.md").read_text()
    assert report.startswith("# tiny run")
    for s in systems:
        assert f"| {s['label']} |" in report
    assert report.count("### Paired tests") == 2 and "tiny-baseline →" not in report
    rows = (run_dir / "report" / "report.csv").read_text()
    assert "vicuna80," in rows and f"{systems[2]['label']} vs chatgpt" in rows
    assert set(manifest["timings_s"]) == {"pipeline", "eval", "judge", "report", "total"}
    # what the run wrote validates against the exported schemas, as a user's tool reads it
    validate_file(run_dir / "manifest.json", "run_manifest")
    for stage_dir in ("03_engrave", "04_verbose_clone"):
        validate_file(run_dir / "pipeline" / stage_dir / "manifest.json", "stage_manifest")
    for rel in systems[2]["judge_dirs"].values():
        assert validate_file(run_dir / rel / "judgments.jsonl", "judgment") == 2 * 2  # questions x orders
        assert validate_file(run_dir / rel / "summary.json", "judge_summary") == 1

    # rerun: nothing is evaluated or judged again, the judge is not even contacted
    again = run(cfg, Console(file=open(os.devnull, "w")), pipeline_runner=fake)
    assert all(e["reused"] for e in again["evals"]) and all(j["reused"] for j in again["judgments"])
    assert len(judge_server.requests) == n_judge_requests

    # a changed limit reruns that task only; a retrained adapter reruns that checkpoint only
    adapter = run_dir / "pipeline" / "04_verbose_clone" / "adapter" / "adapter_model.safetensors"
    os.utime(adapter)  # touching is not retraining: the fingerprint covers content, not mtime
    assert all(e["reused"] for e in run(cfg, Console(file=open(os.devnull, "w")), pipeline_runner=fake)["evals"])
    from safetensors.torch import load_file, save_file

    cfg.eval.limits["truthfulqa_mc1"] = 5

    weights = load_file(adapter)
    save_file({k: v + 0.01 for k, v in weights.items()}, adapter)  # "retrained": new bytes
    third = run(cfg, Console(file=open(os.devnull, "w")), pipeline_runner=fake)
    rerun = {(e["model_id"], e["task"]) for e in third["evals"] if not e["reused"]}
    stage4 = systems[2]["model_id"]
    assert rerun == {(s["model_id"], "truthfulqa_mc1") for s in systems} | {(stage4, t) for t in TASKS}
    rejudged = {(j["model_id"], j["opponent"]) for j in third["judgments"] if not j["reused"]}
    # stage 4's new weights gave new vicuna answers: only its two comparisons are judged again
    assert rejudged == {(stage4, "chatgpt"), (stage4, systems[1]["model_id"])}


def test_missing_checkpoint_is_reported_not_fatal(tmp_path, tiny_model_dir, data_dir, judge_server, baseline_file):
    cfg = _config(tmp_path, tiny_model_dir, data_dir, judge_server, baseline_file)
    cfg.pipeline.enabled = False  # nothing in pipeline/: only the base model can be evaluated
    cfg.baselines, cfg.eval.tasks, cfg.judge.enabled = [], ["truthfulqa_mc1"], False
    from rich.console import Console

    manifest = run(cfg, Console(file=open(os.devnull, "w")))
    assert [s["role"] for s in manifest["systems"]] == ["checkpoint"]
    assert len(manifest["missing_checkpoints"]) == 2 and "03_engrave" in manifest["missing_checkpoints"][0]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["eval.limts={hhh: 2}"], "did you mean 'limits'"),
        (["baselines=[smollm2-135m-instruc]"], "did you mean 'smollm2-135m-instruct'"),
        (["baselines=[llama-65b]"], "has no `model` to run"),
        (["judge.opponents=[gpt-35]"], "unknown judge opponent 'gpt-35'"),
        (["eval.tasks=[truthfulqa_mc]"], "did you mean 'truthfulqa_mc"),
        (["pipeline.config=configs/pipeline/nope.yaml"], "pipeline.config configs/pipeline/nope.yaml does not exist"),
        (["checkpoints=[base, engrav]"], "did you mean 'engrave'"),
    ],
)
def test_bad_run_config_gives_one_line(overrides, expected, tmp_path, tiny_model_dir, data_dir):
    config = tmp_path / "run.yaml"
    config.write_text(f"name: bad\noutput: {tmp_path}\npipeline: {{enabled: false, config: null, overrides: ['model.base={tiny_model_dir}']}}\n")
    args = [sys.executable, "-m", "harness.cli", "run", "--config", str(config), "--data-dir", str(data_dir)]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_shipped_run_configs_load_and_name_their_command():
    for path in sorted((REPO / "configs" / "run").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("#") and f"selfalign run --config configs/run/{path.name}" in path.read_text().split("\n\n")[0], path
        cfg = load_run_config(path)
        assert cfg.eval.tasks and cfg.checkpoints


def test_demo_config_is_small_enough_for_a_cpu():
    cfg = load_run_config(REPO / "configs" / "run" / "demo.yaml")
    assert all(cfg.eval.limit_for(t) is not None and cfg.eval.limit_for(t) <= 40 for t in cfg.eval.tasks)
    assert cfg.judge.base_url is None and cfg.judge.judge_model == "smollm2-135m-instruct"  # started by the run
    assert "max_gen_toks" in cfg.eval.gen_kwargs["vicuna80"]


def test_unknown_opponent_fails_before_any_work(tmp_path, tiny_model_dir, data_dir):
    cfg = load_run_config(None, [f"output={tmp_path}", "pipeline.config=null", f"pipeline.overrides=[model.base={tiny_model_dir}]",
                                 f"data_dir={data_dir}", "judge.opponents=[nobody]"])

    def must_not_run(*args, **kwargs):
        raise AssertionError("the pipeline ran before the config was checked")

    with pytest.raises(UserError, match="unknown judge opponent 'nobody'"):
        run(cfg, pipeline_runner=must_not_run)


def test_validate_run_configs_flags_a_config_without_its_command(tmp_path, monkeypatch):
    from orchestration import run as run_module

    (tmp_path / "configs" / "run").mkdir(parents=True)
    (tmp_path / "configs" / "run" / "x.yaml").write_text("# no command here\nname: x\ncheckpoints: [base, engrav]\n")
    monkeypatch.setattr(run_module, "configs_root", lambda: tmp_path / "configs")
    problems = run_module.validate_run_configs()
    assert len(problems) == 2 and "opening comment" in problems[0] and "did you mean 'engrave'" in problems[1]


@pytest.mark.slow
@pytest.mark.server
def test_run_on_gemma_with_a_real_judge_server(tmp_path, data_dir):
    """The real stack minus the pipeline: gemma-3-270m base, selfalign-hf, vicuna80 judged by SmolLM2 served locally."""
    from rich.console import Console

    cfg = load_run_config(REPO / "configs" / "run" / "demo.yaml", [
        f"output={tmp_path}", "name=slow", f"data_dir={data_dir}", "pipeline.enabled=false", "checkpoints=[base]",
        "baselines=[]", "eval.limits={truthfulqa_mc1: 3, truthfulqa_tf: 3, hhh: 1, vicuna80: 2}",
        "eval.gen_kwargs={vicuna80: 'max_gen_toks=16'}", "judge.max_tokens=16", "judge.parse_attempts=1",
    ])
    manifest = run(cfg, Console(file=open(os.devnull, "w")))
    run_dir = tmp_path / "slow"
    assert [e["task"] for e in manifest["evals"]] == cfg.eval.tasks and not any(e["reused"] for e in manifest["evals"])
    summary = json.loads((run_dir / manifest["judgments"][0]["dir"] / "summary.json").read_text())
    assert summary["n_questions"] == 2 and summary["n_requests"] >= 4  # every judgment was really asked
    assert summary["judge"]["base_url"].startswith("http://127.0.0.1:")
    # the server is gone once the run returns
    port = int(summary["judge"]["base_url"].rsplit(":", 1)[1].split("/")[0])
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "base (gemma-3-270m)" in report and "vs chatgpt" in report
    failed = summary["n_failed_questions"]
    assert f"{failed} failed" in report or failed == 0  # unparseable verdicts are counted, never scored
