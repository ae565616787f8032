"""The classifier: normalisation (fixed buffers), a backbone and a linear head.

Normalisation lives inside the network, so a saved or exported model takes raw reflectance in the
card's band order and can never be fed un-normalised data by mistake (a common failure with
published EO weights).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eotransfer.data.normalization import Normalizer


class Normalize(nn.Module):
    """``(x - center) / scale`` per band, NaN (masked) pixels set to 0, from a :class:`Normalizer`."""

    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_bands: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(1, n_bands, 1, 1))
        self.register_buffer("scale", torch.ones(1, n_bands, 1, 1))

    def set_from(self, normalizer: Normalizer) -> None:
        center, scale = normalizer.center_scale()
        self.center.copy_(torch.from_numpy(np.asarray(center, dtype=np.float32)).view(1, -1, 1, 1))
        self.scale.copy_(torch.from_numpy(np.asarray(scale, dtype=np.float32)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one new tensor, then in place: a fresh full-size tensor per op cost 2-4 % of a CPU forward
        # (benchmarks/results/throughput.md); in-place ops on the difference keep autograd valid
        out = (x - self.center).div_(self.scale)
        return out.nan_to_num_(nan=0.0, posinf=float("inf"), neginf=float("-inf"))


class EOClassifier(nn.Module):
    """normalize → backbone (pooled features) → linear head."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, n_bands: int) -> None:
        super().__init__()
        self.normalize = Normalize(n_bands)
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
