"""Loss modules that more than one strategy (or a user's own loop) can reuse, one file each."""

from eotransfer.losses.distillation import distillation_loss

__all__ = ["distillation_loss"]
