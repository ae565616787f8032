"""FGSM and PGD in reflectance units: budgets, valid ranges, masked pixels, strength; ``evaluate --attack``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import eotransfer
from eotransfer.bands import BandSet
from eotransfer.cli import main
from eotransfer.errors import ConfigError
from eotransfer.evaluation.attacks import (
    band_range,
    fgsm,
    make_budget,
    margin_sum,
    parse_eps,
    pgd,
    robust_accuracy,
    square,
    true_margin,
)
from eotransfer.models.model import EOClassifier

N_BANDS = 4
BANDS = BandSet.parse("sentinel2-l1c:B02,B03,B04,B08")


def mean_model(n_classes: int = 2) -> EOClassifier:
    """Normalise → per-band spatial mean → linear head: an input gradient one can compute by hand."""
    return EOClassifier(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), N_BANDS, n_classes, N_BANDS)


def conv_model(seed: int = 0) -> EOClassifier:
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(N_BANDS, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return EOClassifier(backbone, 8, 2, N_BANDS)


def two_class_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reflectance ×10⁴ images; class 1 is 60 DN brighter in every band (noise 100 DN per pixel)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    base = torch.tensor([1000.0, 900.0, 800.0, 2300.0]).view(1, -1, 1, 1)
    x = base + 60.0 * y.view(-1, 1, 1, 1) + 100.0 * torch.randn(n, N_BANDS, 8, 8, generator=g)
    return x, y


@pytest.fixture(scope="module")
def trained() -> tuple[EOClassifier, torch.Tensor, torch.Tensor]:
    x, y = two_class_data()
    model = conv_model()
    model.normalize.center.copy_(x.mean((0, 2, 3)).view(1, -1, 1, 1))
    model.normalize.scale.copy_(x.std((0, 2, 3)).view(1, -1, 1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x, y


EPS = torch.tensor([10.0, 20.0, 30.0, 40.0])
LO = torch.tensor([600.0, 500.0, 400.0, 1900.0])
HI = torch.tensor([1300.0, 1200.0, 1100.0, 2600.0])


def _check_budget(x: torch.Tensor, x_adv: torch.Tensor) -> None:
    delta = (x_adv - x).abs().amax((0, 2, 3))
    assert torch.all(delta <= EPS + 1e-3), delta
    inside = (x >= LO.view(1, -1, 1, 1)) & (x <= HI.view(1, -1, 1, 1))
    ok_lo = x_adv >= torch.minimum(LO.view(1, -1, 1, 1), x)
    ok_hi = x_adv <= torch.maximum(HI.view(1, -1, 1, 1), x)
    assert bool((ok_lo & ok_hi).all())
    assert bool(((x_adv >= LO.view(1, -1, 1, 1)) & (x_adv <= HI.view(1, -1, 1, 1)))[inside].all())


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_perturbation_within_budget_and_range_per_band(trained: tuple, attack: str) -> None:
    model, x, y = trained
    x = x.clone()
    x[0, 0, :2, :2] = LO[0] + 3.0  # near the edge: clipping must bite
    x[1, 3, 0, 0] = HI[3] + 500.0  # already outside the range: not pushed further out, not moved more than ε
    if attack == "fgsm":
        x_adv = fgsm(model, x, y, EPS, LO, HI)
    else:
        x_adv = pgd(model, x, y, EPS, LO, HI, steps=5, generator=torch.Generator().manual_seed(0))
    _check_budget(x, x_adv)
    assert x_adv[1, 3, 0, 0] >= HI[3] + 500.0 - EPS[3] and x_adv[1, 3, 0, 0] <= HI[3] + 500.0
    assert (x_adv - x).abs().amax() > 0  # it did perturb


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_masked_pixels_stay_nan_and_model_state_is_untouched(trained: tuple, attack: str) -> None:
    model, x, y = trained
    x = x.clone()
    x[:, 1, 2:5, 2:5] = float("nan")
    model.train()
    model.backbone[1].eval()  # a submodule's own mode must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if attack == "fgsm":
        x_adv = fgsm(model, x, y, EPS, LO, HI)
    else:
        x_adv = pgd(model, x, y, EPS, LO, HI, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.isnan(x_adv), torch.isnan(x))
    assert model.training and not model.backbone[1].training and model.backbone[0].training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too
    model.eval()


def test_fgsm_matches_hand_computed_step() -> None:
    """Mean model: ∂CE/∂x for true class 0 has the sign of (W₁ − W₀)/scale in every pixel of a band."""
    model = mean_model()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 2.0, -0.5]]))
        model.head.bias.zero_()
    x = torch.full((1, N_BANDS, 4, 4), 1000.0)
    x[0, 3] = 2000.0
    y = torch.tensor([0])
    x_adv = fgsm(model, x, y, EPS, LO, HI)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, -1, 1, 1)
    expected = torch.clamp(x + sign * EPS.view(1, -1, 1, 1), LO.view(1, -1, 1, 1), HI.view(1, -1, 1, 1))
    assert torch.equal(x_adv, expected)  # within the range: no clipping here
    assert x_adv[0, :, 0, 0].tolist() == [1010.0, 980.0, 1030.0, 1960.0]


def test_attacks_raise_the_loss_and_pgd_is_at_least_as_strong(trained: tuple) -> None:
    model, x, y = trained
    eps = 40.0  # 0.004 reflectance, 40 % of the pixel noise: FGSM and PGD both succeed only in part
    lo, hi = x.amin((0, 2, 3)), x.amax((0, 2, 3))
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        x_f = fgsm(model, x, y, eps, lo, hi)
        x_p = pgd(model, x, y, eps, lo, hi, steps=10, generator=torch.Generator().manual_seed(1))
        loss_f, loss_p = F.cross_entropy(model(x_f), y).item(), F.cross_entropy(model(x_p), y).item()
    assert clean < 0.3  # the model did learn the fixture
    assert loss_f > clean + 0.5
    assert loss_p >= loss_f


def test_pgd_is_reproducible_from_its_generator(trained: tuple) -> None:
    model, x, y = trained
    # small steps, so the random start is not washed out by steps that reach the edge of the ball
    a = pgd(model, x, y, EPS, LO, HI, steps=2, step_size=EPS / 10, generator=torch.Generator().manual_seed(3))
    b = pgd(model, x, y, EPS, LO, HI, steps=2, step_size=EPS / 10, generator=torch.Generator().manual_seed(3))
    c = pgd(model, x, y, EPS, LO, HI, steps=2, step_size=EPS / 10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_margin_values_by_hand() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, -1.0]])
    y = torch.tensor([0, 2])
    assert true_margin(logits, y).tolist() == [0.5, -5.0]  # 3 − 2.5; −1 − 4
    assert margin_sum(logits, y).item() == 4.5


def saturated_model() -> EOClassifier:
    """The mean model with logits in the thousands (as a prototype head's squared distances): softmax saturates."""
    model = mean_model()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]) * 400.0)
        model.head.bias.zero_()
    return model.eval()


