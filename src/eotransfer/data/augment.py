"""Batched, deterministic augmentations of multispectral imagery for self-supervised pre-training.

Two views of each image are made by :class:`EOAugment` for contrastive / self-distillation
pre-training (MoCo, BYOL).  The recipe follows MoCo v2 (Chen et al. 2020, "Improved Baselines with
Momentum Contrastive Learning": random resized crop, colour jitter, Gaussian blur, flips) adapted
to Earth observation as in SSL4EO-S12 (Wang et al. 2022, "SSL4EO-S12: A Large-Scale Multi-Modal,
Multi-Temporal Dataset for Self-Supervised Learning in Earth Observation"): jitter per spectral band
instead of in an RGB colour space, no grey-scale conversion, and the full dihedral group of flips
and 90° rotations since overhead imagery has no canonical "up".  The blur follows BYOL (Grill et
al. 2020, "Bootstrap Your Own Latent"): sigma uniform in [0.1, max].

Conventions:

- ``x`` is a float tensor B×C×H×W of *raw* values (reflectance ×10⁴, 0–255 RGB, ...) on any
  device.  NaN marks a missing value; normalisation later turns it into the band mean.
- Every random number is drawn from the CPU :class:`torch.Generator` ``gen`` (reproducible and
  resumable runs, identical on CPU and GPU) and then moved to ``x``'s device.  Each function draws
  the same numbers whatever its probabilities, so the stream does not depend on which samples were
  selected.
- Operations are batched: one ``grid_sample`` for the crop, one grouped convolution per axis for the
  blur; the dihedral group is a loop over its 8 elements.
- The output has ``x``'s dtype and device; half-precision input is resampled, averaged and
  convolved in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eotransfer.errors import ConfigError
from eotransfer.strategies.base import param, validate_params

__all__ = [
    "AugmentParams",
    "EOAugment",
    "band_dropout",
    "dihedral",
    "gaussian_blur",
    "guess_value_per_reflectance",
    "jitter",
    "random_resized_crop",
]


@dataclass
class AugmentParams:
    """Settings of the two-view augmentation (MoCo v2 / BYOL recipe adapted to EO imagery)."""

    crop_scale_min: float = param(0.25, "random resized crop: minimum area fraction of the crop", 0.01, 1.0)
    crop_scale_max: float = param(1.0, "random resized crop: maximum area fraction of the crop", 0.01, 1.0)
    crop_ratio: float = param(
        4 / 3, "random resized crop: maximum aspect ratio (the minimum is its inverse)", 1.0, 10.0
    )
    dihedral: bool = param(True, "random flips and 90° rotations (valid for overhead imagery)")
    jitter_prob: float = param(0.8, "probability of the per-band brightness/contrast jitter of a sample", 0.0, 1.0)
    brightness_reflectance: float = param(
        0.02, "jitter: maximum additive per-band offset, in reflectance units", 0.0, 1.0
    )
    contrast: float = param(0.2, "jitter: per-band contrast factor uniform in [1-c, 1+c]", 0.0, 1.0)
    blur_prob: float = param(0.5, "probability of a Gaussian blur of a sample", 0.0, 1.0)
    blur_sigma_max: float = param(
        1.5, "Gaussian blur: maximum sigma in pixels (sigma uniform in [0.1, max])", 0.1, 20.0
    )
    band_dropout: float = param(
        0.0, "probability that each band of a sample is masked (set missing); one band always stays", 0.0, 1.0
    )
    value_per_reflectance: float | None = param(
        None,
        "data units per reflectance unit (10000 for Sentinel-2 x10^4, 255 for 8-bit RGB); guessed if omitted",
        1e-6,
    )

    def check(self) -> None:
        """Check the relations between fields (ranges are checked by :func:`validate_params`)."""
        if self.crop_scale_min > self.crop_scale_max:
            raise ConfigError(
                f"--crop-scale-min: {self.crop_scale_min} is above --crop-scale-max {self.crop_scale_max}; "
                "lower --crop-scale-min or raise --crop-scale-max"
            )


def guess_value_per_reflectance(sample_max: float) -> float:
    """Guess the data units per reflectance unit from the largest value seen.

    - ``sample_max <= 1.5``: the data are reflectance already (surface reflectance may slightly
      exceed 1), so 1.0;
    - ``sample_max <= 255``: 8-bit imagery, so 255.0;
    - otherwise: Sentinel-2 / Landsat style digital numbers, reflectance ×10⁴, so 10000.0.
    """
    if sample_max <= 1.5:
        return 1.0
    if sample_max <= 255:
        return 255.0
    return 10000.0


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    """Uniform numbers in [lo, hi) drawn on the CPU from ``gen`` (float64 for exactness)."""
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _working(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in half precision: sampling grids, band means and kernel weights
    in bfloat16 are off by a fraction of a pixel or a percent."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _band_nanmean(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-band mean over the valid pixels, B×C×1×1 (NaN for a band with none)."""
    return torch.nanmean(x, dim=(-2, -1), keepdim=True)


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    out_size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Crop a random window of each sample and resize it to ``out_size`` (default H×W).

    As torchvision's ``RandomResizedCrop`` (used by MoCo v2 and SSL4EO-S12): the area fraction is
    uniform in ``scale``, the aspect ratio width/height log-uniform in ``ratio``; a side that would
    exceed the image is clamped to it, and the position is uniform among those inside the image.
    Resizing is bilinear, by one ``affine_grid``/``grid_sample`` call for the batch (sub-pixel crop
    boundaries, no rounding).  A missing (NaN) input value takes part with its interpolation weight
    in normalised-convolution fashion: the output is the weighted mean of the valid neighbours, and
    NaN where less than half the weight is valid.
    """
    dtype, x = x.dtype, _working(x)
    b, _, h, w = x.shape
    if out_size is None:
        oh, ow = h, w
    elif isinstance(out_size, int):
        oh, ow = out_size, out_size
    else:
        oh, ow = out_size
    area = _uniform(gen, (b,), scale[0], scale[1])
    log_r = _uniform(gen, (b,), math.log(ratio[0]), math.log(ratio[1]))
    pos = torch.rand((b, 2), generator=gen, dtype=torch.float64)
    r = torch.exp(log_r)
    # side lengths as fractions of the image's width and height: (fw·W)·(fh·H) = area·W·H, fw·W / (fh·H) = r
    fw = torch.sqrt(area * r * h / w).clamp(max=1.0)
    fh = torch.sqrt(area / r * w / h).clamp(max=1.0)
    x0 = pos[:, 0] * (1 - fw)
    y0 = pos[:, 1] * (1 - fh)
    theta = torch.zeros((b, 2, 3), dtype=torch.float64)
    theta[:, 0, 0] = fw
    theta[:, 0, 2] = 2 * x0 + fw - 1  # centre of the window in [-1, 1] coordinates
    theta[:, 1, 1] = fh
    theta[:, 1, 2] = 2 * y0 + fh - 1
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), [b, 1, oh, ow], align_corners=False)
    nan = torch.isnan(x)
    if not bool(nan.any()):
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).to(dtype)
    valid = (~nan).to(x.dtype)
    c = x.shape[1]
    both = torch.cat([torch.where(nan, torch.zeros_like(x), x), valid], dim=1)
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    num, weight = out[:, :c], out[:, c:]
    out = torch.where(weight >= 0.5, num / weight.clamp(min=1e-6), torch.full_like(num, float("nan")))
    return out.to(dtype)


def dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 flips/90° rotations to each sample (exact, no interpolation).

    As :func:`eotransfer.engine.loop.augment_batch`: op ``k`` rotates by ``k % 4`` quarter turns
    then flips left-right when ``k >= 4``.  A non-square image keeps its shape: only the 4 ops
    without a quarter turn (0, 2, 4, 6) are drawn then.
    """
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    ops = torch.randint(0, 8, (b,), generator=gen)
    if h != w:
        ops = (ops // 2) * 2
    out = x.clone()
    for op in range(1, 8):
        idx = torch.nonzero(ops == op).squeeze(1)
        if idx.numel() == 0:
            continue
        idx = idx.to(x.device)
        y = torch.rot90(x.index_select(0, idx), op % 4, dims=(-2, -1))
        out.index_copy_(0, idx, torch.flip(y, dims=(-1,)) if op >= 4 else y)
    return out


def jitter(
    x: torch.Tensor, gen: torch.Generator, brightness: float, contrast: float, prob: float = 1.0
) -> torch.Tensor:
    """Per-band brightness and contrast jitter of a random subset of samples.

    The spectral counterpart of MoCo v2's colour jitter used by SSL4EO-S12: with probability
    ``prob`` a sample's band ``c`` becomes ``(x - m) * f + m + o``, with ``m`` the band's mean over
    the sample's valid pixels, ``f`` uniform in ``[1 - contrast, 1 + contrast]`` and ``o`` uniform
    in ``±brightness`` (data units: reflectance offset × value per reflectance).  Each band is then
    clipped to its [min, max] over the valid values of the input batch, so no value leaves the data
    range seen.  NaN stays NaN; samples not selected are unchanged exactly.
    """
    b, c = x.shape[:2]
    sel = torch.rand((b,), generator=gen) < prob
    offset = _uniform(gen, (b, c, 1, 1), -brightness, brightness)
    factor = _uniform(gen, (b, c, 1, 1), 1 - contrast, 1 + contrast)
    if not bool(sel.any()):
        return x.clone()
    x32 = _working(x)
    offset = offset.to(device=x.device, dtype=x32.dtype)
    factor = factor.to(device=x.device, dtype=x32.dtype)
    mean = _band_nanmean(x32)
    y = ((x32 - mean) * factor + mean + offset).to(x.dtype)
    nan = torch.isnan(x)
    lo = torch.where(nan, torch.full_like(x, float("inf")), x).amin(dim=(0, 2, 3), keepdim=True)
    hi = torch.where(nan, torch.full_like(x, float("-inf")), x).amax(dim=(0, 2, 3), keepdim=True)
    y = torch.maximum(torch.minimum(y, hi), lo)  # NaN propagates: missing stays missing
    return torch.where(sel.to(x.device).view(b, 1, 1, 1), y, x)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, one row per sigma: len(sigma)×(2·radius+1)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, prob: float = 0.5, sigma_max: float = 1.5) -> torch.Tensor:
    """Gaussian blur of a random subset of samples (BYOL: sigma uniform in [0.1, ``sigma_max``]).

    The kernel is separable, of odd size ``2·ceil(3·sigma_max) + 1`` for every sample (shortened on
    images smaller than that), applied with reflect padding by one grouped convolution per axis on
    the selected samples.  Missing values are filled with the band's mean over the sample's valid
    pixels before convolving, and are missing again afterwards.  Samples not selected are unchanged
    exactly.
    """
    b, c, h, w = x.shape
    sel = torch.rand((b,), generator=gen) < prob
    sigma = _uniform(gen, (b,), 0.1, max(sigma_max, 0.1))
    radius = min(math.ceil(3 * sigma_max), h - 1, w - 1)
    idx = torch.nonzero(sel).squeeze(1)
    if idx.numel() == 0 or radius < 1:
        return x.clone()
    sub = _working(x.index_select(0, idx.to(x.device)))
    kernels = _gaussian_kernels(sigma[idx], radius).to(device=x.device, dtype=sub.dtype)  # n×k
    n, k = idx.numel(), 2 * radius + 1
    kernels = kernels.repeat_interleave(c, dim=0)  # (n·C)×k, one per channel of each sample
    nan = torch.isnan(sub)
    fill = torch.nan_to_num(_band_nanmean(sub), nan=0.0).expand_as(sub)
    z = torch.where(nan, fill, sub).reshape(1, n * c, h, w)
    z = F.conv2d(F.pad(z, (radius, radius, 0, 0), mode="reflect"), kernels.view(n * c, 1, 1, k), groups=n * c)
    z = F.conv2d(F.pad(z, (0, 0, radius, radius), mode="reflect"), kernels.view(n * c, 1, k, 1), groups=n * c)
    z = torch.where(nan, sub, z.view(n, c, h, w))
    out = x.clone()
    out.index_copy_(0, idx.to(x.device), z.to(x.dtype))
    return out


