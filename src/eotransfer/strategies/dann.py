"""``dann``: unsupervised domain adaptation by adversarial training against a domain discriminator.

DANN (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks", JMLR 17(59)): the
network trains on the labelled source data with cross-entropy plus ``λ_w·L_d``, where ``L_d`` is the
binary cross-entropy of a small discriminator telling source from target backbone features
(:class:`eotransfer.losses.domain_adversarial.DomainAdversarialLoss`).  The features reach the
discriminator through the gradient reversal layer, so the backbone learns features the
discriminator cannot separate.  The reversal weight follows the paper's schedule
``2 / (1 + exp(-γ·p)) − 1`` (:func:`eotransfer.losses.grl_lambda`) over the adapt phase, ``p`` its
progress from 0 to 1, so that the untrained discriminator of the first steps does not disturb the
features.  ``λ_w`` is ``--adapt-weight``.

Phases, target sampling (``--target``, labels ignored) and the single forward pass of source and
target are those of ``coral`` (:class:`eotransfer.strategies.coral.Coral`).  The discriminator lives
in the strategy, not in the classifier: it trains in the adapt phase (its parameters are a group of
that phase's optimiser, at ``--lr``) and is not saved with the model; it is saved in the training
checkpoints (:meth:`state`), so a resumed run continues with the same discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from eotransfer.losses.domain_adversarial import DomainAdversarialLoss, DomainDiscriminator
from eotransfer.losses.grl import grl_lambda
from eotransfer.strategies.base import Phase, param, register_strategy
from eotransfer.strategies.coral import AlignmentParams, Coral


@dataclass
class DANNParams(AlignmentParams):
    discriminator_hidden: int = param(256, "width of the domain discriminator's two hidden layers", 1, 65_536)
    grl_gamma: float = param(10.0, "γ of the reversal-weight schedule 2/(1+exp(−γ·progress))−1 (Ganin et al.: 10)", 0.0, 1_000.0)  # fmt: skip


@register_strategy
class DANN(Coral):
    name = "dann"
    Params = DANNParams
    summary = "cross-entropy on the source plus a domain discriminator behind a gradient reversal layer (DANN, Ganin et al. 2016)"  # fmt: skip

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.adversarial: DomainAdversarialLoss | None = None

    def _adversarial(self, model: nn.Module) -> DomainAdversarialLoss:
        """The discriminator and its loss, made for the model's feature width on first use, on the model's device."""
        width = int(model.head.in_features)  # type: ignore[union-attr,arg-type]
        if self.adversarial is None or self.adversarial.discriminator.in_features != width:  # type: ignore[union-attr]
            self.adversarial = DomainAdversarialLoss(DomainDiscriminator(width, self.params.discriminator_hidden), 0.0)
        device = next(model.parameters()).device
        if next(self.adversarial.parameters()).device != device:
            self.adversarial.to(device)
        return self.adversarial

    def phases(self, model: nn.Module) -> list[Phase]:
        """``coral``'s phases; the adapt phase also trains the discriminator, at the head's learning rate."""
        phases = super().phases(model)
        adapt = phases[-1]
        discriminator = list(self._adversarial(model).parameters())
        adapt.param_groups = [*adapt.param_groups, {"params": discriminator, "lr": self.params.lr}]
        return phases

    def alignment(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        """The domain-adversarial loss (the model is not needed: the features carry the device)."""
        if self.adversarial is None:
            raise RuntimeError("dann: the discriminator was not made; the engine calls phases() before training")
        if next(self.adversarial.parameters()).device != fs.device:
            self.adversarial.to(fs.device)
        return self.adversarial(fs, ft)

    def state(self) -> dict[str, Any]:
        """The discriminator and the current reversal weight (set after each step, used by the next)."""
        if self.adversarial is None:
            return {}
        return {"discriminator": self.adversarial.state_dict(), "lambd": float(self.adversarial.lambd)}

    def load_state(self, state: dict[str, Any]) -> None:
        if "discriminator" in state and self.adversarial is not None:
            self.adversarial.load_state_dict(state["discriminator"])
            self.adversarial.lambd = float(state["lambd"])

    def after_step(self, model: nn.Module, progress: float) -> None:
        """Ganin et al.'s reversal-weight schedule over the phase's progress."""
        if self.adversarial is not None:
            self.adversarial.lambd = grl_lambda(progress, self.params.grl_gamma)
