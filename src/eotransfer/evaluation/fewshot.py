"""Few-shot evaluation of a backbone on novel classes, and prediction from a support set given at prediction time.

Episodic evaluation (Vinyals et al. 2016; Snell et al. 2017): ``episodes`` N-way K-shot episodes
are drawn from the novel classes (:class:`~eotransfer.data.episodes.EpisodeSampler`, reproducible
by seed), the frozen backbone embeds support and query samples, and each method classifies the
queries from the support alone:

- ``protonet``: nearest class prototype (mean support embedding), negative squared Euclidean
  distance (Snell, Swersky & Zemel 2017);
- ``finetune``: the fine-tune-on-the-support-set baseline as a new linear head (multinomial
  logistic regression) trained on the L2-normalised support embeddings (Chen et al. 2019, "A
  Closer Look at Few-shot Classification", ICLR; Tian et al. 2020, "Rethinking Few-Shot Image
  Classification: a Good Embedding Is All You Need?", ECCV).  The backbone stays frozen.

The result is the mean query accuracy over episodes with its 95 % interval ``1.96·std/√n``, as
the few-shot literature reports it.  :class:`PrototypeClassifier` and :func:`predict_fewshot` are
the predictor: a saved model's backbone plus prototypes of a new support set (class folders with a
few examples each), no retraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.data.episodes import EpisodeSampler
from eotransfer.errors import ConfigError
from eotransfer.losses.prototypes import prototype_logits, prototypes

METHODS = ("protonet", "finetune")


def episode_ci95(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and half-width of its normal 95 % interval, ``1.96·std/√n`` (population std, as the literature)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(1.96 * v.std() / np.sqrt(len(v)))


@torch.no_grad()
def embed(network: torch.nn.Module, dataset: Any, indices: np.ndarray | None = None,
          batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Backbone features (``network.features``, eval mode) and labels of ``dataset``'s samples ``indices``."""
    network.eval()
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    device = next(network.parameters()).device
    feats, labels = [], []
    for s in range(0, len(idx), batch_size):
        items = [dataset[int(i)] for i in idx[s : s + batch_size]]
        x = torch.stack([it["image"] for it in items]).to(device)
        feats.append(network.features(x).float().cpu().numpy())  # type: ignore[operator]
        labels.append(np.array([it.get("label", -1) for it in items], dtype=np.int64))
    if not feats:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(feats), np.concatenate(labels)


def _batched(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t.unsqueeze(0) if t.ndim == 2 else t


def protonet_predict(support: np.ndarray, support_y: np.ndarray, query: np.ndarray, ways: int) -> np.ndarray:
    """Index of the nearest support prototype for each query row.

    ``support`` n×d and ``query`` m×d, or E×n×d and E×m×d for E episodes sharing ``support_y``.
    """
    xs, xq = _batched(support), _batched(query)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(support_y, dtype=np.int64)), ways).float()
    protos = (onehot.T @ xs) / onehot.sum(0).unsqueeze(1)  # E×ways×d class means
    dist = (xq * xq).sum(-1, keepdim=True) - 2 * xq @ protos.transpose(1, 2) + (protos * protos).sum(-1).unsqueeze(1)
    pred = (-dist).argmax(-1).numpy()
    return pred[0] if np.ndim(query) == 2 else pred  # type: ignore[no-any-return]


def finetune_predict(support: np.ndarray, support_y: np.ndarray, query: np.ndarray, steps: int = 100,
                     lr: float = 0.1, weight_decay: float = 1e-3) -> np.ndarray:  # fmt: skip
    """Class of each query row from a new linear head trained on the L2-normalised support rows.

    Multinomial logistic regression fitted by ``steps`` full-batch Adam steps from zero weights
    (deterministic; the fine-tune-on-the-support baseline of Chen et al. 2019 with a frozen
    backbone).  Shapes as :func:`protonet_predict`; the heads of E episodes train side by side and
    independently (Adam and the decay act element-wise).
    """
    xs = torch.nn.functional.normalize(_batched(support), dim=-1)
    xq = torch.nn.functional.normalize(_batched(query), dim=-1)
    ys = torch.from_numpy(np.asarray(support_y, dtype=np.int64))
    n_episodes, n_classes = xs.shape[0], int(ys.max()) + 1
    weight = torch.zeros(n_episodes, xs.shape[2], n_classes, requires_grad=True)
    bias = torch.zeros(n_episodes, 1, n_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    target = ys.repeat(n_episodes)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            logits = (xs @ weight + bias).reshape(-1, n_classes)
            (torch.nn.functional.cross_entropy(logits, target, reduction="sum") / len(ys)).backward()
            opt.step()
    with torch.no_grad():
        pred = (xq @ weight + bias).argmax(-1).numpy()
    return pred[0] if np.ndim(query) == 2 else pred  # type: ignore[no-any-return]


@dataclass
class FewShotResult:
    """Mean query accuracy over episodes and its 95 % interval."""

    method: str
    ways: int
    shots: int
    queries: int
    episodes: int
    mean: float
    ci95: float
    accuracies: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "ways": self.ways, "shots": self.shots, "queries": self.queries,
                "episodes": self.episodes, "accuracy": self.mean, "ci95": self.ci95}  # fmt: skip


