"""A tiny random Llama + byte-level BPE tokenizer with a ChatML template, built in well under a second;
a tiny Gemma 3 with sliding-window layers and a random LoRA adapter for engine/backend tests.

Its text is garbage: tests use it for shapes, flow and exact equalities, never wording.
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = (
    "Question: What is the capital of France? Answer: Paris is the capital of France. true false\n"
    "Human: Can you help me? Assistant: Sure! The correct option would be A B.\n"
    "### User\n### Dromedary\nI am an AI assistant. I'm in an exam and the above is a true/false question.\n"
    "The quick brown fox jumps over the lazy dog. 1. Write a poem. 2. List three colors. 3. Explain gravity.\n"
    "Instruction: Summarize the text. Input: none. Output: a short summary. Topic: science, history.\n"
) * 20

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token=None
    )
    fast.chat_template = CHATML
    return fast


def build_tiny_model(out_dir: str | Path, seed: int = 0, num_layers: int = 2, hidden: int = 64) -> Path:
    """Save a random tiny Llama (+ tokenizer) under ``out_dir``; returns the directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_gemma3(out_dir: str | Path, seed: int = 0, sliding_window: int = 8) -> Path:
    """A Gemma 3 text model with interleaved sliding-window (window 8) and full layers and final-logit
    soft-capping: the features that make shared-prefix KV reuse easy to get subtly wrong. With a
    window this small, prefixes of a few dozen tokens exercise the window exactly as Gemma 3 270M's
    512-token window is exercised by the 1.8k-token constitution."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

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
    saved = Gemma3TextConfig.from_pretrained(out_dir)
    if set(saved.layer_types) != {"sliding_attention", "full_attention"} or saved.sliding_window != sliding_window:
        raise AssertionError(f"{out_dir}: no sliding/full layer mix; the KV-reuse tests on it would prove nothing")
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
