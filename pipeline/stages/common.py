"""Helpers shared by the generation stages: what of the engine config is part of a cache key,
and the reference's end-of-sequence suppression."""

from __future__ import annotations

from typing import Any

from harness.common.errors import UserError
from pipeline.config import GENERATION_BUDGETS, REFERENCE_SEQ_LENS, PipelineConfig

# Engine options that change speed or memory, not outputs (requests carry their own seeds).
OPERATIONAL_ENGINE_OPTIONS = frozenset({
    "batch_size", "progress", "device", "share_prefix", "min_shared_tokens", "gpu_memory_utilization",
    "max_num_seqs", "tensor_parallel_size", "enforce_eager",
})


def generation_identity(cfg: PipelineConfig) -> dict[str, Any]:
    """The part of the model/engine config that decides generated text."""
    options = {k: v for k, v in cfg.engine.options.items() if k not in OPERATIONAL_ENGINE_OPTIONS}
    identity = {"model": cfg.model.base, "backend": cfg.engine.backend, "options": options}
    if cfg.generation_budgets != "paper":  # (absent for the default: existing stage hashes stay valid)
        identity["budgets"] = cfg.generation_budgets
    return identity


def eos_bias(ctx) -> dict[str, float]:
    """Logit bias of -100 on the end-of-sequence tokens: the reference's stage-1 generators
    suppress EOS so that the base model keeps extending its list."""
    return {tok: -100.0 for tok in ctx.eos_tokens(ctx.cfg.model.base)}


def budget_params(cfg: PipelineConfig, step: str) -> dict[str, int]:
    """SamplingParams fields for ``generation_budgets``: none for the paper's flat budgets, the
    reference script's max_seq_len / max_shared_seq_len of ``step`` for the reference's."""
    if cfg.generation_budgets not in GENERATION_BUDGETS:
        raise UserError(f"generation_budgets={cfg.generation_budgets!r}: use one of {', '.join(GENERATION_BUDGETS)}")
    if cfg.generation_budgets == "paper":
        return {}
    max_seq_len, max_shared = REFERENCE_SEQ_LENS[step]
    return {"reference_max_seq_len": max_seq_len, "reference_max_shared_seq_len": max_shared}
