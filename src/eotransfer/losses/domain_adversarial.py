"""The domain discriminator and the domain-adversarial loss of DANN, usable by any training loop.

Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks", JMLR 17(59): a small network
(:class:`DomainDiscriminator`) tells source features (domain label 1) from target features
(label 0) by binary cross-entropy; the features reach it through the gradient reversal layer
(:func:`eotransfer.losses.gradient_reverse`), so one backward pass trains the discriminator to
separate the domains and the feature extractor to make them inseparable.  The discriminator of
the paper (section 5.2.2) is an MLP of two hidden layers with ReLU; TLlib's
``tllib/alignment/dann.py`` wraps it as a loss module the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from eotransfer.losses.grl import GradientReverseLayer


class DomainDiscriminator(nn.Module):
    """``in_features → hidden → hidden → 1`` MLP with ReLU; returns one logit per sample (source vs. target).

    No BatchNorm and no dropout, so its output does not depend on the batch's composition or on
    train/eval mode (source and target batches may be of any size, even one sample).
    """

    def __init__(self, in_features: int, hidden: int = 256) -> None:
        super().__init__()
        self.in_features, self.hidden = int(in_features), int(hidden)
        self.net = nn.Sequential(
            nn.Linear(self.in_features, self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class DomainAdversarialLoss(nn.Module):
    """``½·[BCE(D(R(f_s)), 1) + BCE(D(R(f_t)), 0)]`` with ``R`` the gradient reversal layer of weight ``lambd``.

    Each domain weighs half whatever the batch sizes.  Minimising it trains ``discriminator``
    normally and the features *against* it (their gradient is multiplied by ``-lambd``).  Set
    :attr:`lambd` as training runs (e.g. from :func:`eotransfer.losses.grl_lambda`); after a call,
    :attr:`domain_accuracy` holds the discriminator's accuracy on that batch (a monitor: ½ when the
    domains are indistinguishable).
    """

    def __init__(self, discriminator: nn.Module, lambd: float = 1.0) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.grl = GradientReverseLayer(lambd)
        self._accuracy: torch.Tensor | None = None

    @property
    def domain_accuracy(self) -> float:
        """The discriminator's accuracy on the last batch (NaN before the first); read lazily, no GPU sync per step."""
        return float("nan") if self._accuracy is None else float(self._accuracy)

    @property
    def lambd(self) -> float:
        return self.grl.lambd

    @lambd.setter
    def lambd(self, value: float) -> None:
        self.grl.lambd = float(value)

    def forward(self, features_source: torch.Tensor, features_target: torch.Tensor) -> torch.Tensor:
        n = features_source.shape[0]
        logits = self.discriminator(self.grl(torch.cat([features_source, features_target]))).float()
        domain = torch.zeros_like(logits)
        domain[:n] = 1.0
        bce = nn.functional.binary_cross_entropy_with_logits(logits, domain, reduction="none")
        self._accuracy = ((logits.detach() > 0).float() == domain).float().mean()
        return 0.5 * (bce[:n].mean() + bce[n:].mean())
