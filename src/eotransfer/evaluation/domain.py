"""The domain gap between a source and a target data set, and a domain-shift report for saved models.

The proxy A-distance (Ben-David, Blitzer, Crammer & Pereira 2007, "Analysis of Representations for
Domain Adaptation", NIPS; Ben-David et al. 2010, "A theory of learning from different domains",
Machine Learning 79) estimates the H-divergence between two feature distributions: a linear
classifier learns to tell source from target features, and with ``ε`` its held-out error,
``PAD = 2·(1 − 2ε)``: 0 when the domains cannot be told apart (ε = ½), 2 when they separate
perfectly.  Ganin et al. 2016 (DANN) report it before and after adaptation, as
:func:`domain_shift_report` does for any saved eotransfer models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.errors import DataError


def proxy_a_distance(
    features_source: np.ndarray, features_target: np.ndarray, seed: int = 0, folds: int = 5
) -> float:  # fmt: skip
    """``2·(1 − 2ε)`` clipped to [0, 2], ε the cross-validated error of a linear domain classifier.

    Both domains are subsampled to the smaller one's size (a balanced problem, where chance is
    ½), the features standardised, and an L2 logistic regression (C = 1) is scored on each of
    ``folds`` stratified held-out folds, so every sample is held out once.  ``seed`` fixes the
    subsample and the folds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fs, ft = np.asarray(features_source, np.float64), np.asarray(features_target, np.float64)
    fs, ft = fs.reshape(len(fs), -1), ft.reshape(len(ft), -1)
    if fs.shape[1] != ft.shape[1]:
        raise DataError(f"proxy_a_distance: source features have {fs.shape[1]} dimensions, target {ft.shape[1]}")
    n = min(len(fs), len(ft))
    if n < 2:
        raise DataError(
            f"proxy_a_distance: needs at least 2 samples per domain (source {len(fs)}, target {len(ft)}); "
            "give more source and target images"
        )
    rng = np.random.default_rng(seed)
    fs, ft = fs[rng.choice(len(fs), n, replace=False)], ft[rng.choice(len(ft), n, replace=False)]
    x = np.nan_to_num(np.concatenate([fs, ft]))
    y = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
    errors = 0
    for train, test in StratifiedKFold(min(folds, n), shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        clf.fit(x[train], y[train])
        errors += int((clf.predict(x[test]) != y[test]).sum())
    eps = errors / len(y)
    return float(np.clip(2.0 * (1.0 - 2.0 * eps), 0.0, 2.0))


@torch.no_grad()
def backbone_features(network: torch.nn.Module, ds: Any, indices: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The pooled backbone features (the head's input) of the samples ``indices`` of ``ds``."""
    network.eval()
    device = next(network.parameters()).device
    out = []
    for s in range(0, len(indices), batch_size):
        x = torch.stack([ds[int(i)]["image"] for i in indices[s : s + batch_size]]).to(device)
        out.append(network.features(x).float().cpu().numpy())  # type: ignore[operator]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def sample_indices(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a sorted random ``max_samples`` of them."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))


def _open_like(saved: Any, data: Any, options: dict[str, Any]) -> Any:
    """``data`` (an opened data set or a path) opened in the saved model's bands."""
    from eotransfer.data.base import EODataset, open_dataset

    if isinstance(data, EODataset):
        return data
    kwargs = {k: v for k, v in options.items() if v is not None}
    kwargs.setdefault("bands", ",".join(saved.bands.keys))
    return open_dataset(data, **kwargs)


def domain_shift_report(
    models: Sequence[str | Path], source: Any, target: Any, seed: int = 0, max_samples: int | None = 1000,
    source_indices: np.ndarray | None = None, target_indices: np.ndarray | None = None, **data_options: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """For each saved model: its strategy, its accuracy on the target (when the target is labelled with
    classes the model knows) and the proxy A-distance between its source and target features.

    ``source``/``target`` are data sets or paths (opened in each model's bands with ``data_options``,
    e.g. ``format``, ``scale``); ``*_indices`` restrict them to some samples (a spatial split of one
    data set, say); at most ``max_samples`` per domain feed the PAD.  Render with :func:`report_markdown`.
    """
    from eotransfer.api import predict_samples
    from eotransfer.card import load_model

    rows = []
    for path in models:
        saved = load_model(path)
        src, tgt = _open_like(saved, source, data_options), _open_like(saved, target, data_options)
        if len(src) == 0 or len(tgt) == 0:
            raise DataError(f"domain_shift_report: the {'source' if len(src) == 0 else 'target'} data set is empty")
        s_idx = np.arange(len(src)) if source_indices is None else np.asarray(source_indices)
        t_idx = np.arange(len(tgt)) if target_indices is None else np.asarray(target_indices)
        accuracy = None
        if list(tgt.classes) != ["unlabelled"] and set(tgt.classes) <= set(saved.classes):
            label_map = np.array([saved.classes.index(c) for c in tgt.classes])
            pred = predict_samples(saved, tgt, t_idx).argmax(1)
            accuracy = float((pred == label_map[tgt.labels[t_idx]]).mean())
        fs = backbone_features(saved.network, src, s_idx[sample_indices(len(s_idx), max_samples, seed)])
        ft = backbone_features(saved.network, tgt, t_idx[sample_indices(len(t_idx), max_samples, seed + 1)])
        rows.append({
            "model": Path(path).name,
            "strategy": (saved.card.get("strategy") or {}).get("name", "?"),
            "target_accuracy": accuracy,
            "proxy_a_distance": proxy_a_distance(fs, ft, seed),
            "n_source": len(fs),
            "n_target": len(ft),
        })  # fmt: skip
    return rows


def report_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`domain_shift_report` as a markdown table (— where the target has no labels)."""
    lines = [
        "| model | strategy | target accuracy | proxy A-distance | source / target samples |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        acc = "—" if r.get("target_accuracy") is None else f"{r['target_accuracy']:.3f}"
        lines.append(
            f"| {r['model']} | {r['strategy']} | {acc} | {r['proxy_a_distance']:.3f} | {r['n_source']} / {r['n_target']} |"
        )
    return "\n".join(lines) + "\n"


def model_domain_gap(
    saved: Any, source: Any, target: Any, target_indices: np.ndarray | None = None, seed: int = 0,
    max_samples: int | None = 1000,
) -> float:  # fmt: skip
    """The proxy A-distance between a saved model's backbone features of ``source`` and ``target`` (opened data sets)."""
    t_idx = np.arange(len(target)) if target_indices is None else np.asarray(target_indices)
    if len(source) == 0 or len(t_idx) == 0:
        raise DataError(f"--domain-gap: the {'source' if len(source) == 0 else 'target'} data set is empty")
    fs = backbone_features(saved.network, source, sample_indices(len(source), max_samples, seed))
    ft = backbone_features(saved.network, target, t_idx[sample_indices(len(t_idx), max_samples, seed + 1)])
    return proxy_a_distance(fs, ft, seed)
