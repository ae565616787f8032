"""The domain discriminator and the domain-adversarial loss of DANN, against hand-computed values."""

from __future__ import annotations

import math

import torch
from torch import nn

from eotransfer.losses import DomainAdversarialLoss, DomainDiscriminator


class Fixed(nn.Module):
    """A discriminator whose logit is ``w·f`` (one linear map, no bias), for hand-computed gradients."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.w


def test_discriminator_outputs_one_logit_per_sample() -> None:
    d = DomainDiscriminator(7, hidden=5)
    assert d(torch.randn(4, 7)).shape == (4,)
    assert d(torch.randn(1, 7)).shape == (1,)  # no BatchNorm: a single sample works
    assert [m.out_features for m in d.net if isinstance(m, nn.Linear)] == [5, 5, 1]


def test_loss_is_ln2_when_the_discriminator_outputs_one_half() -> None:
    loss_fn = DomainAdversarialLoss(Fixed([0.0, 0.0]))  # logit 0 → probability ½ for every sample
    loss = loss_fn(torch.randn(3, 2), torch.randn(5, 2))
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)


def test_loss_value_by_hand_and_domains_weigh_half_each() -> None:
    loss_fn = DomainAdversarialLoss(Fixed([1.0, 0.0]))
    fs = torch.tensor([[2.0, 9.0]])  # logit 2, domain 1: -ln σ(2)
    ft = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # logits 1 and -1, domain 0: -ln(1-σ(1)), -ln(1-σ(-1))
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = 0.5 * (-math.log(sig(2)) + 0.5 * (-math.log(1 - sig(1)) - math.log(1 - sig(-1))))
    assert math.isclose(loss_fn(fs, ft).item(), expected, rel_tol=1e-6)
    # source right, target [1, 0] wrong, [-1, 0] right
    assert math.isclose(loss_fn.domain_accuracy, 2 / 3, rel_tol=1e-6)


def test_feature_gradient_is_reversed_and_scaled_discriminator_gradient_is_not() -> None:
    fs = torch.tensor([[1.0, 2.0]], requires_grad=True)
    ft = torch.tensor([[0.5, -1.0]], requires_grad=True)
    plain_d = Fixed([0.3, -0.2])
    # the same loss without reversal: plain gradients of the features and of the discriminator
    logits = torch.cat([fs, ft]) @ plain_d.w
    plain = 0.5 * (
        nn.functional.binary_cross_entropy_with_logits(logits[:1], torch.ones(1))
        + nn.functional.binary_cross_entropy_with_logits(logits[1:], torch.zeros(1))
    )
    g_fs, g_ft, g_w = torch.autograd.grad(plain, [fs, ft, plain_d.w])

    d = Fixed([0.3, -0.2])
    loss_fn = DomainAdversarialLoss(d, lambd=0.5)
    loss = loss_fn(fs, ft)
    assert math.isclose(loss.item(), plain.item(), rel_tol=1e-6)  # the reversal is the identity forward
    r_fs, r_ft, r_w = torch.autograd.grad(loss, [fs, ft, d.w])
    assert torch.allclose(r_fs, -0.5 * g_fs) and torch.allclose(r_ft, -0.5 * g_ft)
    assert torch.allclose(r_w, g_w)  # the discriminator itself descends its own loss
    assert (r_fs * g_fs).sum() < 0  # the features move to *raise* the domain loss


def test_lambd_is_settable() -> None:
    loss_fn = DomainAdversarialLoss(Fixed([1.0]), lambd=0.0)
    loss_fn.lambd = 0.25
    assert loss_fn.grl.lambd == 0.25 == loss_fn.lambd
    f = torch.ones(1, 1, requires_grad=True)
    loss_fn(f, torch.zeros(1, 1)).backward()
    # d/df of ½·(-ln σ(f)) at f=1 is -½(1-σ(1)); reversed and scaled by 0.25
    assert math.isclose(f.grad.item(), 0.25 * 0.5 * (1 - 1 / (1 + math.exp(-1))), rel_tol=1e-6)  # type: ignore[union-attr]
