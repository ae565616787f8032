"""The HTML report: a saved model's and a benchmark folder's page, self-contained, and rendered in Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eotransfer.api import fit
from eotransfer.bands import BandSet
from eotransfer.errors import ConfigError
from eotransfer.evaluation import benchmark as bm
from eotransfer.evaluation.report import build_report, png_size, rgb_composite

IMG = re.compile(r"<img\b[^>]*>")
ATTR = re.compile(r"""([\w-]+)=['"]([^'"]*)['"]""")
MODEL_FIGURES = {"history", "confusion", "embedding", "samples"}


@pytest.fixture(scope="module")
def model_dir(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "model"
    fit(eurosat_like, bands="eurosat-ms", strategy="linear-probe", backbone="resnet10t", epochs=1, augment=False,
        batch_size=16, progress=False, verbose=False, out=str(out))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def model_report(model_dir: Path) -> Path:
    return build_report(model_dir, model_dir.parent / "page" / "model.html")


@pytest.fixture(scope="module")
def benchmark_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A benchmark folder written by hand (no fit): two methods and the reference, 1 / 5 labels, 3 seeds."""
    folder = tmp_path_factory.mktemp("bench")
    acc = {("linear-probe", "scratch"): (0.4, 0.6), ("linear-probe", "w"): (0.6, 0.8), (bm.REFERENCE, "—"): (0.5, 0.5)}
    for seed in range(3):
        for (strategy, init), (a1, a5) in acc.items():
            for k, a in ((1, a1), (5, a5)):
                bm.append_row(folder / bm.RESULTS_CSV, {
                    "cell": f"{strategy}|{init}|{k}|{seed}", "data": "toy", "split": "stratified", "strategy": strategy,
                    "strategy_name": strategy, "backbone": "resnet10t" if init != "—" else "—", "weights": "",
                    "init": init, "k": k, "n_train": 3 * k, "n_val": 0, "n_test": 10, "seed": seed,
                    "accuracy": a + 0.05 * seed, "macro_f1": a, "seconds": 1.0,
                    "confusion_matrix": json.dumps([[4, 1, 0], [0, 3, 0], [1, 0, 1]]), "finished": "now"})  # fmt: skip
    (folder / "benchmark.json").write_text(json.dumps({"classes": ["a", "b", "c"], "config": {"name": "toy"}}))
    (folder / "benchmark.yaml").write_text("name: toy\n")
    return build_report(folder, folder / "report" / "index.html")


def _images(page: str) -> dict[str, dict[str, str]]:
    return {a["data-name"]: a for a in (dict(ATTR.findall(tag)) for tag in IMG.findall(page))}


