"""A preallocated KV cache for decoding: new keys are written in place into slots no query can see.

transformers' ``DynamicCache`` concatenates on every update, so each decoding step copies the
whole cache of every layer; with a ~1.6k-token constitution in 8 rows that copy cost as much as
the model's own matmuls. Here each layer owns a (batch, kv_heads, capacity, head_dim) buffer.
Because our masks are built from token *positions* (``kv_prefix.build_masks``), the order of the
slots does not matter: a step writes its keys into any free slot, and a slot is free once no
current or future query of any row can see it (never written, padding in every row, or, in a
sliding-window layer, older than the window for every row). Sliding layers therefore stay near
their window in size, full-attention layers grow in chunks, and nothing is copied per step.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from harness.backends.kv_prefix import AttentionLayout, build_masks, causal_visibility

GROWTH_SLOTS = 32  # spare slots added when a layer type runs out: growth stays rare, attention small


class SlotLayer(CacheLayerMixin):
    """One decoder layer's keys and values, written at the slots its ``SlotCache`` chose."""

    is_sliding = False  # windows are applied by our masks, never by transformers

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.write_slots: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch = key_states.shape[0]
        self.keys = key_states.new_zeros(
            batch, key_states.shape[1], self.capacity, key_states.shape[-1]
        )
        self.values = value_states.new_zeros(
            batch, value_states.shape[1], self.capacity, value_states.shape[-1]
        )
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys.index_copy_(2, self.write_slots, key_states)
        self.values.index_copy_(2, self.write_slots, value_states)
        return self.keys, self.values

    def grow(self, capacity: int) -> None:
        if self.is_initialized:
            extra = capacity - self.capacity
            self.keys = torch.nn.functional.pad(self.keys, (0, 0, 0, extra))
            self.values = torch.nn.functional.pad(self.values, (0, 0, 0, extra))
        self.capacity = capacity

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.keys = self.keys[indices]
            self.values = self.values[indices]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.capacity, 0

    def get_seq_length(self) -> int:
        return self.capacity if self.is_initialized else 0

    def get_max_length(self) -> int:
        return self.capacity


