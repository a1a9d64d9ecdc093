"""Small-batch linear layers as ``W @ x.T`` on CPU: the decode-time layout MKL runs fastest.

While decoding, every linear layer multiplies a few rows (one token per sequence) by a weight
matrix. ``F.linear(x, W)`` makes that a short-wide GEMM, which MKL runs well below the speed of
the same product laid out tall-skinny, ``(W @ x.T).T``. On the 2-core development machine, for
8 rows: Gemma 3's 262,144 × 640 LM head 76 → 37 ms, one pass over its decoder weights 32 → 25
ms; for 1,500 rows the two layouts are within 5%, so only calls with few rows switch. A single
row goes through MKL's matrix-vector path, which is slower still than two rows: one pass over
every linear layer including the head takes 64 ms for one row and 28 ms for two, so a lone row
(the last sequence of a run) is computed twice. The values are the same dot products; only the
summation blocking may differ in the last bits, as it does between any two batch sizes.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

MAX_ROWS = 256  # above this the stock layout is as fast (prefill, packed scoring rows)


def _tall_skinny_forward(layer: torch.nn.Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] > MAX_ROWS:
            return torch.nn.functional.linear(x, layer.weight, layer.bias)
        rows = flat.shape[0]
        if rows == 1:
            flat = flat.repeat(2, 1)  # a real copy: an expanded view takes the slow path too
        out = torch.mm(layer.weight, flat.t()).t()[:rows].contiguous()
        if layer.bias is not None:
            out += layer.bias
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


@contextmanager
def tall_skinny_linears(model: torch.nn.Module):
    """Within the block, every plain ``nn.Linear`` of the model on CPU uses the fast layout.

    Subclasses (LoRA layers, quantized linears) and layers whose forward is already wrapped keep
    theirs; a LoRA layer's frozen base ``nn.Linear`` still switches. Nothing changes on GPU.
    """
    layers = [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear
        and m.weight.device.type == "cpu"
        and "forward" not in vars(m)  # already wrapped (accelerate hooks): leave it be
    ]
    for layer in layers:
        layer.forward = _tall_skinny_forward(layer)  # an instance attribute shadows the method
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