def _check_images(page: str, html_path: Path, expected: set[str]) -> None:
    """Every expected figure is an inline PNG of its declared size, identical to the PNG written beside the page."""
    imgs = _images(page)
    assert set(imgs) == expected
    for name, attrs in imgs.items():
        assert attrs["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.format == "PNG" and im.size == (int(attrs["width"]), int(attrs["height"]))
            assert min(im.size) > 100
        assert (html_path.parent / f"{html_path.stem}_{name}.png").read_bytes() == png


def test_model_report_is_self_contained(model_report: Path) -> None:
    page = model_report.read_text()
    _check_images(page, model_report, MODEL_FIGURES)
    assert "<script" not in page and "http://" not in page and "https://" not in page and "<link" not in page
    for title in ("Label-efficiency curves", "Per-class metrics (test)", "Confusion matrix (test)", "Embedding map",
                  "Sample predictions", "Model card", "Configuration"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page
    card = json.loads((model_report.parent.parent / "model" / "card.json").read_text())
    for c in card["classes"]:
        assert f"<td>{c}</td>" in page
    assert "# Model card: model" in page
    assert model_report.stat().st_size < 2_000_000
    assert not list(model_report.parent.glob(".*"))  # no temporary file left behind


def test_model_report_without_reachable_data(model_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "model"
    shutil.copytree(model_dir, moved)
    card = json.loads((moved / "card.json").read_text())
    card["fit"]["data"] = card["data"]["root"] = str(tmp_path / "gone")
    (moved / "card.json").write_text(json.dumps(card))
    page = build_report(moved, tmp_path / "r.html").read_text()
    assert set(_images(page)) == {"history", "confusion"}
    assert page.count(f"skipped: the training data ({tmp_path / 'gone'}) are not reachable from here") == 2


def test_benchmark_report(benchmark_report: Path) -> None:
    page = benchmark_report.read_text()
    _check_images(page, benchmark_report, {"label_efficiency_toy", "confusion_toy"})
    half = bm.interval95([0.6, 0.65, 0.7])[2] - 0.65
    assert f"<td>0.650 ± {half:.3f} (n=3)</td>" in page  # linear-probe (w) at k=1
    assert "linear-probe (resnet10t, w), k=5, 3 seed(s)" in page  # the best method at the most labels
    # per-class metrics of the confusion matrix summed over 3 seeds: class a precision 12 / 15, recall 12 / 15
    assert "<td>a</td><td>0.800</td><td>0.800</td>" in page
    assert "labels needed, linear-probe (resnet10t, w) vs. best scratch" in page


def test_report_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a saved model directory"):
        build_report(tmp_path, tmp_path / "r.html")


def test_rgb_composite_picks_bands_by_common_name() -> None:
    bands = BandSet.parse("eurosat-ms")
    image = np.zeros((13, 4, 4), dtype=np.float32)
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4)
    red, green, blue = (bands.names.index(n) for n in ("B04", "B03", "B02"))
    image[red], image[green], image[blue] = ramp, ramp.T, 100 - ramp
    rgb = rgb_composite(image, bands)
    lo, hi = np.percentile(ramp, (2, 98))
    assert rgb.shape == (4, 4, 3)
    np.testing.assert_allclose(rgb[..., 0], np.clip((ramp - lo) / (hi - lo), 0, 1))
    np.testing.assert_allclose(rgb[..., 1], np.clip((ramp.T - lo) / (hi - lo), 0, 1))
    np.testing.assert_allclose(rgb[..., 2], 1 - rgb[..., 0], atol=1e-12)


def test_rgb_composite_of_a_pre_post_stack_shows_the_last_date() -> None:
    from eotransfer.data.formats.xbd import pre_disaster_bands

    stack = BandSet(pre_disaster_bands().bands + BandSet.parse("rgb").bands)
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4)
    image = np.stack([ramp.T] * 3 + [ramp] * 3)  # pre: the transposed ramp, post: the ramp
    np.testing.assert_allclose(rgb_composite(image, stack), rgb_composite(image[3:], BandSet.parse("rgb")))
    assert not np.allclose(rgb_composite(image, stack), rgb_composite(image[:3], pre_disaster_bands()))


@pytest.mark.parametrize("which", ["model", "benchmark"])
def test_report_renders_in_chromium(
    which: str, model_report: Path, benchmark_report: Path, chromium_dom: Callable[[Path], str]
) -> None:
    path = model_report if which == "model" else benchmark_report
    expected = MODEL_FIGURES if which == "model" else {"label_efficiency_toy", "confusion_toy"}
    dom = chromium_dom(path)
    assert "<h2>Configuration</h2>" in dom
    _check_images(dom, path, expected)
    sizes = {n: png_size((path.parent / f"{path.stem}_{n}.png").read_bytes()) for n in expected}
    assert all(w > 100 and h > 100 for w, h in sizes.values())


def test_cli_report(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eotransfer.cli import main

    with pytest.raises(SystemExit) as code:
        main(["report", str(model_dir), "--out", str(tmp_path / "cli.html")])
    assert code.value.code == 0
    assert "report written to" in capsys.readouterr().out
    with (tmp_path / "cli.html").open() as f:
        assert "<h2>Embedding map</h2>" in f.read()


def test_adapted_model_report_shows_the_domain_shift(eurosat_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    res = fit(eurosat_like, bands="eurosat-ms", strategy="adabn", target="@test", backbone="resnet10t", head_epochs=1,
              epochs=1, batch_size=8, patience=0, progress=False, verbose=False, out=str(out))  # fmt: skip
    saved = json.loads((out / "metrics.json").read_text())["domain"]
    assert saved == pytest.approx(res.metrics["domain"])
    page = build_report(out, tmp_path / "r.html").read_text()
    assert "<h2>Domain shift</h2>" in page
    for stage in ("initial", "before_adabn", "adapted"):
        assert f"<td>{saved['pad_' + stage]:.3f}</td>" in page
    assert f"<td>{saved['target_accuracy_adapted']:.3f}</td>" in page
    assert f"<td>{res.metrics['test']['overall_accuracy']:.3f}</td>" in page  # the target is the test side
