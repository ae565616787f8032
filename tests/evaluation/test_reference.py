"""The band-statistics reference under attack: the certified lower bound and the band-offset attack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eotransfer.evaluation.attacks import pgd
from eotransfer.evaluation.reference import (
    OFFSET_GAIN,
    attack_reference,
    band_statistics,
    band_statistics_matrix,
    certified_correct,
    fit_band_statistics_classifier,
    offset_attack_correct,
)
from eotransfer.models.band_statistics import BandStatistics


def mean_threshold_net(threshold: float) -> torch.nn.Sequential:
    """One band, two classes: class 1 when the band's mean exceeds ``threshold`` (logits [0, mean - threshold])."""
    stats = BandStatistics(1)
    head = torch.nn.Linear(stats.num_features, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[1, 0] = 1.0  # the mean is the band's first statistic
        head.bias.copy_(torch.tensor([0.0, -threshold]))
    return torch.nn.Sequential(stats, head).eval()


def constant_images(values: list[float], size: int = 4) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 1, size, size).contiguous()


def test_the_certificate_is_the_margin_against_the_budget_and_the_offset_attack_reaches_it() -> None:
    net = mean_threshold_net(100.0)
    x = constant_images([106.0, 104.0, 94.0, 96.0])
    y = np.array([1, 1, 0, 0])
    feats = np.stack([band_statistics(im) for im in x.numpy()])
    eps, lo, hi = np.array([5.0]), np.array([0.0]), np.array([1000.0])
    # margins 6, 4, 6, 4 against a bound of 1 · 5: the first and third are certified
    assert certified_correct(net, feats, y, eps).tolist() == [True, False, True, False]
    # the worst uniform offset moves the mean by the whole budget: it breaks exactly the uncertified ones
    assert offset_attack_correct(net, x, y, eps, lo, hi).tolist() == [True, False, True, False]
    # a wrong prediction is never certified, whatever the margin
    assert not certified_correct(net, feats[:1], np.array([0]), np.array([0.0]))[0]


def test_the_offset_attack_keeps_to_the_valid_range_and_the_certificate_ignores_it() -> None:
    net = mean_threshold_net(99.0)
    x = constant_images([100.0])  # class 1 by a margin of 1; the band's valid range starts at 100
    y = np.array([1])
    eps = np.array([5.0])
    assert offset_attack_correct(net, x, y, eps, np.array([100.0]), np.array([200.0])).tolist() == [True]
    assert offset_attack_correct(net, x, y, eps, np.array([0.0]), np.array([200.0])).tolist() == [False]
    # clipping only removes perturbations: the certificate, which ignores it, stays a lower bound
    assert not certified_correct(net, band_statistics(x[0].numpy())[None], y, eps)[0]


def test_the_std_does_not_move_with_an_offset_and_every_other_statistic_moves_by_it() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 100, (3, 8, 8))
    shift = np.array([2.0, -3.0, 0.5])
    moved = band_statistics(img + shift[:, None, None]) - band_statistics(img)
    np.testing.assert_allclose(moved, (shift[:, None] * OFFSET_GAIN[None]).ravel(), atol=1e-9)


def test_no_certified_patch_is_broken_by_any_attack_within_the_budget(eurosat_like: Path) -> None:
    from eotransfer.api import load_data
    from eotransfer.data.options import DataOptions
    from eotransfer.evaluation.reference import reference_network

    ds = load_data(DataOptions(data=str(eurosat_like), bands="eurosat-ms"))
    idx = np.arange(len(ds))
    feats = band_statistics_matrix(ds.checked_read, idx)
    clf = fit_band_statistics_classifier(feats, ds.labels, 0)
    eps_r = 0.0035  # reflectance; the fixture is in Sentinel-2 digital numbers (10⁴ per reflectance)
    res = attack_reference(clf, ds.bands, ds.checked_read, idx, ds.labels, len(ds.classes), attack="pgd",
                           eps=str(eps_r), pgd_steps=5, value_per_reflectance=10000.0, seed=0)  # fmt: skip
    assert res["certified_accuracy"] <= res["robust_accuracy"] <= res["gradient_robust_accuracy"]
    assert res["robust_accuracy"] <= res["offset_robust_accuracy"] <= res["clean_accuracy"]
    assert 0 < res["certified_accuracy"] < res["clean_accuracy"]  # the fixture's margins straddle the budget
    # certified patches survive random corners of the ε-ball and PGD from other random starts
    net = reference_network(clf, len(ds.bands), len(ds.classes))
    eps = np.full(len(ds.bands), eps_r * 10000.0)
    cert = certified_correct(net, feats, ds.labels, eps)
    x = torch.from_numpy(np.stack([ds.checked_read(int(i)) for i in idx]).astype(np.float32))
    y = torch.as_tensor(ds.labels)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        corner = (
            torch.sign(torch.rand(x.shape, generator=gen) - 0.5) * torch.from_numpy(eps).float()[None, :, None, None]
        )
        with torch.no_grad():
            assert bool((net(x + corner).argmax(1) == y)[torch.from_numpy(cert)].all())
    xa = pgd(net, x, y, eps, np.full(len(eps), -1e9), np.full(len(eps), 1e9), steps=10, generator=gen)
    with torch.no_grad():
        assert bool((net(xa).argmax(1) == y)[torch.from_numpy(cert)].all())


def test_a_budget_of_zero_certifies_every_correct_prediction() -> None:
    net = mean_threshold_net(100.0)
    x = constant_images([101.0, 99.0, 150.0])
    feats = np.stack([band_statistics(im) for im in x.numpy()])
    assert certified_correct(net, feats, np.array([1, 1, 1]), np.array([0.0])).tolist() == [True, False, True]


@pytest.mark.parametrize("n_classes", [2, 4])
def test_absent_classes_are_not_counted_as_rivals(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    feats = rng.normal(size=(40, 7))
    labels = np.repeat([0, 1], 20)  # the network has n_classes outputs, the classifier saw two
    feats[labels == 1] += 3.0
    clf = fit_band_statistics_classifier(feats, labels, 0)
    from eotransfer.evaluation.reference import reference_network

    net = reference_network(clf, 1, n_classes)
    ok = certified_correct(net, feats, labels, np.array([0.0]))
    assert ok.tolist() == (clf.predict(feats) == labels).tolist()
