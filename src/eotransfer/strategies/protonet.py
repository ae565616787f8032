"""``protonet``: episodic meta-training of the backbone as a prototypical network.

Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning" (NeurIPS): every
training step draws N-way K-shot episodes from the *base* classes of the training split
(:class:`~eotransfer.data.episodes.EpisodeSampler`, from the epoch's seeded generator, so a resumed
run draws the same episodes), embeds support and query images with the backbone, and minimises the
cross-entropy of the queries under the softmax over negative squared distances to the support
prototypes (:mod:`eotransfer.losses.prototypes`).  ``--novel-classes`` (or ``--base-classes``) hold
classes out of meta-training; they never enter a loss.

The saved model stays an ordinary classifier: after each epoch and at the end of training its
linear head is replaced by the prototypes of every class, computed from (at most
:data:`PROTOTYPE_SAMPLES` per class of) the training split, as the equivalent linear layer (weights
``2p``, biases ``-‖p‖²``), so ``evaluate``/``predict`` classify by the nearest prototype.  Held-out
classes get prototypes too (their training samples act as the support set) but take no part in
validation, which scores the base classes only and monitors (the last epoch is kept).  For a new
support set at prediction time, see :func:`eotransfer.evaluation.fewshot.predict_fewshot`.

The head's logits are (shifted) negative squared distances, far apart (on EuroSAT from the MoCo backbone:
a median spread of 184 and a median margin of 27 over the correct patches), so the softmax saturates and
the cross-entropy's input gradient all but vanishes (exactly zero for 5 % of the correct patches).  Attack
such a model with ``--attack-loss margin`` or ``--attack square`` (:mod:`eotransfer.evaluation.attacks`):
on EuroSAT at ε = 0.01 its robust accuracy is 0.175 under PGD on the cross-entropy and 0.003 under PGD on
the margin, gradient masking and not robustness (benchmarks/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from eotransfer.data.episodes import EpisodeSampler
from eotransfer.errors import ConfigError, did_you_mean
from eotransfer.losses.prototypes import prototype_linear, prototype_logits, prototypes
from eotransfer.strategies.base import CommonParams, Phase, Strategy, param, register_strategy

#: training samples per class whose mean becomes the saved head's prototype
PROTOTYPE_SAMPLES = 100
_CACHE_BYTES = 1 << 30


@dataclass
class ProtonetParams(CommonParams):
    epochs: int = param(20, "epochs of episodic meta-training", 1, 10_000)
    lr: float = param(1e-3, "learning rate of the backbone", 1e-7, 10.0)
    ways: int = param(0, "classes per training episode (0 = every base class, at most 5)", 0, 100_000)
    shots: int = param(5, "support samples per class in a training episode", 1, 100_000)
    queries: int = param(0, "query samples per class (0 = what the smallest base class allows, at most 15)", 0, 100_000)
    episodes_per_epoch: int = param(0, "episodes per epoch, spread evenly over the ⌈training samples / --batch-size⌉ steps (0 = one per step)", 0, 10**7)  # fmt: skip
    novel_classes: str = param("", "classes held out of meta-training, comma-separated (default: none)")
    base_classes: str = param("", "or: the classes meta-training uses, comma-separated (the others are held out)")


def _class_ids(text: str, classes: list[str], option: str) -> set[int]:
    ids = set()
    for name in (x.strip() for x in text.split(",") if x.strip()):
        if name not in classes:
            raise ConfigError(f"{option}: unknown class '{name}'" + did_you_mean(name, classes))
        ids.add(classes.index(name))
    return ids


@register_strategy
class Protonet(Strategy):
    name = "protonet"
    Params = ProtonetParams
    summary = "episodic N-way K-shot meta-training, nearest-prototype head (Snell et al. 2017)"

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.sampler: EpisodeSampler | None = None
        self.cache: dict[int, torch.Tensor] | None = None

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        p, classes = self.params, list(dataset.classes)
        if p.novel_classes and p.base_classes:
            raise ConfigError("--novel-classes/--base-classes: give one of them, not both")
        base = (_class_ids(p.base_classes, classes, "--base-classes") if p.base_classes
                else set(range(len(classes))) - _class_ids(p.novel_classes, classes, "--novel-classes"))  # fmt: skip
        option = "--base-classes" if p.base_classes else "--novel-classes"
        if len(base) < 2:
            raise ConfigError(f"{option}: leaves {len(base)} base class(es); meta-training needs at least 2")
        train = np.asarray(split.train, dtype=np.int64)
        labels = dataset.labels[train]
        self.base = sorted(base)
        self.base_idx = train[np.isin(labels, self.base)]
        counts = {c: int((labels == c).sum()) for c in self.base}
        if p.ways == 1:
            raise ConfigError("--ways: 1 way is no classification task; use at least 2 (or 0 for every base class)")
        ways = p.ways or min(5, len(self.base))
        queries = p.queries
        if not queries:
            small = min(self.base, key=lambda c: counts[c])
            queries = min(15, counts[small] - p.shots)
            if queries < 1:
                raise ConfigError(
                    f"--shots: {p.shots} shots leave no query sample in class '{classes[small]}' "
                    f"({counts[small]} training samples); lower --shots or add samples"
                )
        try:
            self.sampler = EpisodeSampler(dataset.labels[self.base_idx], ways, p.shots, queries,
                                          classes=self.base, class_names=classes)  # fmt: skip
        except ConfigError as e:
            raise ConfigError(f"{e} (episodes come from the base classes of the training split)") from None
        steps = max(1, math.ceil(len(train) / p.batch_size))
        self.per_step = max(1, math.ceil(p.episodes_per_epoch / steps)) if p.episodes_per_epoch else 1
        self.total_steps = steps * p.epochs
        rng = np.random.default_rng(int(split.info.get("seed", 0)) if hasattr(split, "info") else 0)
        self.proto_idx = np.sort(np.concatenate(
            [rng.permutation(train[labels == c])[:PROTOTYPE_SAMPLES] for c in np.unique(labels)]
        ))  # fmt: skip
        self.dataset, self.n_classes = dataset, len(classes)
        per_image = dataset.checked_read(int(train[0])).nbytes
        self.cache = {} if per_image * len(self.base_idx) <= _CACHE_BYTES else None

    def phases(self, model: nn.Module) -> list[Phase]:
        backbone = list(model.backbone.parameters())  # type: ignore[union-attr]
        # the engine's own batches are not used (episodes are drawn instead), so it need not augment them
        return [Phase("episodic", self.params.epochs, [{"params": backbone, "lr": self.params.lr}], augment=False,
                      keep_best=False)]  # fmt: skip

    def _image(self, i: int) -> torch.Tensor:
        if self.cache is None:
            return self.dataset[i]["image"]  # type: ignore[no-any-return]
        if i not in self.cache:
            self.cache[i] = self.dataset[i]["image"]
        return self.cache[i]

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        if self.sampler is None:
            raise RuntimeError("protonet: no episode sampler; fit calls prepare() before training")
        from eotransfer.engine.loop import augment_batch

        losses = []
        for _ in range(self.per_step):
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
            ep = self.sampler.draw(rng)
            picked = self.base_idx[np.concatenate([ep.support, ep.query])]
            x = torch.stack([self._image(int(i)) for i in picked])
            if self.params.augment:
                x = augment_batch(x, gen)
            feats = model.features(x.to(device=images.device, dtype=images.dtype))  # type: ignore[operator]
            n_support = len(ep.support)
            support_y = torch.from_numpy(ep.support_labels).to(feats.device)
            logits = prototype_logits(feats[n_support:], prototypes(feats[:n_support], support_y, ep.ways))
            losses.append(nn.functional.cross_entropy(logits, torch.from_numpy(ep.query_labels).to(feats.device)))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def _embed(self, model: nn.Module, ds: Any, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        modes = {m: m.training for m in model.modules()}
        model.eval()
        device = next(model.parameters()).device
        feats, labels = [], []
        for s in range(0, len(ds), batch):
            items = [ds[i] for i in range(s, min(s + batch, len(ds)))]
            x = torch.stack([it["image"] for it in items]).to(device)
            feats.append(model.features(x).float().cpu())  # type: ignore[operator]
            labels.append(torch.tensor([it["label"] for it in items]))
        for m, mode in modes.items():
            m.train(mode)
        return torch.cat(feats), torch.cat(labels)

    def set_head(self, model: nn.Module) -> None:
        """Replace the head by the prototypes of the training split (classes without samples: never predicted)."""
        from eotransfer.data.base import Subset

        feats, y = self._embed(model, Subset(self.dataset, self.proto_idx))
        present = torch.unique(y)
        remap = torch.full((self.n_classes,), -1, dtype=torch.long)
        remap[present] = torch.arange(len(present))
        weight, bias = prototype_linear(prototypes(feats, remap[y], len(present)))
        head: nn.Linear = model.head  # type: ignore[assignment]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-1e9)
            head.weight[present] = weight.to(head.weight)
            head.bias[present] = bias.to(head.bias)

    def after_step(self, model: nn.Module, progress: float) -> None:
        # the last two steps (the very last batch may be skipped when it holds one sample)
        if self.sampler is not None and progress * self.total_steps >= self.total_steps - 1 - 1e-6:
            self.set_head(model)

    def validate(self, model: nn.Module, val: Any, engine: Any) -> dict[str, float]:
        """Nearest-prototype accuracy on the base classes' validation samples (held-out classes excluded)."""
        if self.sampler is None:
            raise RuntimeError("protonet: validate before prepare()")
        self.set_head(model)
        feats, yv = self._embed(model, val)
        keep = torch.from_numpy(np.isin(yv.numpy(), self.base))
        if not bool(keep.any()):
            return {}
        head: nn.Linear = model.head  # type: ignore[assignment]
        base = torch.tensor(self.base)
        logits = (feats[keep] @ head.weight.detach().cpu().T + head.bias.detach().cpu())[:, base]
        target = torch.searchsorted(base, yv[keep])
        return {
            "val_loss": float(nn.functional.cross_entropy(logits, target)),
            "val_accuracy": float((logits.argmax(1) == target).float().mean()),
        }
