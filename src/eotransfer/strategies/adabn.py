"""``adabn``: fine-tune on the source, then re-estimate every BatchNorm layer's statistics on the target.

AdaBN (Li, Wang, Shi, Hou & Liu 2018, "Adaptive Batch Normalization for practical domain
adaptation", Pattern Recognition 80): domain shift between regions, seasons or sensors shows in
large part as a change of each feature channel's mean and variance.  The network trains exactly as
``finetune`` does on the labelled source (same phases, same seed, same result); afterwards the
running mean and variance of every BatchNorm layer are replaced by those of the unlabelled target
images (``--target``, labels ignored; ``@test`` for the fit's own test side), with no weight
changed and no extra training.  The card's ``domain`` metrics hold the source-only model's domain gap and
target accuracy (where the target's labels are known) beside the adapted model's.  It is the baseline the alignment methods (``dann``, ``mmd``,
``coral``, each also with ``--target-bn``) have to beat, and it costs one forward pass over the
target.  Backbones without BatchNorm (ViT, ConvNeXt's LayerNorm) are left as trained, with a note.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from eotransfer.models.batchnorm import batchnorm_layers
from eotransfer.strategies._target import TargetDomain
from eotransfer.strategies.base import register_strategy
from eotransfer.strategies.coral import TargetParams
from eotransfer.strategies.finetune import Finetune


@register_strategy
class AdaBN(TargetDomain, Finetune):
    name = "adabn"
    Params = TargetParams
    summary = "fine-tune on the source, then BatchNorm statistics re-estimated on unlabelled target images (AdaBN, Li et al. 2018)"  # fmt: skip

    def uses_adabn(self) -> bool:
        return True

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        super().prepare(dataset, split, model)
        if model is not None and not batchnorm_layers(model):
            print("note: adabn: backbone has no BatchNorm layer; the model stays as fine-tuned on the source",
                  file=sys.stderr)  # fmt: skip
