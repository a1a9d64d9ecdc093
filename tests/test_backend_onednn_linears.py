"""oneDNN-packed linears: same values as nn.Linear, only inside the block, only plain layers."""

from __future__ import annotations

import pytest
import torch

from harness.backends.onednn_linears import PackedLinears, available

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN")


class _Scaled(torch.nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize("rows", [1, 3, 300])
@pytest.mark.parametrize("bias", [True, False])
def test_values_match_nn_linear(rows, bias):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 80, bias=bias), torch.nn.Linear(80, 16))
    x = torch.randn(rows, 2, 48)
    expected = model(x)
    with torch.inference_mode(), PackedLinears(model).active():
        assert "forward" in vars(model[0]) and "forward" in vars(model[1])
        got = model(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert "forward" not in vars(model[0])  # restored after the block


def test_a_changed_weight_is_packed_again():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    packed = PackedLinears(model)
    x = torch.randn(2, 8)
    with torch.inference_mode(), packed.active():
        before = model(x)
    with torch.no_grad():
        model[0].weight.mul_(2)  # an optimizer step between two generation calls
    with torch.inference_mode(), packed.active():
        after = model(x)
    torch.testing.assert_close(after, model(x).detach(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)


def test_gradients_and_other_layers_use_the_stock_path():
    model = torch.nn.Sequential(_Scaled(4, 4), torch.nn.Linear(4, 4))

    def hooked(x):
        return torch.zeros(x.shape[0], 4)

    model[1].forward = hooked
    with PackedLinears(model).active():
        assert "forward" not in vars(model[0])
        assert vars(model[1])["forward"] is hooked
    del model[1].forward
    x = torch.randn(3, 4, requires_grad=True)
    with PackedLinears(model).active():
        model(x).sum().backward()  # the packed op has no autograd: F.linear must be used
    assert x.grad is not None


def test_disabled_changes_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    packed = PackedLinears(model, enabled=False)
    with packed.active():
        assert "forward" not in vars(model[0])
    assert not packed._packed
