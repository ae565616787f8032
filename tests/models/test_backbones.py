"""The backbone registry: every architecture builds for any band count; weights load with mapped kernels."""

from __future__ import annotations

import pytest
import torch

from eotransfer.bands import BandSet
from eotransfer.errors import ConfigError, WeightError
from eotransfer.models.backbones import (
    ARCHITECTURES,
    build_network,
    create_backbone,
    get_architecture,
    load_into,
)

S2 = BandSet.parse("sentinel2-l1c")
BGR = BandSet.parse("sentinel2-l1c:B04,B03,B02")  # red, green, blue: the reverse of S2's order
EXPECTED_FEATURES = {
    "resnet10t": 512,
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "regnetx_004": 384,
    "convnext_atto": 320,
    "convnext_tiny": 768,
    "vit_small_patch16_224": 384,
    "vit_tiny_patch16_224": 192,
}


def test_registry_lists_the_documented_architectures() -> None:
    # band-stats: 7 statistics per band, no first layer (tests/models/test_band_statistics.py)
    assert set(ARCHITECTURES) == set(EXPECTED_FEATURES) | {"band-stats"}


@pytest.mark.parametrize("name", sorted(EXPECTED_FEATURES))
def test_every_architecture_builds_for_13_and_3_bands(name: str) -> None:
    torch.manual_seed(0)
    for bands in (S2, BGR):
        bb = create_backbone(name, bands, img_size=32, verbose=False)
        assert bb.num_features == EXPECTED_FEATURES[name]
        assert bb.weights == {"source": "none"} and bb.mapping is None
        first = bb.module.state_dict()[bb.arch.first_conv]
        assert first.shape[1] == len(bands)
        bb.module.eval()
        with torch.no_grad():
            feats = bb.module(torch.randn(2, len(bands), 32, 32))
        assert feats.shape == (2, bb.num_features)
        assert torch.isfinite(feats).all()


def test_registered_stages_exist() -> None:
    for arch in ARCHITECTURES.values():
        if arch.name in ("resnet50", "convnext_tiny", "vit_small_patch16_224"):
            continue  # same families as the light ones; skipped for speed
        names = {n for n, _ in build_network(arch, 3, 32).named_modules()}
        missing = [s for s in arch.stages if s not in names]
        assert not missing, f"{arch.name}: stages {missing} are not modules"


def test_create_backbone_is_seeded() -> None:
    a = create_backbone("resnet18", BGR, seed=3, verbose=False).module.state_dict()
    b = create_backbone("resnet18", BGR, seed=3, verbose=False).module.state_dict()
    c = create_backbone("resnet18", BGR, seed=4, verbose=False).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


@pytest.mark.parametrize("bad", ["resnet19", "resnet-18", "convnext_ato"])
def test_unknown_backbone_did_you_mean(bad: str) -> None:
    with pytest.raises(ConfigError, match=f"--backbone: unknown backbone '{bad}'.*did you mean"):
        get_architecture(bad)
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create_backbone("resnet19", BGR)


def _source_state(name: str, n_in: int = 13, img_size: int | None = 32) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return {k: v.clone() for k, v in build_network(get_architecture(name), n_in, img_size).state_dict().items()}


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "vit_tiny_patch16_224"])
def test_load_13_band_weights_into_3_band_network(name: str) -> None:
    arch = get_architecture(name)
    src = _source_state(name)
    target = build_network(arch, 3, 32)
    mapping = load_into(target, arch, src, S2, BGR, policy=None)
    assert [m.source_index for m in mapping.matches] == [3, 2, 1]  # B04, B03, B02 of the weights
    assert mapping.scale == pytest.approx(13 / 3)
    got = target.state_dict()
    w_src = src[arch.first_conv]
    for j, i in enumerate((3, 2, 1)):
        assert torch.equal(got[arch.first_conv][:, j], w_src[:, i] * (13 / 3))
    # everything else is copied unchanged
    others = [k for k in src if k != arch.first_conv]
    assert others and all(torch.equal(got[k], src[k]) for k in others)


