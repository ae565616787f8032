"""What a self-supervised method is, on the shared engine.

A method is a :class:`~eotransfer.strategies.base.Strategy` whose loss compares two EO-augmented
views of the same patch.  Both methods here follow the same skeleton — an online encoder with a
projector and a predictor, and a momentum ("target"/"key") copy of encoder and projector updated by
an exponential moving average whose rate rises to 1 on a cosine schedule (Grill et al. 2020,
"Bootstrap Your Own Latent", NeurIPS; Chen, Xie & He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers" = MoCo v3).  Only the online encoder (normalisation +
backbone) is kept at the end; it is what ``--weights`` loads.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from eotransfer.data.augment import AugmentParams, EOAugment
from eotransfer.models.model import Normalize
from eotransfer.registry import Registry
from eotransfer.strategies.base import CommonParams, Phase, Strategy, param


class SSLModel(nn.Module):
    """normalize → backbone (pooled features): the encoder being pre-trained; methods add their heads."""

    def __init__(self, backbone: nn.Module, num_features: int, n_bands: int) -> None:
        super().__init__()
        self.normalize = Normalize(n_bands)
        self.backbone = backbone
        self.num_features = num_features
        self.heads = nn.ModuleDict()
        self.momentum = nn.ModuleDict()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def mlp(dim_in: int, hidden: int, dim_out: int, last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU-Linear (the projector/predictor of SimCLR, BYOL and MoCo v3)."""
    layers: list[nn.Module] = [nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, dim_out)]  # fmt: skip
    if last_bn:
        layers.append(nn.BatchNorm1d(dim_out, affine=False))
    return nn.Sequential(*layers)


@dataclass
class SSLParams(AugmentParams, CommonParams):
    """Settings shared by every pre-training method (an epoch is one pass over the pool)."""

    epochs: int = param(100, "epochs over the pool", 1, 100_000)
    lr: float = param(1e-3, "AdamW learning rate (cosine decay)", 1e-7, 10.0)
    weight_decay: float = param(0.05, "AdamW weight decay", 0.0, 1.0)
    batch_size: int = param(256, "patches per batch (two views each)", 2, 65_536)
    patience: int = param(0, "unused in pre-training (no early stopping)", 0, 0)
    momentum: float = param(0.99, "base EMA rate of the momentum encoder (rises to 1 on a cosine schedule)", 0.0, 1.0)
    proj_dim: int = param(256, "projection size", 8, 65_536)
    hidden_dim: int = param(2048, "hidden size of projector and predictor", 8, 65_536)


class SSLMethod(Strategy):
    """Base class: subclasses set ``name``/``Params`` and implement :meth:`pair_loss`."""

    Params: ClassVar[type] = SSLParams
    paper: ClassVar[str] = ""
    last_bn: ClassVar[bool] = False

    def __init__(self, params: Any, patch_size: int | None = None) -> None:
        super().__init__(params)
        params.check()
        self.augment = EOAugment(params, out_size=patch_size)
        self.monitor: Any = None

    def build(self, model: SSLModel) -> None:
        """Add projector, predictor and the momentum copies to ``model`` (so they checkpoint with it)."""
        p = self.params
        model.heads["projector"] = mlp(model.num_features, p.hidden_dim, p.proj_dim, self.last_bn)
        model.heads["predictor"] = mlp(p.proj_dim, p.hidden_dim, p.proj_dim)
        model.momentum["backbone"] = copy.deepcopy(model.backbone)
        model.momentum["projector"] = copy.deepcopy(model.heads["projector"])
        for q in model.momentum.parameters():
            q.requires_grad_(False)

    def phases(self, model: nn.Module) -> list[Phase]:
        online = [q for n, q in model.named_parameters() if not n.startswith("momentum.")]
        lr = self.params.lr
        return [Phase("pretrain", self.params.epochs, [{"params": online, "lr": lr}], augment=False, keep_best=False)]

    # -- the two-view loss ----------------------------------------------------------------------
    def online(self, model: SSLModel, x: torch.Tensor) -> torch.Tensor:
        return model.heads["predictor"](model.heads["projector"](model.features(x)))  # type: ignore[no-any-return]

    @torch.no_grad()
    def target(self, model: SSLModel, x: torch.Tensor) -> torch.Tensor:
        model.momentum.train()  # batch statistics, as the online branch (the engine leaves frozen parts in eval)
        return model.momentum["projector"](model.momentum["backbone"](model.normalize(x)))  # type: ignore[no-any-return]

    def pair_loss(
        self, model: SSLModel, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
    ) -> torch.Tensor:
        """Loss from online predictions ``p`` and target projections ``z`` of views 1 and 2."""
        raise NotImplementedError

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        assert isinstance(model, SSLModel)
        v1, v2 = self.augment(images, gen), self.augment(images, gen)
        both = torch.cat([v1, v2])  # one pass through each encoder for both views (BatchNorm sees both)
        p1, p2 = self.online(model, both).float().chunk(2)
        z1, z2 = self.target(model, both).float().chunk(2)
        return self.pair_loss(model, p1, p2, z1, z2)

    @torch.no_grad()
    def after_step(self, model: nn.Module, progress: float) -> None:
        """EMA update of the momentum copies; the rate follows BYOL's cosine schedule from ``momentum`` to 1."""
        m = 1.0 - (1.0 - self.params.momentum) * (math.cos(math.pi * min(progress, 1.0)) + 1) / 2
        assert isinstance(model, SSLModel)
        for online, target in (
            (model.backbone, model.momentum["backbone"]),
            (model.heads["projector"], model.momentum["projector"]),
        ):
            for po, pt in zip(online.parameters(), target.parameters(), strict=True):
                pt.mul_(m).add_(po.detach(), alpha=1.0 - m)
            for bo, bt in zip(online.buffers(), target.buffers(), strict=True):
                bt.copy_(bo)

    def validate(self, model: nn.Module, val: Any, engine: Any) -> dict[str, float]:
        if self.monitor is None:
            return {}
        model.eval()
        return self.monitor(model.features, engine)  # type: ignore[no-any-return]


def _load_methods() -> None:
    from eotransfer import pretrain

    pretrain.load_all()


METHODS: Registry[type[SSLMethod]] = Registry("pre-training method", "--method", _load_methods)
register_method = METHODS.register
get_method = METHODS.lookup
