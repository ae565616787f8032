"""The normalisation layer inside every model: values, masked pixels, and gradients to the input."""

from __future__ import annotations

import torch

from eotransfer.models.model import Normalize


def test_normalize_values_nan_and_gradient() -> None:
    norm = Normalize(3)
    norm.center.copy_(torch.tensor([1.0, 10.0, 0.0]).view(1, 3, 1, 1))
    norm.scale.copy_(torch.tensor([2.0, 5.0, 4.0]).view(1, 3, 1, 1))
    x = torch.tensor([[[[3.0, float("nan")]], [[20.0, 5.0]], [[8.0, -4.0]]]], requires_grad=True)
    y = norm(x)
    assert y.flatten().tolist() == [1.0, 0.0, 2.0, -1.0, 2.0, -1.0]
    y.sum().backward()
    assert x.grad is not None
    expected = torch.tensor([0.5, 0.0, 0.2, 0.2, 0.25, 0.25])
    assert torch.allclose(x.grad.flatten(), expected)  # masked pixel: no gradient
    assert torch.isnan(x[0, 0, 0, 1])  # the input is left untouched