def test_create_backbone_from_local_weights_maps_kernels(tmp_path) -> None:
    import json

    from safetensors.torch import save_file

    src = _source_state("resnet18")
    src["fc.weight"], src["fc.bias"] = torch.randn(10, 512), torch.randn(10)  # a pre-training classifier
    save_file(src, str(tmp_path / "weights.safetensors"))
    (tmp_path / "card.json").write_text(json.dumps({"arch": "resnet18", "bands": S2.keys}))
    bb = create_backbone("resnet18", BGR, weights=str(tmp_path), verbose=False)
    assert bb.mapping is not None and bb.weights["source"] == "file" and bb.weights["bands"] == S2.keys
    conv = bb.module.state_dict()["conv1.weight"]
    assert torch.equal(conv, torch.stack([src["conv1.weight"][:, i] for i in (3, 2, 1)], 1) * (13 / 3))
    assert torch.equal(bb.module.state_dict()["layer4.1.bn2.running_var"], src["layer4.1.bn2.running_var"])


def test_vit_position_embedding_is_resampled() -> None:
    arch = get_architecture("vit_tiny_patch16_224")
    src = _source_state(arch.name, img_size=64)  # a 4x4 patch grid
    target = build_network(arch, 3, 32)  # a 2x2 patch grid
    assert src["pos_embed"].shape == (1, 17, 192)
    load_into(target, arch, src, S2, BGR, policy=None)
    pos = target.state_dict()["pos_embed"]
    assert pos.shape == (1, 5, 192)
    assert torch.equal(pos[:, 0], src["pos_embed"][:, 0])  # the class token's embedding is kept


@pytest.mark.parametrize("key", ["layer4.1.bn2.weight", "layer3.0.downsample.1.running_mean", "bn1.bias"])
def test_missing_keys_raise_never_silent_init(key: str) -> None:
    arch = get_architecture("resnet18")
    src = _source_state("resnet18")
    del src[key]
    with pytest.raises(WeightError, match=r"lack 1 parameter\(s\) of resnet18") as err:
        load_into(build_network(arch, 3, 32), arch, src, S2, BGR, policy=None)
    assert key in str(err.value) and "randomly initialised" in str(err.value)


def test_missing_first_layer() -> None:
    src = _source_state("resnet18")
    del src["conv1.weight"]
    with pytest.raises(WeightError, match="no 'conv1.weight'"):
        load_into(build_network(get_architecture("resnet18"), 3), get_architecture("resnet18"), src, S2, BGR, None)


def test_card_band_count_must_match_the_file() -> None:
    src = _source_state("resnet18")
    arch = get_architecture("resnet18")
    with pytest.raises(WeightError, match="takes 13 channels but their card lists 3 bands"):
        load_into(build_network(arch, 3), arch, src, BandSet.parse("rgb"), BGR, None)


def test_unexpected_keys_raise_but_classifier_is_dropped() -> None:
    arch = get_architecture("resnet18")
    src = _source_state("resnet18")
    src["fc.weight"], src["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    load_into(build_network(arch, 3, 32), arch, dict(src), S2, BGR, None)  # a classifier head is dropped
    src["projector.0.weight"] = torch.zeros(4, 4)
    with pytest.raises(WeightError, match="does not have.*projector.0.weight"):
        load_into(build_network(arch, 3, 32), arch, src, S2, BGR, None)


def test_shape_mismatch_names_the_key() -> None:
    arch = get_architecture("resnet18")
    src = _source_state("resnet18")
    src["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(WeightError, match=r"shape mismatch for layer1\.0\.conv1\.weight"):
        load_into(build_network(arch, 3, 32), arch, src, S2, BGR, None)


def test_weights_of_another_architecture_are_refused() -> None:
    src = _source_state("resnet34")  # same key names as resnet18 plus more blocks
    arch = get_architecture("resnet18")
    with pytest.raises(WeightError, match="does not have"):
        load_into(build_network(arch, 3, 32), arch, src, S2, BGR, None)


@pytest.mark.parametrize("name", ["convnext_atto", "vit_tiny_patch16_224"])
def test_images_below_the_minimum_size_are_refused(name: str) -> None:
    arch = get_architecture(name)
    small = arch.min_img_size // 2
    with pytest.raises(
        ConfigError, match=f"needs images of at least {arch.min_img_size} px, the data's are {small} px"
    ):
        create_backbone(name, BGR, img_size=small, verbose=False)
    assert create_backbone(name, BGR, img_size=arch.min_img_size, verbose=False).num_features > 0


def test_convnext_minimum_size_is_real() -> None:
    net = build_network(get_architecture("convnext_atto"), 3).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 320)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, 16, 16))  # what users would see without the check
