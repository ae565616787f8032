"""The domain-adaptation losses: gradient reversal, Deep CORAL and multi-kernel MMD, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from eotransfer.losses import GradientReverseLayer, coral_loss, gradient_reverse, grl_lambda, mmd_loss


def test_gradient_reversal_is_identity_forward_and_negates_scaled_gradient() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = gradient_reverse(x, 0.5)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([2.0, 3.0, 4.0])).sum().backward()  # plain gradient: (2, 3, 4)
    assert x.grad is not None and torch.equal(x.grad, torch.tensor([-1.0, -1.5, -2.0]))

    layer = GradientReverseLayer(2.0)
    z = torch.tensor([[0.5, 1.5]], requires_grad=True)
    (layer(z) ** 2).sum().backward()  # plain gradient 2z = (1, 3)
    assert z.grad is not None and torch.equal(z.grad, torch.tensor([[-2.0, -6.0]]))


def test_grl_lambda_schedule() -> None:
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert 0.9999 < grl_lambda(1.0) < 1.0
    assert grl_lambda(0.1) < grl_lambda(0.2) < grl_lambda(0.9)


def test_coral_hand_computed() -> None:
    fs = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    ft = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    # source: mean (1, 1), centred rows (±1, ±1); var = 4 / (4 - 1) = 4/3 per axis, cov = (1 - 1 - 1 + 1) / 3 = 0
    #   C_s = [[4/3, 0], [0, 4/3]]
    # target: mean (1.5, 1.5), centred rows x = y = (-1.5, -0.5, 0.5, 1.5); sum of squares 5, / 3 = 5/3
    #   C_t = [[5/3, 5/3], [5/3, 5/3]]
    # C_s - C_t = [[-1/3, -5/3], [-5/3, -1/3]]; squared Frobenius norm = 2/9 + 50/9 = 52/9
    # loss = (52/9) / (4 · 2²) = 13/36
    assert coral_loss(fs, ft).item() == pytest.approx(13 / 36, rel=1e-6)
    assert coral_loss(fs, torch.zeros(4, 2)).item() == pytest.approx((2 * 16 / 9) / 16, rel=1e-6)


def test_coral_zero_for_identical_inputs_and_differentiable() -> None:
    fs = torch.randn(8, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert coral_loss(fs, fs.detach().clone()).item() == pytest.approx(0.0, abs=1e-7)
    coral_loss(fs, torch.zeros(8, 5)).backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2 samples"):
        coral_loss(fs[:1], fs[:4])


def test_mmd_zero_for_identical_inputs() -> None:
    fs = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    assert mmd_loss(fs, fs.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd_loss(fs, fs.clone(), bandwidths=[0.5, 2.0]).item() == pytest.approx(0.0, abs=1e-6)


def test_mmd_grows_with_the_shift() -> None:
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    slight, shifted = mmd_loss(fs, ft + 0.2).item(), mmd_loss(fs, ft + 2.0).item()
    assert 0 < slight < shifted


def test_mmd_hand_computed_single_bandwidth() -> None:
    fs, ft = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]])
    b = 2.0
    # k(x, y) = exp(-(x - y)² / b)
    # source-source: squared distances 0, 1, 1, 0 → mean k = (2 + 2e^{-1/b}) / 4; target-target the same
    # source-target: (0-2)² = 4, (0-3)² = 9, (1-2)² = 1, (1-3)² = 4 → mean k = (2e^{-4/b} + e^{-9/b} + e^{-1/b}) / 4
    k_same = (2 + 2 * math.exp(-1 / b)) / 4
    k_cross = (2 * math.exp(-4 / b) + math.exp(-9 / b) + math.exp(-1 / b)) / 4
    expected = 2 * k_same - 2 * k_cross
    assert mmd_loss(fs, ft, bandwidths=[b]).item() == pytest.approx(expected, rel=1e-6)


def test_mmd_differentiable_and_refuses_bad_bandwidths() -> None:
    fs = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), requires_grad=True)
    mmd_loss(fs, fs.detach() + 1.0).backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        mmd_loss(fs, fs, bandwidths=[0.0])
