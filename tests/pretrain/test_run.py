"""``pretrain`` end to end on generated data: outputs, card, loading, resume, catalogue, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from eotransfer.bands import BandSet
from eotransfer.cli import run
from eotransfer.errors import CheckpointError, ConfigError, WeightError
from eotransfer.models.backbones import create_backbone
from eotransfer.models.catalogue import find_local, local_catalogue
from eotransfer.pretrain.run import pretrain

SMALL = {"backbone": "resnet18", "bands": "eurosat-ms", "patch_size": 16, "batch_size": 8, "hidden_dim": 32,
         "proj_dim": 16, "progress": False, "verbose": False, "accelerator": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pre") / "bb"
    result = pretrain(eurosat_like, method="moco", epochs=2, monitor=str(eurosat_like), monitor_bands="eurosat-ms",
                      monitor_per_class=4, data_licence="MIT", out=str(out), **SMALL)  # fmt: skip
    return out, result


def test_outputs_and_card(pretrained: tuple[Path, object]) -> None:
    out, result = pretrained
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "card.md",
        "history.csv",
        "history.png",
        "weights.safetensors",
    ]
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "eotransfer-backbone" and card["arch"] == "resnet18"
    assert [b["name"] for b in card["bands"]][:3] == ["B01", "B02", "B03"] and card["bands"][3][
        "wavelength_nm"
    ] == pytest.approx(664.6)
    pre = card["pretraining"]
    assert pre["method"] == "moco" and pre["epochs"] == 2 and pre["steps"] == 2 * 5  # 36 patches / 8 per batch
    assert 0.0 <= pre["monitor"]["knn_accuracy"] <= 1.0 and "linear_accuracy" in pre["monitor"]
    assert pre["data"][0]["licence"] == "MIT" and card["redistributable"] is True
    assert "CPU" in pre["hardware"] and "momentum contrast" in pre["paper"]
    hist = (out / "history.csv").read_text().splitlines()
    assert len(hist) == 3 and "knn_accuracy" in hist[0]
    assert "must NOT" not in (out / "card.md").read_text()


def test_weights_load_everywhere(pretrained: tuple[Path, object]) -> None:
    out, result = pretrained
    bb = create_backbone("resnet18", BandSet.parse("eurosat-ms"), str(out), img_size=16, verbose=False)
    trained = result.model.backbone.state_dict()  # type: ignore[attr-defined]
    for k, v in bb.module.state_dict().items():
        assert torch.equal(v, trained[k]), k
    # another band set: mapped by name from the pre-trained bands
    rgb = create_backbone("resnet18", BandSet.parse("sentinel2-l1c:B04,B03,B02"), str(out), img_size=16, verbose=False)
    assert torch.allclose(rgb.module.conv1.weight[:, 0], trained["conv1.weight"][:, 3] * 13 / 3, rtol=1e-5, atol=1e-7)


def test_half_precision_is_smaller_and_loads(
    eurosat_like: Path, tmp_path: Path, pretrained: tuple[Path, object]
) -> None:
    out = tmp_path / "half"
    pretrain(eurosat_like, method="byol", epochs=1, out=str(out), half=True, **SMALL)
    state = load_file(str(out / "weights.safetensors"))
    assert state["conv1.weight"].dtype == torch.float16
    assert (out / "weights.safetensors").stat().st_size < 0.6 * (pretrained[0] / "weights.safetensors").stat().st_size
    card = json.loads((out / "card.json").read_text())
    assert card["redistributable"] is False and card["dtype"] == "float16"
    bb = create_backbone("resnet18", BandSet.parse("eurosat-ms"), str(out), img_size=16, verbose=False)
    assert bb.module.conv1.weight.dtype == torch.float32


def test_continued_pretraining_keeps_normalisation(
    eurosat_like: Path, tmp_path: Path, pretrained: tuple[Path, object]
) -> None:
    first = json.loads((pretrained[0] / "card.json").read_text())
    out = tmp_path / "cont"
    pretrain(eurosat_like, method="moco", epochs=1, weights=str(pretrained[0]), out=str(out), **SMALL)
    card = json.loads((out / "card.json").read_text())
    assert card["pretraining"]["initialised_from"]["path"] == str(pretrained[0])
    assert card["normalization"]["mean"] == first["normalization"]["mean"]


def test_resume_matches_an_uninterrupted_run(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eotransfer.pretrain.moco import MoCo

    opts = {**SMALL, "epochs": 3, "method": "moco"}
    full = pretrain(eurosat_like, out=str(tmp_path / "full"), **opts)
    calls = {"n": 0}
    original = MoCo.after_step

    def crash(self: MoCo, model: torch.nn.Module, progress: float) -> None:
        calls["n"] += 1
        if calls["n"] == 12:  # in the third epoch (5 steps per epoch)
            raise KeyboardInterrupt
        original(self, model, progress)

    monkeypatch.setattr(MoCo, "after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain(eurosat_like, out=str(tmp_path / "cut"), **opts)
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(MoCo, "after_step", original)
    with pytest.raises(CheckpointError, match="'pretrain:moco' run, not 'pretrain:byol'"):
        pretrain(eurosat_like, out=str(tmp_path / "cut"), resume=True, **{**opts, "method": "byol"})
    resumed = pretrain(eurosat_like, out=str(tmp_path / "cut"), resume=True, **opts)
    a, b = full.model.backbone.state_dict(), resumed.model.backbone.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input(eurosat_like: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--batch-size 64 is larger than the pool"):
        pretrain(eurosat_like, out=str(tmp_path / "x"), **{**SMALL, "batch_size": 64})
    with pytest.raises(ConfigError, match="--method: unknown pre-training method 'simclr'"):
        pretrain(eurosat_like, out=str(tmp_path / "x"), method="simclr", **SMALL)
    with pytest.raises(ConfigError, match="--out"):
        pretrain(eurosat_like, **SMALL)
    with pytest.raises(ConfigError, match="--data-licence: 2 licences for 1 sources"):
        pretrain(eurosat_like, out=str(tmp_path / "x"), epochs=1, data_licence="MIT,MIT", **SMALL)
    assert not (tmp_path / "x").exists()


def test_catalogue_register_and_resolve(eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path / "cache"))
    code = run(["pretrain", str(eurosat_like), "--out", str(tmp_path / "m"), "--register", "tiny-s2", "--epochs", "1",
                "--bands", "eurosat-ms", "--patch-size", "16", "--batch-size", "8", "--hidden-dim", "32",
                "--proj-dim", "16", "--no-progress", "--no-verbose", "--accelerator", "cpu", "--method", "byol"])  # fmt: skip
    assert code == 0
    assert find_local("eotransfer:tiny-s2") == tmp_path / "cache" / "catalogue" / "tiny-s2"
    row = next(r for r in local_catalogue() if r["name"] == "eotransfer:tiny-s2")
    assert row["method"] == "byol" and row["n_bands"] == 13 and row["where"] == "user"
    bb = create_backbone("resnet18", BandSet.parse("eurosat-ms"), "eotransfer:tiny-s2", img_size=16, verbose=False)
    assert bb.weights["source"] == "catalogue"
    with pytest.raises(WeightError, match="no 'eotransfer:tiny-s3' in the local catalogue.*tiny-s2"):
        create_backbone("resnet18", BandSet.parse("eurosat-ms"), "eotransfer:tiny-s3", img_size=16, verbose=False)


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_two_step_run_for_each_method(eurosat_like: Path, tmp_path: Path, method: str) -> None:
    """Two optimisation steps: two epochs over a pool of 8 patches drawn from the 36 samples, one batch each."""
    result = pretrain(eurosat_like, out=str(tmp_path / method), method=method, epochs=2, patches=8,
                      **{**SMALL, "batch_size": 8})  # fmt: skip
    card = result.card["pretraining"]
    assert card["method"] == method and card["steps"] == 2 and len(result.history) == 2
    assert all(np.isfinite(row["train_loss"]) for row in result.history)


@pytest.mark.integration
def test_loss_decreases_on_real_eurosat(tmp_path: Path) -> None:
    """A short real run on a slice of EuroSAT-MS: the contrastive loss falls."""
    eurosat = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eurosat-ms"
    if not eurosat.is_dir():
        pytest.skip("../shared/data/eurosat-ms is not available")
    result = pretrain(eurosat, out=str(tmp_path / "real"), method="moco", epochs=8, patches=48, temperature=0.5,
                      **{**SMALL, "patch_size": 32, "batch_size": 24, "lr": 3e-3})  # fmt: skip
    losses = [row["train_loss"] for row in result.history]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05, losses


def test_int8_storage_is_a_quarter_and_loads(
    eurosat_like: Path, tmp_path: Path, pretrained: tuple[Path, object]
) -> None:
    out = tmp_path / "int8"
    result = pretrain(eurosat_like, method="byol", epochs=1, out=str(out), int8=True, **SMALL)
    assert (out / "weights.safetensors").stat().st_size < 0.3 * (pretrained[0] / "weights.safetensors").stat().st_size
    assert json.loads((out / "card.json").read_text())["dtype"] == "int8"
    bb = create_backbone("resnet18", BandSet.parse("eurosat-ms"), str(out), img_size=16, verbose=False)
    trained = result.model.backbone.state_dict()  # type: ignore[attr-defined]
    w, ref = bb.module.conv1.weight.detach(), trained["conv1.weight"]
    assert w.dtype == torch.float32 and torch.allclose(w, ref, atol=float(ref.abs().max()) / 127)
