"""Causal-LM loss on answer tokens, computing vocabulary logits only where a label needs them.

Gemma 3 has a 262k vocabulary: full float32 logits for 8 x 512 tokens take ~4 GB and the
cross-entropy around them ~3x that. transformers' ``logits_to_keep`` accepts a boolean
(batch, seq) mask and applies the LM head (and any logit soft-capping) only to those positions
inside the model's own forward, so DDP and DeepSpeed see an ordinary forward call. Prompt and
padding positions, often half the tokens, never reach the LM head.

The cross-entropy over those logits is computed in row chunks by ``summed_cross_entropy``, which
keeps only the logits and one log-sum-exp per row for the backward pass. ``F.cross_entropy``
would hold about four logits-sized tensors at its peak (log-softmax output, the dense NLL
gradient, the log-softmax gradient), this holds two (the logits and their gradient).
"""

from __future__ import annotations

import torch

from harness.common.errors import UserError
from pipeline.training.data import IGNORE_INDEX


def answer_token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token cross-entropies, number of tokens) over positions whose next label is set.

    Labels are unshifted (``labels[t]`` is the token at t); position t predicts ``labels[t + 1]``.
    Returns a sum, not a mean, so callers can normalize by the token count of a whole batch
    spread over micro-batches and processes.
    """
    labels = batch["labels"]
    next_labels = labels[:, 1:]
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = next_labels != IGNORE_INDEX
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=predicts,
        use_cache=False,
    )
    logits = out.logits
    n_tokens = int(predicts.sum())
    if logits.dim() != 2 or logits.shape[0] != n_tokens:
        raise UserError(
            f"the model returned logits of shape {tuple(logits.shape)} for a boolean logits_to_keep mask "
            f"selecting {n_tokens} positions; this model class or transformers version does not support "
            "masked logits (upgrade transformers to a version whose slice_logits_to_keep accepts a bool mask)"
        )
    targets = next_labels[next_labels != IGNORE_INDEX]
    return summed_cross_entropy(logits, targets), n_tokens


# Rows per chunk are chosen so one float32 chunk holds about this many elements (256 MB).
_CHUNK_ELEMENTS = 1 << 26


class _SummedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rows = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            lse[start : start + rows] = torch.logsumexp(logits[start : start + rows].float(), dim=-1)
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.rows = rows
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.rows):
            stop = start + ctx.rows
            probs = torch.exp(logits[start:stop].float() - lse[start:stop, None])  # softmax of the chunk
            probs[torch.arange(probs.shape[0], device=probs.device), targets[start:stop]] -= 1.0
            grad[start:stop] = (probs * grad_output).to(grad.dtype)
        return grad, None


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits.float(), targets, reduction="sum")`` in float32, computed in row
    chunks and without keeping the log-softmax for the backward pass."""
    return _SummedCrossEntropy.apply(logits, targets)
