"""The compact backbone shipped in the package: redistributable data only, ≤ 15 MB, loadable by name offline."""

from __future__ import annotations

import json

import torch

from eotransfer.bands import BandSet
from eotransfer.models.backbones import create_backbone
from eotransfer.models.catalogue import find_local, local_catalogue, package_dir
from eotransfer.pretrain.run import REDISTRIBUTABLE

NAME = "eurosat-s2-resnet10t-moco"


def test_shipped_backbone_card_and_size() -> None:
    folder = package_dir() / NAME
    assert (folder / "weights.safetensors").stat().st_size <= 5 * 2**20  # int8: under 5 MiB
    card = json.loads((folder / "card.json").read_text())
    assert card["redistributable"] is True
    assert all(lic.lower() in REDISTRIBUTABLE for lic in card["licences"])
    assert {d["name"] for d in card["pretraining"]["data"]} == {
        "eurosat.npz",
        "bigearthnet_s2.npz",
        "landsat_patches.npz",
    }
    assert card["arch"] == "resnet10t" and len(card["bands"]) == 13 and card["dtype"] == "int8"
    assert "transfer" in card and "scratch" in json.dumps(card["transfer"]["rows"])
    row = next(r for r in local_catalogue() if r["name"] == f"eotransfer:{NAME}")
    assert row["where"] == "package"


def test_shipped_backbone_loads_by_name_and_maps_to_landsat() -> None:
    assert find_local(NAME) == package_dir() / NAME
    bb = create_backbone("resnet10t", BandSet.parse("eurosat-ms"), f"eotransfer:{NAME}", img_size=64, verbose=False)
    assert bb.weights["source"] == "catalogue" and bb.weights["normalization"]["bands"][0] == "sentinel2-l1c:B01"
    bb.module.eval()
    with torch.no_grad():
        feats = bb.module(torch.randn(2, 13, 64, 64))
    assert feats.shape == (2, 512) and torch.isfinite(feats).all()
    ls = create_backbone("resnet10t", BandSet.parse("landsat8:B2,B3,B4"), NAME, img_size=64, verbose=False)
    assert ls.mapping is not None and [m.source for m in ls.mapping.matches] == [
        "sentinel2-l1c:B02", "sentinel2-l1c:B03", "sentinel2-l1c:B04"]  # fmt: skip
