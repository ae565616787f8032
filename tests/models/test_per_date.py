"""Per-date (siamese) encoding of a pre/post stack: dates from the band set, shared weights, change features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eotransfer.bands import BandSet
from eotransfer.data.formats.xbd import pre_disaster_bands
from eotransfer.errors import BandError, ConfigError
from eotransfer.models.backbones import create_backbone
from eotransfer.models.per_date import PerDateEncoder, date_groups
from eotransfer.models.stages import backbone_stages, match_params

STACK = BandSet(pre_disaster_bands().bands + BandSet.parse("rgb").bands)
WEIGHTS = "eotransfer:eurosat-s2-resnet10t-moco"
XBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "xbd"


def test_dates_are_the_bands_that_share_a_common_name() -> None:
    assert date_groups(STACK) == [[0, 1, 2], [3, 4, 5]]
    swapped = BandSet(BandSet.parse("rgb").bands + pre_disaster_bands().bands)
    assert date_groups(swapped) == [[0, 1, 2], [3, 4, 5]]  # the stack's order is the dates' order
    with pytest.raises(BandError, match=r"--per-date: .* hold one date, no band repeats"):
        date_groups(BandSet.parse("rgb"))
    # two sensors at one date share common names, not band definitions: not two dates
    with pytest.raises(BandError, match=r"hold one date"):
        date_groups(
            BandSet(BandSet.parse("sentinel2-l1c:B02,B03,B04").bands + BandSet.parse("landsat8:B2,B3,B4").bands)
        )
    with pytest.raises(BandError, match=r"repeat unevenly \(red: 2; green: 2; blue: 2; nir: 1\)"):
        date_groups(BandSet(STACK.bands + BandSet.parse("sentinel2-l1c:B08").bands))


@torch.no_grad()
def test_one_encoder_per_date_and_the_change_reaches_the_head() -> None:
    bb = create_backbone("resnet10t", STACK, WEIGHTS, None, 32, 0, False, per_date=True)
    assert isinstance(bb.module, PerDateEncoder) and bb.num_features == 2 * 512 == bb.module.num_features
    assert bb.mapping is not None and not bb.mapping.shared_kernels  # one kernel per band of one date
    assert [m.source for m in bb.mapping.matches] == ["sentinel2-l1c:B04", "sentinel2-l1c:B03", "sentinel2-l1c:B02"]
    net = bb.module.eval()
    x = torch.randn(3, 6, 32, 32, generator=torch.Generator().manual_seed(0))
    f = net(x)
    pre, post = net.encoder(x[:, :3]), net.encoder(x[:, 3:])
    torch.testing.assert_close(f, torch.cat([post, post - pre], 1), atol=1e-5, rtol=1e-5)
    # the stack on the same weights cannot tell the dates apart; the per-date encoder can
    stacked = create_backbone("resnet10t", STACK, WEIGHTS, None, 32, 0, False).module.eval()
    swap = x[:, [3, 4, 5, 0, 1, 2]]
    assert float((stacked(x) - stacked(swap)).abs().max()) < 1e-4
    assert float((net(x) - net(swap)).abs().mean()) > 0.01


@torch.no_grad()
def test_a_stage_embedding_of_a_per_date_network_is_built_per_date() -> None:
    from eotransfer.evaluation.classical import embedding_fn, embedding_stages
    from eotransfer.models.model import EOClassifier

    bb = create_backbone("resnet10t", STACK, None, None, 32, 0, False, per_date=True)
    model = EOClassifier(bb.module, bb.num_features, 2, len(STACK)).eval()
    assert embedding_stages(model.backbone) == ["pooled", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(3, 6, 32, 32, generator=torch.Generator().manual_seed(1))
    captured: list[torch.Tensor] = []
    handle = bb.module.encoder.layer3.register_forward_hook(lambda _m, _i, out: captured.append(out.mean((2, 3))))
    assert not model.normalize.center.any() and bool((model.normalize.scale == 1).all())  # identity: not fitted
    for date in (x[:, :3], x[:, 3:]):
        bb.module.encoder(date)  # the encoder alone on one date's bands
    handle.remove()
    pre, post = captured
    got = embedding_fn(model, "layer3")(x)
    assert got.shape == (3, 2 * pre.shape[1])
    torch.testing.assert_close(got, torch.cat([post, post - pre], 1), atol=1e-5, rtol=1e-5)


def test_stages_and_freezing_reach_through_to_the_encoder() -> None:
    plain = create_backbone("resnet10t", BandSet.parse("rgb"), None, None, 32, 0, False).module
    wrapped = create_backbone("resnet10t", STACK, None, None, 32, 0, False, per_date=True).module
    assert [s for s, _ in backbone_stages(wrapped)] == [s for s, _ in backbone_stages(plain)]
    hits = match_params(wrapped, ["layer4"])
    assert hits and all(n.startswith("encoder.layer4.") for n in hits)


@pytest.mark.skipif(not XBD.is_dir(), reason="../shared/data/xbd not available")
def test_fit_saves_a_per_date_model_that_loads_and_predicts_the_same(tmp_path: Path) -> None:
    from eotransfer import api
    from eotransfer.card import load_model

    opts = {"patch_size": 32, "merge_classes": "damaged=minor-damage+major-damage+destroyed"}
    res = api.fit(str(XBD), strategy="linear-probe", backbone="resnet10t", weights=WEIGHTS, per_date=True,
                  labels_per_class=3, val_per_class=0, epochs=2, seed=0, out=str(tmp_path / "m"), verbose=False,
                  progress=False, **opts)  # fmt: skip
    saved = load_model(tmp_path / "m")
    assert saved.card["network"] == {"builder": "per_date", "arch": "resnet10t", "dates": [[0, 1, 2], [3, 4, 5]],
                                     "encoder_features": 512}  # fmt: skip
    assert saved.card["fit"]["per_date"] is True and saved.card["num_features"] == 1024
    assert ("- **per date**: one resnet10t run on each of 2 dates (rgb-pre:pre_red, rgb-pre:pre_green, rgb-pre:pre_blue; "
            "rgb:red, rgb:green, rgb:blue)") in (tmp_path / "m" / "card.md").read_text()  # fmt: skip
    assert isinstance(saved.network.backbone, PerDateEncoder)
    images = np.stack([api.load_data(api.FitConfig(data=str(XBD), **opts)).read(i) for i in range(4)])
    res.model.eval()
    with torch.no_grad():
        expected = torch.softmax(res.model(torch.from_numpy(images).float()), 1).numpy()
    np.testing.assert_allclose(saved.predict_proba(images), expected, atol=1e-5)
    # scored by evaluate (the card's band keys name xBD's own bands; chips cut at the card's training size, 32 px,
    # when no patch_size is given); a single date fills both dates: warned
    scored = api.evaluate(tmp_path / "m", str(XBD), split="stratified", labels_per_class=3, val_per_class=0, seed=0,
                          merge_classes=opts["merge_classes"])  # fmt: skip
    assert (
        scored["n"] == res.metrics["test"]["n"]
        and scored["overall_accuracy"] == res.metrics["test"]["overall_accuracy"]
    )
    with pytest.warns(UserWarning, match=r"data band rgb:red fills the model bands rgb-pre:pre_red, rgb:red"):
        api.evaluate(tmp_path / "m", str(XBD), use_bands="rgb:red,rgb:green,rgb:blue", verbose=False, **opts)
    # as --weights: the shared encoder, for one date's bands
    again = create_backbone("resnet10t", STACK, str(tmp_path / "m"), None, 32, 0, False, per_date=True).module
    assert isinstance(again, PerDateEncoder)
    for key, value in again.encoder.state_dict().items():
        torch.testing.assert_close(value, saved.network.backbone.encoder.state_dict()[key])
    with pytest.raises(ConfigError, match=r"--previous: .* holds a 'per_date' network; progressive networks grow"):
        api.fit(str(XBD), strategy="progressive", previous=str(tmp_path / "m"), backbone="resnet10t",
                labels_per_class=3, verbose=False, progress=False, **opts)  # fmt: skip
