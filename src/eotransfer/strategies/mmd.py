"""``mmd``: unsupervised domain adaptation by minimising the multi-kernel MMD between source and target features.

DAN (Long et al. 2015, "Learning Transferable Features with Deep Adaptation Networks", ICML): the
network trains on the labelled source data with cross-entropy plus ``λ·MK-MMD²``
(:func:`eotransfer.losses.mmd_loss`, Gaussian kernels around the batch's mean squared distance)
between the backbone features of a source batch and of an unlabelled target-domain batch
(``--target``).  Phases, target sampling and the single forward pass are those of ``coral``
(:class:`eotransfer.strategies.coral.Coral`); only the alignment term differs.

The target data are read as unlabelled imagery: labels they may have are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eotransfer.losses.alignment import mmd_loss
from eotransfer.strategies.base import param, register_strategy
from eotransfer.strategies.coral import AlignmentParams, Coral


@dataclass
class MMDParams(AlignmentParams):
    kernel_mul: float = param(2.0, "ratio between successive Gaussian kernel bandwidths", 1.0, 100.0)
    kernel_num: int = param(5, "number of Gaussian kernels", 1, 64)


@register_strategy
class MMD(Coral):
    name = "mmd"
    Params = MMDParams
    summary = "cross-entropy on the source plus multi-kernel MMD to unlabelled target data (DAN, Long et al. 2015)"

    def alignment(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return mmd_loss(fs, ft, kernel_mul=self.params.kernel_mul, kernel_num=self.params.kernel_num)