def saturated_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 images, 3 to 15 DN above the normalisation centre (0): correct, with margins of 48·d/scale."""
    model = saturated_model()
    offsets = torch.linspace(3.0, 15.0, 16).view(-1, 1, 1, 1)
    x = model.normalize.center + offsets * torch.ones(16, N_BANDS, 4, 4)
    return x, torch.zeros(16, dtype=torch.long)


def test_a_saturated_softmax_hides_from_cross_entropy_pgd_but_not_from_margin_or_square() -> None:
    """Gradient masking (Athalye et al. 2018): CE's input gradient underflows to 0; the margin's and a search's do not."""
    model, (x, y) = saturated_model(), saturated_data()
    with torch.no_grad():
        assert bool((model(x).argmax(1) == 0).all()) and float(true_margin(model(x), y).min()) > 100
    eps, lo, hi = 20.0, -1e4, 1e4  # every image is within 15 DN of the boundary: 20 DN flips all of them
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ce = pgd(model, x, y, eps, lo, hi, steps=10, random_start=False, generator=gen)
        margin = pgd(model, x, y, eps, lo, hi, steps=10, random_start=False, loss_fn=margin_sum)
        found = square(model, x, y, eps, lo, hi, queries=400, generator=gen)
        assert torch.equal(ce, x)  # a zero gradient's sign is 0: PGD never moved
        assert int((model(margin).argmax(1) == 0).sum()) == 0
        assert int((model(found).argmax(1) == 0).sum()) == 0


def test_square_keeps_the_budget_range_and_mask_and_is_reproducible(trained: tuple) -> None:
    model, x, y = trained
    x = x.clone()
    x[0, 0, :2, :2] = LO[0] + 3.0
    x[1, 3, 0, 0] = HI[3] + 500.0
    x[:, 1, 2:5, 2:5] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = square(model, x, y, EPS, LO, HI, queries=40, generator=torch.Generator().manual_seed(5))
    b = square(model, x, y, EPS, LO, HI, queries=40, generator=torch.Generator().manual_seed(5))
    c = square(model, x, y, EPS, LO, HI, queries=40, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.isnan(a), torch.isnan(x))
    xs, as_ = torch.nan_to_num(x), torch.nan_to_num(a)
    _check_budget(xs, as_)
    assert torch.equal(a.nan_to_num(), b.nan_to_num()) and not torch.equal(a.nan_to_num(), c.nan_to_num())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_square_only_accepts_what_lowers_the_margin(trained: tuple) -> None:
    """More queries never leave a sample with a larger margin than fewer did (the search keeps its best)."""
    model, x, y = trained
    eps, lo, hi = 40.0, x.amin((0, 2, 3)), x.amax((0, 2, 3))
    with torch.no_grad():
        first = true_margin(
            model(square(model, x, y, eps, lo, hi, queries=1, generator=torch.Generator().manual_seed(2))), y
        )
        later = true_margin(
            model(square(model, x, y, eps, lo, hi, queries=60, generator=torch.Generator().manual_seed(2))), y
        )
        clean = true_margin(model(x), y)
    assert bool((later <= first + 1e-5).all()) and float(later.mean()) < float(first.mean())
    assert float(later.mean()) < float(clean.mean())
    with pytest.raises(ConfigError, match="--queries: 0 must be at least 1"):
        square(model, x, y, eps, lo, hi, queries=0)


