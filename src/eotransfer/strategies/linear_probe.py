"""``linear-probe``: a new linear head on a frozen backbone.

The standard measure of representation quality (Kornblith, Shlens & Le 2019, "Do Better ImageNet
Models Transfer Better?", CVPR; used by SSL4EO-S12, Wang et al. 2023).  The backbone's features
are computed once and the head is trained on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from eotransfer.strategies.base import CommonParams, Phase, Strategy, head_phase, param, register_strategy


@dataclass
class LinearProbeParams(CommonParams):
    epochs: int = param(100, "epochs of head training on cached features", 1, 100_000)
    lr: float = param(1e-2, "learning rate of the head", 1e-7, 10.0)
    augment: bool = param(False, "augmentation (off: features are computed once)")


@register_strategy
class LinearProbe(Strategy):
    name = "linear-probe"
    Params = LinearProbeParams
    summary = "frozen backbone, new linear head"

    def phases(self, model: nn.Module) -> list[Phase]:
        return [head_phase(model, self.params.epochs, self.params.lr, self.params.augment)]
