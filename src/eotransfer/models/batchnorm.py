"""Re-estimating BatchNorm statistics on another domain's images (AdaBN).

AdaBN (Li, Wang, Shi, Hou & Liu 2018, "Adaptive Batch Normalization for practical domain
adaptation", Pattern Recognition 80; first as "Revisiting Batch Normalization for Practical Domain
Adaptation", ICLR 2017 workshop): the weights learnt on the source stay as they are, and every
BatchNorm layer's running mean and variance are replaced by those of the target domain's images.
A layer then standardises target features with target statistics, which removes the part of a
sensor, season or region shift that shows as a change of each channel's mean and spread.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (1-, 2- and 3-d, synchronised ones too)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace the running statistics of every BatchNorm layer by those of ``batches``; returns the images seen.

    The statistics are the cumulative average over all batches (``momentum=None``), i.e. the
    population mean and (unbiased) variance for equal batch sizes, so the result does not depend on
    the order of the batches.  No weight changes, the rest of the model runs in eval mode (no
    dropout), and the model's train/eval mode and each layer's momentum are restored afterwards.
    A model without BatchNorm is left untouched (0 is returned).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers
             if m.running_mean is not None and m.running_var is not None and m.num_batches_tracked is not None]  # fmt: skip
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for x in batches:
            if x.shape[0] < 2:  # one image has no spread; BatchNorm refuses it in train mode
                continue
            model(x)
            seen += int(x.shape[0])
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if seen == 0:  # nothing usable: put the source statistics back rather than leave reset ones
        for m, (mean, var, count) in zip(layers, saved, strict=True):
            m.running_mean.copy_(mean)  # type: ignore[union-attr]
            m.running_var.copy_(var)  # type: ignore[union-attr]
            m.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
    return seen