def test_parse_eps_syntax() -> None:
    assert parse_eps("0.01") == (0.01, {})
    assert parse_eps("B04=0.01, B08=0.02") == (None, {"B04": 0.01, "B08": 0.02})
    assert parse_eps("0.005,B10=0.0005") == (0.005, {"B10": 0.0005})
    with pytest.raises(ConfigError, match="^--eps: 'abc' is not a number"):
        parse_eps("abc")
    with pytest.raises(ConfigError, match="^--eps: '-0.1' must be a positive budget"):
        parse_eps("-0.1")
    with pytest.raises(ConfigError, match="^--eps: '0' must be a positive"):
        parse_eps("0")
    with pytest.raises(ConfigError, match="^--eps: two budgets"):
        parse_eps("0.1,0.2")


def test_make_budget_converts_reflectance_to_data_units() -> None:
    lo, hi = np.array([0.0, 0.0, 0.0, 0.0]), np.array([3000.0, 3000.0, 3000.0, 8000.0])
    b = make_budget("0.001,B08=0.02", BANDS, lo, hi)  # max 8000 → guessed 10⁴ data units per reflectance
    assert b.value_per_reflectance == 10000.0
    assert b.eps.tolist() == pytest.approx([10.0, 10.0, 10.0, 200.0])
    b8 = make_budget("B03=0.01", BANDS, lo, hi / 40, value_per_reflectance=255.0)
    assert b8.eps.tolist() == pytest.approx([0.0, 2.55, 0.0, 0.0])  # unnamed bands are not perturbed
    d = b.to_dict(BANDS.names)
    assert d["eps_reflectance"]["B08"] == 0.02 and d["range_data_units"]["B08"] == [0.0, 8000.0]


def test_budget_beyond_a_bands_range_is_refused() -> None:
    lo, hi = np.array([0.0, 0.0, 0.0, 5.0]), np.array([3000.0, 3000.0, 3000.0, 45.0])
    with pytest.raises(ConfigError, match=r"^--eps: 0.01 reflectance \(100 data units.*range of band B08 \(5..45\)"):
        make_budget("0.01", BANDS, lo, hi)
    make_budget("0.01,B08=0.004", BANDS, lo, hi)  # 40 DN fits the 40 DN range
    with pytest.raises(ConfigError, match=r"e\.g\. --eps 0\.01,B02=0\.001,B08=0\.0004$"):
        make_budget("0.01,B02=0.001,B08=0.02", BANDS, lo, hi)
    with pytest.raises(ConfigError, match="^--eps: band 'B09' is not in this band set"):
        make_budget("B09=0.01", BANDS, lo, hi)


def test_band_range_ignores_masked_pixels() -> None:
    imgs = [np.array([[[1.0, np.nan]], [[5.0, 7.0]]]), np.array([[[-2.0, 3.0]], [[np.nan, 9.0]]])]
    lo, hi = band_range(lambda i: imgs[i], [0, 1])
    assert lo.tolist() == [-2.0, 5.0] and hi.tolist() == [3.0, 9.0]


def test_robust_accuracy_on_the_trained_model(trained: tuple) -> None:
    model, x, y = trained
    arr = x.numpy()
    lo, hi = band_range(lambda i: arr[i], range(len(arr)))
    small = make_budget("0.0001", BANDS, lo, hi)  # 1 DN against 100 DN of noise
    large = make_budget("0.02", BANDS, lo, hi)  # 200 DN: far more than the 60 DN class signal
    r_small = robust_accuracy(model, lambda i: arr[i], np.arange(len(arr)), y.numpy(), small, "pgd", steps=5)
    r_large = robust_accuracy(model, lambda i: arr[i], np.arange(len(arr)), y.numpy(), large, "pgd", steps=5)
    assert r_small["clean_accuracy"] == r_large["clean_accuracy"] > 0.9
    assert r_small["robust_accuracy"] > 0.8 and r_large["robust_accuracy"] < 0.1
    assert r_large["n"] == len(arr) and r_large["steps"] == 5
    with pytest.raises(ConfigError, match="^--attack: 'cw' is not one of fgsm, pgd"):
        robust_accuracy(model, lambda i: arr[i], [0], y.numpy()[:1], small, "cw")


