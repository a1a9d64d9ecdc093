"""The learning-rate schedule of the reference: DeepSpeed ``WarmupDecayLR`` with a log warm-up.

The reference (``finetune.py`` + ``ds_config_zero3.json``) uses DeepSpeed's ``WarmupDecayLR``
(``warmup_type="log"``, min lr 0, max lr = lr). Its multiplier at scheduler iteration i, with
W = max(2, warmup_steps) and T = total steps, is::

    log(i + 1) / log(W)                  for i < W      (0 at i = 0, 1 at i = W - 1)
    max(0, (T - i) / max(1, T - W))      for i >= W     (linear decay, reaching 0 at i = T)

We apply the multiplier of iteration k to optimizer update k (k = 0, 1, ...). DeepSpeed's
engine steps its scheduler only after an update, so there the first update ran at the
optimizer's configured lr (in fp16, usually skipped as a loss-scale overflow) and update k >= 1
at iteration k - 1: the same curve, one update later. ``warmup_steps=0`` means no warm-up
(DeepSpeed would force W = 2); the clamp W >= 2 avoids dividing by log(1) = 0, as DeepSpeed does.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Fraction of the peak learning rate for optimizer update ``step`` (0-based)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps > 0:
        warmup = max(2, warmup_steps)
        if step < warmup:
            return math.log(step + 1) / math.log(warmup)
    else:
        warmup = 0
    return max(0.0, (total_steps - step) / max(1.0, total_steps - warmup))
