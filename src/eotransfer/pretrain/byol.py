"""``byol``: bootstrap your own latent — no negatives, the online network predicts the target's projection.

Loss ``2 - 2·cos(p, z)`` between the online prediction of one view and the momentum ("target")
projection of the other, symmetrised (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach
to Self-Supervised Learning", NeurIPS).  Without negatives it does not need large batches, which
suits small EO pools and one GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eotransfer.pretrain.base import SSLMethod, SSLModel, SSLParams, register_method
from eotransfer.strategies.base import param


@dataclass
class BYOLParams(SSLParams):
    momentum: float = param(0.996, "base EMA rate of the target network (rises to 1 on a cosine schedule)", 0.0, 1.0)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of ``2 - 2·cos(p, z)`` over the batch (0 when aligned, 4 when opposite)."""
    return (2 - 2 * nn.functional.cosine_similarity(p, z.detach(), dim=1)).mean()


@register_method
class BYOL(SSLMethod):
    name = "byol"
    Params = BYOLParams
    summary = "bootstrap your own latent (no negatives; small batches)"

    def pair_loss(
        self, model: SSLModel, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
    ) -> torch.Tensor:
        return byol_loss(p1, z2) + byol_loss(p2, z1)