@pytest.fixture
def saved(probe_model: Path) -> Path:
    return probe_model


def test_evaluate_with_attack_reports_robust_accuracy(saved: Path, eurosat_like: Path) -> None:
    m = eotransfer.evaluate(saved, eurosat_like, attack="pgd", eps="0.002", pgd_steps=2)
    a = m["attack"]
    assert a["clean_accuracy"] == pytest.approx(m["overall_accuracy"])
    assert 0.0 <= a["robust_accuracy"] <= 1.0 and a["n"] == m["n"] == 36 and a["steps"] == 2
    assert a["value_per_reflectance"] == 10000.0 and a["eps_data_units"]["B10"] == pytest.approx(20.0)
    lo, hi = a["range_data_units"]["B01"]
    assert 0 < lo < 1200 < hi < 2000  # the fixture's B01 lies around 1200 DN (± class offsets and noise)
    with pytest.raises(ConfigError, match="^--attack fgsm: needs --eps"):
        eotransfer.evaluate(saved, eurosat_like, attack="fgsm")
    with pytest.raises(ConfigError, match="^--eps: give --attack"):
        eotransfer.evaluate(saved, eurosat_like, eps="0.01")
    with pytest.raises(ConfigError, match="^--eps: 0.5 reflectance"):
        eotransfer.evaluate(saved, eurosat_like, attack="fgsm", eps="0.5")


def test_evaluate_with_the_margin_loss_and_the_square_attack(saved: Path, eurosat_like: Path) -> None:
    ce = eotransfer.evaluate(saved, eurosat_like, attack="pgd", eps="0.002", pgd_steps=2)["attack"]
    mg = eotransfer.evaluate(saved, eurosat_like, attack="pgd", eps="0.002", pgd_steps=2, loss="margin")["attack"]
    sq = eotransfer.evaluate(saved, eurosat_like, attack="square", eps="0.002", queries=30)["attack"]
    assert (ce["loss"], mg["loss"], sq["loss"]) == ("ce", "margin", "margin")
    assert sq["steps"] == 30 and sq["clean_accuracy"] == ce["clean_accuracy"] == mg["clean_accuracy"]
    assert 0.0 <= sq["robust_accuracy"] <= sq["clean_accuracy"] and mg["robust_accuracy"] <= mg["clean_accuracy"]
    with pytest.raises(ConfigError, match="^--attack-loss: 'hinge' is not one of ce, margin"):
        eotransfer.evaluate(saved, eurosat_like, attack="pgd", eps="0.002", loss="hinge")


def test_cli_evaluate_attack(saved: Path, eurosat_like: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(saved), str(eurosat_like), "--attack", "fgsm", "--eps", "0.001", "--json"])
    assert exc.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["attack"]["attack"] == "fgsm" and out["attack"]["eps_reflectance"]["B02"] == 0.001
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(saved), str(eurosat_like), "--attack", "pgd", "--eps", "1.0"])
    assert exc.value.code == 2
    assert "eotransfer: error: --eps: 1 reflectance" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(saved), str(eurosat_like), "--attack", "square", "--queries", "5", "--eps", "0.001"])
    assert exc.value.code == 0
    assert "square (steps 5, margin loss, eps 0.001 reflectance)" in capsys.readouterr().out


def test_a_linear_scikit_learn_head_is_attacked_through_its_folded_head(eurosat_like: Path, tmp_path: Path) -> None:
    fit = {"bands": "eurosat-ms", "strategy": "feature-extraction", "backbone": "resnet18", "accelerator": "cpu",
           "progress": False, "verbose": False}  # fmt: skip
    eotransfer.fit(eurosat_like, classifier="logreg", out=str(tmp_path / "fe"), **fit)
    plain = eotransfer.evaluate(tmp_path / "fe", eurosat_like)
    res = eotransfer.evaluate(tmp_path / "fe", eurosat_like, attack="pgd", eps="0.004")["attack"]
    # the folded head predicts what the scikit-learn classifier predicts: the same clean accuracy
    assert res["clean_accuracy"] == pytest.approx(plain["overall_accuracy"])
    assert res["robust_accuracy"] < res["clean_accuracy"]  # the gradient reaches the input through the backbone
    eotransfer.fit(eurosat_like, classifier="knn", out=str(tmp_path / "knn"), **fit)
    with pytest.raises(
        ConfigError, match="^--attack: .*a gradient attack cannot use .the 'knn' classifier is not linear"
    ):
        eotransfer.evaluate(tmp_path / "knn", eurosat_like, attack="pgd", eps="0.001")
