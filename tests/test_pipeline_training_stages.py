"""Stages 3 and 4 on the tiny model: training data framing, adapters written, stage 4 uses stage 3's."""

from __future__ import annotations

import json

import pytest
import torch

from harness.common.jsonl import read_records
from harness.prompts import meta_prompt_text
from pipeline.stages.engrave import training_examples
from tests.schema_check import validate_file
from tests.test_pipeline_runner import Harness, make_cfg

TRAIN = "train: {max_steps: 3, micro_batch_size: 2, effective_batch_size: 2, warmup_steps: 1, max_length: 640, lr: 0.01, gradient_checkpointing: false}"


def test_training_examples_use_the_reference_framing():
    pairs = [{"id": "a", "instruction": "Q1", "input": "", "output": "A1"}, {"id": "b", "instruction": "Q2", "input": "ctx", "output": "A2"}]
    ex = training_examples(pairs, ["META-A", "META-B"])
    assert ex[0].prompt + ex[0].answer == "META-A\nQ1\n\n### Dromedary\nA1"
    assert ex[1].prompt + ex[1].answer == "META-B\nQ2\n\nctx\n\n### Dromedary\nA2"  # meta by index
    assert ex[0].prompt.rstrip() == "META-A\nQ1\n\n### Dromedary"  # the part without loss


@pytest.fixture(scope="module")
def four_stage_run(tmp_path_factory, tiny_model_dir, data_dir):
    harness = Harness(tmp_path_factory.mktemp("p") / "run", data_dir)
    cfg = make_cfg(
        tiny_model_dir,
        "stage2.max_prompts=4",
        f"stage3={{max_identity_examples: 2, {TRAIN}}}",
        f"stage4={{max_identity_prompts: 2, {TRAIN}}}",
    )
    harness.run(cfg, "1,2,3")
    # Generation and training of stage 4 in two launches, as at scale (paper.yaml).
    generated = harness.run(cfg, "4", generate_only=True)
    assert generated["stages"]["verbose_clone"]["status"] == "generated"
    stage4 = harness.out / "04_verbose_clone"
    assert (stage4 / "records.jsonl").is_file() and not (stage4 / "adapter").exists()
    assert json.loads((stage4 / "manifest.json").read_text())["status"] == "running"
    n_engines = len(harness.engines)
    summary = harness.run(cfg, "4")
    assert len(harness.engines) == n_engines  # the second launch reused the generations
    return harness, summary, data_dir


def test_engrave_trains_an_adapter_on_kept_answers_and_identity_data(four_stage_run):
    harness, summary, data_dir = four_stage_run
    stage = harness.out / "03_engrave"
    train = read_records(stage / "train.jsonl")
    assert [t["source"] for t in train] == ["self_align"] * 4 + ["identity"] * 2
    assert validate_file(stage / "train.jsonl", "train") == 6 and validate_file(stage / "manifest.json", "stage_manifest")
    standard = meta_prompt_text("standard_distill", data_dir)
    assert all(t["prompt"].startswith(standard + "\n") and t["prompt"].endswith("\n\n### Dromedary\n") for t in train)
    assert "Dromedary" in train[-1]["answer"] and "Vicuna" not in train[-1]["answer"]
    assert (stage / "adapter" / "adapter_config.json").is_file()
    m = json.loads((stage / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"] == {"examples": 6, "self_align_examples": 4, "identity_examples": 2}
    assert m["training"]["steps"] == 3 and len(m["training"]["losses"]) == 3
    assert m["training"]["first_loss"] > 0
    from safetensors.torch import load_file

    weights = load_file(stage / "adapter" / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(w) > 0 for w in lora_b)  # B starts at zero: training moved it


def test_verbose_clone_generates_with_the_engraved_adapter_and_trains_the_final_one(four_stage_run):
    harness, summary, _ = four_stage_run
    stage = harness.out / "04_verbose_clone"
    verbose_engines = [e for e in harness.engines if e.peft]
    assert len(verbose_engines) == 1 and verbose_engines[0].peft == str(harness.out / "03_engrave" / "adapter")
    records = read_records(stage / "records.jsonl")
    # every stage-2 prompt (kept or not), then the identity questions
    stage2_ids = [r["id"] for r in read_records(harness.out / "02_self_align" / "records.jsonl")]
    assert [r["id"] for r in records] == stage2_ids + ["identity_0", "identity_1"]
    assert all(r["kept"] and r["answer"].endswith("\n\n### User") for r in records)
    train = read_records(stage / "train.jsonl")
    assert len(train) == len(records)
    # one shape with stage 3's train.jsonl: the answers' source is this stage
    assert {t["source"] for t in train} == {"verbose_clone"} and validate_file(stage / "train.jsonl", "train") == len(train)
    assert validate_file(stage / "records.jsonl", "answer") == len(records)
    # concise and standard distill prompts alternate, as the reference's glob picked them
    assert train[0]["prompt"].split("\n")[4] != train[1]["prompt"].split("\n")[4]
    assert (stage / "adapter" / "adapter_config.json").is_file()
    m = json.loads((stage / "manifest.json").read_text())
    assert m["status"] == "complete" and m["training"]["steps"] == 3
    assert m["upstream"]["engrave"] == json.loads((harness.out / "03_engrave" / "manifest.json").read_text())["output_hash"]
    assert summary["stages"]["verbose_clone"]["counts"]["kept"] == len(records)


def test_adapters_load_on_the_base_model_and_change_its_output(four_stage_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    harness, _, _ = four_stage_run
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        reference = base(ids).logits
    for stage in ("03_engrave", "04_verbose_clone"):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), harness.out / stage / "adapter")
        with torch.no_grad():
            assert not torch.allclose(model(ids).logits, reference)
