"""``zero-shot``: classes given by descriptions or attribute vectors; unseen classes predicted from them alone.

DeViSE (Frome et al. 2013, "DeViSE: A Deep Visual-Semantic Embedding Model", NeurIPS): a linear
projection W of the frozen backbone's pooled features f into the semantic space of the class
embeddings, trained by the engine on the seen classes only, with cross-entropy over the logits
``⟨W f, ê_c⟩ / τ`` (ê_c the L2-normalised class embedding, τ the temperature; cross-entropy in
place of DeViSE's hinge rank loss).  The projected feature is not normalised, so the head is one
linear layer: after every step the model's head is set to ``Ê W / τ`` for every class, seen and
unseen, and the saved model predicts them all with the ordinary ``predict``/``evaluate``.  The
backbone stays frozen, so each distinct image's features are computed once and kept in memory.
``--method eszsl``: the closed form of ESZSL (Romera-Paredes & Torr 2015, "An embarrassingly simple
approach to zero-shot learning", ICML), ``V = (XᵀX + γI)⁻¹ Xᵀ Y S (SᵀS + λI)⁻¹`` on the
standardised frozen features (the standardisation folded into the head).

Class embeddings (:mod:`eotransfer.models.text`): sentence embeddings of ``--descriptions`` (by
default the shipped descriptions that name every class) or ``--attributes`` vectors (a CSV file, or ``eotransfer:eurosat`` for the shipped hand-written EuroSAT table).
``--unseen-classes`` are held out of training entirely: their samples on the training and validation
sides are dropped from the loss, early stopping and ESZSL; the test side keeps them.  Generalised
zero-shot by calibrated stacking (Chao et al. 2016, "An Empirical Study and Analysis of Generalized
Zero-Shot Learning for Object Recognition in the Wild", ECCV): the head's bias subtracts γ
(``--calibration``) from the seen classes' scores.  ``--calibration-pool`` chooses γ without any
label instead, by prior matching (as in Saerens et al. 2002, "Adjusting the outputs of a classifier
to new a priori probabilities", Neural Computation): γ is set so that a share ``--unseen-share``
(default: the unseen classes' share of all classes) of the pool's unlabelled images is predicted as
some unseen class (:func:`prior_matching_gamma`).  With ``@test`` as pool this is transductive
generalised zero-shot: the test images, labels unused, as in the domain-adaptation rows.  :func:`zeroshot_metrics` gives the measures of
Xian et al. 2018 ("Zero-Shot Learning — A Comprehensive Evaluation of the Good, the Bad and the
Ugly", TPAMI); they are written to the card's test metrics and to ``zeroshot.json`` in the model directory (and ESZSL's record to
the card's ``classifier``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from eotransfer.errors import ConfigError, DataError, did_you_mean
from eotransfer.evaluation.classical import frozen_features
from eotransfer.models.text import class_embeddings
from eotransfer.strategies.base import CommonParams, Phase, Strategy, param, register_strategy

METHODS = ("devise", "eszsl")


@dataclass
class ZeroShotParams(CommonParams):
    epochs: int = param(50, "epochs of training the projection (devise)", 1, 100_000)
    lr: float = param(1e-2, "learning rate of the projection (devise)", 1e-7, 10.0)
    augment: bool = param(False, "random flips and 90° rotations (off: each image's features are computed once)")
    method: str = param("devise", "devise (projection trained with cross-entropy) | eszsl (closed form on frozen features)", choices=METHODS)  # fmt: skip
    unseen_classes: str = param("", "classes held out of training entirely, comma-separated (predicted from their descriptions alone)")  # fmt: skip
    descriptions: str | None = param(None, "YAML file `class: description` (default: the shipped descriptions naming every class)")  # fmt: skip
    attributes: str | None = param(None, "CSV file of class attribute vectors (header class,attr1,...) instead of descriptions")  # fmt: skip
    calibration: float = param(0.0, "calibrated stacking: γ subtracted from the seen classes' scores (Chao et al. 2016)", 0.0, 1e4)  # fmt: skip
    calibration_pool: str = param("", "unlabelled images (data sets, folders, rasters, @test, @unlabelled or @train; labels unused; '@train,@unlabelled': the whole training side, inductive) on which γ is chosen by prior matching, replacing --calibration")  # fmt: skip
    calibration_pool_bands: str | None = param(None, "the bands of the --calibration-pool files, as --bands (default: inferred)")  # fmt: skip
    unseen_share: float | None = param(None, "share of the calibration pool expected to be of unseen classes (default: their share of all classes)", 0.0, 1.0)  # fmt: skip
    temperature: float = param(0.1, "τ of the logits ⟨W f, ê_c⟩ / τ (devise)", 1e-3, 10.0)
    eszsl_gamma: float = param(1.0, "ESZSL regulariser γ of the feature space", 1e-6, 1e6)
    eszsl_lambda: float = param(1.0, "ESZSL regulariser λ of the semantic space", 1e-6, 1e6)


def calibrated_stacking(scores: np.ndarray, seen: np.ndarray, gamma: float) -> np.ndarray:
    """Scores with γ subtracted from every seen class (Chao et al. 2016)."""
    return np.asarray(scores, dtype=np.float64) - gamma * np.asarray(seen, dtype=np.float64)


def _per_class_accuracy(y: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> float | None:
    accs = [float((pred[y == c] == c).mean()) for c in classes if (y == c).any()]
    return float(np.mean(accs)) if accs else None


def zeroshot_metrics(y_true: np.ndarray, scores: np.ndarray, seen: np.ndarray) -> dict[str, Any]:
    """Generalised and conventional zero-shot accuracy (per-class means, Xian et al. 2018).

    ``seen_accuracy``/``unseen_accuracy``: the test samples of seen/unseen classes, predicted among
    all classes; ``harmonic_mean`` of the two; ``zsl_unseen_accuracy``: unseen samples predicted
    among the unseen classes only, against ``chance`` = 1 / number of unseen classes.
    """
    y, s, seen = np.asarray(y_true), np.asarray(scores, dtype=np.float64), np.asarray(seen, dtype=bool)
    pred = s.argmax(1)
    seen_ids, unseen_ids = np.flatnonzero(seen), np.flatnonzero(~seen)
    acc_s, acc_u = _per_class_accuracy(y, pred, seen_ids), _per_class_accuracy(y, pred, unseen_ids)
    harmonic = None if acc_s is None or acc_u is None else 2 * acc_s * acc_u / max(acc_s + acc_u, 1e-12)
    zsl = None
    if len(unseen_ids):
        is_unseen = np.isin(y, unseen_ids)
        pred_u = unseen_ids[s[is_unseen][:, unseen_ids].argmax(1)]
        zsl = _per_class_accuracy(y[is_unseen], pred_u, unseen_ids)
    return {"seen_accuracy": acc_s, "unseen_accuracy": acc_u, "harmonic_mean": harmonic,
            "zsl_unseen_accuracy": zsl, "chance": 1 / len(unseen_ids) if len(unseen_ids) else None,
            "n_seen": int(np.isin(y, seen_ids).sum()), "n_unseen": int(np.isin(y, unseen_ids).sum())}  # fmt: skip


def prior_matching_gamma(scores: np.ndarray, seen: np.ndarray, share: float) -> float:
    """The calibrated-stacking γ at which a ``share`` of the rows of ``scores`` is predicted as an unseen class.

    A row goes to an unseen class when its best unseen score beats its best seen score minus γ, that is
    when the gap (best seen − best unseen) is below γ: γ is the gaps' ``share`` quantile.
    """
    s, seen = np.asarray(scores, dtype=np.float64), np.asarray(seen, dtype=bool)
    if not len(s):
        raise DataError("--calibration-pool: it holds no image to calibrate on")
    if seen.all() or not seen.any():
        raise ConfigError("--calibration-pool: calibration needs seen and unseen classes (--unseen-classes)")
    gap = s[:, seen].max(1) - s[:, ~seen].max(1)
    return float(np.quantile(gap, min(max(share, 0.0), 1.0)))


@register_strategy
class ZeroShot(Strategy):
    name = "zero-shot"
    Params = ZeroShotParams
    summary = "projection of visual features onto class descriptions' embeddings (DeViSE/ESZSL); unseen classes from text"  # fmt: skip

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        if params.descriptions and params.attributes:
            raise ConfigError("--attributes: give the classes either by --descriptions or by --attributes, not both")
        self.classical = params.method == "eszsl"  # type: ignore[misc]
        self.projection = nn.Parameter(torch.zeros(0))  # W: features → semantic space, sized in prepare
        self.embeddings = torch.zeros(0)  # Ê: classes × d, rows L2-normalised
        self.seen = torch.ones(0, dtype=torch.bool)
        self.model: Any = None
        self.data: Any = None
        self.record: dict[str, Any] = {}
        self.val_seen = True
        self.feature_cache: dict[bytes, torch.Tensor] = {}  # the backbone is frozen: features never change
        self.gamma = float(params.calibration)  # calibrated stacking's γ, or the one prior matching chooses
        self.pool: Any = None  # the --calibration-pool, opened in prepare
        if params.calibration_pool and params.calibration:
            raise ConfigError("--calibration-pool: it chooses γ itself; leave --calibration at 0 or drop the pool")

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        classes = list(dataset.classes)
        unseen = [c.strip() for c in self.params.unseen_classes.split(",") if c.strip()]
        for c in unseen:
            if c not in classes:
                raise ConfigError(f"--unseen-classes: '{c}' is not a class of the data" + did_you_mean(c, classes))
        if len(set(unseen)) >= len(classes):
            raise ConfigError("--unseen-classes: at least one class must stay seen (trained on)")
        vectors, source = class_embeddings(classes, self.params.descriptions, self.params.attributes)
        self.embeddings = nn.functional.normalize(torch.from_numpy(vectors).float(), dim=1)
        self.seen = torch.tensor([c not in unseen for c in classes])
        labels = np.asarray(dataset.labels)
        n_train = int(self.seen.numpy()[labels[split.train]].sum())
        if n_train == 0:
            raise DataError("--unseen-classes: no training sample of a seen class is left; hold out fewer classes")
        self.val_seen = bool(len(split.val)) and bool(self.seen.numpy()[labels[split.val]].any())
        self.projection = nn.Parameter(torch.zeros(vectors.shape[1], model.head.in_features))  # type: ignore[arg-type, union-attr]
        self.model, self.data = model, (dataset, split)
        self.record = {"method": self.params.method, "semantics": source, "semantic_dim": int(vectors.shape[1]),
                       "seen_classes": [c for c in classes if c not in unseen], "unseen_classes": unseen,
                       "n_train_seen": n_train, "calibration": self.params.calibration}  # fmt: skip
        if self.params.calibration_pool:
            from eotransfer.strategies._target import open_target_pool

            if not unseen:
                raise ConfigError("--calibration-pool: there is no unseen class to calibrate for; name them with "
                                  "--unseen-classes, or drop the pool")  # fmt: skip
            self.pool = open_target_pool(self.params.calibration_pool, self.params.calibration_pool_bands, dataset,
                                         option="--calibration-pool", split=split, use="zero-shot calibration")  # fmt: skip
        self._set_head(self.embeddings @ self.projection.detach() / self.params.temperature)

    def _set_head(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Write the head: all classes' weights, the bias minus γ on the seen classes (calibrated stacking)."""
        head: nn.Linear = self.model.head
        shift = self.gamma * self.seen.to(head.bias.device, torch.float32)
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_((0.0 if bias is None else bias.to(head.bias.device)) - shift)

    # -- DeViSE: a projection trained by the engine --------------------------------------------
    def phases(self, model: nn.Module) -> list[Phase]:
        if self.classical:
            return []
        device: torch.device = model.head.weight.device  # type: ignore[union-attr, assignment]
        self.projection.data = self.projection.data.to(device)
        self.embeddings, self.seen = self.embeddings.to(device), self.seen.to(device)
        group = [{"params": [self.projection], "lr": self.params.lr}]
        return [Phase("projection", self.params.epochs, group, augment=self.params.augment,
                      keep_best=self.val_seen)]  # fmt: skip

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        keep = self.seen[labels]  # unseen classes' samples never reach the loss
        if not keep.any():
            return self.projection.sum() * 0.0
        features = self._features(model, images[keep])
        seen_emb = self.embeddings[self.seen]
        logits = features.float() @ self.projection.T @ seen_emb.T / self.params.temperature
        position = torch.cumsum(self.seen.long(), 0) - 1  # class index → index among the seen classes
        return nn.functional.cross_entropy(logits, position[labels[keep]])

    def _features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's features (eval mode), computed once per distinct image and kept."""
        keys = [hashlib.blake2b(x.tobytes(), digest_size=16).digest() for x in images.detach().cpu().numpy()]
        todo = [i for i, k in enumerate(keys) if k not in self.feature_cache]
        if todo:
            with torch.no_grad():
                new = model.features(images[todo]).float()  # type: ignore[operator]
            self.feature_cache.update(zip([keys[i] for i in todo], new, strict=True))
        return torch.stack([self.feature_cache[k] for k in keys])

    def state(self) -> dict[str, Any]:
        """The projection W (it trains outside the model), for checkpoints: a resumed run continues from it."""
        return {"projection": self.projection.detach().cpu().clone()} if self.projection.numel() else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if "projection" in state and state["projection"].shape == self.projection.shape:
            with torch.no_grad():
                self.projection.copy_(state["projection"].to(self.projection.device))

    def after_step(self, model: nn.Module, progress: float) -> None:
        self._set_head(self.embeddings @ self.projection.detach() / self.params.temperature)

    def after_training(self, model: nn.Module, engine: Any, train: Any) -> None:
        """DeViSE's γ, chosen on the calibration pool (when there is one) before any score."""
        self._calibrate()

    def _calibrate(self) -> None:
        """Prior matching on the ``--calibration-pool``: shift the head's seen-class bias to the chosen γ."""
        if self.pool is None:
            return
        from eotransfer.strategies._target import pool_batches

        dataset, split = self.data
        head: nn.Linear = self.model.head
        like = dataset[int(split.train[0])]["image"].unsqueeze(0).to(head.weight.device)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            scores = [self.model(b).float().cpu().numpy() for b in pool_batches(self.pool, 128, like, limit=len(self.pool))]  # fmt: skip
        self.model.train(was_training)
        seen = self.seen.cpu().numpy()
        raw = np.concatenate(scores) + self.gamma * seen  # the scores before calibrated stacking
        share = self.params.unseen_share
        share = float((~seen).sum() / len(seen)) if share is None else float(share)
        gamma = prior_matching_gamma(raw, seen, share)
        with torch.no_grad():
            head.bias.sub_((gamma - self.gamma) * self.seen.to(head.bias.device, torch.float32))
        self.gamma = gamma
        predicted_unseen = float(((raw - gamma * seen).argmax(1)[:, None] == np.flatnonzero(~seen)[None]).any(1).mean())  # fmt: skip
        self.record.update({"calibration": gamma, "calibration_pool": self.params.calibration_pool,
                            "calibration_pool_images": len(raw), "unseen_share": share,
                            "calibration_pool_predicted_unseen": predicted_unseen})  # fmt: skip

    def validate(self, model: nn.Module, val: Any, engine: Any) -> dict[str, float]:
        """Cross-entropy and accuracy among the seen classes, on the seen classes' validation samples."""
        logits, y = engine.predict_logits(model, val)
        seen = self.seen.cpu()
        keep = seen[y]
        if not keep.any():
            return {}
        logits, position = logits[keep][:, seen], (torch.cumsum(seen.long(), 0) - 1)[y[keep]]
        return {"val_loss": float(nn.functional.cross_entropy(logits, position)),
                "val_accuracy": float((logits.argmax(1) == position).float().mean())}  # fmt: skip

    # -- ESZSL: a closed form on frozen features (a classical strategy) ------------------------
    def frozen_features(self, engine: Any, model: nn.Module, subset: Any) -> tuple[np.ndarray, np.ndarray]:
        return frozen_features(engine, model, subset, cache=True)

    def fit_classifier(self, features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> dict[str, Any]:
        seen = self.seen.cpu().numpy()
        x = np.asarray(features[seen[labels]], dtype=np.float64)
        y = (np.cumsum(seen) - 1)[labels[seen[labels]]]
        mean, std = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / std
        s = self.embeddings.cpu().double().numpy()  # classes × d
        targets = -np.ones((len(x), int(seen.sum())))
        targets[np.arange(len(x)), y] = 1.0
        left = np.linalg.solve(x.T @ x + self.params.eszsl_gamma * np.eye(x.shape[1]), x.T @ targets @ s[seen])
        v = np.linalg.solve(s[seen].T @ s[seen] + self.params.eszsl_lambda * np.eye(s.shape[1]), left.T).T
        weight = (s @ v.T) / std  # classes × features, on raw features
        self._set_head(torch.from_numpy(weight).float(), torch.from_numpy(-(weight @ mean)).float())
        self._calibrate()
        return dict(self.record)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        head: nn.Linear = self.model.head
        logits = torch.from_numpy(np.asarray(features, dtype=np.float32)) @ head.weight.detach().cpu().T
        return torch.softmax(logits + head.bias.detach().cpu(), dim=1).numpy()

    # -- what the model directory records ------------------------------------------------------
    def after_fit(self, model: nn.Module, engine: Any, subsets: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Seen, unseen and harmonic-mean accuracy of the test side, into the card's metrics (``metrics.test.zeroshot``)."""
        dataset, split = self.data
        device = self.model.head.weight.device
        self.model.eval()
        scores = []
        with torch.no_grad():
            for s in range(0, len(split.test), 128):
                x = np.stack([dataset[int(i)]["image"].numpy() for i in split.test[s : s + 128]])
                scores.append(self.model(torch.from_numpy(x).to(device)).float().cpu().numpy())
        if not scores:
            return {}
        y = np.asarray(dataset.labels)[split.test]
        self.record["test"] = zeroshot_metrics(y, np.concatenate(scores), self.seen.cpu().numpy())
        return {"test": {"zeroshot": self.record["test"]}}

    def model_files(self) -> dict[str, bytes]:
        """``zeroshot.json``: the held-out classes, where the semantics came from, and the test's zero-shot metrics."""
        return {"zeroshot.json": json.dumps(self.record, indent=2).encode()}
