"""LoRA training library (pipeline/training) on the tiny random Llama: masking, schedule, batching,
loss, a few real LoRA updates, resume, caching, and loading the adapter with peft and lm-eval."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from array import array
from collections import Counter
from pathlib import Path

import pytest
import torch

import pipeline.training.trainer as trainer_module
from harness.common.config import load_config
from harness.common.errors import UserError
from pipeline.training import LoraTrainConfig, TrainExample, train_lora
from pipeline.training.batching import StepPlanner
from pipeline.training.data import IGNORE_INDEX, TokenizedExample, pad_batch, tokenize_examples
from pipeline.training.loss import answer_token_loss
from pipeline.training.model import (
    build_peft_model,
    check_target_modules,
    load_base_model,
    load_tokenizer,
    padding_id,
)
from pipeline.training.schedule import lr_multiplier

REPO = Path(__file__).resolve().parents[1]

# A tiny dataset the tiny model can learn: the same few pairs in every batch.
PAIRS = [
    ("Question: What is the capital of France?\n\n### Dromedary\n", "Paris is the capital of France."),
    ("Human: Can you help me?\n\n### Dromedary\n", "Sure! The correct option would be A B."),
    ("Instruction: Summarize the text.\n\n### Dromedary\n", "Output: a short summary."),
    ("The quick brown fox\n\n### Dromedary\n", "jumps over the lazy dog."),
]


def tiny_examples(n: int = 8) -> list[dict]:
    return [{"id": f"ex{i}", "prompt": PAIRS[i % 4][0], "answer": PAIRS[i % 4][1]} for i in range(n)]


def tiny_config(**overrides) -> LoraTrainConfig:
    base = dict(
        effective_batch_size=8, micro_batch_size=4, max_length=64, lr=1e-2, warmup_steps=0,
        epochs=1, lora_dropout=0.0, gradient_checkpointing=False, checkpoint_every=50,
    )
    base.update(overrides)
    return LoraTrainConfig(**base)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


# ---------------------------------------------------------------- data and masking


def test_labels_are_masked_exactly_on_prompt_tokens(tokenizer):
    ex = TrainExample("a", *PAIRS[0])
    (tok,) = tokenize_examples(tokenizer, [ex], max_length=64, add_eos=False)
    full = tokenizer(ex.prompt + ex.answer)["input_ids"]
    prompt = tokenizer(ex.prompt.rstrip())["input_ids"]  # the reference strips the prompt
    assert list(tok.input_ids) == full
    n_masked = sum(1 for t in tok.labels if t == IGNORE_INDEX)
    assert n_masked == len(prompt)
    assert list(tok.labels[:n_masked]) == [IGNORE_INDEX] * n_masked  # a prefix, nothing after it
    assert list(tok.labels[n_masked:]) == full[n_masked:]
    # The trained part is the newline after "### Dromedary" plus the whole answer.
    assert tokenizer.decode(full[n_masked:]) == "\n" + ex.answer
    assert tok.n_loss_tokens == len(full) - n_masked


def test_mask_stops_at_a_token_merged_across_the_boundary(tokenizer):
    # "Question: Wh" + "at is": the prompt alone ends in "h", the full text has "hat".
    ex = TrainExample("m", "Question: Wh", "at is")
    (tok,) = tokenize_examples(tokenizer, [ex], max_length=64, add_eos=False)
    prompt_ids = tokenizer("Question: Wh")["input_ids"]
    assert list(tok.input_ids[: len(prompt_ids)]) != prompt_ids  # the tokenizer did merge
    n_masked = sum(1 for t in tok.labels if t == IGNORE_INDEX)
    assert n_masked < len(prompt_ids)
    assert "at is" in tokenizer.decode([t for t in tok.labels if t != IGNORE_INDEX])


def test_truncation_and_eos(tokenizer):
    ex = TrainExample("t", *PAIRS[0])
    (with_eos,) = tokenize_examples(tokenizer, [ex], max_length=64, add_eos=True)
    (without,) = tokenize_examples(tokenizer, [ex], max_length=64, add_eos=False)
    assert list(with_eos.input_ids) == [*without.input_ids, tokenizer.eos_token_id]
    assert with_eos.labels[-1] == tokenizer.eos_token_id  # EOS is trained on
    n = len(without.input_ids)
    (cut,) = tokenize_examples(tokenizer, [ex], max_length=n - 3, add_eos=True)
    assert len(cut.input_ids) == n - 3 and cut.input_ids[-1] != tokenizer.eos_token_id  # no room: no EOS
    (no_answer,) = tokenize_examples(tokenizer, [ex], max_length=4, add_eos=False)
    assert no_answer.n_loss_tokens == 0


def test_pad_batch_right_pads():
    a = TokenizedExample("a", array("i", [1, 5, 6, 7]), n_masked=2)
    b = TokenizedExample("b", array("i", [1, 9]), n_masked=1)
    assert a.labels == [IGNORE_INDEX, IGNORE_INDEX, 6, 7] and (a.n_loss_tokens, b.n_loss_tokens) == (2, 1)
    batch = pad_batch([a, b], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 9, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 7], [-100, 9, -100, -100]]


# ---------------------------------------------------------------- schedule and config


def test_log_warmup_then_linear_decay_matches_hand_computed_values():
    # DeepSpeed WarmupDecayLR, W=100 warm-up steps, T=336 (the paper's ~335 steps).
    lr = lambda k: lr_multiplier(k, warmup_steps=100, total_steps=336)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(1) == pytest.approx(math.log(2) / math.log(100))  # 0.1505
    assert lr(9) == pytest.approx(0.5)  # log 10 / log 100
    assert lr(99) == pytest.approx(1.0)
    assert lr(100) == pytest.approx(1.0)  # (336 - 100) / (336 - 100)
    assert lr(218) == pytest.approx(0.5)  # (336 - 218) / 236
    assert lr(335) == pytest.approx(1 / 236)
    assert lr(336) == 0.0 and lr(400) == 0.0
    # No warm-up: linear decay from the first step.
    assert [lr_multiplier(k, warmup_steps=0, total_steps=4) for k in range(4)] == [1.0, 0.75, 0.5, 0.25]
    # One warm-up step is clamped to two, as DeepSpeed does (log(1) = 0).
    assert [lr_multiplier(k, warmup_steps=1, total_steps=4) for k in range(3)] == [0.0, 1.0, 1.0]


def test_gradient_accumulation_is_rounded_and_realized_batch_reported():
    cfg = LoraTrainConfig()
    assert cfg.gradient_accumulation_steps(48) == 1  # the reference: 768 / 16 / 48
    assert cfg.gradient_accumulation_steps(1) == 48
    assert cfg.gradient_accumulation_steps(5) == 10 and cfg.realized_batch_size(5) == 800  # 9.6 rounds to 10
    assert LoraTrainConfig(effective_batch_size=2, micro_batch_size=4).gradient_accumulation_steps(1) == 1


def test_config_loads_from_yaml_and_rejects_bad_values(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("max_length: 768\ntarget_modules: q_proj,v_proj\n")
    cfg = load_config(LoraTrainConfig, path, ["lora_r=8"])
    assert (cfg.max_length, cfg.target_modules, cfg.lora_r, cfg.lr) == (768, ["q_proj", "v_proj"], 8, 4e-4)
    with pytest.raises(UserError, match="did you mean 'max_length'"):
        load_config(LoraTrainConfig, None, ["max_lenght=3"])
    with pytest.raises(UserError, match="dtype 'bf16' is not one of"):
        load_config(LoraTrainConfig, None, ["dtype=bf16"])
    with pytest.raises(UserError, match="micro_batch_size must be a positive integer"):
        load_config(LoraTrainConfig, None, ["micro_batch_size=0"])


# ---------------------------------------------------------------- batching


def _tokenized(n: int, seed: int = 0) -> list[TokenizedExample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 12, (1,), generator=g))
        out.append(TokenizedExample(f"e{i}", array("i", range(length)), n_masked=1))
    return out


def _as_tokenized(window: list[TokenizedExample]) -> list[TokenizedExample]:
    return window


def test_step_plans_cover_each_example_once_per_epoch_and_keep_processes_in_step():
    examples = _tokenized(23)
    world, accum, micro = 2, 3, 2  # window of 12: steps of 12 and 11 examples
    planners = [StepPlanner(examples, _as_tokenized, micro_batch_size=micro, grad_accum=accum, world_size=world, rank=r,
                            epochs=2, seed=7) for r in range(world)]
    assert planners[0].total_steps == 4
    for epoch in range(2):
        seen = Counter()
        for step in range(epoch * 2, epoch * 2 + 2):
            plans = [p.plan(step) for p in planners]
            assert all(len(p.micro_batches) == accum for p in plans)  # same number of passes everywhere
            assert all(len(mb) <= micro for p in plans for mb in p.micro_batches)
            real = [ex for p in plans for mb in p.micro_batches for ex in mb if ex.n_loss_tokens]
            assert plans[0].n_loss_tokens == sum(ex.n_loss_tokens for ex in real)
            fillers = [ex for p in plans for mb in p.micro_batches for ex in mb if not ex.n_loss_tokens]
            assert len(real) + len(fillers) == sum(len(mb) for p in plans for mb in p.micro_batches)
            assert all(pad_batch([ex], 0)["labels"].eq(IGNORE_INDEX).all() for ex in fillers)
            seen.update(ex.id for ex in real)
        assert seen == Counter({ex.id: 1 for ex in examples})
    # Deterministic: a fresh planner (a resumed run) plans the same step identically.
    again = StepPlanner(examples, _as_tokenized, micro_batch_size=micro, grad_accum=accum, world_size=world, rank=1, epochs=2, seed=7)
    assert again.plan(3) == planners[1].plan(3)
    assert planners[0].epoch_order(0) != planners[0].epoch_order(1)  # reshuffled each epoch


def test_planner_tokenizes_only_the_planned_window_and_skips_examples_without_answer_tokens():
    examples = _tokenized(20)
    for i in (3, 11, 12):  # truncation left these without an answer token
        examples[i] = TokenizedExample(examples[i].id, examples[i].input_ids, n_masked=len(examples[i].input_ids))
    windows = []

    def tokenize(window):
        windows.append([ex.id for ex in window])
        return window

    planner = StepPlanner(examples, tokenize, micro_batch_size=2, grad_accum=2, world_size=1, rank=0, epochs=1, seed=3)
    assert windows == []  # nothing is tokenized up front
    plans = [planner.plan(step) for step in range(planner.total_steps)]
    assert [len(w) for w in windows] == [4] * 5 and sorted(sum(windows, [])) == sorted(ex.id for ex in examples)
    trained = [ex.id for plan in plans for mb in plan.micro_batches for ex in mb if ex.n_loss_tokens]
    assert sorted(trained) == sorted(ex.id for i, ex in enumerate(examples) if i not in (3, 11, 12))
    assert sum(plan.n_skipped for plan in plans) == 3
    assert [plan.n_examples + plan.n_skipped for plan in plans] == [4] * 5
    for plan, window in zip(plans, windows, strict=True):
        assert plan.n_micro_batches == math.ceil(plan.n_examples / 2)
        assert plan.n_skipped == sum(ex in {"e3", "e11", "e12"} for ex in window)

    masked = [TokenizedExample(ex.id, ex.input_ids, n_masked=len(ex.input_ids)) for ex in examples[:4]]
    all_masked = StepPlanner(masked, _as_tokenized, micro_batch_size=2, grad_accum=2, world_size=1, rank=0, epochs=1, seed=3)
    with pytest.raises(UserError, match="none of the 4 examples of update 1 keeps an answer token within max_length; raise max_length"):
        all_masked.plan(0)


# ---------------------------------------------------------------- model and loss


def test_answer_token_loss_equals_transformers_loss(tiny_model_dir, tokenizer):
    model = load_base_model(tiny_model_dir, "float32").eval()
    toks = tokenize_examples(tokenizer, [TrainExample(str(i), *p) for i, p in enumerate(PAIRS)], max_length=64, add_eos=True)
    batch = pad_batch(toks, tokenizer.pad_token_id)
    with torch.no_grad():
        loss_sum, n = answer_token_loss(model, batch)
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert n == sum(t.n_loss_tokens for t in toks)
    assert float(loss_sum) / n == pytest.approx(float(reference), rel=1e-5)


def test_summed_cross_entropy_matches_torch_in_value_and_gradient(monkeypatch):
    import pipeline.training.loss as loss_module

    monkeypatch.setattr(loss_module, "_CHUNK_ELEMENTS", 3 * 50)  # 3 rows a chunk: exercises chunking
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(10, 50, generator=g) * 4).requires_grad_()
    targets = torch.randint(0, 50, (10,), generator=g)
    ours = loss_module.summed_cross_entropy(logits, targets)
    (ours * 0.5).backward()
    ours_grad = logits.grad.clone()
    logits.grad = None
    reference = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (reference * 0.5).backward()
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    assert torch.allclose(ours_grad, logits.grad, atol=1e-6)
    empty = torch.zeros(0, 50, requires_grad=True)
    assert float(loss_module.summed_cross_entropy(empty, targets[:0])) == 0.0


def test_target_modules_must_exist(tiny_model_dir):
    model = load_base_model(tiny_model_dir, "float32")
    with pytest.raises(UserError, match=r"\['c_attn'\] not found in LlamaForCausalLM; its Linear modules are: .*q_proj"):
        check_target_modules(model, ["q_proj", "c_attn"])
    peft_model = build_peft_model(model, tiny_config(), None)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_target_modules_may_name_one_layer_by_dotted_suffix(tiny_model_dir):
    # How the TruthfulQA judges adapt only the last layers (configs/judge/truthfulqa_gemma_cpu.yaml).
    model = load_base_model(tiny_model_dir, "float32")
    with pytest.raises(UserError, match=r"\['layers.7.self_attn.q_proj'\] not found"):
        check_target_modules(model, ["layers.7.self_attn.q_proj"])
    cfg = tiny_config()
    cfg.target_modules = ["layers.1.self_attn.q_proj", "layers.1.mlp.down_proj"]
    trainable = [n for n, p in build_peft_model(model, cfg, None).named_parameters() if p.requires_grad]
    assert {n.split(".lora_")[0].split("layers.")[1] for n in trainable} == {"1.self_attn.q_proj", "1.mlp.down_proj"}


# ---------------------------------------------------------------- training runs


def _adapter_weights(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))


def test_lora_steps_change_only_the_adapter_and_lower_the_loss(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    # Every update sees the whole dataset, so the per-step losses are comparable.
    cfg = tiny_config(epochs=30, merge=True, holdout=0)
    steps = []
    result = train_lora(cfg, tiny_examples(8), tiny_model_dir, tmp_path / "run", on_step=steps.append)
    assert result.steps == 30 and [r["step"] for r in steps] == list(range(1, 31))
    # A random 2-layer model learns slowly through attention-only LoRA: 5.96 -> ~5.39 here.
    assert result.last_loss < result.first_loss - 0.3, result.losses
    weights = _adapter_weights(result.adapter_dir)
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 4 and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero
    # Merged = base + adapter: the attention projections moved, every other weight is bitwise the base's.
    base = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    merged = load_file(str(Path(result.merged_dir) / "model.safetensors"))
    assert set(merged) == set(base)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {k for k in base if k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj", "o_proj")}
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == result.losses
    assert not (tmp_path / "run" / "checkpoints").exists()  # removed once the run completed


def test_update_does_not_depend_on_how_the_batch_is_split(tiny_model_dir, tmp_path):
    # Loss is normalized by the answer tokens of the whole effective batch, so 4 micro-batches
    # of 2 and 1 micro-batch of 8 give the same update (up to float summation order).
    common = dict(effective_batch_size=8, epochs=1)
    a = train_lora(tiny_config(micro_batch_size=2, **common), tiny_examples(8), tiny_model_dir, tmp_path / "a")
    b = train_lora(tiny_config(micro_batch_size=8, **common), tiny_examples(8), tiny_model_dir, tmp_path / "b")
    assert (a.grad_accum_steps, b.grad_accum_steps) == (4, 1)
    assert a.first_loss == pytest.approx(b.first_loss, rel=1e-6)
    wa, wb = _adapter_weights(a.adapter_dir), _adapter_weights(b.adapter_dir)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def _train_until_crash(cfg: LoraTrainConfig, examples: list[dict], model_dir: Path, out: Path, *, after_step: int) -> None:
    """Train into ``out``, interrupted by an exception raised once update ``after_step`` is logged."""

    class Crash(Exception):
        pass

    def crash(record):
        if record["step"] == after_step:
            raise Crash

    with pytest.raises(Crash):
        train_lora(cfg, examples, model_dir, out, on_step=crash)


def test_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path):
    cfg = tiny_config(effective_batch_size=4, micro_batch_size=2, lora_dropout=0.1, checkpoint_every=2, epochs=2)
    examples = tiny_examples(10)  # 3 steps per epoch, 6 in all; the last window of each epoch is short
    full = train_lora(cfg, examples, tiny_model_dir, tmp_path / "full")

    _train_until_crash(cfg, examples, tiny_model_dir, tmp_path / "cut", after_step=3)
    assert (tmp_path / "cut" / "checkpoints" / "step_0000002" / "trainer_state.json").is_file()
    resumed = train_lora(cfg, examples, tiny_model_dir, tmp_path / "cut")
    assert resumed.resumed_from_step == 2
    assert resumed.steps == full.steps == 6
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)  # step 3 redone once, not logged twice
    wf, wr = _adapter_weights(full.adapter_dir), _adapter_weights(resumed.adapter_dir)
    assert all(torch.allclose(wf[k], wr[k], atol=1e-7) for k in wf)


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tiny_model_dir, tmp_path):
    # setup / train / finalize hand each other the start step, the restored weights and optimizer
    # state, and the earlier log records; dropping any of them changes a byte checked here.
    from safetensors.torch import load_file

    cfg = tiny_config(effective_batch_size=4, micro_batch_size=2, lora_dropout=0.1, checkpoint_every=2,
                      epochs=2, holdout=2, merge=True)
    examples = tiny_examples(12)  # 10 trained: 3 steps per epoch, 6 in all
    full = train_lora(cfg, examples, tiny_model_dir, tmp_path / "full")

    _train_until_crash(cfg, examples, tiny_model_dir, tmp_path / "cut", after_step=5)  # in the second epoch
    resumed = train_lora(cfg, examples, tiny_model_dir, tmp_path / "cut")
    assert (full.resumed_from_step, resumed.resumed_from_step) == (0, 4)
    timing = {"seconds", "seconds_per_step", "peak_rss_mb", "resumed_from_step", "adapter_dir", "merged_dir"}
    assert {k: v for k, v in dataclasses.asdict(resumed).items() if k not in timing} == {
        k: v for k, v in dataclasses.asdict(full).items() if k not in timing
    }
    for name in ("adapter/adapter_model.safetensors", "merged/model.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "cut" / name))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name

    def log(run):
        lines = (tmp_path / run / "train_log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert log("cut") == log("full") and [r["step"] for r in log("cut")] == list(range(1, 7))
    assert not (tmp_path / "cut" / "checkpoints").exists()


def test_examples_left_without_answer_tokens_are_skipped_and_counted(tiny_model_dir, tmp_path, tokenizer, monkeypatch):
    long_prompt = "Question: What is the capital of France? " * 12 + "\n\n### Dromedary\n"
    examples = tiny_examples(8) + [{"id": f"long{i}", "prompt": long_prompt, "answer": "Paris."} for i in range(4)]
    (cut,) = tokenize_examples(tokenizer, [TrainExample(**examples[-1])], max_length=64, add_eos=False)
    assert cut.n_loss_tokens == 0  # the prompt alone fills max_length
    result = train_lora(tiny_config(effective_batch_size=4, micro_batch_size=2), examples, tiny_model_dir, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert result.steps == 3 and result.n_train_examples == 12 and result.n_dropped_examples == 4
    assert sum(r["skipped"] for r in records) == 4 and sum(r["examples"] for r in records) == 8
    assert result.loss_tokens == 2 * sum(t.n_loss_tokens for t in tokenize_examples(
        tokenizer, [TrainExample(**e) for e in examples[:4]], max_length=64, add_eos=False))
    # A max_length that leaves no answer token is refused before the model is loaded.
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(trainer_module, "load_base_model", no_model)
    with pytest.raises(UserError, match="keeps an answer token within max_length; raise max_length"):
        train_lora(tiny_config(max_length=4), tiny_examples(8), tiny_model_dir, tmp_path / "short")


def test_completed_run_is_reused_and_a_different_run_refused(tiny_model_dir, tmp_path):
    cfg = tiny_config(epochs=1, holdout=2)
    first = train_lora(cfg, tiny_examples(10), tiny_model_dir, tmp_path / "run")
    assert first.n_holdout_examples == 2 and first.n_train_examples == 8
    assert first.holdout_loss is not None and math.isfinite(first.holdout_loss)
    calls = []
    again = train_lora(cfg, tiny_examples(10), tiny_model_dir, tmp_path / "run", on_step=calls.append)
    assert again == first and calls == []
    with pytest.raises(UserError, match="different config, data or base model"):
        train_lora(tiny_config(epochs=1, holdout=2, lr=1e-3), tiny_examples(10), tiny_model_dir, tmp_path / "run")


def test_adapter_loads_with_peft_and_lm_eval(tiny_model_dir, tmp_path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel

    result = train_lora(tiny_config(epochs=3), tiny_examples(8), tiny_model_dir, tmp_path / "run")
    adapter = Path(result.adapter_dir)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer_config.json").is_file()

    prompt, answer = PAIRS[0]
    tokenizer = load_tokenizer(tiny_model_dir)
    ids = tokenizer(prompt + answer, return_tensors="pt")["input_ids"]
    n_prompt = len(tokenizer(prompt.rstrip())["input_ids"])  # lm-eval moves trailing whitespace to the answer
    peft_model = PeftModel.from_pretrained(load_base_model(tiny_model_dir, "float32"), str(adapter)).eval()
    with torch.no_grad():
        logprobs = torch.log_softmax(peft_model(input_ids=ids).logits[0, :-1].float(), -1)
    expected = float(logprobs[torch.arange(n_prompt - 1, ids.shape[1] - 1), ids[0, n_prompt:]].sum())

    def loglikelihood(**model_args):
        lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1, **model_args)
        req = Instance("loglikelihood", {}, (prompt, answer), 0)
        return lm.loglikelihood([req], disable_tqdm=True)[0][0]

    with_adapter = loglikelihood(peft=str(adapter))
    assert with_adapter == pytest.approx(expected, abs=1e-3)
    assert with_adapter > loglikelihood() + 1.0  # it learned this answer


def test_module_entry_point_reports_bad_input_in_one_line(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    cmd = [sys.executable, "-m", "pipeline.training", "--data", str(data), "--base-model", str(tmp_path),
           "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {data}[1]: field 'answer' must be a string; every record needs 'prompt' and 'answer'"]
    proc = subprocess.run(cmd + ["max_lenght=5"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "did you mean 'max_length'" in proc.stderr and "Traceback" not in proc.stderr


def test_lr_horizon_is_the_run_and_the_reference_defect_option_is_gone():
    # Issue 11 item 6: finetune.py passes total_num_steps = steps x num_processes to DeepSpeed, but
    # accelerate (>= 0.19, accelerator.py _prepare_deepspeed) divides it by num_processes, so the
    # reference's lr also reaches zero at its last step: there is no defect to reproduce.
    assert "reproduce_reference_lr_horizon" not in {f.name for f in dataclasses.fields(LoraTrainConfig)}
    with pytest.raises(UserError, match="reproduce_reference_lr_horizon"):
        load_config(LoraTrainConfig, None, ["reproduce_reference_lr_horizon=true"])
    total = 335
    assert lr_multiplier(total, warmup_steps=100, total_steps=total) == 0.0
    # linear decay over the 235 steps after warmup: one step before the end, 1/235 of the peak is left
    assert lr_multiplier(total - 1, warmup_steps=100, total_steps=total) == pytest.approx(1 / 235, rel=1e-12)


def test_per_microbatch_loss_is_the_mean_of_micro_batch_means(tiny_model_dir, tmp_path, tokenizer):
    """The reference's reduction (finetune.py: HF LlamaForCausalLM's loss is the mean over a
    micro-batch's label tokens; the Trainer divides by the accumulation steps and DeepSpeed
    averages over processes): re-computed here from the base model, on which a fresh LoRA
    adapter (B = 0) starts."""
    examples = tiny_examples(6)  # 3 micro-batches of 2, the last one of a different pair mix
    cfg = tiny_config(effective_batch_size=6, micro_batch_size=2, loss_reduction="per_microbatch")
    result = train_lora(cfg, examples, tiny_model_dir, tmp_path / "run")
    token_cfg = tiny_config(effective_batch_size=6, micro_batch_size=2)
    per_token = train_lora(token_cfg, examples, tiny_model_dir, tmp_path / "tok")
    tokenized = tokenize_examples(tokenizer, [TrainExample(**e) for e in examples], max_length=64, add_eos=False)
    plan = StepPlanner(tokenized, _as_tokenized, micro_batch_size=2, grad_accum=3, world_size=1, rank=0, epochs=1, seed=cfg.seed).plan(0)
    base = load_base_model(tiny_model_dir, "float32")
    sums, counts = [], []
    with torch.no_grad():
        for micro in plan.micro_batches:
            loss_sum, n = answer_token_loss(base, pad_batch(micro, padding_id(tokenizer)))
            sums.append(float(loss_sum))
            counts.append(n)
    assert len(set(counts)) > 1  # micro-batches of different token counts: the two reductions differ
    assert result.first_loss == pytest.approx(sum(s / n for s, n in zip(sums, counts, strict=True)) / 3, rel=1e-5)
    assert per_token.first_loss == pytest.approx(sum(sums) / sum(counts), rel=1e-5)
    assert result.first_loss != pytest.approx(per_token.first_loss, rel=1e-4)
    with pytest.raises(UserError, match="loss_reduction 'mean' is not one of per_token, per_microbatch"):
        load_config(LoraTrainConfig, None, ["loss_reduction=mean"])
