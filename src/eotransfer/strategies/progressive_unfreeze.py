"""``progressive-unfreeze``: gradual unfreezing from the top stage down, with discriminative learning rates.

ULMFiT (Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text Classification", ACL)
first trains the new head, then unfreezes one more layer group from the top at each step, so that
the random head's gradients never reach the general features of the lower layers before the upper
ones have adapted; each lower group trains at a lower learning rate (discriminative fine-tuning,
their η^(l-1) = η^l / 2.6).  The same geometric decay over all layers at once is layer-wise
learning-rate decay (Clark et al. 2020, ELECTRA, ICLR; Bao et al. 2022, BEiT, ICLR): ``--mode llrd``.

The schedule is a list of engine phases, one per unfreezing step: each builds its own optimizer,
and checkpoints record the phase, so a resumed or distributed run continues at the right step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from eotransfer.models.stages import print_table, stage_parameters, trainable_table
from eotransfer.strategies.base import CommonParams, Phase, Strategy, head_phase, param, register_strategy


@dataclass
class ProgressiveUnfreezeParams(CommonParams):
    mode: str = param(
        "gradual",
        "gradual: unfreeze one step of stages at a time from the top (ULMFiT); llrd: train every stage at once with "
        "layer-wise decayed learning rates (BEiT)",
        choices=("gradual", "llrd"),
    )
    head_epochs: int = param(10, "epochs of head-only training on the frozen backbone (0 = skip)", 0, 100_000)
    head_lr: float = param(1e-2, "learning rate of the head-only phase", 1e-7, 10.0)
    unfreeze_every: int = param(1, "gradual: epochs between unfreezing steps", 1, 10_000)
    stages_per_step: int = param(1, "gradual: stages unfrozen at each step", 1, 1_000)
    epochs: int = param(10, "epochs once every stage is unfrozen (llrd: of the one training phase)", 1, 10_000)
    lr: float = param(1e-3, "learning rate of the head while the backbone trains", 1e-7, 10.0)
    lr_decay: float = param(
        0.65,
        "each stage below trains at this factor of the learning rate above it (ULMFiT: 1/2.6 ≈ 0.38; BEiT: 0.65)",
        1e-6,
        1.0,
    )


def stage_groups(model: nn.Module, lr: float, lr_decay: float, top: int | None = None) -> list[dict[str, Any]]:
    """Optimizer groups: the head at ``lr``, the ``top`` highest stages (all: None) at lr × decay^depth.

    The depth of the stage just below the head is 1; groups carry the stage's name under ``"name"``.
    """
    stages = stage_parameters(model.backbone)  # type: ignore[arg-type]
    groups: list[dict[str, Any]] = [{"name": "head", "params": list(model.head.parameters()), "lr": lr}]  # type: ignore[union-attr]
    for depth, (name, params) in enumerate(reversed(stages), start=1):
        if top is not None and depth > top:
            break
        groups.append({"name": name, "params": params, "lr": lr * lr_decay**depth})
    return groups


@register_strategy
class ProgressiveUnfreeze(Strategy):
    name = "progressive-unfreeze"
    Params = ProgressiveUnfreezeParams
    summary = "head, then unfreeze stages from the top down (ULMFiT) or all at once with layer-wise lr decay"

    def phases(self, model: nn.Module) -> list[Phase]:
        p = self.params
        phases = [head_phase(model, p.head_epochs, p.head_lr)] if p.head_epochs else []
        if p.mode == "llrd":
            phases.append(Phase("llrd", p.epochs, stage_groups(model, p.lr, p.lr_decay), augment=p.augment))
        else:
            n_stages = len(stage_parameters(model.backbone))  # type: ignore[arg-type]
            for top in range(p.stages_per_step, n_stages + p.stages_per_step, p.stages_per_step):
                groups = stage_groups(model, p.lr, p.lr_decay, min(top, n_stages))
                new = [g["name"] for g in groups[1 + top - p.stages_per_step :]]
                epochs = p.epochs if top >= n_stages else p.unfreeze_every
                phases.append(Phase("unfreeze:" + ",".join(new), epochs, groups, augment=p.augment))
        print_table(trainable_table(model, phases))
        return phases
