"""``coral``: unsupervised domain adaptation by aligning the feature covariances of source and target.

Deep CORAL (Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation",
ECCV 2016 workshops): the network trains on the labelled source data with cross-entropy plus
``λ·‖C_s − C_t‖²_F / (4 d²)`` (:func:`eotransfer.losses.coral_loss`) between the covariances of the
backbone features of a source batch and of an unlabelled target-domain batch (``--target``).  As
``finetune``, the head first trains on the frozen backbone; the alignment term acts in the
end-to-end phase, where each step draws as many target patches as source images from the epoch's
generator and sends both through the backbone in one forward pass.

The target data are read as unlabelled imagery: labels they may have are ignored (never seen in
training).  Other alignment losses subclass :class:`Coral` and override :meth:`Coral.alignment`
(``mmd``).  ``--target-bn`` ends training with AdaBN (Li et al. 2018): the BatchNorm statistics are
re-estimated on the target images, so that the model scored is the one the target will see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eotransfer.losses.alignment import coral_loss
from eotransfer.strategies._target import TargetDomain, logits_and_features, target_batch
from eotransfer.strategies.base import Phase, Strategy, param, register_strategy
from eotransfer.strategies.finetune import FinetuneParams, finetune_phases_with


@dataclass
class TargetParams(FinetuneParams):
    """Fine-tuning's schedule (head first, then end to end), plus the unlabelled target domain."""

    target: str = param("", "unlabelled target-domain imagery (labels ignored): data sets, folders or rasters, comma-separated, or @test for this fit's test-side images (transductive) (required)")  # fmt: skip
    target_bands: str | None = param(None, "the bands of the --target files, as --bands (default: inferred)")


@dataclass
class AlignmentParams(TargetParams):
    """:class:`TargetParams`, the alignment weight, and optional AdaBN after training."""

    adapt_weight: float = param(1.0, "weight λ of the domain-alignment term added to cross-entropy", 0.0, 10_000.0)
    target_bn: bool = param(False, "after training, re-estimate the BatchNorm statistics on the target images (AdaBN, Li et al. 2018)")  # fmt: skip


@register_strategy
class Coral(TargetDomain, Strategy):
    name = "coral"
    Params = AlignmentParams
    summary = "cross-entropy on the source plus Deep CORAL covariance alignment with unlabelled target data (Sun & Saenko 2016)"  # fmt: skip

    def alignment(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        """Distance between the source and target feature distributions."""
        return coral_loss(fs, ft)

    def phases(self, model: nn.Module) -> list[Phase]:
        """Fine-tuning's phases; the end-to-end one (never on cached features) adds the alignment term."""
        return finetune_phases_with(self.params, model, "adapt")

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        if self.pool is None:
            raise RuntimeError(f"{self.name}: the --target data were not opened; fit calls prepare() before training")
        n = images.shape[0]
        if n < 2:  # one image has no covariance or spread to align
            return self.loss(model, model(images), labels)
        both = torch.cat([images, target_batch(self.pool, n, images, gen)])
        logits, features = logits_and_features(model, both)
        ce = self.loss(model, logits[:n], labels)
        return ce + self.params.adapt_weight * self.alignment(features[:n], features[n:])
