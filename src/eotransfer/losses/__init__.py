"""Loss modules that more than one strategy (or a user's own loop) can reuse, one file each."""

from eotransfer.losses.alignment import coral_loss, mmd_loss
from eotransfer.losses.distillation import distillation_loss
from eotransfer.losses.grl import GradientReverseLayer, gradient_reverse, grl_lambda

__all__ = ["GradientReverseLayer", "coral_loss", "distillation_loss", "gradient_reverse", "grl_lambda", "mmd_loss"]
