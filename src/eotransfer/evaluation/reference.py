"""The reference row every accuracy table carries: per-band statistics + logistic regression.

A transfer strategy has to beat a classifier that sees only each band's distribution (mean, std
and percentiles), since many EO land-cover classes are separable on spectra alone (the classical
pixel/object-statistics baseline; cf. Helber et al. 2019 for EuroSAT).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

PERCENTILES = (5, 25, 50, 75, 95)


def band_statistics(image: np.ndarray) -> np.ndarray:
    """Per band: mean, std and the 5/25/50/75/95th percentiles (NaN pixels ignored) → 7·C features."""
    flat = image.reshape(image.shape[0], -1).astype(np.float64)
    stats = [np.nanmean(flat, 1), np.nanstd(flat, 1), *np.nanpercentile(flat, PERCENTILES, axis=1)]
    return np.nan_to_num(np.stack(stats, axis=1).ravel())


def band_statistics_matrix(read: Callable[[int], np.ndarray], indices: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.stack([band_statistics(read(int(i))) for i in indices]) if len(indices) else np.zeros((0, 0))


def fit_band_statistics_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 0):  # type: ignore[no-untyped-def]
    """Standardised band statistics → multinomial logistic regression (L2, C=1).

    The pipeline's steps are named ``scale`` and ``clf``, as the feature-extraction classifiers' are, so
    :func:`reference_network` folds it into a linear layer.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    clf = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, C=1.0, random_state=seed))])
    return clf.fit(features, labels)


def reference_network(clf: Any, n_bands: int, n_classes: int) -> torch.nn.Module:
    """The fitted reference as a network on raw C×H×W patches: band statistics, then the folded classifier.

    Its logits' argmax is ``clf``'s prediction on :func:`band_statistics` (patches without NaN pixels), and it
    is differentiable in the pixels (the percentiles through ``sort``), so gradient attacks
    (:mod:`eotransfer.evaluation.attacks`) score the reference row's robustness as they score a network's.
    """
    from eotransfer.evaluation.classical import linear_head
    from eotransfer.models.band_statistics import BandStatistics

    stats = BandStatistics(n_bands)
    return torch.nn.Sequential(stats, linear_head(clf, stats.num_features, n_classes)).eval()


#: how a uniform offset δ of a band moves each of its statistics, in :func:`band_statistics`' order: the mean and
#: every percentile by δ, the standard deviation not at all
OFFSET_GAIN = np.array([1.0, 0.0] + [1.0] * len(PERCENTILES))


