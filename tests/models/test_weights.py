"""Weight sources: local files with cards, safe loading, checked downloads, TorchGeo names (offline)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import eotransfer.models.weights as weights_module
from eotransfer.bands import BandSet
from eotransfer.errors import OfflineError, WeightError
from eotransfer.models.backbones import build_network, create_backbone, get_architecture
from eotransfer.models.weights import (
    download_checked,
    load_state_file,
    resolve_weights,
    torchgeo_bands,
    torchgeo_normalization,
    torchgeo_weight,
)

TG_NAME = "ResNet18_Weights.SENTINEL2_ALL_MOCO"
TG_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def _state(n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {"conv.weight": torch.randn(2, n, 3, 3, generator=g), "conv.bias": torch.randn(2, generator=g)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- local files -------------------------------------------------------------------------------
def test_local_folder_safetensors_and_card(tmp_path: Path) -> None:
    state = _state()
    save_file(state, str(tmp_path / "weights.safetensors"))
    card = {"arch": "resnet18", "bands": ["landsat8:B4", "landsat8:B3", "landsat8:B2"], "normalization": {"mean": [1]}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    loaded = resolve_weights(str(tmp_path))
    _assert_same(loaded.state_dict, state)
    assert loaded.bands.keys == card["bands"]
    assert loaded.arch == "resnet18"
    assert loaded.normalization == {"mean": [1]}
    assert loaded.describe()["source"] == "file" and loaded.describe()["path"] == str(tmp_path)


def test_local_card_with_band_dicts_and_prefix(tmp_path: Path) -> None:
    # a saved eotransfer model: keys under "backbone.", bands as catalogue rows
    state = {f"backbone.{k}": v for k, v in _state().items()} | {"head.weight": torch.zeros(2, 2)}
    save_file(state, str(tmp_path / "weights.safetensors"))
    bands = BandSet.parse("sentinel2-l1c:B02,B03,B04")
    (tmp_path / "card.json").write_text(json.dumps({"kind": "eotransfer-model", "arch": "x", "bands": bands.to_list()}))
    loaded = resolve_weights(str(tmp_path))
    _assert_same(loaded.state_dict, _state())
    assert loaded.bands == bands


def test_pt_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    state = _state(4)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps({"bands": ["rgbn:blue", "rgbn:green", "rgbn:red", "rgbn:nir"]}))
    loaded = resolve_weights(str(tmp_path / "model.pt"))
    _assert_same(loaded.state_dict, state)  # unwrapped and "module." stripped
    assert loaded.bands.names == ["blue", "green", "red", "nir"]
    assert loaded.arch is None


class EvilDict(collections.OrderedDict):
    """A dict subclass: unpickling it needs this module's code, which weights_only refuses to import."""