def band_dropout(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Mask (set to NaN, i.e. missing) each band of each sample with probability ``p``.

    At least one band of a sample stays: when every band was drawn, one band chosen uniformly at
    random is kept.  With ``p == 0`` the input is returned unchanged.
    """
    b, c = x.shape[:2]
    drop = torch.rand((b, c), generator=gen) < p
    keep = torch.randint(0, c, (b,), generator=gen)
    if not bool(drop.any()):
        return x.clone()
    all_dropped = drop.all(dim=1)
    drop[all_dropped, keep[all_dropped]] = False
    mask = drop.to(x.device).view(b, c, 1, 1)
    return x.masked_fill(mask, float("nan"))


class EOAugment:
    """One random view of a batch: crop → dihedral → jitter → blur → band dropout.

    Call it twice with the same generator for the two views of MoCo v2 / BYOL.  Each step is skipped
    when disabled (full-image crop scale, ``dihedral=False``, zero probabilities or strengths).
    Without ``value_per_reflectance`` the data units are guessed from the largest value of the
    input batch (:func:`guess_value_per_reflectance`).
    """

    def __init__(self, params: AugmentParams, out_size: int | None = None) -> None:
        validate_params(params)
        params.check()
        self.params = params
        self.out_size = out_size

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = self.params
        vpr = p.value_per_reflectance
        if vpr is None and p.jitter_prob > 0 and p.brightness_reflectance > 0:
            vpr = guess_value_per_reflectance(float(torch.nan_to_num(x).amax()))
        h, w = x.shape[-2:]
        resize = self.out_size is not None and (self.out_size, self.out_size) != (h, w)
        if p.crop_scale_min < 1.0 or p.crop_ratio > 1.0 or resize:
            ratio = (1 / p.crop_ratio, p.crop_ratio)
            x = random_resized_crop(x, gen, (p.crop_scale_min, p.crop_scale_max), ratio, self.out_size)
        if p.dihedral:
            x = dihedral(x, gen)
        if p.jitter_prob > 0 and (p.brightness_reflectance > 0 or p.contrast > 0):
            brightness = p.brightness_reflectance * vpr if vpr is not None else 0.0
            x = jitter(x, gen, brightness, p.contrast, p.jitter_prob)
        if p.blur_prob > 0:
            x = gaussian_blur(x, gen, p.blur_prob, p.blur_sigma_max)
        if p.band_dropout > 0:
            x = band_dropout(x, gen, p.band_dropout)
        return x
