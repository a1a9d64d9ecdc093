"""The tall-skinny linear layout: same values as nn.Linear, only inside the block, only plain layers."""

from __future__ import annotations

import pytest
import torch

from pipeline.engine.tall_skinny import MAX_ROWS, tall_skinny_linears


class _Scaled(torch.nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize("rows", [1, 3, MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [True, False])
def test_values_match_nn_linear(rows, bias):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 80, bias=bias), torch.nn.Linear(80, 16))
    x = torch.randn(rows, 1, 48)
    expected = model(x)
    with tall_skinny_linears(model):
        assert "forward" in vars(model[0]) and "forward" in vars(model[1])
        got = model(x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert "forward" not in vars(model[0])  # restored after the block


def test_subclasses_and_wrapped_layers_are_left_alone():
    model = torch.nn.Sequential(_Scaled(4, 4), torch.nn.Linear(4, 4))

    def hooked(x):
        return torch.zeros(x.shape[0], 4)

    model[1].forward = hooked
    with tall_skinny_linears(model):
        assert "forward" not in vars(model[0])
        assert vars(model[1])["forward"] is hooked
        assert torch.equal(model(torch.ones(2, 4)), torch.zeros(2, 4))
    assert vars(model[1])["forward"] is hooked
