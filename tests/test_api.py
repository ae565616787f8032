"""The Python API across sensors: band dropout in training, a model applied to fewer or other bands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eotransfer
from eotransfer.api import evaluate
from eotransfer.errors import BandError
from eotransfer.strategies.finetune import Finetune


@pytest.fixture(scope="module")
def model13(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xs") / "model"
    eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="linear-probe", backbone="resnet10t", epochs=3,
                   augment=False, accelerator="cpu", progress=False, verbose=False, out=str(out))  # fmt: skip
    return out


def test_band_dropout_masks_training_bands(eurosat_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    original = Finetune.training_loss

    def spy(self: Any, model: Any, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> Any:
        seen.append(images.detach().clone())
        return original(self, model, images, labels, gen)

    monkeypatch.setattr(Finetune, "training_loss", spy)
    eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="finetune", backbone="resnet10t", head_epochs=1,
                   epochs=1, band_dropout=0.5, accelerator="cpu", progress=False, verbose=False)  # fmt: skip
    x = torch.cat(seen)
    dropped = torch.isnan(x).all(dim=(2, 3))  # sample × band: the whole band masked
    assert 0.3 < float(dropped.float().mean()) < 0.7  # about half the bands, p = 0.5
    assert bool((~dropped).any(dim=1).all())  # every sample keeps at least one band
    assert not torch.isnan(x).any(dim=(2, 3)).logical_and(~dropped).any()  # masking is per whole band


def test_evaluate_on_fewer_bands_needs_mask(model13: Path, eurosat_like: Path) -> None:
    full = evaluate(model13, eurosat_like, bands="eurosat-ms", verbose=False)
    with pytest.raises(BandError, match="--missing-bands mask"):
        evaluate(model13, eurosat_like, bands="eurosat-ms", use_bands="B04,B03,B02", verbose=False)
    rgb = evaluate(model13, eurosat_like, bands="eurosat-ms", use_bands="B04,B03,B02", missing_bands="mask",
                   verbose=False)  # fmt: skip
    assert rgb["n"] == full["n"]
    # the fixture's classes differ in every band, so the RGB-only view loses information
    assert rgb["overall_accuracy"] <= full["overall_accuracy"]
    same = evaluate(
        model13,
        eurosat_like,
        bands="eurosat-ms",
        use_bands=",".join(["B8A", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12"]),
        verbose=False,
    )
    assert same["overall_accuracy"] == pytest.approx(full["overall_accuracy"])  # reordered bands are mapped back
    assert np.isfinite(rgb["macro_f1"])


def test_finetune_a_saved_model_on_another_band_set(model13: Path, eurosat_like: Path) -> None:
    res = eotransfer.fit(eurosat_like, bands="eurosat-ms", use_bands="B04,B03,B02", strategy="linear-probe",
                         backbone="resnet10t", weights=str(model13), epochs=1, accelerator="cpu", progress=False,
                         verbose=False)  # fmt: skip
    matches = res.card["band_mapping"]["matches"]
    assert [(m["target"], m["source"], m["method"]) for m in matches] == [
        (f"sentinel2-l1c:{b}", f"sentinel2-l1c:{b}", "name") for b in ("B04", "B03", "B02")
    ]
    # the first layer holds the 13-band model's kernels of those bands, scaled by 13/3 (a frozen backbone)
    from eotransfer.card import load_model

    source = next(p for p in load_model(model13).network.backbone.parameters() if p.ndim == 4)
    first = next(p for p in res.model.backbone.parameters() if p.ndim == 4)
    idx = [res.card["band_mapping"]["matches"][i]["source"] for i in range(3)]
    cols = [load_model(model13).bands.keys.index(k) for k in idx]
    torch.testing.assert_close(first.detach(), source.detach()[:, cols] * 13 / 3)
