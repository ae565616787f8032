"""``finetune``: the two-stage recipe, head first on the frozen backbone, then the whole network.

Training the head before unfreezing avoids destroying pre-trained features with the gradients
of a random head (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", ICLR: LP-FT); the backbone then trains at a lower learning
rate than the head (per-group learning rates, as in Howard & Ruder 2018, ULMFiT).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from eotransfer.strategies.base import CommonParams, Phase, Strategy, head_phase, param, register_strategy


@dataclass
class FinetuneParams(CommonParams):
    head_epochs: int = param(30, "epochs of head-only training on the frozen backbone (0 = skip)", 0, 100_000)
    head_lr: float = param(1e-2, "learning rate of the head-only phase", 1e-7, 10.0)
    epochs: int = param(15, "epochs of end-to-end training", 1, 10_000)
    lr: float = param(1e-3, "learning rate of the head during end-to-end training", 1e-7, 10.0)
    backbone_lr_factor: float = param(0.1, "backbone learning rate = lr × this factor", 0.0, 10.0)


@register_strategy
class Finetune(Strategy):
    name = "finetune"
    Params = FinetuneParams
    summary = "head on frozen backbone, then end to end at a lower backbone learning rate"

    def phases(self, model: nn.Module) -> list[Phase]:
        p = self.params
        head = list(model.head.parameters())  # type: ignore[union-attr]
        backbone = list(model.backbone.parameters())  # type: ignore[union-attr]
        phases = [head_phase(model, p.head_epochs, p.head_lr)] if p.head_epochs else []
        groups = [{"params": head, "lr": p.lr}, {"params": backbone, "lr": p.lr * p.backbone_lr_factor}]
        phases.append(Phase("end-to-end", p.epochs, groups, augment=p.augment))
        return phases


def finetune_phases_with(params: FinetuneParams, model: nn.Module, last: str) -> list[Phase]:
    """``finetune``'s phases, the end-to-end one named ``last`` and never run on cached features.

    For strategies that add a term needing the images themselves to fine-tuning's end-to-end
    phase (an alignment with target images, adversarial examples).
    """
    phases = Finetune(params).phases(model)
    phases[-1] = dataclasses.replace(phases[-1], name=last, frozen_backbone=False)
    return phases
