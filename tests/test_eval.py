"""selfalign eval end to end on a tiny model, lm-eval equivalence, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.common.errors import UserError
from harness.common.run_files import samples_path
from harness.evaluate import EvalConfig, run_eval
from harness.models import model_id, parse_model_args, resolve_model_args
from tests.builtin_equivalence import run_builtin_and_ours


def _selfalign(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def test_eval_writes_results_samples_and_provenance(tiny_model_dir, data_dir, tmp_path):
    cfg = EvalConfig(
        model_args=f"pretrained={tiny_model_dir}", tasks=["truthfulqa_mc1", "truthfulqa_tf", "hhh"],
        limit=2, data_dir=str(data_dir), output=str(tmp_path), batch_size=4,
    )
    results = run_eval(cfg)
    out = tmp_path / model_id(cfg.model_args)
    written = json.loads((out / "results.json").read_text())
    assert written["results"] == json.loads(json.dumps(results["results"]))
    assert set(written["results"]) >= {"selfalign_truthfulqa_mc1", "selfalign_truthfulqa_tf", "selfalign_hhh"}
    tf = written["results"]["selfalign_truthfulqa_tf"]
    assert {"acc,none", "acc_all_candidates,none", "acc_reference_subset,none"} <= set(tf)
    # results.json's accuracy is the mean over the logged samples, and --limit 2 scored two
    mc1 = [json.loads(line) for line in samples_path(out, "truthfulqa_mc1").read_text().splitlines()]
    assert len(mc1) == 2 and written["n-samples"]["selfalign_truthfulqa_mc1"]["effective"] == 2
    assert written["results"]["selfalign_truthfulqa_mc1"]["acc,none"] == sum(s["acc"] for s in mc1) / 2
    meta = written["selfalign"]
    assert meta["task_versions"]["selfalign_truthfulqa_tf"] == 1.0
    assert "truthfulqa/data/v0/mc_task.json" in meta["data_sha256"]
    assert "dromedary/prompts/inference_prompts/dromedary_verbose_prompt.txt" in meta["data_sha256"]
    assert meta["model_args"]["pretrained"] == str(Path(tiny_model_dir).resolve())
    samples = [json.loads(line) for line in samples_path(out, "truthfulqa_tf").read_text().splitlines()]
    assert len(samples) == 2 and {"doc", "arguments", "resps", "acc_all_candidates"} <= set(samples[0])
    assert len(samples[0]["arguments"]) == 2 * len(samples[0]["doc"]["mc1_targets"]["choices"])
    hhh_n = sum(len(samples_path(out, f"hhh_{c}").read_text().splitlines()) for c in ("harmless", "helpful", "honest", "other"))
    assert written["results"]["selfalign_hhh_other"]["truncation_applied,none"] == 1.0  # the model's tokenizer was passed
    assert hhh_n == 8 == written["n-samples"]["selfalign_hhh_other"]["effective"] * 4

    # a rerun is answered from the per-model response cache and gives identical numbers
    assert list((out / "lm_cache").glob("*.db"))
    again = run_eval(cfg)
    assert again["results"] == results["results"]


def test_reference_flag_switches_primary_tf_accuracy(tiny_model_dir, data_dir, tmp_path):
    base = dict(model_args=f"pretrained={tiny_model_dir}", tasks=["truthfulqa_tf"], limit=6, data_dir=str(data_dir), use_cache=False)
    ours = run_eval(EvalConfig(**base, output=str(tmp_path / "a")))["results"]["selfalign_truthfulqa_tf"]
    ref = run_eval(EvalConfig(**base, output=str(tmp_path / "b"), tf_reference_half_candidates=True))["results"]["selfalign_truthfulqa_tf"]
    assert ours["acc,none"] == ours["acc_all_candidates,none"]
    assert ref["acc,none"] == ref["acc_reference_subset,none"]
    assert ours["acc_reference_subset,none"] == ref["acc_reference_subset,none"]


def test_mc1_mc2_equal_lm_eval_builtin_tasks(tiny_model_dir, data_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)
    builtin, ours = run_builtin_and_ours(lm, tmp_path, data_dir, limit=8)
    for name in ("mc1", "mc2"):
        b = builtin["results"][f"truthfulqa_{name}"]["acc,none"]
        o = ours["results"][f"selfalign_truthfulqa_{name}"]["acc,none"]
        assert o == pytest.approx(b, abs=1e-9), name
        b_docs = [s["doc"]["question"] for s in builtin["samples"][f"truthfulqa_{name}"]]
        o_docs = [s["doc"]["question"] for s in ours["samples"][f"selfalign_truthfulqa_{name}"]]
        assert b_docs == o_docs
        b_args = [s["arguments"] for s in builtin["samples"][f"truthfulqa_{name}"]]
        o_args = [s["arguments"] for s in ours["samples"][f"selfalign_truthfulqa_{name}"]]
        assert b_args == o_args


def test_task_configs_mirror_the_builtin_ones(data_dir):
    from lm_eval.tasks import TaskManager

    from harness.task_registry import task_manager

    ours = task_manager({"data_dir": str(data_dir)}).load(["selfalign_truthfulqa_mc1", "selfalign_truthfulqa_mc2"])["tasks"]
    builtin_index = TaskManager()
    for name in ("mc1", "mc2"):
        entry = builtin_index._index[f"truthfulqa_{name}"]
        from lm_eval.tasks._yaml_loader import load_yaml

        cfg = load_yaml(entry.yaml_path, resolve_func=False)
        if "include" in cfg:
            parent = load_yaml(Path(entry.yaml_path).with_name(cfg["include"]), resolve_func=False)
            cfg = {**parent, **cfg}
        mine = ours[f"selfalign_truthfulqa_{name}"].config
        for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "output_type", "num_fewshot"):
            assert getattr(mine, key) == cfg[key], (name, key)
        assert mine.metadata["version"] == cfg["metadata"]["version"]


# ---------------------------------------------------------------- bad input: one clear line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tasks", "truthfulqa_mc", "--model_args", "pretrained=x"], "did you mean 'truthfulqa_mc"),
        (["--model_args", "pretrained=gemma-3-27m"], "did you mean 'gemma-3-270m'"),
        (["--model_args", "pretrained"], "is not key=value"),
        (["--model_args", "pretrained=a,pretrained=b"], "given twice"),
        (["--model_args", "peft=/tmp"], "needs pretrained="),
        (["--model", "hff", "--model_args", "pretrained=TINY"], "unknown model backend 'hff'"),
        (["--model_args", "pretrained=/"], "is not a model directory (no config.json)"),
        (["--model_args", "pretrained=TINY,peft=/"], "is not a PEFT adapter directory"),
        (["--data-dir", "/nonexistent", "--model_args", "pretrained=TINY"], "--data-dir /nonexistent: no such directory"),
    ],
)
def test_bad_input_gives_one_line(args, expected, tiny_model_dir, tmp_path):
    args = [a.replace("TINY", str(tiny_model_dir)) for a in args]
    proc = _selfalign("eval", "--output", str(tmp_path), "--limit", "1", *args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_and_corrupt_data_files_are_named(tiny_model_dir, data_dir, tmp_path):
    from harness import data

    broken = tmp_path / "data"
    shutil.copytree(data_dir / "dromedary", broken / "dromedary")
    with pytest.raises(UserError, match=r"truthfulqa/data/v0/mc_task.json not found under .*--data-dir"):
        data.data_file("truthfulqa/data/v0/mc_task.json", broken)
    target = broken / "dromedary/prompts/inference_prompts/dromedary_verbose_prompt.txt"
    target.write_text(target.read_text() + "tampered")
    with pytest.raises(UserError, match="corrupt or a different version"):
        data.data_file("dromedary/prompts/inference_prompts/dromedary_verbose_prompt.txt", broken)


def test_offline_download_failure_names_the_flag(monkeypatch, tmp_path):
    from harness import data

    monkeypatch.delenv("SELFALIGN_DATA_DIR", raising=False)
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "_RAW_URL", "http://127.0.0.1:9/{repo}/{ref}/{path}")  # nothing listens on port 9
    with pytest.raises(UserError) as info:
        data.data_file("truthfulqa/data/v0/mc_task.json")
    message = str(info.value)
    assert "truthfulqa/data/v0/mc_task.json" in message and "--data-dir" in message and "\n" not in message


def test_download_verifies_sha256(monkeypatch, tmp_path, data_dir):
    """Downloads come from the pinned upstream URL and are checked (served here from a local copy)."""
    from harness import data

    monkeypatch.delenv("SELFALIGN_DATA_DIR", raising=False)
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    entry = data.manifest()["dromedary/prompts/verbose_dromedary_prompt.txt"]
    assert entry.url == f"https://raw.githubusercontent.com/IBM/Dromedary/{entry.ref}/prompts/verbose_dromedary_prompt.txt"
    monkeypatch.setattr(data, "_RAW_URL", (data_dir / "dromedary").as_uri() + "/{path}")
    path = data.data_file("dromedary/prompts/verbose_dromedary_prompt.txt")
    assert path.is_relative_to(tmp_path / "cache") and path.read_bytes() == (data_dir / "dromedary/prompts/verbose_dromedary_prompt.txt").read_bytes()


def test_model_args_parsing_and_ids(tiny_model_dir, tmp_path):
    assert parse_model_args("pretrained=a, peft=b,dtype=float32") == {"pretrained": "a", "peft": "b", "dtype": "float32"}
    adapter = tmp_path / "stage3" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    args = resolve_model_args(f"pretrained={tiny_model_dir},peft={adapter}")
    assert args["peft"] == str(adapter.resolve())
    assert model_id("pretrained=gemma-3-270m") == "gemma-3-270m"
    assert model_id(f"pretrained=gemma-3-270m,peft={adapter}") == "gemma-3-270m+stage3-adapter"
    with pytest.raises(UserError, match="is a PEFT adapter, not a full model"):
        resolve_model_args(f"pretrained={adapter}")


def test_validate_loads_every_task(data_dir):
    proc = _selfalign("validate", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for name in ("selfalign_truthfulqa_tf: 817 documents", "selfalign_hhh_other: 43 documents"):
        assert name in proc.stdout


def test_ls_tasks_lists_versions():
    proc = _selfalign("ls", "tasks")
    assert proc.returncode == 0, proc.stderr
    assert "truthfulqa_tf" in proc.stdout and "version 1.0" in proc.stdout
