"""Multi-task losses: per-task losses that skip missing labels, weighted statically or by learnt uncertainty.

Uncertainty weighting follows Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics" (CVPR), eq. (10): each task ``i`` learns
``s_i = log σ_i²`` and contributes ``c_i·exp(−s_i)·L_i + ½·s_i``, with ``c_i = ½`` for a
regression task (Gaussian likelihood, eq. 7) and ``c_i = 1`` for a classification or multi-label
task (scaled softmax / Bernoulli likelihood, eq. 8–9); ``½·s_i = log σ_i`` keeps σ from growing
without bound.

A missing label is masked out: the samples without one are dropped from that task's loss before
it is reduced, so they give that task's head exactly zero gradient, and a task without any label
in a batch leaves the sum (its ``s_i`` included) for that batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from eotransfer.errors import ConfigError

TASK_KINDS = ("regression", "classification", "multilabel")


def present_labels(kind: str, target: torch.Tensor) -> torch.Tensor:
    """Which entries carry a label: regression and multi-label targets mark a missing one by NaN,
    classification targets (class indices) by a negative index."""
    if kind == "classification":
        return target >= 0
    return torch.isfinite(target)


def masked_task_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """The loss of one task over the labelled entries only; ``None`` when the batch has none.

    ``regression``: mean squared error, ``pred`` N×1 (or N), ``target`` N with NaN = missing;
    ``classification``: cross-entropy, ``pred`` N×K logits, ``target`` N class indices, −1 = missing;
    ``multilabel``: binary cross-entropy on logits, ``pred`` and ``target`` N×L with NaN = missing
    (each label of each sample is masked on its own).
    """
    if kind not in TASK_KINDS:
        raise ConfigError(f"task kind {kind!r} is not one of {', '.join(TASK_KINDS)}")
    pred = pred.float()
    if kind == "regression":
        pred = pred.reshape(-1)
    keep = present_labels(kind, target)
    if not bool(keep.any()):
        return None
    if kind == "regression":
        return F.mse_loss(pred[keep], target[keep].float())
    if kind == "classification":
        return F.cross_entropy(pred[keep], target[keep].long())
    return F.binary_cross_entropy_with_logits(pred[keep], target[keep].float())


class MultiTaskLoss(nn.Module):
    """Combine the per-task losses: ``static`` Σ wᵢ·Lᵢ, or ``uncertainty`` (Kendall et al. 2018, eq. 10).

    ``kinds`` gives each task's kind (in the order of the losses passed to :meth:`forward`);
    ``weights`` the static weights (default 1).  Under ``uncertainty`` the learnt ``log_vars``
    (``s_i = log σ_i²``, initialised to 0: σ = 1) are parameters of this module and must train
    with the model.
    """

    def __init__(self, kinds: Sequence[str], weighting: str = "uncertainty", weights: Sequence[float] | None = None) -> None:  # fmt: skip
        super().__init__()
        if weighting not in ("static", "uncertainty"):
            raise ConfigError(f"--weighting: {weighting!r} is not one of static, uncertainty")
        bad = [k for k in kinds if k not in TASK_KINDS]
        if bad:
            raise ConfigError(f"task kind {bad[0]!r} is not one of {', '.join(TASK_KINDS)}")
        if weights is not None and len(weights) != len(kinds):
            raise ConfigError(f"--task-weights: {len(weights)} weights for {len(kinds)} tasks")
        self.kinds = list(kinds)
        self.weighting = weighting
        self.register_buffer("weights", torch.tensor(list(weights) if weights is not None else [1.0] * len(kinds)))
        self.log_vars = nn.Parameter(torch.zeros(len(kinds)), requires_grad=weighting == "uncertainty")
        # c_i of eq. (10): ½ for a Gaussian (regression) likelihood, 1 for a softmax/Bernoulli one
        factors = [0.5 if k == "regression" else 1.0 for k in kinds]
        self.register_buffer("factors", torch.tensor(factors))

    weights: torch.Tensor
    factors: torch.Tensor

    def forward(self, losses: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """The weighted sum; a ``None`` loss (no label in the batch) is left out with its ``s_i``."""
        if len(losses) != len(self.kinds):
            raise ValueError(f"MultiTaskLoss: {len(losses)} losses for {len(self.kinds)} tasks")
        terms = []
        for i, loss in enumerate(losses):
            if loss is None:
                continue
            if self.weighting == "static":
                terms.append(self.weights[i] * loss)
            else:
                s = self.log_vars[i]
                terms.append(self.factors[i] * torch.exp(-s) * loss + 0.5 * s)
        if not terms:
            raise ValueError("MultiTaskLoss: no task has a label in this batch")
        return torch.stack(terms).sum()

    def sigmas(self) -> list[float]:
        """The learnt σ_i = exp(s_i / 2) (all 1 under static weighting)."""
        return [float(v) for v in torch.exp(0.5 * self.log_vars.detach().float())]
