"""Floors: the matmul work a run cannot avoid over the machine's measured matmul rate, and (for
decoding) the bytes it cannot avoid reading over the measured memory bandwidth.

floor FLOPs = 2 x non-embedding parameters x tokens that need a forward pass
            + 2 x hidden size x vocabulary x positions whose logits are needed.
The first term is the issue's definition; the second is the LM head, which an exact method
cannot skip where log-probs are read (or, in generation, where the next token is chosen).
Attention over the context is left out, so the floor is a true lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSize:
    non_embedding_params: int
    hidden_size: int
    vocab_size: int

    @property
    def head_flops_per_position(self) -> int:
        return 2 * self.hidden_size * self.vocab_size


def model_size(model) -> ModelSize:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embeddings = {id(p) for p in base.get_input_embeddings().parameters()}
    head = base.get_output_embeddings()
    if head is not None:
        embeddings |= {id(p) for p in head.parameters()}
    non_embedding = sum(p.numel() for p in base.parameters() if id(p) not in embeddings)
    weight = base.get_input_embeddings().weight
    return ModelSize(non_embedding, weight.shape[1], weight.shape[0])


def floor_flops(size: ModelSize, forward_tokens: int, head_positions: int) -> dict[str, int]:
    body = 2 * size.non_embedding_params * forward_tokens
    head = size.head_flops_per_position * head_positions
    return {"body_flops": body, "head_flops": head, "total_flops": body + head}


@dataclass(frozen=True)
class DecodeShape:
    """What one decode step must read: every weight once, and the KV cache it attends over."""

    weight_bytes: int  # non-embedding weights + the LM head (the input embedding is only indexed)
    kv_bytes_per_token_per_layer: int  # K and V of one token in one layer
    layer_windows: tuple[int | None, ...]  # per layer: its sliding window, None = full attention

    def kv_bytes(self, context: int) -> int:
        """Bytes of K/V attended over by one row whose context holds ``context`` tokens."""
        attended = sum(context if w is None else min(context, w) for w in self.layer_windows)
        return attended * self.kv_bytes_per_token_per_layer


def decode_shape(model) -> DecodeShape:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    size = model_size(model)
    element = next(base.parameters()).element_size()
    cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    layers = cfg.num_hidden_layers
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * layers
    windows = tuple(window if t == "sliding_attention" and window else None for t in types)
    head_params = size.hidden_size * size.vocab_size
    return DecodeShape(
        weight_bytes=(size.non_embedding_params + head_params) * element,
        kv_bytes_per_token_per_layer=2 * kv_heads * head_dim * element,
        layer_windows=windows,
    )


def decode_bytes(shape: DecodeShape, decode_steps: int, prefix_tokens: int, rows: list[tuple[int, int]]) -> dict[str, int]:
    """Bytes the decode steps must read, at least.

    ``rows`` holds (prompt tokens including the shared prefix, generated tokens) per completion;
    its first token comes from the prompt's forward pass, each later one from a decode step that
    attends over the prompt and the tokens so far. Every step reads all weights once; the shared
    prefix's K/V is counted once per step (a kernel could read it once for all rows), each row's
    own K/V once per row. Sliding-window layers read only their window.
    """
    weights = shape.weight_bytes * decode_steps
    shared = shape.kv_bytes(prefix_tokens) * decode_steps
    own = 0
    for prompt_tokens, generated in rows:
        for t in range(1, generated):
            own += shape.kv_bytes(prompt_tokens + t) - shape.kv_bytes(prefix_tokens)
    return {"weight_bytes": weights, "kv_bytes": shared + own, "total_bytes": weights + shared + own}
