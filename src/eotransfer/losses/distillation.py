"""Knowledge distillation: a student matches a teacher's temperature-softened class probabilities.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network" (NIPS Deep Learning
Workshop, arXiv:1503.02531).  The soft term is scaled by T² so that its gradients keep the same
magnitude as the hard term's when the temperature changes (their section 2).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from eotransfer.errors import ConfigError


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(s, y)``, the KL averaged over the batch.

    ``alpha`` weighs the teacher's soft targets against the hard ``labels``: 0 gives plain
    cross-entropy, 1 distillation alone.  The teacher's logits are detached.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature: {temperature} must be positive")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: {alpha} must lie in [0, 1]")
    s = student_logits.float()
    t = teacher_logits.detach().float()
    log_p_student, log_p_teacher = F.log_softmax(s / temperature, dim=1), F.log_softmax(t / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(s, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard
