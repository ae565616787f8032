"""Per-band normalisation computed on the training split only, and stored with every model.

Mean/std standardisation is what most EO weights expect (TorchGeo stores per-band mean/std in its
weight metadata); robust 2nd/98th percentiles are kept too, for percentile scaling and for
RGB previews.  Masked (NaN) pixels are ignored in the statistics and filled with 0, the band mean,
after standardisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eotransfer.bands import BandSet
from eotransfer.errors import ConfigError, DataError

METHODS = ("standard", "percentile")


@dataclass
class Normalizer:
    """Per-band statistics and the transform they define."""

    bands: list[str]
    mean: np.ndarray
    std: np.ndarray
    p02: np.ndarray
    p98: np.ndarray
    method: str = "standard"
    n_samples: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--normalization: unknown method '{self.method}'; choose one of {', '.join(METHODS)}")
        self.std = np.where(self.std > 1e-6, self.std, 1.0).astype(np.float32)

    @classmethod
    def fit(
        cls,
        read: Any,
        indices: Sequence[int] | np.ndarray,
        bands: BandSet,
        method: str = "standard",
        max_samples: int = 2000,
        seed: int = 0,
    ) -> Normalizer:
        """Statistics over the samples ``indices`` (``read(i)`` gives C×H×W float32, NaN masked)."""
        if len(indices) == 0:
            raise DataError("normalisation: the training split is empty; nothing to compute statistics from")
        rng = np.random.default_rng(seed)
        chosen = np.asarray(indices)
        if len(chosen) > max_samples:
            chosen = rng.choice(chosen, max_samples, replace=False)
        c = len(bands)
        total = np.zeros(c)
        total_sq = np.zeros(c)
        count = np.zeros(c)
        sample_px: list[np.ndarray] = []
        for i in chosen:
            x = read(int(i)).reshape(c, -1).astype(np.float64)
            valid = ~np.isnan(x)
            total += np.where(valid, x, 0).sum(1)
            total_sq += np.where(valid, x * x, 0).sum(1)
            count += valid.sum(1)
            take = rng.choice(x.shape[1], min(256, x.shape[1]), replace=False)
            sample_px.append(x[:, take])
        if (count == 0).any():
            empty = [bands.names[i] for i in np.flatnonzero(count == 0)]
            raise DataError(f"normalisation: band(s) {', '.join(empty)} are nodata in every training sample")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
        px = np.concatenate(sample_px, axis=1)
        p02, p98 = np.nanpercentile(px, [2, 98], axis=1)
        return cls(bands.keys, mean.astype(np.float32), std.astype(np.float32), p02.astype(np.float32),
                   p98.astype(np.float32), method, len(chosen))  # fmt: skip

    def center_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """The per-band values subtracted and divided by: mean/std, or p02/(p98 - p02)."""
        if self.method == "percentile":
            return self.p02, np.maximum(self.p98 - self.p02, 1e-6)
        return self.mean, self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a C×H×W or N×C×H×W tensor; NaN (masked) pixels become 0."""
        center, scale = self.center_scale()
        shape = (-1, 1, 1)
        c = torch.as_tensor(center, dtype=x.dtype, device=x.device).view(shape)
        s = torch.as_tensor(scale, dtype=x.dtype, device=x.device).view(shape)
        return torch.nan_to_num((x - c) / s, nan=0.0, posinf=0.0, neginf=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bands": self.bands,
            "method": self.method,
            "n_samples": self.n_samples,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "p02": [float(v) for v in self.p02],
            "p98": [float(v) for v in self.p98],
        }

    def subset(self, keys: Sequence[str]) -> Normalizer:
        """The statistics of the bands ``keys``, in that order (a model's inputs from pre-trained weights' statistics)."""
        missing = [k for k in keys if k not in self.bands]
        if missing:
            raise DataError(f"normalisation: no statistics for band(s) {', '.join(missing)}")
        idx = [self.bands.index(k) for k in keys]
        return Normalizer(
            list(keys), self.mean[idx], self.std[idx], self.p02[idx], self.p98[idx], self.method, self.n_samples
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        arr = {k: np.asarray(d[k], dtype=np.float32) for k in ("mean", "std", "p02", "p98")}
        return cls(list(d["bands"]), arr["mean"], arr["std"], arr["p02"], arr["p98"], d.get("method", "standard"),
                   int(d.get("n_samples", 0)))  # fmt: skip