class Payload:
    """Unpickling this would create a folder: proof that no code ran if it does not exist afterwards."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.marker),))


def test_pickle_with_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save(EvilDict(_state()), path)
    with pytest.raises(WeightError, match="cannot be loaded safely") as err:
        load_state_file(path)
    assert str(path) in str(err.value)


def test_pickle_with_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(marker)}, path)
    (tmp_path / "evil.json").write_text(json.dumps({"bands": ["rgb:red"]}))
    with pytest.raises(WeightError, match="cannot be loaded safely"):
        resolve_weights(str(path))
    assert not marker.exists()


def test_non_tensor_values_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1), "lr": 0.1}, tmp_path / "x.pt")
    with pytest.raises(WeightError, match="not a state dict of tensors"):
        load_state_file(tmp_path / "x.pt")


def test_corrupt_file_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightError, match="weights.safetensors: cannot be loaded safely"):
        load_state_file(tmp_path / "weights.safetensors")


def test_missing_card(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "weights.safetensors"))
    with pytest.raises(WeightError, match="no model card"):
        resolve_weights(str(tmp_path))
    torch.save(_state(), tmp_path / "single.pth")
    with pytest.raises(WeightError, match=r"single\.pth: no model card \(single\.json\)"):
        resolve_weights(str(tmp_path / "single.pth"))


def test_card_without_bands_and_folder_without_weights(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "weights.safetensors"))
    (tmp_path / "card.json").write_text(json.dumps({"arch": "resnet18"}))
    with pytest.raises(WeightError, match="lists no 'bands'"):
        resolve_weights(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightError, match="no weights.safetensors"):
        resolve_weights(str(tmp_path / "empty"))


def test_unknown_spec_and_imagenet_without_backbone() -> None:
    with pytest.raises(WeightError, match="neither an existing file"):
        resolve_weights("no/such/weights.pth")
    with pytest.raises(WeightError, match="needs a --backbone"):
        resolve_weights("imagenet")


def test_weights_for_another_architecture(tmp_path: Path) -> None:
    state = build_network(get_architecture("resnet18"), 3).state_dict()
    save_file(dict(state), str(tmp_path / "weights.safetensors"))
    (tmp_path / "card.json").write_text(json.dumps({"arch": "resnet34", "bands": ["rgb:red", "rgb:green", "rgb:blue"]}))
    with pytest.raises(WeightError, match="trained for backbone 'resnet34'.*--backbone resnet34"):
        create_backbone("resnet18", BandSet.parse("rgb"), weights=str(tmp_path), verbose=False)


# -- checked downloads -------------------------------------------------------------------------
def _published(tmp_path: Path, content: bytes, prefix: str | None = None) -> Path:
    digest = hashlib.sha256(content).hexdigest()
    src = tmp_path / "server" / f"weights-{prefix or digest[:8]}.pth"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    return src


def test_download_checked_file_url(tmp_path: Path) -> None:
    content = os.urandom(5000)
    src = _published(tmp_path, content)
    cache = tmp_path / "cache"
    got = download_checked(src.as_uri(), directory=cache)
    assert got == cache / src.name
    assert got.read_bytes() == content
    assert sorted(p.name for p in cache.iterdir()) == [src.name]  # no temporary file left
    src.unlink()
    assert download_checked(src.as_uri(), directory=cache) == got  # the cached copy is reused


def test_download_checked_wrong_prefix_leaves_nothing(tmp_path: Path) -> None:
    src = _published(tmp_path, b"not the published weights", prefix="deadbeef")
    cache = tmp_path / "cache"
    with pytest.raises(WeightError, match="does not match the expected deadbeef"):
        download_checked(src.as_uri(), directory=cache)
    assert list(cache.iterdir()) == []


def test_download_checked_rejects_damaged_cache(tmp_path: Path) -> None:
    src = _published(tmp_path, b"published")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / src.name).write_bytes(b"damaged")
    with pytest.raises(WeightError, match=f"{src.name}: checksum .* does not match"):
        download_checked(src.as_uri(), directory=cache)


def test_download_unreachable_names_cache_path(tmp_path: Path) -> None:
    with pytest.raises(OfflineError) as err:
        download_checked("http://127.0.0.1:9/x-deadbeef.pth", directory=tmp_path)
    assert str(tmp_path / "x-deadbeef.pth") in str(err.value)
    assert list(tmp_path.iterdir()) == []


# -- TorchGeo (offline) ------------------------------------------------------------------------
def test_torchgeo_name_resolution_and_bands() -> None:
    weight = torchgeo_weight(TG_NAME)
    bands = torchgeo_bands(TG_NAME, weight)
    assert len(bands) == 13
    assert {b.sensor for b in bands} == {"sentinel2-l1c"}
    assert bands.names == TG_ORDER  # the weight's own order: B8A after B08
    assert torchgeo_normalization(weight) == {"mean": [0.0], "std": [10000.0]}
    assert weight.url.rsplit("/", 1)[-1] == "resnet18_sentinel2_all_moco-59bfdff9.pth"


def test_unknown_torchgeo_name_did_you_mean() -> None:
    with pytest.raises(WeightError, match=f"unknown TorchGeo weight.*did you mean '{TG_NAME}'"):
        torchgeo_weight("ResNet18_Weights.SENTINEL2_ALL_MOCCO")
    with pytest.raises(WeightError, match=f"did you mean '{TG_NAME}'"):
        resolve_weights("ResNet18_Weights.SENTINEL2_ALL_MOCCO")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network for this test, whatever the machine has: every urlopen fails and is recorded."""
    tried: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        tried.append(url)
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr(weights_module.urllib.request, "urlopen", refuse)
    return tried


