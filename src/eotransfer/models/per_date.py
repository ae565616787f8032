"""Per-date (siamese) encoding of a multi-date band stack: one backbone, run on each date apart.

Daudt, Le Saux & Boulch 2018, "Fully Convolutional Siamese Networks for Change Detection" (ICIP): the
images of two dates go through one encoder with shared weights, and what follows compares their
features.  Here the encoder is the backbone built for *one* date's bands, so single-date weights (the
EuroSAT Sentinel-2 ones) load with one kernel per band.  Stacked instead (xBD's pre/post RGB as six
bands), each of their kernels fills two data bands and the first layer sees only the sum of the dates
(:attr:`~eotransfer.models.band_mapping.BandMapping.shared_kernels`), never the change.

The features handed to the head are those of the last date and their change from each earlier date,
``[f_D, f_D − f_1, …, f_D − f_{D−1}]``: D times the backbone's width.  The dates are read from the band
set: bands of one definition (common name, wavelength, bandwidth and GSD: ``rgb-pre:pre_red`` and
``rgb:red``) are one band at several dates, in the stack's order.  Bands of two sensors at one date
(Sentinel-2 and Landsat red) differ in wavelength and bandwidth, so they are not taken for dates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from eotransfer.bands import BandSet
from eotransfer.errors import BandError

#: the card's ``network.builder`` for a per-date network (this module's name)
BUILDER = "per_date"


def date_groups(bands: BandSet) -> list[list[int]]:
    """Channel indices of each date of a stack that repeats its bands per date, earliest first.

    Bands of one definition (common name, wavelength, bandwidth, GSD) are one band at successive dates, in
    the stack's order.  Every band must repeat the same number of times (two or more), or the stack has no
    dates to split.
    """
    groups: dict[tuple[str, float, float, float], list[int]] = {}
    for i, b in enumerate(bands):
        groups.setdefault(((b.common_name or b.name).lower(), b.wavelength_nm, b.bandwidth_nm, b.gsd_m), []).append(i)
    counts = {len(g) for g in groups.values()}
    if counts == {1}:
        raise BandError(
            f"--per-date: the bands ({bands.describe()}) hold one date, no band repeats; per-date encoding needs a "
            "stack of dates that repeat the same bands (e.g. xBD's pre/post RGB). Leave --per-date out"
        )
    if len(counts) > 1:
        detail = "; ".join(f"{key[0]}: {len(g)}" for key, g in groups.items())
        raise BandError(
            f"--per-date: the bands ({bands.describe()}) repeat unevenly ({detail}); every date of the stack must "
            "hold the same bands. Select them with --use-bands"
        )
    n_dates = counts.pop()
    return [[g[d] for g in groups.values()] for d in range(n_dates)]


class PerDateEncoder(nn.Module):
    """A backbone for one date's bands, applied to every date of the stack with shared weights.

    ``forward`` takes the whole stack (N × C × H × W, C = dates × bands per date) and returns
    ``[f_last, f_last − f_first, …]`` (N × dates·F), F being the encoder's pooled feature width.
    """

    def __init__(self, encoder: nn.Module, dates: list[list[int]], encoder_features: int, arch: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.dates = [list(d) for d in dates]
        self.encoder_features = int(encoder_features)
        self.num_features = self.encoder_features * len(self.dates)
        self.arch = arch
        for d, idx in enumerate(self.dates):
            self.register_buffer(f"_date{d}", torch.tensor(idx, dtype=torch.long), persistent=False)

    def combine_dates(self, pooled: torch.Tensor) -> torch.Tensor:
        """(D·N) × F features of the dates, date after date, → N × D·F: ``[f_last, f_last − f_first, …]``.

        Also what a stage's pooled output goes through (``feature-extraction --stage``), so that every
        embedding of a per-date network is built the same way.
        """
        f = pooled.reshape(len(self.dates), -1, pooled.shape[-1])
        return torch.cat([f[-1], *(f[-1] - f[d] for d in range(len(self.dates) - 1))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the dates in one batch, as BatchNorm sees them
        stacked = torch.cat([x.index_select(1, getattr(self, f"_date{d}")) for d in range(len(self.dates))])
        out = self.encoder(stacked)
        return self.combine_dates(out.mean(dim=(2, 3)) if out.ndim == 4 else out)

    def card_entries(self) -> dict[str, Any]:
        """What the model card records so that :func:`eotransfer.card.load_model` rebuilds the network."""
        return {"network": {"builder": BUILDER, "arch": self.arch, "dates": self.dates,
                            "encoder_features": self.encoder_features}}  # fmt: skip


def build_from_card(card: dict[str, Any]) -> nn.Module:
    """The network a per-date model directory holds (weights not loaded)."""
    from eotransfer.models.backbones import build_network, get_architecture
    from eotransfer.models.model import EOClassifier

    net = card["network"]
    dates = [[int(i) for i in d] for d in net["dates"]]
    encoder = build_network(get_architecture(str(net["arch"])), len(dates[0]), card.get("img_size"))
    backbone = PerDateEncoder(encoder, dates, int(net["encoder_features"]), str(net["arch"]))
    return EOClassifier(backbone, backbone.num_features, len(card["classes"]), len(card["bands"]))
