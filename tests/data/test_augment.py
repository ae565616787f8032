"""Batched, seeded EO augmentations: determinism, shapes, exactness, value ranges and NaN handling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eotransfer.data.augment import (
    AugmentParams,
    EOAugment,
    band_dropout,
    dihedral,
    gaussian_blur,
    guess_value_per_reflectance,
    jitter,
    random_resized_crop,
)
from eotransfer.errors import ConfigError
from eotransfer.strategies.base import validate_params


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 6, c: int = 4, h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    """Sentinel-2-like raw values (reflectance x 10^4) with a different range per band."""
    g = _gen(seed)
    scale = torch.tensor([500.0, 1000.0, 2000.0, 4000.0])[:c].view(1, c, 1, 1)
    return 100 + torch.rand((b, c, h, w), generator=g) * scale


def _with_nan(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone()
    x[0, :, :3, :3] = float("nan")
    x[1, 2, 5:9, 5:9] = float("nan")
    return x, torch.isnan(x)


# -- EOAugment ----------------------------------------------------------------------------------


def _full_params(**kw: object) -> AugmentParams:
    base = {"jitter_prob": 1.0, "blur_prob": 0.5, "band_dropout": 0.2}
    return AugmentParams(**(base | kw))  # type: ignore[arg-type]


def test_same_seed_same_output_different_seed_different() -> None:
    x = _batch()
    aug = EOAugment(_full_params())
    a, b, c = aug(x, _gen(7)), aug(x, _gen(7)), aug(x, _gen(8))
    assert torch.equal(torch.nan_to_num(a, nan=-1), torch.nan_to_num(b, nan=-1))
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    assert not torch.allclose(torch.nan_to_num(a), torch.nan_to_num(c))


def test_two_views_from_one_generator_differ() -> None:
    x = _batch()
    aug, g = EOAugment(AugmentParams()), _gen(3)
    assert not torch.allclose(aug(x, g), aug(x, g))


def test_shapes_and_out_size() -> None:
    x = _batch(b=3, h=16, w=16)
    assert EOAugment(AugmentParams())(x, _gen()).shape == x.shape
    assert EOAugment(AugmentParams(), out_size=8)(x, _gen()).shape == (3, 4, 8, 8)
    assert random_resized_crop(x, _gen(), out_size=(5, 7)).shape == (3, 4, 5, 7)
    rect = _batch(b=3, h=12, w=20)
    assert EOAugment(AugmentParams())(rect, _gen()).shape == rect.shape


def test_half_precision_keeps_dtype_and_values() -> None:
    x = _batch()
    aug = EOAugment(_full_params(), out_size=12)
    y32 = aug(x, _gen(4))
    y16 = aug(x.bfloat16(), _gen(4))
    assert y16.dtype == torch.bfloat16
    assert torch.equal(torch.isnan(y16), torch.isnan(y32))
    # within bfloat16's resolution of the values (8 bits of mantissa: 1/128 relative)
    assert torch.allclose(torch.nan_to_num(y16.float()), torch.nan_to_num(y32), rtol=2e-2, atol=1.0)


def test_all_disabled_is_identity() -> None:
    x = _batch()
    p = AugmentParams(crop_scale_min=1.0, crop_ratio=1.0, dihedral=False, jitter_prob=0.0, blur_prob=0.0)
    assert torch.equal(EOAugment(p)(x, _gen()), x)


def test_check_names_the_option() -> None:
    with pytest.raises(ConfigError, match="--crop-scale-min"):
        AugmentParams(crop_scale_min=0.8, crop_scale_max=0.5).check()
    with pytest.raises(ConfigError, match="--crop-scale-min"):
        EOAugment(AugmentParams(crop_scale_min=0.8, crop_scale_max=0.5))
    with pytest.raises(ConfigError, match="--band-dropout"):
        validate_params(AugmentParams(band_dropout=1.5))
    AugmentParams().check()
    validate_params(AugmentParams())


def test_params_declare_help_and_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(AugmentParams)}
    assert all(f.metadata["help"] for f in fields.values())
    p = AugmentParams()
    assert (p.crop_scale_min, p.crop_scale_max, p.crop_ratio) == (0.25, 1.0, 4 / 3)
    assert p.value_per_reflectance is None and p.band_dropout == 0.0


def test_guess_value_per_reflectance() -> None:
    assert guess_value_per_reflectance(0.9) == 1.0
    assert guess_value_per_reflectance(1.5) == 1.0
    assert guess_value_per_reflectance(200.0) == 255.0
    assert guess_value_per_reflectance(255.0) == 255.0
    assert guess_value_per_reflectance(3000.0) == 10000.0


def test_brightness_scaled_by_guessed_units() -> None:
    # a constant 8-bit image: brightness 0.02 reflectance = 5.1 data units; no clipping room, so
    # the guess shows through the bound on a batch with a wider range
    x = torch.zeros((4, 3, 8, 8))
    x[:, :, 0, 0] = 255.0
    x[:, :, 1:, :] = 100.0
    p = AugmentParams(crop_scale_min=1.0, crop_ratio=1.0, dihedral=False, jitter_prob=1.0, contrast=0.0, blur_prob=0.0)
    y = EOAugment(p)(x, _gen())
    shift = (y - x)[:, :, 1:, :]
    assert shift.abs().max() <= 0.02 * 255 + 1e-4
    assert shift.abs().max() > 0.5  # in data units, not reflectance units


# -- random_resized_crop ------------------------------------------------------------------------


def test_crop_full_scale_is_identity() -> None:
    x = _batch()
    y = random_resized_crop(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(y, x, atol=1e-3)
    rect = _batch(h=10, w=14)  # the whole of a rectangle: its own aspect ratio
    assert torch.allclose(random_resized_crop(rect, _gen(), (1.0, 1.0), (1.4, 1.4)), rect, atol=1e-3)


def test_crop_full_scale_keeps_nan_in_place() -> None:
    x, nan = _with_nan(_batch())
    y = random_resized_crop(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(torch.isnan(y), nan)
    assert torch.allclose(y[~nan], x[~nan], atol=1e-3)


def test_crop_values_within_input_range_and_zoomed() -> None:
    x = _batch()
    y = random_resized_crop(x, _gen(), scale=(0.1, 0.2), ratio=(0.75, 4 / 3))
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    assert bool(((y >= lo - 1e-3) & (y <= hi + 1e-3)).all())
    # a small crop upsampled is smoother: neighbouring pixels differ less than in the input
    assert (y.diff(dim=-1).abs().mean()) < 0.6 * x.diff(dim=-1).abs().mean()


def test_crop_window_picks_the_region() -> None:
    # left half 0, right half 1: a crop of a quarter of the area shows mostly one value or the edge
    x = torch.zeros((32, 1, 16, 16))
    x[..., 8:] = 1.0
    y = random_resized_crop(x, _gen(), scale=(0.25, 0.25), ratio=(1.0, 1.0))
    means = y.mean(dim=(1, 2, 3))
    assert means.min() < 0.2 and means.max() > 0.8  # both halves are reached


# -- dihedral -----------------------------------------------------------------------------------


def test_dihedral_permutes_pixels_and_reaches_all_ops() -> None:
    img = torch.arange(2 * 5 * 5, dtype=torch.float32).view(1, 2, 5, 5)
    x = img.repeat(64, 1, 1, 1)
    y = dihedral(x, _gen())
    assert torch.equal(y.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    expected = set()
    for k in range(8):
        t = torch.rot90(img[0], k % 4, dims=(-2, -1))
        expected.add(tuple((torch.flip(t, dims=(-1,)) if k >= 4 else t).flatten().tolist()))
    seen = {tuple(s.flatten().tolist()) for s in y}
    assert seen == expected


def test_dihedral_non_square_keeps_shape() -> None:
    x = _batch(b=16, h=6, w=10)
    y = dihedral(x, _gen())
    assert y.shape == x.shape
    assert torch.equal(y.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    assert not torch.equal(x, y)


def test_dihedral_deterministic() -> None:
    x = _batch()
    assert torch.equal(dihedral(x, _gen(5)), dihedral(x, _gen(5)))
    assert not torch.equal(dihedral(x, _gen(5)), dihedral(x, _gen(6)))


# -- jitter -------------------------------------------------------------------------------------


def test_jitter_stays_within_batch_band_range() -> None:
    x = _batch()
    y = jitter(x, _gen(), brightness=300.0, contrast=0.5, prob=1.0)
    nx = x.transpose(0, 1).flatten(1)
    lo, hi = nx.amin(dim=1).view(1, -1, 1, 1), nx.amax(dim=1).view(1, -1, 1, 1)
    assert bool(((y >= lo) & (y <= hi)).all())
    assert not torch.allclose(y, x)


def test_jitter_brightness_only_shifts_constant_image_within_bound() -> None:
    x = torch.full((8, 3, 4, 4), 1000.0)
    x[:, :, 0, 0] = 0.0  # room below and above for the clip
    x[:, :, 0, 1] = 2000.0
    y = jitter(x, _gen(), brightness=50.0, contrast=0.0, prob=1.0)
    shift = (y - x)[:, :, 1:, :]
    assert shift.abs().max() <= 50.0 + 1e-3
    assert shift.abs().max() > 5.0
    # one offset per sample and band: constant within the band
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))


def test_jitter_prob_zero_unchanged_and_nan_stays_nan() -> None:
    x, nan = _with_nan(_batch())
    assert torch.equal(torch.nan_to_num(jitter(x, _gen(), 100.0, 0.2, prob=0.0)), torch.nan_to_num(x))
    y = jitter(x, _gen(), 100.0, 0.2, prob=1.0)
    assert torch.equal(torch.isnan(y), nan)
    nx = torch.where(nan, torch.full_like(x, float("inf")), x)
    lo = nx.amin(dim=(0, 2, 3), keepdim=True)
    assert bool((y[~nan] >= lo.expand_as(x)[~nan]).all())


# -- gaussian_blur ------------------------------------------------------------------------------


def test_blur_constant_image_is_constant() -> None:
    x = torch.full((4, 3, 12, 12), 1234.0)
    y = gaussian_blur(x, _gen(), prob=1.0, sigma_max=2.0)
    assert torch.allclose(y, x, rtol=1e-5)


def test_blur_reduces_variance_and_prob_zero_unchanged() -> None:
    x = _batch()
    y = gaussian_blur(x, _gen(), prob=1.0, sigma_max=1.5)
    assert bool((y.var(dim=(2, 3)) < x.var(dim=(2, 3))).all())
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0.05)
    assert torch.equal(gaussian_blur(x, _gen(), prob=0.0, sigma_max=1.5), x)


def test_blur_unselected_samples_unchanged_exactly() -> None:
    x = _batch(b=16)
    y = gaussian_blur(x, _gen(), prob=0.5, sigma_max=1.5)
    same = torch.tensor([torch.equal(a, b) for a, b in zip(x, y, strict=True)])
    assert 0 < int(same.sum()) < 16


def test_blur_nan_stays_nan_and_does_not_spread() -> None:
    x, nan = _with_nan(_batch())
    y = gaussian_blur(x, _gen(), prob=1.0, sigma_max=1.5)
    assert torch.equal(torch.isnan(y), nan)


def test_blur_small_image() -> None:
    x = _batch(h=3, w=3)
    assert gaussian_blur(x, _gen(), prob=1.0, sigma_max=3.0).shape == x.shape


# -- band_dropout -------------------------------------------------------------------------------


def test_band_dropout_p1_keeps_exactly_one_band() -> None:
    x = _batch(b=32)
    y = band_dropout(x, _gen(), p=1.0)
    valid_bands = (~torch.isnan(y)).all(dim=(2, 3))
    all_nan_bands = torch.isnan(y).all(dim=(2, 3))
    assert torch.equal(valid_bands.sum(dim=1), torch.ones(32, dtype=torch.long))
    assert torch.equal(valid_bands | all_nan_bands, torch.ones_like(valid_bands))
    kept = valid_bands.float().argmax(dim=1)
    assert len(set(kept.tolist())) > 1  # the kept band is random
    assert torch.equal(y[torch.arange(32), kept], x[torch.arange(32), kept])


def test_band_dropout_p0_unchanged_and_partial() -> None:
    x = _batch(b=32)
    assert torch.equal(band_dropout(x, _gen(), p=0.0), x)
    y = band_dropout(x, _gen(), p=0.5)
    dropped = torch.isnan(y).all(dim=(2, 3))
    assert 0.3 < dropped.float().mean() < 0.7
    assert bool((~dropped).any(dim=1).all())
    assert torch.equal(y[~torch.isnan(y)], x[~torch.isnan(y)])