def _linear(net: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The folded classifier of a :func:`reference_network`: weight, bias (float64) and the classes it was fitted on."""
    from eotransfer.evaluation.classical import ABSENT_CLASS_LOGIT

    layer = net[1]  # type: ignore[index]
    w = layer.weight.detach().double().cpu().numpy()
    b = layer.bias.detach().double().cpu().numpy()
    return w, b, np.flatnonzero(b > ABSENT_CLASS_LOGIT / 2)


def certified_correct(net: torch.nn.Module, features: np.ndarray, labels: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Per sample: is the reference's prediction correct and provably unchanged by any L∞ perturbation ≤ ``eps``?

    ``net`` is a :func:`reference_network`, ``features`` the samples' :func:`band_statistics` (N×7·C) and ``eps``
    the budget per band in data units.  Each statistic of band c moves by at most ``eps[c]`` when every pixel of
    the band does: the mean, the population standard deviation and every order statistic are 1-Lipschitz in
    the max norm, and a linearly interpolated percentile is a convex combination of two order statistics.
    Through the folded linear classifier ``W f + b`` the logit difference of the true class y and any other
    class k then moves by at most ``Σ_j |W_yj − W_kj| · e_j``, so a margin above that bound is a certificate:
    interval bound propagation (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for
    Training Verifiably Robust Models") through one linear layer, where it is exact up to the statistics'
    own coupling.  Clipping to a valid range only shrinks the set of perturbations, so the bound holds with it.
    The certified accuracy is a lower bound on the robust accuracy against *every* attack within the budget;
    a gradient attack gives an upper bound.
    """
    w, b, present = _linear(net)
    logits = features @ w.T + b
    e = np.repeat(np.asarray(eps, dtype=np.float64), len(OFFSET_GAIN))
    y = np.asarray(labels, dtype=np.int64)
    ok = logits.argmax(1) == y
    tol = 1e-6 * (1.0 + np.abs(logits[:, present]).max(initial=0.0))  # the network computes in float32
    for k in present:
        diff = w[y] - w[k]  # N×F
        margin = logits[np.arange(len(y)), y] - logits[:, k]
        ok &= (y == k) | (margin > np.abs(diff) @ e + tol)
    return ok


def offset_attack_correct(net: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, eps: np.ndarray,
                          lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per sample: is the reference still correct after the worst uniform offset of each band, for each wrong class?

    For the true class y and each other class k, every band c is shifted by ``−eps[c] · sign(g_c)``, where
    ``g_c`` is how the margin ``logit_y − logit_k`` grows with an offset of band c (:data:`OFFSET_GAIN` through
    the folded classifier): that moves the band's mean and percentiles by the whole budget against y, which a
    per-pixel signed-gradient step (FGSM/PGD) reaches only when every pixel's gradient agrees.  The shifted image
    is clipped to the valid range ``lo..hi`` per band as the attacks clip it (a pixel is never moved by more
    than ``eps``).  A physically plain perturbation: a calibration or atmospheric offset per band.
    """
    from eotransfer.evaluation.attacks import _bounds

    w, _, present = _linear(net)
    y = np.asarray(labels, dtype=np.int64)
    n_bands = images.shape[1]
    x = images.float()
    lower, upper = _bounds(x, eps, lo, hi)
    with torch.no_grad():
        ok = net(x).argmax(1).numpy() == y
        for k in present:
            gain = ((w[y] - w[k]).reshape(len(y), n_bands, len(OFFSET_GAIN)) * OFFSET_GAIN).sum(-1)  # N×C
            shift = torch.from_numpy(-np.sign(gain) * np.asarray(eps, dtype=np.float64)[None]).float()
            xa = torch.minimum(torch.maximum(x + shift[:, :, None, None], lower), upper)
            ok &= (y == k) | (net(xa).argmax(1).numpy() == y)
    return ok


def attack_reference(clf: Any, bands: Any, read: Callable[[int], np.ndarray], indices: np.ndarray,
                     labels: np.ndarray, n_classes: int, batch_size: int = 256, **attack: Any) -> dict[str, Any]:  # fmt: skip
    """The fitted reference under attack on the samples ``indices``: robust accuracy bracketed from both sides.

    ``attack``: :func:`~eotransfer.evaluation.attacks.attack_network`'s options (``attack``, ``eps``,
    ``pgd_steps``, ``value_per_reflectance``, ``seed``, ``option``).  The result is that function's, with
    ``robust_accuracy`` the share of samples that survive both the gradient attack and every
    :func:`offset_attack_correct` shift (the stronger attack per sample, an upper bound), beside
    ``gradient_robust_accuracy``, ``offset_robust_accuracy`` and ``certified_accuracy`` (the lower bound of
    :func:`certified_correct`).
    """
    from eotransfer.evaluation.attacks import attack_network

    idx = np.asarray(indices)
    y = np.asarray(labels, dtype=np.int64)
    net = reference_network(clf, len(bands), n_classes)
    res = attack_network(net, bands, read, idx, y, **attack)
    eps = np.array([res["eps_data_units"][b] for b in bands.names])
    lo, hi = (np.array([res["range_data_units"][b][j] for b in bands.names]) for j in (0, 1))
    offset, cert = np.zeros(len(idx), bool), np.zeros(len(idx), bool)
    for s in range(0, len(idx), batch_size):
        part = idx[s : s + batch_size]
        x = np.stack([read(int(i)) for i in part]).astype(np.float32)
        offset[s : s + len(part)] = offset_attack_correct(net, torch.from_numpy(x), y[s : s + len(part)], eps, lo, hi)
        cert[s : s + len(part)] = certified_correct(net, np.stack([band_statistics(im) for im in x]),
                                                    y[s : s + len(part)], eps)  # fmt: skip
    gradient = np.asarray(res["predicted_adversarial"]) == y
    n = max(len(idx), 1)
    return {**res, "robust_accuracy": float((gradient & offset).sum() / n),
            "gradient_robust_accuracy": res["robust_accuracy"], "offset_robust_accuracy": float(offset.sum() / n),
            "certified_accuracy": float(cert.sum() / n)}  # fmt: skip