def test_torchgeo_weight_cached_file_is_checksummed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path))
    url = torchgeo_weight(TG_NAME).url
    fake = tmp_path / "weights" / url.rsplit("/", 1)[-1]
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the real checkpoint")
    with pytest.raises(WeightError, match="checksum .* does not match the expected 59bfdff9") as err:
        create_backbone("resnet18", BandSet.parse("sentinel2-l1c:B02,B03,B04"), weights=TG_NAME, verbose=False)
    assert str(fake) in str(err.value)
    assert offline == []  # the cached copy was found: no download attempted


def test_torchgeo_weight_empty_cache_is_offline_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path))
    with pytest.raises(OfflineError) as err:
        create_backbone("resnet18", BandSet.parse("sentinel2-l1c:B02,B03,B04"), weights=TG_NAME, verbose=False)
    expected = tmp_path / "weights" / "resnet18_sentinel2_all_moco-59bfdff9.pth"
    assert str(expected) in str(err.value)
    assert offline == [torchgeo_weight(TG_NAME).url]
    assert not expected.exists()


def test_torchgeo_weight_bands_drive_the_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a checkpoint in hand (here a stand-in), the weight's band order decides which kernels are kept."""
    torch.manual_seed(7)
    state = build_network(get_architecture("resnet18"), 13).state_dict()
    ckpt = tmp_path / "stand-in.pth"
    torch.save(dict(state), ckpt)
    monkeypatch.setattr(weights_module, "download_checked", lambda url: ckpt)
    bb = create_backbone("resnet18", BandSet.parse("sentinel2-l1c:B8A,B08,B04"), weights=TG_NAME, verbose=False)
    assert bb.mapping is not None
    assert [m.source_index for m in bb.mapping.matches] == [8, 7, 3]  # B8A is 9th in the TorchGeo weight
    conv = bb.module.state_dict()["conv1.weight"]
    assert torch.equal(conv, torch.stack([state["conv1.weight"][:, i] for i in (8, 7, 3)], 1) * (13 / 3))
    assert bb.weights["source"] == "torchgeo" and bb.weights["name"] == TG_NAME


def test_every_torchgeo_catalogue_member_resolves() -> None:
    """``get_weight`` refuses some members of TorchGeo's own enums; the catalogue must still list them all."""
    from eotransfer.models.weights import list_torchgeo_weights, torchgeo_catalogue

    rows = torchgeo_catalogue()
    assert [r["name"] for r in rows] == list_torchgeo_weights()
    decur = next(r for r in rows if r["name"] == "ResNet50_Weights.SENTINEL1_GRD_DECUR")
    assert decur["in_chans"] == 2


def test_int8_round_trip_is_within_half_a_step(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from eotransfer.models.weights import INT8_SCALE, load_state_file, quantize_int8

    gen = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(8, 3, 3, 3, generator=gen), "bn.weight": torch.rand(8, generator=gen),
             "bn.num_batches_tracked": torch.tensor(5)}  # fmt: skip
    q = quantize_int8(state)
    assert q["conv.weight"].dtype == torch.int8 and q["conv.weight" + INT8_SCALE].shape == (8,)
    assert q["bn.weight"].dtype == torch.float16 and q["bn.num_batches_tracked"].item() == 5
    save_file(q, str(tmp_path / "w.safetensors"))
    back = load_state_file(tmp_path / "w.safetensors")
    assert set(back) == set(state) and back["conv.weight"].dtype == torch.float32
    step = state["conv.weight"].reshape(8, -1).abs().amax(1) / 127  # one quantisation step per output channel
    err = (back["conv.weight"] - state["conv.weight"]).reshape(8, -1).abs().amax(1)
    assert (err <= step / 2 + 1e-7).all()
    assert torch.allclose(back["bn.weight"].float(), state["bn.weight"], atol=1e-3)
