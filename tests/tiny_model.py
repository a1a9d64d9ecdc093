"""A tiny random Llama + byte-level BPE tokenizer with a ChatML template, built in well under a second.

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
