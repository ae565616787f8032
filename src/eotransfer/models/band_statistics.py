"""``band-stats``: per-band statistics as a parameter-free backbone, so the reference row is a model too.

Every accuracy table carries the band-statistics reference (:mod:`eotransfer.evaluation.reference`): each
band's mean, standard deviation and 5/25/50/75/95th percentiles, standardised, into a logistic regression.
On several of this project's grids it beats every transfer strategy (benchmarks/README.md), and a user who
finds that wants to *deploy* it: ``eotransfer fit DATA --backbone band-stats --strategy feature-extraction``
fits it, with the classifier's regularisation chosen by cross-validation, and the model directory then
predicts rasters, patches and GeoJSON like any other.  Spectral statistics of a patch are the classical
object-based image analysis features (Blaschke 2010, "Object based image analysis for remote sensing",
ISPRS J. Photogramm. 65(1)).

The module sees the model's normalised input (``(x - center) / scale`` per band, nodata pixels as 0): each
statistic is then an affine function of the raw one with a positive slope, which the classifier's
standardisation removes, so the features carry what the reference's do.
"""

from __future__ import annotations

import torch
from torch import nn

#: the percentiles, as in :data:`eotransfer.evaluation.reference.PERCENTILES`
PERCENTILES = (5, 25, 50, 75, 95)
#: statistics per band: mean, standard deviation, then the percentiles
N_STATISTICS = 2 + len(PERCENTILES)


class BandStatistics(nn.Module):
    """N×C×H×W → N×(7·C): per band (band-major) mean, std (population) and percentiles (linear interpolation).

    No parameter and no buffer: nothing to train, load or freeze.
    """

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.num_features = N_STATISTICS * in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2).float()  # N×C×P
        n = flat.shape[-1]
        mean = flat.mean(dim=-1)
        std = flat.std(dim=-1, unbiased=False)  # 0 for a single pixel
        ordered = flat.sort(dim=-1).values
        # numpy's default ("linear"): the value at position q/100 · (n - 1), interpolated between neighbours.
        # Tensor arithmetic on n, so that a traced (ONNX/TorchScript) graph computes it for any patch size.
        pos = flat.new_tensor([q / 100.0 for q in PERCENTILES], dtype=torch.float64) * (n - 1)
        lo, hi = pos.floor().long(), pos.ceil().long()
        frac = (pos - lo).to(flat.dtype)
        pct = ordered[..., lo] * (1 - frac) + ordered[..., hi] * frac  # N×C×5
        return torch.cat([mean[..., None], std[..., None], pct], dim=-1).flatten(1)
