"""Loss modules that more than one strategy (or a user's own loop) can reuse, one file each."""

from eotransfer.losses.alignment import coral_loss, mmd_loss
from eotransfer.losses.distillation import distillation_loss
from eotransfer.losses.domain_adversarial import DomainAdversarialLoss, DomainDiscriminator
from eotransfer.losses.grl import GradientReverseLayer, gradient_reverse, grl_lambda
from eotransfer.losses.multitask import MultiTaskLoss, masked_task_loss
from eotransfer.losses.prototypes import prototype_linear, prototype_logits, prototypes

__all__ = [
    "DomainAdversarialLoss",
    "DomainDiscriminator",
    "GradientReverseLayer",
    "MultiTaskLoss",
    "coral_loss",
    "distillation_loss",
    "gradient_reverse",
    "grl_lambda",
    "masked_task_loss",
    "mmd_loss",
    "prototype_linear",
    "prototype_logits",
    "prototypes",
]
