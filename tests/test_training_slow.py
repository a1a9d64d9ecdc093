"""Two LoRA updates of gemma-3-270m at demo size (micro-batch 1, length 512) on stage-3-shaped data:
Vicuna-80 questions wrapped in Dromedary's distill prompt, with recorded gpt-3.5 answers as targets.
Prints the figures the issue asks for (loss at start/end, seconds/step, peak RSS).

Run by hand as: flock /tmp/selfalign-heavy.lock python -m pytest -m slow tests/test_training_slow.py -s
"""

from __future__ import annotations

import math

import pytest

from harness import data
from harness.models import resolve_pretrained
from harness.prompts import dromedary_prompt, meta_prompt_text
from pipeline.training import LoraTrainConfig, train_lora

pytestmark = pytest.mark.slow

QUESTIONS = "vicuna_bench/fastchat/eval/table/question.jsonl"
ANSWERS = "vicuna_bench/fastchat/eval/table/answer/answer_gpt35.jsonl"


def stage3_shaped_examples(data_dir, n: int) -> list[dict]:
    meta = meta_prompt_text("standard_distill", data_dir)
    questions = {q["question_id"]: q["text"] for q in data.read_jsonl(QUESTIONS, data_dir)}
    answers = data.read_jsonl(ANSWERS, data_dir)[:n]
    # prompt + answer is byte-identical to the reference's training text
    # (generate_prompt_dromedary: "{meta}\n{instruction}\n\n### Dromedary\n{output}").
    return [
        {"id": f"vicuna{a['question_id']}", "prompt": dromedary_prompt(meta, questions[a["question_id"]]) + "\n", "answer": a["text"]}
        for a in answers
    ]


def test_two_lora_steps_on_gemma_at_demo_size(data_dir, tmp_path):
    base = resolve_pretrained("gemma-3-270m")
    examples = stage3_shaped_examples(data_dir, 2)
    # Paper recipe at demo size: both updates see the same 2 examples (epochs=2), so the two
    # losses are comparable; no warm-up, else the first updates run at ~0 lr.
    cfg = LoraTrainConfig(micro_batch_size=1, effective_batch_size=2, max_length=512, epochs=2, warmup_steps=0)
    result = train_lora(cfg, examples, base, tmp_path / "stage3")
    print(
        f"\ngemma-3-270m LoRA, micro 1 x accumulation {result.grad_accum_steps}, max_length 512: "
        f"loss {result.first_loss:.4f} -> {result.last_loss:.4f}, {result.seconds_per_step:.1f} s/step, "
        f"peak RSS {result.peak_rss_mb:.0f} MB, {result.tokens} tokens ({result.loss_tokens} with loss)"
    )
    assert result.steps == 2 and result.grad_accum_steps == 2
    assert all(math.isfinite(x) for x in result.losses)
    assert 0.5 < result.first_loss < 4.0  # a pretrained model already predicts fluent English well
    assert result.last_loss < result.first_loss  # the second pass over the same answers is easier

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), result.adapter_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 4 * 18 and all(float(p.abs().sum()) > 0 for p in lora_b)  # q/k/v/o x 18 layers
    assert model.peft_config["default"].r == 16
