"""``moco``: momentum contrast, the method SSL4EO-S12 pre-trained its Sentinel-1/2 weights with.

InfoNCE between the online prediction of one view and the momentum-encoder key of the other,
symmetrised, with the other keys of the batch as negatives (Chen, Xie & He 2021, "An Empirical
Study of Training Self-Supervised Vision Transformers", ICCV = MoCo v3), or with a queue of keys
from earlier batches (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR; Chen et al. 2020, MoCo v2) when ``queue_size`` > 0 — useful when batches are
small.  Wang et al. 2022, "SSL4EO-S12", arXiv:2211.07044, for the EO setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eotransfer.pretrain.base import SSLMethod, SSLModel, SSLParams, register_method
from eotransfer.strategies.base import param


@dataclass
class MoCoParams(SSLParams):
    temperature: float = param(0.2, "InfoNCE temperature", 1e-3, 10.0)
    queue_size: int = param(
        0, "negatives kept from earlier batches (MoCo v2); 0 = the batch's own keys (v3)", 0, 1_000_000
    )


@register_method
class MoCo(SSLMethod):
    name = "moco"
    Params = MoCoParams
    summary = "momentum contrast (MoCo v3; MoCo v2 queue optional), as SSL4EO-S12"
    last_bn = True

    def build(self, model: SSLModel) -> None:
        super().build(model)
        q = self.params.queue_size
        model.register_buffer("queue", nn.functional.normalize(torch.randn(q, self.params.proj_dim), dim=1))
        model.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _infonce(self, model: SSLModel, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = nn.functional.normalize(q, dim=1), nn.functional.normalize(k, dim=1)
        t = self.params.temperature
        if self.params.queue_size:
            queue: torch.Tensor = model.queue  # type: ignore[assignment]
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T.to(q.dtype)], dim=1)
            target = torch.zeros(len(q), dtype=torch.long, device=q.device)
        else:
            logits = q @ k.T
            target = torch.arange(len(q), device=q.device)
        return nn.functional.cross_entropy(logits / t, target) * 2 * t

    def pair_loss(
        self, model: SSLModel, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
    ) -> torch.Tensor:
        loss = self._infonce(model, p1, z2) + self._infonce(model, p2, z1)
        if self.params.queue_size:
            self._enqueue(model, torch.cat([z1, z2]))
        return loss

    @torch.no_grad()
    def _enqueue(self, model: SSLModel, keys: torch.Tensor) -> None:
        queue: torch.Tensor = model.queue  # type: ignore[assignment]
        ptr: torch.Tensor = model.queue_ptr  # type: ignore[assignment]
        keys = nn.functional.normalize(keys.detach().float(), dim=1)[: len(queue)]
        idx = (int(ptr) + torch.arange(len(keys), device=queue.device)) % len(queue)
        queue[idx] = keys.to(queue.dtype)
        ptr.fill_((int(ptr) + len(keys)) % len(queue))
