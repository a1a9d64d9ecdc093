"""Exact shared-prefix KV reuse for Hugging Face causal LMs: masks, layouts and cache expansion.

Both the lm-eval scoring backend and the pipeline's transformers engine run a shared prefix once
and then a batch of different suffixes on top of its cache. Suffixes of different lengths leave
padding *between* the prefix and the suffix (or between the suffix and generated tokens), which
the stock 2D padding mask cannot express for sliding-window layers: transformers applies the
window to cache *indices*, and padding shifts indices. So we build the 4D masks ourselves from
token *positions* (causal: ``key_pos <= query_pos``; window: ``query_pos - key_pos < W``; padding
never visible), per attention-layer type, and give the model a cache that keeps every key
(``DynamicCache()`` without a config never trims sliding layers). That makes prefix reuse exact
for Llama-style models and for Gemma 3's interleaved 512-token sliding layers alike. Decoding,
which appends one token per step, uses the in-place ``slot_cache.SlotCache`` instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache

import torch
from transformers import DynamicCache
from transformers.cache_utils import get_layer_types_and_kwargs

SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class AttentionLayout:
    """How a model's attention layers see the past: one window per layer type (None = full)."""

    windows: dict[str, int | None]  # layer type -> sliding window (None: full causal)
    layer_types: tuple[str, ...]  # the type of each decoder layer, in cache order
    per_type_masks: bool  # the model takes {layer_type: mask}; else one mask for all layers
    float_masks: bool  # eager attention adds the mask (0 / -inf); sdpa takes a boolean mask
    dtype: torch.dtype


class UnsupportedModel(Exception):
    """The model's attention cannot be given explicit masks; callers fall back to plain forward."""


@cache
def _model_accepts_mask_mapping(model_cls: type) -> bool:
    # transformers' hybrid-attention models (Gemma 2/3, Qwen 2/3, ...) skip mask creation when
    # ``attention_mask`` is already a {layer_type: mask} dict; there is no flag that says so.
    try:
        source = inspect.getsource(model_cls.forward)
    except (OSError, TypeError):
        return False
    return "causal_mask_mapping := attention_mask, dict" in source


def attention_layout(model: torch.nn.Module) -> AttentionLayout:
    """The layout of a (possibly PEFT-wrapped) causal LM, or UnsupportedModel."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config(decoder=True)
    if getattr(config, "use_bidirectional_attention", False):
        raise UnsupportedModel("bidirectional attention")
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        raise UnsupportedModel(f"attention implementation {impl!r} takes no explicit 4D mask")
    layer_types, layer_kwargs = get_layer_types_and_kwargs(config)
    windows: dict[str, int | None] = {}
    for layer_type, kwargs in zip(layer_types, layer_kwargs, strict=True):
        if layer_type not in SUPPORTED_LAYER_TYPES:
            raise UnsupportedModel(f"layer type {layer_type!r}")
        windows[layer_type] = (
            kwargs.get("sliding_window") if layer_type == "sliding_attention" else None
        )
    per_type = len(windows) > 1
    if per_type:
        inner = getattr(base, base.base_model_prefix, None)
        if inner is None or not _model_accepts_mask_mapping(type(inner)):
            raise UnsupportedModel("hybrid attention without a per-layer-type mask mapping")
    dtype = next(base.parameters()).dtype
    return AttentionLayout(windows, tuple(layer_types), per_type, impl == "eager", dtype)


def causal_visibility(
    key_positions: torch.Tensor, key_valid: torch.Tensor, query_positions: torch.Tensor
) -> torch.Tensor:
    """(B, Q, K): each query sees the valid keys at or before its position (one sequence per row)."""
    return key_valid[:, None, :] & (key_positions[:, None, :] <= query_positions[:, :, None])


def build_masks(
    layout: AttentionLayout,
    visible: torch.Tensor | dict[str, torch.Tensor],
    key_positions: torch.Tensor | dict[str, torch.Tensor],
    query_positions: torch.Tensor,
    query_valid: torch.Tensor,
    query_slots: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Per-layer-type attention masks for Q queries over K cache slots.

    The queries fill the last Q slots unless ``query_slots`` gives their slot per layer type.

    ``visible`` (B, Q, K) says which keys belong to each query's own sequence and come no later
    than it (causal, or a token tree); sliding windows are then applied on positions. A padding
    query sees only itself, so its unused output stays finite and cannot turn values NaN.
    ``visible`` and ``key_positions`` may be given per layer type (caches of different lengths).
    """
    masks: dict[str, torch.Tensor] = {}
    for layer_type, window in layout.windows.items():
        seen = visible[layer_type] if isinstance(visible, dict) else visible
        keys = key_positions[layer_type] if isinstance(key_positions, dict) else key_positions
        num_queries, num_keys = seen.shape[1], seen.shape[2]
        own_slot = torch.zeros(num_queries, num_keys, dtype=torch.bool, device=seen.device)
        slots = (
            query_slots[layer_type]
            if query_slots is not None
            else torch.arange(num_keys - num_queries, num_keys)
        )
        own_slot[torch.arange(num_queries), slots] = True
        allowed = seen
        if window is not None:
            distance = query_positions[:, :, None] - keys[:, None, :]
            allowed = allowed & (distance < window)
        pad_query = (~query_valid)[:, :, None]
        allowed = ((allowed & ~pad_query) | (pad_query & own_slot[None]))[:, None]
        if layout.float_masks:
            additive = torch.zeros(allowed.shape, dtype=layout.dtype, device=allowed.device)
            allowed = additive.masked_fill_(~allowed, torch.finfo(layout.dtype).min)
        masks[layer_type] = allowed
    if layout.per_type_masks:
        return masks
    return next(iter(masks.values()))


def new_cache():
    """A cache whose layers keep every key: sliding windows are applied by our masks instead."""
    return DynamicCache()


def expand_cache(prefix_cache, batch: int, length: int | None = None):
    """A fresh cache holding ``batch`` copies of the first ``length`` tokens of a batch-1 cache.

    The source cache is never written through: ``DynamicLayer.update`` concatenates, so the
    expanded views are copied on the first update.
    """
    end = slice(None) if length is None else slice(0, length)
    layers = [
        (
            layer.keys[:, :, end].expand(batch, -1, -1, -1),
            layer.values[:, :, end].expand(batch, -1, -1, -1),
        )
        for layer in prefix_cache.layers
    ]
    return DynamicCache(ddp_cache_data=layers)


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest common token prefix of all sequences."""
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for seq in sequences[1:]:
        i = 0
        while i < length and seq[i] == first[i]:
            i += 1
        length = i
        if length == 0:
            break
    return length
