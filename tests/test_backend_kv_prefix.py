"""Position-based masks, checked on hand-built cases."""

from __future__ import annotations

import torch

from harness.backends.kv_prefix import (
    AttentionLayout,
    build_masks,
    causal_visibility,
    common_prefix_length,
)

HYBRID = AttentionLayout(
    windows={"sliding_attention": 4, "full_attention": None},
    layer_types=("sliding_attention", "full_attention"),
    per_type_masks=True,
    float_masks=False,
    dtype=torch.float32,
)


def test_masks_follow_positions_not_slots():
    # Row 0: prefix 0..5, a padding slot, then positions 6, 7 (padding in the middle).
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 5, 6, 7]])
    valid = torch.tensor([[True] * 6 + [False, True, True]])
    query_positions, query_valid = positions[:, -3:], valid[:, -3:]
    masks = build_masks(
        HYBRID,
        causal_visibility(positions, valid, query_positions),
        positions,
        query_positions,
        query_valid,
    )
    full = masks["full_attention"][0, 0]
    sliding = masks["sliding_attention"][0, 0]
    assert full[2].tolist() == [True] * 6 + [False, True, True]  # position 7 sees 0..7
    assert sliding[2].tolist() == [False] * 4 + [True, True, False, True, True]  # sees 4..7
    assert full[0].tolist() == [False] * 6 + [True, False, False]  # the padding query: itself only


def test_float_masks_for_eager_attention():
    layout = AttentionLayout(
        {"full_attention": None}, ("full_attention",), False, True, torch.float32
    )
    positions = torch.tensor([[0, 1, 2]])
    valid = torch.ones_like(positions, dtype=torch.bool)
    mask = build_masks(
        layout, causal_visibility(positions, valid, positions), positions, positions, valid
    )
    assert mask.dtype == torch.float32
    assert mask[0, 0, 0, 1] == torch.finfo(torch.float32).min and mask[0, 0, 1, 0] == 0


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0
    assert common_prefix_length([]) == 0
