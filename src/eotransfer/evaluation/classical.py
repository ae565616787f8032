"""Classical classifiers on frozen backbone features: the catalogue, cross-validation, the feature
cache, and safe persistence with skops.

The protocol of "deep features + a shallow classifier" (Donahue et al. 2014, "DeCAF", ICML;
Razavian et al. 2014, "CNN Features off-the-shelf", CVPR workshops); hyperparameters are chosen by
stratified k-fold cross-validation on the labelled training side only.  A fitted classifier is
stored with skops (``skops.io``), which rebuilds objects from a declarative description and
refuses any type not explicitly trusted, so loading a model directory never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.errors import ConfigError, WeightError

CLASSIFIER_FILE = "classifier.skops"

#: Types beyond skops' own defaults that a model directory may contain: what a random forest (its
#: trees) and kNN (its search tree and metric) are made of.  Anything else in a file is refused.
ALLOWED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance32",
})  # fmt: skip


def make_classifier(name: str, seed: int) -> tuple[Any, dict[str, list[Any]]]:
    """A scaled sklearn pipeline for classifier ``name`` and its cross-validation grid."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    cs = [0.01, 0.1, 1.0, 10.0, 100.0]
    catalogue: dict[str, tuple[Any, dict[str, list[Any]]]] = {
        "logreg": (LogisticRegression(max_iter=2000), {"C": cs}),
        "linear-svm": (LinearSVC(max_iter=10_000, random_state=seed), {"C": [c / 10 for c in cs]}),
        "rbf-svm": (SVC(kernel="rbf", random_state=seed), {"C": cs[1:], "gamma": ["scale", 1e-3, 1e-2]}),
        "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 3, 5, 7, 11], "weights": ["uniform", "distance"]}),
        "random-forest": (
            RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
            {"max_features": ["sqrt", "log2"]},
        ),
    }
    if name not in catalogue:
        from eotransfer.errors import did_you_mean

        raise ConfigError(f"--classifier: unknown classifier '{name}'" + did_you_mean(name, catalogue))
    estimator, grid = catalogue[name]
    pipe = Pipeline([("scale", StandardScaler()), ("clf", estimator)])
    return pipe, {f"clf__{k}": v for k, v in grid.items()}


