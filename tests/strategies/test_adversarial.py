"""``adversarial``: the valid range from the training split, the loss of each objective, errors, and a saved record."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import eotransfer
from eotransfer.bands import BandSet
from eotransfer.errors import ConfigError
from eotransfer.evaluation.attacks import band_range, pgd
from eotransfer.models.model import EOClassifier
from eotransfer.strategies.adversarial import Adversarial, AdversarialParams

BANDS = BandSet.parse("sentinel2-l1c:B02,B03,B04,B08")


def small_model() -> EOClassifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = EOClassifier(backbone, 8, 3, 4)
    model.normalize.center.fill_(1000.0)
    model.normalize.scale.fill_(200.0)
    return model.eval()


@pytest.fixture
def data() -> tuple[np.ndarray, torch.Tensor]:
    g = np.random.default_rng(0)
    arr = (1000 + 200 * g.standard_normal((12, 4, 8, 8))).astype(np.float32)
    return arr, torch.arange(12) % 3


def prepared(arr: np.ndarray, train: np.ndarray | None = None, **params: object) -> Adversarial:
    s = Adversarial(AdversarialParams(**params))  # type: ignore[arg-type]
    ds = SimpleNamespace(checked_read=lambda i: arr[i], bands=BANDS)
    s.prepare(ds, SimpleNamespace(train=np.arange(len(arr)) if train is None else train), small_model())
    return s


def test_prepare_takes_the_range_from_the_training_split_only(data: tuple) -> None:
    arr, _ = data
    arr = arr.copy()
    arr[11, 0, 0, 0] = 9000.0  # outside the training split: must not widen the range
    s = prepared(arr, train=np.arange(10), eps="0.002,B08=0.01")
    assert s.budget is not None
    assert s.budget.lo.tolist() == pytest.approx(arr[:10].min((0, 2, 3)).tolist())
    assert s.budget.hi.tolist() == pytest.approx(arr[:10].max((0, 2, 3)).tolist())
    assert s.budget.value_per_reflectance == 10000.0  # guessed from the largest value (> 255)
    assert s.budget.eps.tolist() == pytest.approx([20.0, 20.0, 20.0, 100.0])
    given = prepared(arr, eps="0.002", valid_range="0,0.2", value_per_reflectance=10000.0)
    assert given.budget is not None and given.budget.hi.tolist() == [2000.0] * 4 and given.budget.lo.tolist() == [0] * 4


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_mixed_loss_weighs_clean_and_adversarial_cross_entropy(data: tuple, ratio: float) -> None:
    arr, y = data
    x = torch.from_numpy(arr)
    s = prepared(arr, eps="0.005", adv_ratio=ratio)
    model = small_model()  # eval mode: the concatenated forward equals two separate ones
    loss = s.training_loss(model, x, y, torch.Generator().manual_seed(1))
    x_adv = s.adversarial_examples(model, x, y, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (1 - ratio) * F.cross_entropy(model(x), y) + ratio * F.cross_entropy(model(x_adv), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert (x_adv - x).abs().amax().item() == pytest.approx(50.0, abs=1e-3)  # 0.005 reflectance = 50 DN (float32)


def test_trades_loss_is_clean_cross_entropy_plus_beta_kl(data: tuple) -> None:
    arr, y = data
    x = torch.from_numpy(arr)
    model = small_model()
    s0 = prepared(arr, eps="0.005", adv_loss="trades", trades_beta=0.0)
    s6 = prepared(arr, eps="0.005", adv_loss="trades", trades_beta=6.0)
    clean = F.cross_entropy(model(x), y).item()
    assert s0.training_loss(model, x, y, torch.Generator().manual_seed(2)).item() == pytest.approx(clean, rel=1e-5)
    x_adv = s6.adversarial_examples(model, x, y, torch.Generator().manual_seed(2))
    with torch.no_grad():
        p, q = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
        kl = (p * (p.log() - q.log())).sum(1).mean().item()
    loss = s6.training_loss(model, x, y, torch.Generator().manual_seed(2)).item()
    assert kl > 0 and loss == pytest.approx(clean + 6.0 * kl, rel=1e-4)


def test_fgsm_examples_sit_on_the_edge_of_the_budget(data: tuple) -> None:
    arr, y = data
    x = torch.from_numpy(arr)
    s = prepared(arr, eps="B03=0.003", attack="fgsm")
    x_adv = s.adversarial_examples(small_model(), x, y, torch.Generator())
    delta = (x_adv - x).abs().amax((0, 2, 3))
    assert delta.tolist() == pytest.approx([0.0, 30.0, 0.0, 0.0], abs=1e-3)  # only B03 is attacked


def test_validation_selects_on_robust_accuracy_unless_told_clean(data: tuple) -> None:
    # Rice et al. 2020: the kept epoch and early stopping follow robust, not clean, validation accuracy;
    # selecting on clean accuracy kept the first (least adversarially trained) end-to-end epoch
    arr, y = data
    x = torch.from_numpy(arr)
    model = small_model()
    val = [{"image": x[i], "label": int(y[i])} for i in range(len(arr))]
    s = prepared(arr, eps="0.02", val_pgd_steps=5)
    assert s.budget is not None
    scores = s.validate(model, val, SimpleNamespace())
    x_adv = pgd(model, x, y, s.budget.eps, s.budget.lo, s.budget.hi, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
        robust_loss = F.cross_entropy(model(x_adv), y).item()
    assert robust < clean
    assert scores["val_accuracy"] == pytest.approx(robust) and scores["val_loss"] == pytest.approx(
        robust_loss, rel=1e-5
    )
    assert scores["val_clean_accuracy"] == pytest.approx(clean)
    assert not model.training  # the mode the model came in is kept
    engine = SimpleNamespace(predict_logits=lambda m, v: (m(x).detach(), y))
    by_clean = prepared(arr, eps="0.02", select_on="clean").validate(model, val, engine)
    assert by_clean["val_accuracy"] == pytest.approx(clean) and "val_clean_accuracy" not in by_clean


def test_errors_name_the_option(data: tuple) -> None:
    arr, _ = data
    with pytest.raises(ConfigError, match="^--adv-loss trades: needs --attack pgd"):
        Adversarial(AdversarialParams(adv_loss="trades", attack="fgsm"))
    with pytest.raises(ConfigError, match="^--eps: 'x' is not a number"):
        Adversarial(AdversarialParams(eps="x"))
    with pytest.raises(ConfigError, match="^--valid-range: '1' is not LO,HI"):
        Adversarial(AdversarialParams(valid_range="1"))
    with pytest.raises(ConfigError, match="^--valid-range: LO 1.0 must be below HI 0.0"):
        Adversarial(AdversarialParams(valid_range="1,0"))
    with pytest.raises(ConfigError, match="^--eps: 1 reflectance .* exceeds the whole range of band B02"):
        prepared(arr, eps="1")
    with pytest.raises(RuntimeError, match="prepare"):
        Adversarial(AdversarialParams()).adversarial_examples(small_model(), torch.zeros(1, 4, 8, 8),
                                                              torch.zeros(1, dtype=torch.long), torch.Generator())  # fmt: skip


def test_fit_saves_the_budget_and_range(eurosat_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "adv"
    result = eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="adversarial", backbone="resnet18",
                            head_epochs=1, epochs=1, pgd_steps=1, eps="0.002", batch_size=16, accelerator="cpu",
                            progress=False, verbose=False, out=str(out))  # fmt: skip
    assert [row["phase"] for row in result.history] == ["head", "adversarial"]
    assert {"val_accuracy", "val_clean_accuracy"} <= set(result.history[-1])  # robust selection by default
    record = json.loads((out / "adversarial.json").read_text())
    from eotransfer.data.base import open_dataset

    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    lo, hi = band_range(ds.checked_read, result.split.train)
    assert record["range_data_units"]["B04"] == [float(lo[3]), float(hi[3])]
    assert record["eps_data_units"]["B10"] == pytest.approx(20.0) and record["value_per_reflectance"] == 10000.0
    m = eotransfer.evaluate(out, eurosat_like, attack="pgd", eps="0.002", pgd_steps=2)
    assert 0.0 <= m["attack"]["robust_accuracy"] <= 1.0