class SlotCache(Cache):
    """Per-layer slot buffers plus, per attention-layer type, each slot's position and validity.

    Use: ``reserve(positions, valid)`` for the tokens about to run, then ``masks(...)`` for the
    forward pass that writes them. ``positions``/``valid`` are (batch, Q); a padding query
    (``valid`` False) takes a slot but is never visible to anyone.
    """

    def __init__(
        self, layout: AttentionLayout, batch: int, capacity: int, device: torch.device | str
    ):
        super().__init__(layers=[SlotLayer(capacity) for _ in layout.layer_types])
        self.layout = layout
        self.slot_positions = {
            t: torch.zeros(batch, capacity, dtype=torch.long, device=device)
            for t in layout.windows
        }
        self.slot_valid = {
            t: torch.zeros(batch, capacity, dtype=torch.bool, device=device)
            for t in layout.windows
        }
        self.query_slots: dict[str, torch.Tensor] = {}

    @classmethod
    def from_prefix(cls, prefix: SlotCache, batch: int, next_position: int) -> SlotCache:
        """``batch`` rows that all continue a batch-1 ``prefix`` from ``next_position`` on.

        Only the prefix slots a query at ``next_position`` or later can see are copied, so the
        sliding layers start with the last window of the prefix, not all of it.
        """
        some_type = next(iter(prefix.slot_valid))
        device = prefix.slot_valid[some_type].device
        kept = {
            t: prefix._needed(t, torch.tensor([next_position], device=device))[0].nonzero()[:, 0]
            for t in prefix.layout.windows
        }
        out = cls(prefix.layout, batch, 0, device)
        for layer_type, slots in kept.items():
            n = len(slots)
            out.slot_positions[layer_type] = (
                prefix.slot_positions[layer_type][:, slots].expand(batch, n).contiguous()
            )
            out.slot_valid[layer_type] = torch.ones(batch, n, dtype=torch.bool, device=device)
        for source, target, layer_type in zip(
            prefix.layers, out.layers, prefix.layout.layer_types, strict=True
        ):
            slots = kept[layer_type]
            target.capacity = len(slots)
            if source.is_initialized:
                target.keys = source.keys[:, :, slots].expand(batch, -1, -1, -1).contiguous()
                target.values = source.values[:, :, slots].expand(batch, -1, -1, -1).contiguous()
                target.is_initialized = True
        return out

    def _needed(self, layer_type: str, first_query: torch.Tensor) -> torch.Tensor:
        """(batch, capacity): slots some query at or after each row's ``first_query`` can see."""
        needed = self.slot_valid[layer_type]
        window = self.layout.windows[layer_type]
        if window is not None:
            needed = needed & (self.slot_positions[layer_type] > first_query[:, None] - window)
        return needed

    def reserve(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        """Choose the slots the next forward pass writes; grow a layer type that has too few."""
        num_queries = positions.shape[1]
        beyond = int(positions.max()) + 1
        first_query = torch.where(valid, positions, beyond).min(dim=1).values
        for layer_type in self.layout.windows:
            free = (~self._needed(layer_type, first_query).any(dim=0)).nonzero()[:, 0]
            if len(free) < num_queries:
                self._grow(layer_type, num_queries - len(free) + GROWTH_SLOTS)
                free = (~self._needed(layer_type, first_query).any(dim=0)).nonzero()[:, 0]
            slots = free[:num_queries]
            self.slot_positions[layer_type][:, slots] = positions
            self.slot_valid[layer_type][:, slots] = valid
            self.query_slots[layer_type] = slots
        for layer, layer_type in zip(self.layers, self.layout.layer_types, strict=True):
            layer.write_slots = self.query_slots[layer_type]

    def _grow(self, layer_type: str, extra: int) -> None:
        self.slot_positions[layer_type] = torch.nn.functional.pad(
            self.slot_positions[layer_type], (0, extra)
        )
        self.slot_valid[layer_type] = torch.nn.functional.pad(
            self.slot_valid[layer_type], (0, extra)
        )
        capacity = self.slot_valid[layer_type].shape[1]
        for layer, kind in zip(self.layers, self.layout.layer_types, strict=True):
            if kind == layer_type:
                layer.grow(capacity)

    def masks(self, query_positions: torch.Tensor, query_valid: torch.Tensor):
        """Attention masks for the queries placed by the last ``reserve``."""
        visible = {
            t: causal_visibility(self.slot_positions[t], self.slot_valid[t], query_positions)
            for t in self.layout.windows
        }
        return build_masks(
            self.layout,
            visible,
            self.slot_positions,
            query_positions,
            query_valid,
            query_slots=self.query_slots,
        )

    def append_rows(self, other: SlotCache) -> None:
        """Add ``other``'s rows after ours; the smaller capacity of each layer type grows to match."""
        for layer_type in self.layout.windows:
            mine, theirs = self.slot_valid[layer_type].shape[1], other.slot_valid[layer_type].shape[1]
            if mine < theirs:
                self._grow(layer_type, theirs - mine)
            elif theirs < mine:
                other._grow(layer_type, mine - theirs)
            for table, other_table in (
                (self.slot_positions, other.slot_positions),
                (self.slot_valid, other.slot_valid),
            ):
                table[layer_type] = torch.cat([table[layer_type], other_table[layer_type]])
        for layer, their_layer in zip(self.layers, other.layers, strict=True):
            layer.keys = torch.cat([layer.keys, their_layer.keys])
            layer.values = torch.cat([layer.values, their_layer.values])

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only these rows (finished rows leave the batch)."""
        for layer_type in self.layout.windows:
            self.slot_positions[layer_type] = self.slot_positions[layer_type][indices]
            self.slot_valid[layer_type] = self.slot_valid[layer_type][indices]
        for layer in self.layers:
            layer.batch_select_indices(indices)