def fit_cv(name: str, features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Fit classifier ``name`` with hyperparameters chosen by stratified ``folds``-fold CV.

    The number of folds is capped by the smallest class; with fewer than two samples in some class
    no CV is possible and the defaults are fitted (the returned record says so).
    """
    import sklearn
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    pipe, grid = make_classifier(name, seed)
    counts = np.bincount(labels)
    n_splits = min(folds, int(counts[counts > 0].min())) if len(labels) else 0
    if "clf__n_neighbors" in grid:  # k cannot exceed the samples of a training fold
        n_fit = max(1, len(labels) * (n_splits - 1) // n_splits - len(counts)) if n_splits >= 2 else len(labels)
        grid["clf__n_neighbors"] = [k for k in grid["clf__n_neighbors"] if k <= n_fit] or [1]
        pipe.set_params(clf__n_neighbors=min(5, n_fit, int(counts[counts > 0].min())))  # the no-CV default
    record: dict[str, Any] = {"name": name, "sklearn_version": sklearn.__version__}
    if n_splits >= 2:
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        search = GridSearchCV(pipe, grid, cv=cv, scoring="accuracy", n_jobs=1, error_score="raise").fit(
            features, labels
        )
        best = search.best_estimator_
        record |= {"cv_folds": n_splits, "cv_score": float(search.best_score_),
                   "params": {k.removeprefix("clf__"): v for k, v in search.best_params_.items()}}  # fmt: skip
    else:
        best = pipe.fit(features, labels)
        record |= {"cv_folds": None, "cv_score": None, "params": "defaults (a class has fewer than 2 samples: no CV)"}
    return best, record


def classifier_proba(clf: Any, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities over all ``n_classes``; SVMs give a softmax of their margins (uncalibrated)."""
    if hasattr(clf, "predict_proba"):
        scores = clf.predict_proba(features)
    else:
        margins = np.asarray(clf.decision_function(features), dtype=np.float64)
        if margins.ndim == 1:  # binary: the margin of the second class
            margins = np.stack([np.zeros_like(margins), margins], 1)
        margins -= margins.max(1, keepdims=True)
        scores = np.exp(margins) / np.exp(margins).sum(1, keepdims=True)
    out = np.zeros((len(features), n_classes), dtype=np.float32)
    out[:, np.asarray(clf.classes_, dtype=np.int64)] = scores
    return out


#: classifiers whose decision is linear in the features: :func:`linear_head` folds them into the network
LINEAR_CLASSIFIERS = ("logreg", "linear-svm")
#: the logit of a class the classifier never saw (no training sample): its softmax probability is exactly 0
ABSENT_CLASS_LOGIT = -1e9


def linear_head(clf: Any, num_features: int, n_classes: int) -> torch.nn.Linear:
    """A fitted ``StandardScaler`` + linear classifier pipeline folded into one ``nn.Linear`` on the raw features.

    The layer's logits are the classifier's ``decision_function`` on the standardised features,
    ``w · (f - μ) / σ + b = (w / σ) · f + (b - w · μ / σ)``, so their softmax is :func:`classifier_proba`:
    for multinomial logistic regression ``predict_proba`` is that softmax, for a binary one the sigmoid of
    the margin, i.e. the softmax of ``[0, margin]``; for a linear SVM :func:`classifier_proba` takes the
    softmax of its margins.  Classes without a training sample get :data:`ABSENT_CLASS_LOGIT`.
    (scikit-learn ≥ 1.8 fits multiclass logistic regression as multinomial only; the export checks the
    folded probabilities against the classifier's own in any case.)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    steps = getattr(clf, "named_steps", {})
    scaler, estimator = steps.get("scale"), steps.get("clf")
    if not isinstance(scaler, StandardScaler) or not isinstance(estimator, LogisticRegression | LinearSVC):
        kind = type(estimator if estimator is not None else clf).__name__
        raise ConfigError(
            f"the classifier is a {kind}, not linear: only {', '.join(LINEAR_CLASSIFIERS)} fold into a linear layer"
        )
    classes = np.asarray(estimator.classes_, dtype=np.int64)
    coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
    if coef.shape[1] != num_features:
        raise ConfigError(f"the classifier takes {coef.shape[1]} features but the network gives {num_features}")
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(num_features)
    std = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(num_features)
    weight, bias = coef / std, intercept - coef @ (mean / std)
    if len(classes) == 2 and len(weight) == 1:  # binary: one margin, for the second class
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    full_w = np.zeros((n_classes, num_features))
    full_b = np.full(n_classes, ABSENT_CLASS_LOGIT)
    full_w[classes], full_b[classes] = weight, bias
    layer = torch.nn.Linear(num_features, n_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(full_w))
        layer.bias.copy_(torch.from_numpy(full_b))
    return layer


def folded_network(saved: Any, use: str) -> torch.nn.Module:
    """A saved model's network in eval mode, its scikit-learn classifier (if any) folded into the linear head.

    A model with a neural head is returned as it is.  A feature-extraction model whose classifier is linear
    (:data:`LINEAR_CLASSIFIERS`) on the pooled features gets a copy of its network whose head is
    :func:`linear_head`: its logits' softmax is the classifier's probabilities, so ONNX export, distillation
    (logits to soften) and gradient attacks (an input gradient) can use it.  Any other classifier raises a
    :class:`ConfigError` naming ``use`` (what needs the network) and the remedy.
    """
    import copy

    net = saved.network
    if saved.classifier is None:
        return net.eval()  # type: ignore[no-any-return]
    info = saved.card.get("classifier") or {}
    name, stage = str(info.get("name", "?")), str(info.get("stage", POOLED))
    head = getattr(net, "head", None)
    if name not in LINEAR_CLASSIFIERS or not isinstance(head, torch.nn.Linear) or stage != POOLED:
        why = (f"the '{name}' classifier is not linear" if name not in LINEAR_CLASSIFIERS
               else f"it classifies the '{stage}' stage's features" if stage != POOLED
               else "its network has no linear head to replace")  # fmt: skip
        raise ConfigError(
            f"{saved.path}: its head is a scikit-learn classifier that {use} cannot use ({why}); only "
            f"{' and '.join(LINEAR_CLASSIFIERS)} on the pooled features fold into the network. Refit with "
            "`--classifier logreg`, or with a neural head (linear-probe, finetune, ...)"
        )
    try:
        layer = linear_head(saved.classifier, head.in_features, len(saved.card["classes"]))
    except ConfigError as exc:
        raise ConfigError(f"{saved.path}: {exc}; refit with `--classifier logreg`") from exc
    folded = copy.deepcopy(net).eval()
    folded.head = layer
    return folded  # type: ignore[no-any-return]


def dump_classifier(clf: Any) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(clf))


def load_classifier(path: Path) -> Any:
    """Load a classifier written by :func:`dump_classifier`, refusing any type not on the allow-list."""
    import skops.io as sio

    try:
        data = path.read_bytes()
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as e:
        raise WeightError(f"{path}: not a readable skops file ({e}); refit the model") from e
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise WeightError(
            f"{path}: contains types that eotransfer does not trust ({', '.join(refused)}); it was not written by "
            "eotransfer or was altered: refit the model rather than loading it"
        )
    return sio.loads(data, trusted=sorted(untrusted))


#: The default embedding: the backbone's own globally pooled output.
POOLED = "pooled"


def _stage_modules(backbone: torch.nn.Module) -> dict[str, str]:
    """Each stage that is one sub-module, and that sub-module's name (``layer3``, or ``encoder.layer3`` in a wrapper)."""
    from eotransfer.models.stages import backbone_stages

    modules = dict(backbone.named_modules())
    out = {}
    for name, prefixes in backbone_stages(backbone):
        if name in modules:
            out[name] = name
        elif len(prefixes) == 1 and prefixes[0] in modules:
            out[name] = prefixes[0]
    return out


def embedding_stages(backbone: torch.nn.Module) -> list[str]:
    """Valid ``stage`` values for ``backbone``: ``pooled`` and every stage that is one sub-module."""
    return [POOLED] + [name for name in _stage_modules(backbone) if name]


def check_stage(backbone: torch.nn.Module, stage: str) -> None:
    """Raise a ConfigError naming ``--stage`` and the valid stages when ``stage`` is not one."""
    valid = embedding_stages(backbone)
    if stage not in valid:
        raise ConfigError(f"--stage: unknown stage '{stage}' of this backbone; valid stages: {', '.join(valid)}")


class _StageReached(Exception):
    """Raised by the hook to skip the rest of the network once the stage's output is captured."""


def _global_pool(out: Any) -> torch.Tensor:
    """N×C×H×W → mean over H, W; N×T×D (ViT tokens) → mean over tokens; N×C unchanged."""
    if isinstance(out, tuple | list):
        out = out[0]
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    if out.ndim == 3:
        return out.mean(dim=1)
    return out.flatten(1)


def embedding_fn(model: Any, stage: str = POOLED) -> Callable[[torch.Tensor], torch.Tensor]:
    """The embedding of an :class:`EOClassifier`: its pooled features, or a stage's output, pooled.

    A stage's output is captured with a forward hook on the stage's module; the hook then stops the
    forward pass, so later stages are not computed.
    """
    if stage == POOLED:
        return model.features  # type: ignore[no-any-return]
    check_stage(model.backbone, stage)
    module = model.backbone.get_submodule(_stage_modules(model.backbone)[stage])
    # a per-date network runs its encoder once on every date: the stage's output holds D·N rows
    combine = getattr(model.backbone, "combine_dates", None)

    def embed(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_m: Any, _i: Any, out: Any) -> None:
            captured.append(_global_pool(out))
            raise _StageReached

        handle = module.register_forward_hook(hook)
        try:
            model.features(x)
        except _StageReached:
            pass
        finally:
            handle.remove()
        return captured[0] if combine is None else combine(captured[0])

    return embed


def _cache_key(model: torch.nn.Module, subset: Any, stage: str = POOLED) -> str:
    """Digest of everything the features depend on: the weights before the head, the stage, the samples read."""
    h = hashlib.sha256()
    if stage != POOLED:  # the pooled key is unchanged, so existing caches stay valid
        h.update(f"stage={stage}".encode())
    for k, v in sorted(model.state_dict().items()):
        if not k.startswith("head."):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    ds = getattr(subset, "dataset", subset)
    indices = np.asarray(getattr(subset, "indices", np.arange(len(subset))), dtype=np.int64)
    h.update(indices.tobytes())
    files = []
    for i in indices:
        src = Path(ds.root) / ds.sources[int(i)] if ds.sources else None
        st = src.stat() if src is not None and src.is_file() else None
        files.append([str(src), st.st_size if st else None, st.st_mtime_ns if st else None])
    h.update(json.dumps([type(ds).__name__, ds.provenance(), ds.bands.keys, files], default=str).encode())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    return Path(os.environ.get("EOTRANSFER_CACHE", Path.home() / ".cache" / "eotransfer")) / "features"


def frozen_features(
    engine: Any, model: Any, subset: Any, cache: bool, stage: str = POOLED
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features (of ``stage``) and labels of ``subset``, computed once by the engine and cached on disk."""
    embed = embedding_fn(model, stage)  # an unknown stage fails here, before any forward pass
    path = cache_dir() / f"{_cache_key(model, subset, stage)}.npz" if cache and len(subset) else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["features"], z["labels"]
    model.eval()
    model.to(engine.fabric.device)
    feats, labels = engine._forward_all(embed, subset)
    x, y = feats.numpy(), labels.numpy().astype(np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, features=x, labels=y)
        os.replace(tmp, path)
    return x, y