def evaluate_episodes(
    features: np.ndarray, labels: np.ndarray, ways: int = 5, shots: int = 5, queries: int = 15,
    episodes: int = 600, seed: int = 0, classes: list[int] | None = None, class_names: list[str] | None = None,
    methods: tuple[str, ...] = METHODS,
) -> dict[str, FewShotResult]:  # fmt: skip
    """Score ``methods`` on ``episodes`` episodes of the (novel) ``classes`` of pre-computed ``features``.

    Every method sees the same episodes (episode ``i`` depends only on ``seed`` and ``i``).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown few-shot method '{unknown[0]}'; choose from {', '.join(METHODS)}")
    if episodes < 1:
        raise ConfigError(f"--episodes: {episodes} must be at least 1")
    sampler = EpisodeSampler(labels, ways, shots, queries, seed, classes=classes, class_names=class_names)
    eps = list(sampler.episodes(episodes))
    fs = features[np.stack([e.support for e in eps])]
    fq = features[np.stack([e.query for e in eps])]
    ys, yq = eps[0].support_labels, eps[0].query_labels  # the same in every episode: class by class
    acc: dict[str, np.ndarray] = {}
    for m in methods:
        pred = protonet_predict(fs, ys, fq, ways) if m == "protonet" else finetune_predict(fs, ys, fq)
        acc[m] = (pred == yq[None, :]).mean(1)
    return {m: FewShotResult(m, ways, shots, queries, episodes, *episode_ci95(a), a) for m, a in acc.items()}


class PrototypeClassifier:
    """A saved model's backbone with the prototypes of a support set: ``predict_proba`` like a saved model.

    ``support`` is a labelled data set in the model's bands (e.g. class folders with a few images
    each); nothing is retrained, the support set's class-mean embeddings are the classifier.
    """

    def __init__(self, saved: Any, support: Any) -> None:
        self.saved = saved
        self.classes = list(support.classes)
        feats, labels = embed(saved.network, support)
        self.prototypes = prototypes(torch.from_numpy(feats), torch.from_numpy(labels), len(self.classes))
        self.support_counts = {c: int((labels == i).sum()) for i, c in enumerate(self.classes)}

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Class probabilities (softmax of negative squared distances) for raw N×C×H×W images in the model's bands."""
        n_bands = len(self.saved.card["bands"])
        if images.ndim != 4 or images.shape[1] != n_bands:
            from eotransfer.errors import DataError

            raise DataError(f"input has shape {images.shape}; the model expects N×{n_bands}×H×W")
        net = self.saved.network.eval()
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size], dtype=np.float32))
            out.append(torch.softmax(prototype_logits(net.features(x), self.prototypes), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)


def predict_fewshot(model_dir: str | Path, support: str | Path, source: str | Path, out: str | Path,
                    **options: Any) -> dict[str, Any]:  # fmt: skip
    """Classify a folder of patches by the nearest prototype of a new ``support`` set; write a CSV.

    ``support``: class folders with a few examples each, in the same format and bands as the
    model's training data.  ``source``: a folder of patches (flat, or class folders whose labels
    are ignored).  ``options``: ``format``, ``scale``, ``offset``, ``nodata`` as for ``predict``.
    """
    from eotransfer.api import predict_samples
    from eotransfer.card import atomic_write_text, load_model
    from eotransfer.data.base import open_dataset

    saved = load_model(model_dir)
    common = {"bands": ",".join(saved.bands.keys), "nodata": options.get("nodata", "error"),
              "scale": float(options.get("scale", 1.0)), "offset": float(options.get("offset", 0.0))}  # fmt: skip
    sup_path, src = Path(support), Path(source)
    if not sup_path.is_dir() or not any(d.is_dir() for d in sup_path.iterdir()):
        raise ConfigError(f"--support: {sup_path} is not a folder of class folders (one folder of examples per class)")
    if not src.is_dir():
        raise ConfigError(f"{src}: predict-fewshot takes a folder of patches (flat, or class folders)")
    sup = open_dataset(sup_path, format=options.get("format"), **common)
    clf = PrototypeClassifier(saved, sup)
    flat = not any(d.is_dir() for d in src.iterdir())
    ds = open_dataset(src, format=options.get("format"), unlabelled=flat, **common)
    probs = predict_samples(clf, ds, np.arange(len(ds)))
    rows = ["file," + ",".join(["predicted", *[f"p_{c}" for c in clf.classes]])]
    counts: dict[str, int] = {}
    for i, p in enumerate(probs):
        cls = clf.classes[int(p.argmax())]
        counts[cls] = counts.get(cls, 0) + 1
        rows.append(f"{ds.sources[i]},{cls}," + ",".join(f"{v:.5f}" for v in p))
    atomic_write_text(Path(out), "\n".join(rows) + "\n")
    return {"path": str(out), "n": len(ds), "support": clf.support_counts, "predicted": counts}
