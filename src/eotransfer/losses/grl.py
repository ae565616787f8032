"""The gradient reversal layer and its warm-start schedule.

Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks", JMLR 17(59): the layer is the
identity in the forward pass and multiplies the gradient by ``-λ`` in the backward pass, so a
feature extractor placed before it learns to *maximise* the loss of the domain classifier after it.
``λ`` ramps from 0 to 1 with ``2 / (1 + exp(-γ·p)) - 1`` (section 5.2.2, γ = 10) so that the noisy
domain classifier of the first steps does not disturb the features.  As TLlib's ``tllib/modules/grl.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad_output, None


def gradient_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-lambd`` on the way back."""
    return _GradientReverse.apply(x, lambd)  # type: ignore[no-any-return]


def grl_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule ``2 / (1 + exp(-gamma·progress)) - 1``: 0 at the start, → 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * float(progress))) - 1.0


class GradientReverseLayer(nn.Module):
    """:func:`gradient_reverse` as a module; set ``lambd`` (e.g. from :func:`grl_lambda`) as training runs."""

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"
