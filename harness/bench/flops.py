"""FLOP floors: the matmul work a run cannot avoid, over the machine's measured matmul rate.

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
