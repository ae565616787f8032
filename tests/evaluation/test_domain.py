"""The proxy A-distance and the domain-shift report of saved models (Ben-David et al. 2007/2010)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import eotransfer
from eotransfer.cli import run
from eotransfer.data.base import open_dataset
from eotransfer.errors import DataError
from eotransfer.evaluation.domain import domain_shift_report, proxy_a_distance, report_markdown


def test_pad_is_near_zero_for_two_halves_of_one_distribution() -> None:
    x = np.random.default_rng(0).normal(size=(800, 16))
    pad = proxy_a_distance(x[:400], x[400:], seed=0)
    assert 0.0 <= pad < 0.3


def test_pad_is_two_for_separable_domains() -> None:
    rng = np.random.default_rng(1)
    source = rng.normal(size=(200, 8))
    target = rng.normal(size=(300, 8)) + np.array([20.0] + [0.0] * 7)  # shifted along one axis, far beyond the tails
    assert proxy_a_distance(source, target, seed=0) == 2.0


def test_pad_grows_with_the_shift_and_is_balanced() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(400, 4))
    pads = [proxy_a_distance(base[:200], base[200:] + shift, seed=0) for shift in (0.0, 1.0, 2.0)]
    assert pads[0] < pads[1] < pads[2] <= 2.0
    # 1-D Gaussians one std apart: the best threshold errs Φ(-½) ≈ 0.31 → PAD ≈ 2(1 - 2·0.31) ≈ 0.77
    one_d = rng.normal(size=(4000, 1))
    assert proxy_a_distance(one_d[:2000], one_d[2000:] + 1.0, seed=0) == pytest.approx(0.77, abs=0.08)
    # many more source than target samples: still balanced, so identical distributions stay near 0
    assert proxy_a_distance(rng.normal(size=(2000, 4)), rng.normal(size=(100, 4)), seed=0) < 0.4


def test_pad_refuses_too_few_samples_or_other_widths() -> None:
    with pytest.raises(DataError, match="at least 2 samples per domain"):
        proxy_a_distance(np.zeros((1, 3)), np.ones((5, 3)))
    with pytest.raises(DataError, match="dimensions"):
        proxy_a_distance(np.zeros((4, 3)), np.ones((4, 2)))


@pytest.fixture
def saved_model(probe_model: Path) -> Path:
    return probe_model


def test_domain_shift_report_rows_and_markdown(saved_model: Path, eurosat_like: Path, tmp_path: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    water = np.flatnonzero(ds.labels == ds.classes.index("water"))
    land = np.flatnonzero(ds.labels != ds.classes.index("water"))
    rows = domain_shift_report([saved_model], ds, ds, source_indices=land, target_indices=water)
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == saved_model.name and row["strategy"] == "linear-probe"
    assert row["n_source"] == len(land) and row["n_target"] == len(water)
    assert 0.0 <= row["target_accuracy"] <= 1.0 and 0.0 <= row["proxy_a_distance"] <= 2.0
    text = report_markdown([row, {**row, "model": "flat", "target_accuracy": None}])
    assert f"| {saved_model.name} | linear-probe |" in text and "| flat | linear-probe | — |" in text


def test_cli_evaluate_prints_the_domain_gap(saved_model: Path, eurosat_like: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert run(["evaluate", str(saved_model), str(eurosat_like), "--domain-gap", str(eurosat_like)]) == 0
    out = capsys.readouterr().out
    assert "overall accuracy" in out
    pad = float(out.split("proxy A-distance to ")[1].split(": ")[1].split(" ")[0])
    assert pad < 0.5  # the same data on both sides
    metrics = eotransfer.evaluate(saved_model, eurosat_like, domain_gap=str(eurosat_like))
    assert metrics["proxy_a_distance"] == pytest.approx(pad, abs=1e-3)
