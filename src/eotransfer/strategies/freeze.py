"""``freeze``: fine-tune with chosen stages or parameters of the backbone frozen.

The early layers of a network learn general features (edges, colour and texture filters) and the
later ones task-specific features (Yosinski et al. 2014, "How transferable are features in deep
neural networks?", NeurIPS); freezing the early stages keeps what transfers, saves memory and
regularises training on few labels.  As in ``finetune`` (LP-FT, Kumar et al. 2022), an optional
head-only phase comes first, then every parameter except the frozen ones trains, the backbone at a
lower learning rate than the head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from eotransfer.errors import ConfigError
from eotransfer.models.stages import backbone_stages, match_params, print_table, trainable_table
from eotransfer.strategies.base import CommonParams, Phase, Strategy, head_phase, param, register_strategy


@dataclass
class FreezeParams(CommonParams):
    freeze: str = param(
        ":2",
        "backbone parts kept frozen, comma-separated: stage names (resnet: stem, layer1..layer4; convnext: stem, "
        "stages.0..3, head; vit: stem, blocks.0.., norm), a slice of stages from the input (:2 = the first two: "
        "stem,layer1 on a resnet), dotted parts of parameter names (layer4.1, bn1) or wildcard patterns (*.norm*)",
    )
    head_epochs: int = param(30, "epochs of head-only training on the frozen backbone (0 = skip)", 0, 100_000)
    head_lr: float = param(1e-2, "learning rate of the head-only phase", 1e-7, 10.0)
    epochs: int = param(15, "epochs of training everything that is not frozen", 1, 10_000)
    lr: float = param(1e-3, "learning rate of the head while the backbone trains", 1e-7, 10.0)
    backbone_lr_factor: float = param(0.1, "learning rate of the unfrozen backbone = lr × this factor", 0.0, 10.0)


def freeze_patterns(text: str) -> list[str]:
    """The comma-separated patterns of ``--freeze``; an empty list is refused."""
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise ConfigError(
            "--freeze: no stage or parameter pattern given (e.g. 'stem,layer1'); to train the whole backbone "
            "use --strategy finetune"
        )
    return patterns


@register_strategy
class Freeze(Strategy):
    name = "freeze"
    Params = FreezeParams
    summary = "head first, then everything except the frozen stages or parameters"

    def __init__(self, params: FreezeParams) -> None:
        super().__init__(params)
        freeze_patterns(params.freeze)  # an empty option fails before any data is read

    def phases(self, model: nn.Module) -> list[Phase]:
        p = self.params
        backbone: nn.Module = model.backbone  # type: ignore[assignment]
        frozen = set(match_params(backbone, freeze_patterns(p.freeze), option="--freeze"))
        trained = [w for n, w in backbone.named_parameters() if n not in frozen]
        if not trained:
            stages = ", ".join(s for s, _ in backbone_stages(backbone))
            raise ConfigError(
                f"--freeze: '{p.freeze}' freezes the whole backbone (stages {stages}); freeze fewer stages, or "
                "use --strategy linear-probe to train only the head"
            )
        head = list(model.head.parameters())  # type: ignore[union-attr]
        phases = [head_phase(model, p.head_epochs, p.head_lr)] if p.head_epochs else []
        groups = [{"params": head, "lr": p.lr}, {"params": trained, "lr": p.lr * p.backbone_lr_factor}]
        phases.append(Phase("partly-frozen", p.epochs, groups, augment=p.augment))
        print_table(trainable_table(model, phases))
        return phases
