"""Tiny random models for engine/backend tests beyond tests/tiny_model.py's Llama (+ their own checks).

A Gemma 3 text model with interleaved sliding-window (window 8) and full layers and final-logit
soft-capping: the features that make shared-prefix KV reuse easy to get subtly wrong. With a
window this small, prefixes of a few dozen tokens exercise the window exactly as Gemma 3 270M's
512-token window is exercised by the 1.8k-token constitution. And a random LoRA adapter.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_gemma3(out_dir: str | Path, seed: int = 0, sliding_window: int = 8) -> Path:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from tests.tiny_model import build_tokenizer

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=1024,
        final_logit_softcapping=30.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).to(torch.float32)
    # Random init leaves near-uniform logits; scale the head so greedy choices are not ties.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_random_lora(base_dir: str | Path, out_dir: str | Path, seed: int = 1) -> Path:
    """A LoRA adapter on q/v projections with non-zero B, so it changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    return Path(out_dir)


def test_tiny_gemma3_has_hybrid_sliding_layers(tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(build_tiny_gemma3(tmp_path / "g"))
    assert set(config.layer_types) == {"sliding_attention", "full_attention"}
    assert config.sliding_window == 8


def test_random_lora_changes_logits(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = build_random_lora(tiny_model_dir, tmp_path / "lora")
    ids = torch.tensor([[1, 5, 9, 20, 33]])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, str(adapter))(ids).logits
    assert (before - after).abs().max() > 1e-3
