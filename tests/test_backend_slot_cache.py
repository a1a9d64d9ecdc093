"""The in-place slot cache: which slots it reuses, grows, copies and merges, on hand-built cases."""

from __future__ import annotations

import torch

from harness.backends.slot_cache import GROWTH_SLOTS, SlotCache
from tests.test_backend_kv_prefix import HYBRID  # window 4 on layer 0, full attention on layer 1

SLIDING, FULL = "sliding_attention", "full_attention"


def _run(cache: SlotCache, positions: torch.Tensor, valid: torch.Tensor | None = None):
    """Reserve slots for the queries and write keys equal to their positions (values: negated)."""
    valid = torch.ones_like(positions, dtype=torch.bool) if valid is None else valid
    cache.reserve(positions, valid)
    keys = positions[:, None, :, None].float().expand(-1, 1, -1, 2)
    for layer_idx in range(len(cache.layers)):
        cache.update(keys, -keys, layer_idx)
    return cache.masks(positions, valid)


def _visible_positions(cache, masks, layer_type, row=0, query=-1):
    layer = cache.layers[HYBRID.layer_types.index(layer_type)]
    seen = masks[layer_type][row, 0, query]
    return sorted(int(k) for k in layer.keys[row, 0, :, 0][seen].tolist())


def test_sliding_layers_reuse_slots_that_fell_out_of_the_window():
    cache = SlotCache(HYBRID, 1, 0, "cpu")
    _run(cache, torch.arange(10)[None])
    capacity = {
        t: layer.capacity for t, layer in zip(HYBRID.layer_types, cache.layers, strict=True)
    }
    assert capacity == {SLIDING: 10 + GROWTH_SLOTS, FULL: 10 + GROWTH_SLOTS}
    for position in range(10, 10 + 3 * GROWTH_SLOTS):  # far more tokens than the spare slots
        masks = _run(cache, torch.tensor([[position]]))
        assert _visible_positions(cache, masks, SLIDING) == list(range(position - 3, position + 1))
        assert _visible_positions(cache, masks, FULL) == list(range(position + 1))
    assert cache.layers[0].capacity == 10 + GROWTH_SLOTS  # the sliding layer never grew again
    assert cache.layers[1].capacity > 3 * GROWTH_SLOTS  # the full one keeps every token


def test_padding_queries_see_only_themselves_and_are_never_seen():
    cache = SlotCache(HYBRID, 2, 0, "cpu")
    positions = torch.tensor([[0, 0, 1], [0, 1, 2]])  # row 0 is left-padded by one
    valid = torch.tensor([[False, True, True], [True, True, True]])
    masks = _run(cache, positions, valid)
    full = masks[FULL]
    assert full[0, 0, 0].sum() == 1  # the padding query: its own slot only
    assert not full[0, 0, 1:, cache.query_slots[FULL][0]].any()  # nobody sees the padding
    assert _visible_positions(cache, masks, FULL, row=1) == [0, 1, 2]


def test_from_prefix_copies_only_what_later_queries_can_see():
    prefix = SlotCache(HYBRID, 1, 0, "cpu")
    _run(prefix, torch.arange(10)[None])
    batch = SlotCache.from_prefix(prefix, 3, next_position=10)
    assert batch.layers[0].keys.shape == (3, 1, 3, 2)  # positions 7, 8, 9 for the window of 4
    assert batch.layers[1].keys.shape == (3, 1, 10, 2)
    assert batch.layers[0].keys[2, 0, :, 0].tolist() == [7.0, 8.0, 9.0]
    masks = _run(batch, torch.tensor([[10, 11], [10, 11], [10, 11]]))
    assert _visible_positions(batch, masks, SLIDING, row=2) == [8, 9, 10, 11]
    # The prefix itself was not written through.
    assert prefix.layers[0].keys.shape[2] == 10 + GROWTH_SLOTS


def test_rows_leave_and_join_with_their_own_positions():
    first = SlotCache(HYBRID, 2, 0, "cpu")
    _run(first, torch.arange(6).expand(2, -1))
    later = SlotCache(HYBRID, 1, 0, "cpu")
    _run(later, torch.arange(3)[None] + 100)
    first.batch_select_indices(torch.tensor([1]))
    first.append_rows(later)
    masks = _run(first, torch.tensor([[6], [103]]))
    assert _visible_positions(first, masks, FULL, row=0) == list(range(7))
    assert _visible_positions(first, masks, FULL, row=1) == [100, 101, 102, 103]
    assert _visible_positions(first, masks, SLIDING, row=1) == [100, 101, 102, 103]
