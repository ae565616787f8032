"""Episodic few-shot evaluation (mean ± 95 % interval) and the few-shot predictor from a new support set."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eotransfer.card import load_model
from eotransfer.cli import main
from eotransfer.data.base import open_dataset
from eotransfer.errors import ConfigError
from eotransfer.evaluation.fewshot import (
    PrototypeClassifier,
    episode_ci95,
    evaluate_episodes,
    finetune_predict,
    predict_fewshot,
    protonet_predict,
)
from eotransfer.losses.prototypes import prototype_logits, prototypes


def test_mean_and_interval_by_hand() -> None:
    mean, ci = episode_ci95([0.5, 1.0])  # std 0.25: 1.96 * 0.25 / sqrt(2)
    assert mean == pytest.approx(0.75) and ci == pytest.approx(0.3464823, abs=1e-6)
    assert episode_ci95([0.6] * 600) == (pytest.approx(0.6), pytest.approx(0.0, abs=1e-12))


def test_episode_predictors_by_hand() -> None:
    support = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 7.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    query = np.array([[1.0, 1.0], [0.5, 6.5], [1.0, 2.9]], dtype=np.float32)
    # prototypes (1, 0) and (0, 6): (1, 2.9) is 8.41 from the first and 10.61 from the second
    assert protonet_predict(support, y, query, 2).tolist() == [0, 1, 0]
    # the linear head sees directions (L2-normalised rows): (3, 0.5) points along class 0, (0.5, 6.5) along class 1
    assert finetune_predict(support, y, np.array([[3.0, 0.5], [0.5, 6.5]], dtype=np.float32)).tolist() == [0, 1]


def clusters(n_classes: int, per_class: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16)) * 10
    labels = np.repeat(np.arange(n_classes), per_class)
    return (centres[labels] + rng.normal(size=(len(labels), 16)) * spread).astype(np.float32), labels


def test_separable_classes_score_one_and_noise_scores_chance() -> None:
    feats, labels = clusters(6, 12, spread=0.1)
    res = evaluate_episodes(feats, labels, ways=4, shots=2, queries=5, episodes=30, seed=0, classes=[0, 1, 2, 3, 4])
    assert set(res) == {"protonet", "finetune"}
    for r in res.values():
        assert r.mean == 1.0 and r.ci95 == 0.0 and r.episodes == 30 and len(r.accuracies) == 30
    noise = np.random.default_rng(1).normal(size=feats.shape).astype(np.float32)
    res = evaluate_episodes(noise, labels, ways=4, shots=2, queries=5, episodes=200, seed=0)
    for r in res.values():
        assert abs(r.mean - 0.25) < 0.05 and 0 < r.ci95 < 0.05
        assert r.ci95 == pytest.approx(1.96 * r.accuracies.std() / np.sqrt(200))


def test_episodes_are_reproducible_and_shared_by_methods() -> None:
    feats, labels = clusters(5, 10, spread=8.0)
    a = evaluate_episodes(feats, labels, 5, 1, 4, episodes=40, seed=5, methods=("protonet",))
    b = evaluate_episodes(feats, labels, 5, 1, 4, episodes=40, seed=5)
    np.testing.assert_array_equal(a["protonet"].accuracies, b["protonet"].accuracies)
    c = evaluate_episodes(feats, labels, 5, 1, 4, episodes=40, seed=6, methods=("protonet",))
    assert not np.array_equal(a["protonet"].accuracies, c["protonet"].accuracies)
    with pytest.raises(ConfigError, match="^--methods: unknown few-shot method 'maml'"):
        evaluate_episodes(feats, labels, methods=("maml",))
    with pytest.raises(ConfigError, match="^--ways: 6 ways but only 5 classes"):
        evaluate_episodes(feats, labels, ways=6, shots=1, queries=1)


@pytest.fixture
def model_dir(probe_model: Path) -> Path:
    return probe_model


def test_predictor_takes_a_new_support_set(model_dir: Path, eurosat_like: Path, tmp_path: Path) -> None:
    # a "new" task: two classes the model never had as such, two examples each; the input is a flat folder
    support, inputs = tmp_path / "support", tmp_path / "input"
    inputs.mkdir()
    for new, old in (("wet", "water"), ("green", "forest")):
        files = sorted((eurosat_like / old).glob("*.tif"))
        (support / new).mkdir(parents=True)
        for f in files[:2]:
            shutil.copy(f, support / new / f.name)
        for f in files[2:5]:
            shutil.copy(f, inputs / f.name)
    out = tmp_path / "preds.csv"
    summary = predict_fewshot(model_dir, support, inputs, out)
    assert summary["n"] == 6 and summary["support"] == {"green": 2, "wet": 2}
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["file", "predicted", "p_green", "p_wet"] and len(rows) == 6
    # the same as nearest prototype by hand, with the saved backbone
    saved = load_model(model_dir)
    sup = open_dataset(support, bands="eurosat-ms")
    inp = open_dataset(inputs, bands="eurosat-ms", unlabelled=True)
    with torch.no_grad():
        fs = saved.network.features(torch.stack([sup[i]["image"] for i in range(len(sup))]))
        fq = saved.network.features(torch.stack([inp[i]["image"] for i in range(len(inp))]))
        probs = prototype_logits(fq, prototypes(fs, torch.from_numpy(sup.labels), 2)).softmax(1).numpy()
    by_file = {Path(r["file"]).name: r for r in rows}
    for i, src in enumerate(inp.sources):
        row = by_file[Path(src).name]
        assert row["predicted"] == sup.classes[int(probs[i].argmax())]
        assert float(row["p_wet"]) == pytest.approx(float(probs[i, sup.classes.index("wet")]), abs=1e-4)
    clf = PrototypeClassifier(saved, sup)
    np.testing.assert_allclose(clf.predict_proba(np.stack([inp[i]["image"].numpy() for i in range(6)])), probs,
                               atol=1e-5)  # fmt: skip
    # and through the CLI
    main_out = tmp_path / "cli.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict-fewshot", str(model_dir), str(inputs), "--support", str(support), "--out", str(main_out)])
    assert exit_info.value.code == 0 and main_out.read_text() == out.read_text()


def test_predictor_refuses_a_support_without_class_folders(model_dir: Path, eurosat_like: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match="^--support: .* is not a folder of class folders"):
        predict_fewshot(model_dir, eurosat_like / "water", eurosat_like, tmp_path / "p.csv")


def test_batched_episodes_equal_one_at_a_time() -> None:
    feats, labels = clusters(3, 6, spread=6.0, seed=2)
    rng = np.random.default_rng(0)
    support = np.stack([feats[rng.permutation(18)[:6]] for _ in range(4)])
    query = np.stack([feats[rng.permutation(18)[:5]] for _ in range(4)])
    ys = np.array([0, 0, 1, 1, 2, 2])
    for fn in (lambda s, q: protonet_predict(s, ys, q, 3), lambda s, q: finetune_predict(s, ys, q)):
        together = fn(support, query)
        assert together.shape == (4, 5)
        for e in range(4):
            np.testing.assert_array_equal(together[e], fn(support[e], query[e]))
