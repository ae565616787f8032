"""Per-band normalisation: statistics equal numpy's, from the training indices only, both methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eotransfer.bands import BandSet
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import ConfigError, DataError
from eotransfer.models.model import Normalize

BANDS = BandSet.parse("sentinel2-l1c:B02,B03,B04")


def _images(n: int = 10, size: int = 16, seed: int = 0) -> np.ndarray:
    """n images, 3 bands of very different scales; the second half is much brighter than the first."""
    rng = np.random.default_rng(seed)
    imgs = rng.normal([100, 1000, 5000], [10, 50, 400], (n, size, size, 3)).transpose(0, 3, 1, 2)
    imgs[n // 2 :] += 10_000
    return imgs.astype(np.float32)


def _reader(imgs: np.ndarray):  # type: ignore[no-untyped-def]
    return lambda i: imgs[i]


def test_standard_statistics_equal_numpy() -> None:
    imgs = _images()
    train = np.array([0, 2, 3, 7])
    norm = Normalizer.fit(_reader(imgs), train, BANDS)
    px = imgs[train].transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(norm.mean, px.mean(1), rtol=1e-6)
    np.testing.assert_allclose(norm.std, px.std(1), rtol=1e-4)
    # 16 x 16 = 256 pixels per image: every pixel is in the percentile sample, so they are exact
    np.testing.assert_allclose(norm.p02, np.percentile(px, 2, axis=1), rtol=1e-6)
    np.testing.assert_allclose(norm.p98, np.percentile(px, 98, axis=1), rtol=1e-6)
    assert norm.n_samples == 4 and norm.bands == BANDS.keys


def test_statistics_from_training_indices_only() -> None:
    imgs = _images()
    dark = Normalizer.fit(_reader(imgs), np.arange(5), BANDS)
    bright = Normalizer.fit(_reader(imgs), np.arange(5, 10), BANDS)
    np.testing.assert_allclose(bright.mean - dark.mean, 10_000, atol=100)  # up to sampling noise
    np.testing.assert_allclose(dark.mean, imgs[:5].mean(axis=(0, 2, 3)), rtol=1e-6)
    # the reader is never asked for a sample outside the indices
    asked: list[int] = []
    Normalizer.fit(lambda i: asked.append(i) or imgs[i], [1, 4], BANDS)
    assert sorted(asked) == [1, 4]


def test_nan_pixels_are_left_out() -> None:
    imgs = _images(4)
    imgs[0, 1, :8] = np.nan
    norm = Normalizer.fit(_reader(imgs), np.arange(4), BANDS)
    band1 = imgs[:, 1].reshape(-1)
    np.testing.assert_allclose(norm.mean[1], np.nanmean(band1), rtol=1e-6)
    np.testing.assert_allclose(norm.std[1], np.nanstd(band1), rtol=1e-4)
    imgs[:, 2] = np.nan
    with pytest.raises(DataError, match="band\\(s\\) B04 are nodata in every training sample"):
        Normalizer.fit(_reader(imgs), np.arange(4), BANDS)


def test_standard_transform() -> None:
    imgs = _images()
    norm = Normalizer.fit(_reader(imgs), np.arange(10), BANDS)
    x = torch.from_numpy(imgs[3])
    expected = (imgs[3] - norm.mean[:, None, None]) / norm.std[:, None, None]
    torch.testing.assert_close(norm(x), torch.from_numpy(expected))
    batch = norm(torch.from_numpy(imgs))  # N x C x H x W as well
    assert batch.shape == imgs.shape
    all_px = batch.permute(1, 0, 2, 3).reshape(3, -1).double()
    torch.testing.assert_close(all_px.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(all_px.std(1, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)


def test_percentile_method() -> None:
    imgs = _images()
    norm = Normalizer.fit(_reader(imgs), np.arange(10), BANDS, method="percentile")
    assert norm.method == "percentile"
    x = torch.from_numpy(imgs[0])
    expected = (imgs[0] - norm.p02[:, None, None]) / (norm.p98 - norm.p02)[:, None, None]
    torch.testing.assert_close(norm(x), torch.from_numpy(expected))
    px = imgs.transpose(1, 0, 2, 3).reshape(3, -1)
    out = norm(torch.from_numpy(imgs)).permute(1, 0, 2, 3).reshape(3, -1)
    inside = (out >= 0) & (out <= 1)
    assert float(inside.float().mean()) == pytest.approx(0.96, abs=0.01)  # 2nd to 98th percentile
    np.testing.assert_allclose(norm.p02, np.percentile(px, 2, axis=1), rtol=1e-6)


def test_model_normalize_module_matches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    imgs = _images()
    imgs[2, :, 0, 0] = np.nan
    for method in ("standard", "percentile"):
        norm = Normalizer.fit(_reader(imgs), np.arange(10), BANDS, method=method)
        module = Normalize(3)
        module.set_from(norm)
        x = torch.from_numpy(imgs)
        torch.testing.assert_close(module(x), norm(x))
        assert float(module(x)[2, :, 0, 0].abs().sum()) == 0.0


def test_constant_band_gets_unit_scale() -> None:
    imgs = _images(3)
    imgs[:, 0] = 7.0
    norm = Normalizer.fit(_reader(imgs), np.arange(3), BANDS)
    assert norm.std[0] == 1.0
    assert float(norm(torch.from_numpy(imgs[0]))[0].abs().max()) == 0.0


def test_max_samples_is_seeded() -> None:
    imgs = _images(40, size=4)
    a = Normalizer.fit(_reader(imgs), np.arange(40), BANDS, max_samples=7, seed=1)
    b = Normalizer.fit(_reader(imgs), np.arange(40), BANDS, max_samples=7, seed=1)
    c = Normalizer.fit(_reader(imgs), np.arange(40), BANDS, max_samples=7, seed=2)
    assert a.n_samples == 7
    assert np.array_equal(a.mean, b.mean) and not np.array_equal(a.mean, c.mean)


def test_round_trip_and_errors() -> None:
    imgs = _images()
    norm = Normalizer.fit(_reader(imgs), np.arange(10), BANDS, method="percentile")
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    for k in ("mean", "std", "p02", "p98"):
        assert np.array_equal(getattr(again, k), getattr(norm, k))
    assert (again.method, again.n_samples, again.bands) == ("percentile", 10, BANDS.keys)
    with pytest.raises(DataError, match="training split is empty"):
        Normalizer.fit(_reader(imgs), [], BANDS)
    with pytest.raises(ConfigError, match="--normalization: unknown method 'minmax'"):
        Normalizer.fit(_reader(imgs), np.arange(2), BANDS, method="minmax")
