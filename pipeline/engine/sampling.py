"""Next-token choice shared by the transformers engine: logit bias, temperature, top-p, per-row seeds.

Every row samples from its own ``torch.Generator`` seeded with its request's seed, so a sampled
completion depends on (prompt, params, seed) only, not on which other requests share its batch.
"""

from __future__ import annotations

import torch

from pipeline.engine.base import SamplingParams


def bias_token_ids(tokenizer, logit_bias: dict[str, float]) -> dict[int, float]:
    """Token-string biases as token-id biases.

    A string that is one vocabulary entry maps to it; otherwise to the first token of its
    encoding, as the reference does (``tokenizer.encode("Sorry")[0]`` biased by -100).
    """
    out: dict[int, float] = {}
    for text, bias in logit_bias.items():
        token_id = tokenizer.convert_tokens_to_ids(text)
        if token_id is None or token_id == tokenizer.unk_token_id:
            ids = tokenizer.encode(text, add_special_tokens=False)
            if not ids:
                continue
            token_id = ids[0]
        out[int(token_id)] = out.get(int(token_id), 0.0) + float(bias)
    return out


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask tokens outside the nucleus (same rule as transformers' TopPLogitsWarper)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False  # keep at least the most likely token
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, -float("inf"))


def choose_next_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    generators: list[torch.Generator | None],
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """(B, V) float32 logits -> (B,) token ids; rows sample with their own generators."""
    if bias is not None:
        logits = logits + bias
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = apply_top_p(logits / params.temperature, params.top_p)
    probs = logits.softmax(dim=-1)
    return torch.cat(
        [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]
    )


def row_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return generator
