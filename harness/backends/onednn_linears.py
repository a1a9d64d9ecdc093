"""Linear layers through oneDNN with prepacked weights, for inference on CPU.

PyTorch's ``F.linear`` on CPU calls MKL's sgemm, which on this project's AMD EPYC machines runs
far from the hardware's peak, and worst for the few rows of a decoding step. oneDNN with a weight
reordered once into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the path
Inductor's CPU weight freezing uses) reaches it. Measured on the 2-core development machine in
fp32, one pass over every linear layer of Gemma 3 270M (262k-row LM head included): 101 → 29 ms
for 8 rows, 65 → 26 ms for 1 row, 709 → 308 ms for 216 rows; a 1581 × 640 × 2048 product runs
at ~420 GFLOP/s against sgemm's ~210. The values are the same dot products in another summation
order (|Δ| ~1e-4 on logits of magnitude ~30, as between any two batch sizes).

The packed copies cost as much memory again as the packed weights; they are made once per model
and remade only if a weight changes (its version counter or storage).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

PACKED_DTYPES = (torch.float32, torch.bfloat16)


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _eligible(module: torch.nn.Module) -> bool:
    return (
        type(module) is torch.nn.Linear
        and module.weight.device.type == "cpu"
        and module.weight.dtype in PACKED_DTYPES
        and "forward" not in vars(module)  # already wrapped (accelerate hooks): leave it be
    )


class PackedLinears:
    """oneDNN-packed copies of a model's plain ``nn.Linear`` weights, swapped in by ``active()``.

    Subclasses (LoRA layers, quantized linears) keep their own forward; a LoRA layer's frozen
    base ``nn.Linear`` and its A/B projections are plain layers and are packed. Calls that need
    gradients, or whose input dtype differs from the weight's, go through ``F.linear``.
    """

    def __init__(self, model: torch.nn.Module, batch_hint: int = 8, enabled: bool = True):
        self.model = model
        self.batch_hint = batch_hint  # rows per call the layout is tuned for; any count works
        self.enabled = enabled
        self._packed: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}

    def _pack(self, layer: torch.nn.Linear) -> torch.Tensor:
        weight = layer.weight.detach()
        key = (weight.data_ptr(), layer.weight._version)
        cached = self._packed.get(id(layer))
        if cached is None or cached[0] != key:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, self.batch_hint)
            self._packed[id(layer)] = cached = (key, packed)
        return cached[1]

    @contextmanager
    def active(self):
        if not (self.enabled and available()):
            yield
            return
        layers = [m for m in self.model.modules() if _eligible(m)]
        for layer in layers:
            layer.forward = _packed_forward(layer, self._pack(layer))  # shadows the method
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward


def _packed_forward(layer: torch.nn.Linear, packed: torch.Tensor):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != layer.weight.dtype or (
            torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad)
        ):
            return torch.nn.functional.linear(x, layer.weight, layer.bias)
        return torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), packed, layer.bias, "none", [], ""
        )

    return forward
