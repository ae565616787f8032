"""The strategy advisor: its rules on constructed scenarios, the inspection of a real folder, and --auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eotransfer.errors import ConfigError
from eotransfer.evaluation.advise import AdviseConfig, TaskFacts, advise, inspect_task, recommend
from eotransfer.evaluation.advise import spatial_folds as adv_spatial_folds

CLASSES = ["cropland", "forest", "water"]


def facts(k: int = 10, weights: str | None = "eotransfer:w", coverage: float = 1.0, **kw: object) -> TaskFacts:
    return TaskFacts(3 * k, CLASSES, dict.fromkeys(CLASSES, k), ["sentinel2-l1c:B04"], weights, coverage,
                     seconds_per_epoch_estimate=1.0, **kw)  # type: ignore[arg-type]  # fmt: skip


def ranked(f: TaskFacts, **cfg: object) -> list[str]:
    return [r.strategy for r in recommend(f, AdviseConfig(**cfg))]  # type: ignore[arg-type]


def test_few_labels_prefer_unfreezing_many_labels_fine_tuning_small_budgets_frozen_features() -> None:
    assert ranked(facts(k=5))[:2] == ["progressive-unfreeze", "feature-extraction"]
    assert ranked(facts(k=200))[:2] == ["finetune", "progressive-unfreeze"]
    assert ranked(facts(k=200), budget_minutes=0.1)[0] == "feature-extraction"  # 30 epochs do not fit in 6 s
    assert ranked(facts(k=5), budget_minutes=0.1)[0] == "feature-extraction"


def test_weights_that_miss_the_bands_are_not_proposed() -> None:
    recs = recommend(facts(k=100, coverage=0.25), AdviseConfig())
    assert [r.strategy for r in recs] == ["protonet", "finetune", "feature-extraction"]
    assert recs[0].options == {"weights": None, "shots": 5} and recs[1].options == {"weights": None}
    assert recs[2].options == {"weights": None, "classifier": "logreg"}
    assert "fill only 25%" in recs[0].reason and "eotransfer pretrain" in recs[1].reason


def test_unseen_classes_new_classes_shift_robustness_and_size_limits() -> None:
    assert ranked(facts(unseen_classes=["wetland"]))[0] == "zero-shot"
    (zs,) = [r for r in recommend(facts(unseen_classes=["wetland"]), AdviseConfig()) if r.strategy == "zero-shot"]
    assert "calibration_pool" not in zs.options and "give unlabelled imagery" in zs.reason
    (zs,) = [r for r in recommend(facts(unseen_classes=["wetland"]), AdviseConfig(target="more/scenes"))
             if r.strategy == "zero-shot"]  # fmt: skip
    assert zs.options["calibration_pool"] == "more/scenes" and zs.options["unseen_classes"] == "wetland"
    assert "prior matching on the unlabelled more/scenes" in zs.reason
    assert ranked(facts(), new_classes_at_prediction=True)[0] == "protonet"
    shifted = ranked(facts(target_pad=1.6), target="t")
    assert shifted[0] == "coral" and "dann" in shifted
    assert shifted.index("adabn") > shifted.index("dann")  # measured risky: ranked below the alignment losses
    assert "coral" not in ranked(facts(target_pad=0.3), target="t")  # no shift worth adapting to
    assert ranked(facts(), robust=True)[0] == "adversarial"
    assert ranked(facts(), max_params_m=1.0)[0] == "distill"  # resnet10t has ~5 M parameters
    assert "distill" not in ranked(facts(), max_params_m=50.0)
    stack = facts()
    stack.bands = ["rgb-pre:pre_red", "rgb-pre:pre_green", "rgb-pre:pre_blue", "rgb:red", "rgb:green", "rgb:blue"]
    assert ranked(stack, max_params_m=1.0)[0] == "distill"  # band keys outside the catalogue: counted all the same


def test_weights_whose_features_do_not_transfer_give_way_to_training_from_scratch() -> None:
    f = facts(k=20, probe_pretrained=0.55, probe_random=0.80)
    assert not f.weights_transfer
    recs = recommend(f, AdviseConfig())
    assert recs[0].strategy == "protonet" and recs[0].options["weights"] is None  # from scratch, 20 labels per class
    assert "worse than a randomly initialised network's" in recs[0].reason and "0.550 vs. 0.800" in recs[0].reason
    assert all(r.options.get("weights") is None for r in recs)
    # features that beat random ones keep the pre-trained ranking
    assert ranked(facts(k=20, probe_pretrained=0.81, probe_random=0.80))[0] == "progressive-unfreeze"
    # the weights are the prior: a tie, or random features ahead by less than one standard error, keeps them
    assert facts(k=20, probe_pretrained=0.722, probe_random=0.722).weights_transfer
    assert facts(k=20, probe_pretrained=0.70, probe_random=0.75, probe_se=0.06).weights_transfer
    assert not facts(k=20, probe_pretrained=0.70, probe_random=0.75, probe_se=0.04).weights_transfer


def test_weights_from_another_sensor_are_used_frozen_with_few_labels() -> None:
    assert ranked(facts(k=5, weights_same_sensor=False))[0] == "feature-extraction"
    assert ranked(facts(k=20, weights_same_sensor=False))[0] == "feature-extraction"
    recs = recommend(facts(k=5, weights_same_sensor=False), AdviseConfig())
    assert "another sensor" in recs[0].reason and recs[0].options == {"weights": "eotransfer:w", "classifier": "logreg"}
    assert ranked(facts(k=100, weights_same_sensor=False))[0] == "finetune"  # many labels: adapt them
    assert ranked(facts(k=5, weights_same_sensor=True))[0] == "progressive-unfreeze"  # same sensor: unfreeze


def test_for_new_regions_with_few_labels_a_linear_head_on_frozen_features_comes_first() -> None:
    recs = recommend(facts(k=5, weights_same_sensor=True, new_regions=True), AdviseConfig())
    assert [r.strategy for r in recs[:3]] == ["linear-probe", "progressive-unfreeze", "feature-extraction"]
    assert "regions no label comes from" in recs[0].reason and "Kumar et al. 2022" in recs[0].reason
    assert recs[0].options == {"weights": "eotransfer:w"}
    # many labels: fine-tuning catches up; another sensor: the frozen-feature classifier keeps first place
    assert ranked(facts(k=200, weights_same_sensor=True, new_regions=True))[0] == "finetune"
    assert ranked(facts(k=5, weights_same_sensor=False, new_regions=True))[0] == "feature-extraction"
    # a measured shift to the target: the adaptation losses follow the linear head
    shifted = ranked(facts(k=5, target_pad=1.6, new_regions=True), target="t")
    assert shifted[:2] == ["linear-probe", "coral"]
    # without weights nothing changes
    assert ranked(facts(k=5, weights=None, new_regions=True)) == ranked(facts(k=5, weights=None))


def test_the_reference_comes_first_only_when_it_beats_the_frozen_features_the_first_choice_uses() -> None:
    from eotransfer.evaluation.advise import cautions

    lead = dict(probe_pretrained=0.44, probe_random=0.40, probe_se=0.03, probe_reference=0.52, probe_reference_se=0.03)
    f = facts(k=3, weights_same_sensor=True, new_regions=True, **lead)  # type: ignore[arg-type]
    assert f.weights_transfer and f.reference_leads
    recs = recommend(f, AdviseConfig())
    assert recs[0].options == {"backbone": "band-stats", "classifier": "logreg"}  # no weights: nothing to load
    assert recs[0].strategy == "feature-extraction" and "0.520 vs. 0.440" in recs[0].reason
    assert "the first choice, linear-probe, is such a classifier" in recs[0].reason
    assert [r.strategy for r in recs[1:3]] == ["linear-probe", "progressive-unfreeze"]  # the ranking follows
    assert any("beat the network's frozen features on the transfer probe (0.520 vs. 0.440" in c for c in cautions(f))
    # another sensor: the first choice is frozen features + logistic regression, displaced the same way
    cross = recommend(facts(k=5, weights_same_sensor=False, **lead), AdviseConfig())  # type: ignore[arg-type]
    assert cross[0].options.get("backbone") == "band-stats" and cross[1].strategy == "feature-extraction"
    # a first choice that adapts the features (unfreezing on the labelled regions): the probe did not measure it,
    # so it stays first, with a caution
    same = facts(k=5, weights_same_sensor=True, **lead)  # type: ignore[arg-type]
    assert ranked(same)[0] == "progressive-unfreeze"
    assert all(r.options.get("backbone") != "band-stats" for r in recommend(same, AdviseConfig()))
    assert any("Strategies that adapt the features may still do better" in c for c in cautions(same))
    # within one standard error (0.08 < 0.10), a tie, or no probe: the network's features are the prior
    assert not facts(k=3, **{**lead, "probe_reference_se": 0.10}).reference_leads  # type: ignore[arg-type]
    assert not facts(k=3, **{**lead, "probe_reference": 0.44}).reference_leads  # type: ignore[arg-type]
    assert not facts(k=3, probe_reference=0.9).reference_leads
    assert not any("transfer probe (" in c for c in cautions(facts(k=3, probe_reference=0.9)))
    near = facts(k=3, weights_same_sensor=True, new_regions=True, **{**lead, "probe_reference_se": 0.10})  # type: ignore[arg-type]
    assert ranked(near)[0] == "linear-probe"
    # weights that do not transfer: compared with the random-init features; the first choice then trains from
    # scratch, which the probe does not measure
    scratch = dict(probe_pretrained=0.30, probe_random=0.60, probe_se=0.02, probe_reference_se=0.02)
    assert not facts(k=20, probe_reference=0.61, **scratch).reference_leads  # type: ignore[arg-type]
    f = facts(k=20, probe_reference=0.70, **scratch)  # type: ignore[arg-type]
    assert f.reference_leads and ranked(f)[0] == "protonet"
    # a shifted target: adapting to it (which the probe cannot see) stays first
    assert ranked(facts(k=3, target_pad=1.6, **lead), target="t")[0] == "coral"  # type: ignore[arg-type]


def thirds(ds: list[int], cfg: object) -> tuple[list[tuple[object, object]], str]:
    """Three equal folds over a stand-in data set (a list): what ``measure_candidates`` counts the held-out on."""
    import numpy as np

    n = len(ds)
    return [(np.arange(0), np.arange(i * n // 3, (i + 1) * n // 3)) for i in range(3)], "3 stand-in folds"


def test_auto_measures_a_ranked_reference_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from eotransfer.evaluation import advise as adv

    calls: list[str] = []

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        calls.append("reference" if rec is None else str(rec.options.get("backbone", rec.strategy)))
        return [0.9] * 3 if rec is None or rec.options.get("backbone") else [0.7] * 3

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [adv.Recommendation("feature-extraction", dict(adv.REFERENCE_OPTIONS), "", 8.9),
            adv.Recommendation("linear-probe", {}, "", 8.6)]  # fmt: skip
    res = adv.measure_candidates([0] * 300, recs, AdviseConfig(top=2))
    assert calls == ["reference", "band-stats", "linear-probe"]  # not appended a second time as the last candidate
    assert res["kept_reference"] and res["best"] is recs[0] and res["beats_reference"] is False
    assert res["reference_ranked"]  # advise then says the ranking put it first, not that nothing came near it


def test_inspect_the_fixture_and_its_shifted_copy(eurosat_like: Path) -> None:
    f, ds = inspect_task(AdviseConfig(data=str(eurosat_like), bands="eurosat-ms", target=str(eurosat_like),
                                      target_bands="eurosat-ms"))  # fmt: skip
    assert f.n_samples == len(ds) and f.classes == CLASSES
    assert f.labels_per_class == ds.class_counts()
    assert f.weights == "eotransfer:eurosat-s2-resnet10t-moco" and f.band_coverage == 1.0
    assert f.weights_same_sensor is True  # the fixture has the weights' own 13 Sentinel-2 bands
    assert f.target_pad is not None and f.target_pad < 0.5  # the same images: no domain gap
    # the transfer probe ran both feature sets through cross-validated logistic regression
    assert f.probe_pretrained is not None and f.probe_random is not None
    assert 0.0 <= f.probe_pretrained <= 1.0 and 0.0 <= f.probe_random <= 1.0
    assert f.probe_reference is not None and 0.0 <= f.probe_reference <= 1.0 and f.probe_reference_se is not None
    # a --target means new regions: the probe's folds were asked for whole places, and say how they were drawn
    assert f.new_regions and f.probe_folds is not None
    spatial, _ = adv_spatial_folds(ds, AdviseConfig(folds=3))
    assert f.probe_folds.startswith("3 folds of whole" if spatial is not None else "3 stratified folds (not spatial:")
    g, _ = inspect_task(AdviseConfig(data=str(eurosat_like), bands="eurosat-ms", probe=False))
    assert g.probe_pretrained is None and g.weights_transfer


def test_transfer_probe_subsamples_per_class(eurosat_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from eotransfer.evaluation import advise as advise_module

    seen: list[tuple[object, np.ndarray]] = []

    def fake_cv(
        ds: object, rec: object, cfg: object, deadline: float, indices: np.ndarray, folds: object
    ) -> list[float]:
        tests = np.concatenate([t for _, t in folds])  # type: ignore[attr-defined]
        assert sorted(tests.tolist()) == list(range(len(indices)))  # positions in the subsample, each held out once
        if rec is None:  # the band-statistics reference
            seen.append(("reference", indices))
            return [0.95, 0.85]
        seen.append((rec.options["weights"], indices))  # type: ignore[attr-defined]
        return [0.9, 0.7] if rec.options["weights"] else [0.4, 0.6]  # type: ignore[attr-defined]

    monkeypatch.setattr(advise_module, "cross_validate", fake_cv)
    ds = eotransfer_data(eurosat_like)
    pre, rnd, se, ref, ref_se, how = advise_module.transfer_probe(ds, "w", AdviseConfig(probe_samples=20))
    assert how == "3 stratified folds"  # no --new-regions
    assert (pre, rnd, ref) == pytest.approx((0.8, 0.5, 0.9))
    assert se == pytest.approx(0.2)  # fold-wise differences 0.5 and 0.1: std 0.283 / sqrt(2)
    assert ref_se == pytest.approx(0.05)  # against the pre-trained folds: differences 0.05 and 0.15
    assert [w for w, _ in seen] == ["w", None, "reference"]
    idx = seen[0][1]
    assert np.array_equal(idx, seen[1][1]) and np.array_equal(idx, seen[2][1]) and len(idx) <= 20 + len(ds.classes)
    counts = np.bincount(ds.labels[idx], minlength=len(ds.classes))
    assert (counts >= 2).all()  # every class kept, at least two samples for the folds


def eotransfer_data(path: Path) -> object:
    from eotransfer.api import FitConfig, load_data

    return load_data(FitConfig(data=str(path), bands="eurosat-ms"))


def test_auto_measures_candidates_and_keeps_the_best(eurosat_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "best"
    res = advise(eurosat_like, bands="eurosat-ms", auto=True, top=2, folds=2, out=str(out), verbose=False,
                 one_se=False)  # fmt: skip
    assert res["cross_validated"]
    measured = [r for r in res["ranking"] if r.cv_accuracy is not None]
    assert len(measured) == 2
    assert res["best"].cv_accuracy == max(r.cv_accuracy for r in measured)
    assert res["best"] is res["best_measured"]
    assert 0.0 <= res["reference_cv"][0] <= 1.0
    assert res["beats_reference"] == (res["best"].cv_accuracy > res["reference_cv"][0])
    assert (out / "card.json").exists() and (out / "weights.safetensors").exists()


def test_auto_says_how_to_fit_the_reference_when_no_candidate_beats_it(
    eurosat_like: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from eotransfer.evaluation import advise as adv

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        return [0.95, 0.95] if rec is None else [0.6, 0.6]  # band statistics + LR beat every candidate

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    fit_cmd = f"eotransfer fit {eurosat_like} --backbone band-stats --strategy feature-extraction"
    res = adv.advise(eurosat_like, bands="eurosat-ms", auto=True, top=2, folds=2, verbose=True, probe=False,
                     auto_reference=False)  # fmt: skip
    assert res["beats_reference"] is False and not res["kept_reference"]
    out = capsys.readouterr().out
    assert "does NOT beat the reference" in out and f"the reference is a model too: {fit_cmd}" in out
    # counted as the last-ranked candidate (the default), 0.95 against 0.6 is beyond one standard error: kept
    model = tmp_path / "best"
    res = adv.advise(eurosat_like, bands="eurosat-ms", auto=True, top=2, folds=2, verbose=True, probe=False,
                     out=str(model))  # fmt: skip
    assert res["kept_reference"] and res["best"].options == {"backbone": "band-stats", "classifier": "logreg"}
    assert res["best"] is res["best_measured"] and res["beats_reference"] is False
    out = capsys.readouterr().out
    assert "kept: the band-statistics reference (--backbone band-stats --strategy feature-extraction) (0.950)" in out
    assert "no candidate came within one standard error of the reference" in out and not res["reference_ranked"]
    assert fit_cmd in out
    card = json.loads((model / "card.json").read_text())
    assert card["arch"] == "band-stats" and card["strategy"]["name"] == "feature-extraction"


def test_the_reference_is_kept_only_beyond_one_standard_error_of_every_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eotransfer.evaluation import advise as adv

    folds = {"finetune": [0.75, 0.75, 0.75]}
    monkeypatch.setattr(
        adv, "cross_validate", lambda ds, rec, cfg, deadline, **kw: [0.8] * 3 if rec is None else folds[rec.strategy]
    )
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [adv.Recommendation("finetune", {}, "", 8.0)]
    res = adv.measure_candidates([0] * 3000, recs, AdviseConfig(top=1))  # binomial SE 0.007: 0.75 is beyond it
    assert res["kept_reference"] and res["best"].options["backbone"] == "band-stats"
    folds["finetune"] = [0.795] * 3  # within one SE of 0.8: the ranked candidate stays
    res = adv.measure_candidates([0] * 3000, recs, AdviseConfig(top=1))
    assert (
        not res["kept_reference"]
        and res["best"].strategy == "finetune"
        and res["best_measured"].cv_accuracy == pytest.approx(0.8)
    )
    assert not adv.measure_candidates([0] * 3000, recs, AdviseConfig(top=1, auto_reference=False))["kept_reference"]


def test_the_appended_reference_decides_only_whether_to_fall_back_not_which_strategy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eotransfer.evaluation import advise as adv

    # west -> east, 5 labels per class, seed 0 (benchmarks/README.md): 50 samples, binomial SEs about 0.07
    folds = {"linear-probe": [0.52] * 3, "progressive-unfreeze": [0.54] * 3, None: [0.60] * 3}
    monkeypatch.setattr(adv, "cross_validate", lambda ds, rec, cfg, deadline, **kw: folds[rec and rec.strategy])
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [adv.Recommendation("linear-probe", {}, "", 8.6), adv.Recommendation("progressive-unfreeze", {}, "", 8.2)]
    res = adv.measure_candidates([0] * 50, recs, AdviseConfig(top=2))
    # among the strategies the one-SE bar is 0.54 - 0.070: the first-ranked linear probe stays; the reference's bar
    # 0.60 - 0.069 = 0.531 would have dropped it, but 0.54 lies within one SE of the reference: no fallback
    assert res["best"].strategy == "linear-probe" and not res["kept_reference"]
    assert res["best_measured"].options.get("backbone") == "band-stats"
    assert res["best"] is adv.measure_candidates([0] * 50, recs, AdviseConfig(top=2, auto_reference=False))["best"]
    folds[None] = [0.62] * 3  # 0.62 - 0.069 = 0.551: every strategy is beyond one SE below it
    assert adv.measure_candidates([0] * 50, recs, AdviseConfig(top=2))["kept_reference"]
    best = adv.measure_candidates([0] * 50, recs, AdviseConfig(top=2, one_se=False))["best"]
    assert best.options.get("backbone") == "band-stats"  # without the rule: the highest mean, the reference
    folds[None] = [0.53] * 3
    assert adv.measure_candidates([0] * 50, recs, AdviseConfig(top=2, one_se=False))["best"].strategy == (
        "progressive-unfreeze"
    )


def test_auto_below_its_minimum_keeps_the_rankings_first_choice_without_measuring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eotransfer.evaluation import advise as adv

    calls: list[str | None] = []

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        calls.append(None if rec is None else rec.strategy)
        return (
            [0.5, 0.5, 0.5] if rec is None else {"zero-shot": [0.0], "finetune": [0.6] * 3}.get(rec.strategy, [0.9] * 3)
        )

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [
        adv.Recommendation("zero-shot", {}, "", 9.0),  # not measurable: skipped, never kept
        adv.Recommendation("finetune", {}, "", 8.2),
        adv.Recommendation("feature-extraction", {}, "", 8.0),
    ]
    defer = AdviseConfig(top=2, auto_min_samples=100)
    res = adv.measure_candidates([0] * 99, recs, defer)  # 99 < 100: the ranking decides
    assert res["best"].strategy == "finetune" and not res["cross_validated"] and calls == []
    assert res["reference_cv"] is None and res["best_measured"] is None and res["beats_reference"] is None
    assert all(r.cv_accuracy is None for r in recs)
    res = adv.measure_candidates([0] * 100, recs, defer)  # at the minimum: measured, 0.9 beyond noise
    assert res["cross_validated"] and res["best"].strategy == "feature-extraction"
    assert calls == [None, "finetune", "feature-extraction"]
    assert adv.measure_candidates([0] * 10, recs, AdviseConfig(top=2))["cross_validated"]  # the default: always
    with pytest.raises(ConfigError, match="no candidate can be trained on the labelled data alone"):
        adv.measure_candidates([0] * 10, recs[:1], defer)


def test_one_standard_error_rule_keeps_the_ranking_unless_a_candidate_beats_it_beyond_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    from eotransfer.evaluation import advise as adv

    folds = {"progressive-unfreeze": [0.6, 0.8, 0.7], "feature-extraction": [0.75, 0.8, 0.7]}  # means 0.70 / 0.75

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        return [0.5, 0.5, 0.5] if rec is None else folds[rec.strategy]

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [
        adv.Recommendation("progressive-unfreeze", {}, "", 8.2),
        adv.Recommendation("feature-extraction", {}, "", 8.0),
    ]
    many = [0] * 3000  # 3,000 held-out predictions: the binomial standard error (0.008) is below the folds'
    res = adv.measure_candidates(many, recs, AdviseConfig(top=2))
    assert res["cross_validated"]
    se = np.std(folds["feature-extraction"], ddof=1) / np.sqrt(3)  # 0.029: 0.70 lies below 0.75 - se
    assert res["best_measured"].strategy == "feature-extraction" and 0.75 - se > 0.70
    assert res["best"].strategy == "feature-extraction"
    folds["feature-extraction"] = [0.9, 0.6, 0.75]  # same mean, se 0.087: the first-ranked one is kept
    res = adv.measure_candidates(many, recs, AdviseConfig(top=2))
    assert res["best_measured"].strategy == "feature-extraction" and res["best"].strategy == "progressive-unfreeze"
    assert (
        adv.measure_candidates(many, recs, AdviseConfig(top=2, one_se=False))["best"].strategy == "feature-extraction"
    )
    assert res["reference_cv"][0] == pytest.approx(0.5) and res["beats_reference"]


def test_one_standard_error_rule_counts_the_binomial_noise_of_few_held_out_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eotransfer.evaluation import advise as adv

    # three folds that agree closely (standard error 0.01) but hold 12 samples in all: 0.80 is known to +-0.115
    folds = {"progressive-unfreeze": [0.66, 0.70, 0.74], "feature-extraction": [0.79, 0.80, 0.81]}

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        return [0.5, 0.5, 0.5] if rec is None else folds[rec.strategy]

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [
        adv.Recommendation("progressive-unfreeze", {}, "", 8.2),
        adv.Recommendation("feature-extraction", {}, "", 8.0),
    ]
    assert adv.binomial_se(0.8, 12) == pytest.approx(0.1155, abs=1e-4)
    assert adv.measure_candidates([0] * 12, recs, AdviseConfig(top=2))["best"].strategy == "progressive-unfreeze"
    # the same folds over 1,200 samples (binomial 0.012): the 10-point lead is beyond noise
    assert adv.measure_candidates([0] * 1200, recs, AdviseConfig(top=2))["best"].strategy == "feature-extraction"
    assert adv.binomial_se(0.8, 0) == 0.0


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="--budget-minutes: 0.0 is below the minimum"):
        advise("x", budget_minutes=0.0)
    with pytest.raises(ConfigError, match="advise: give the labelled data set"):
        advise("")


def test_advise_reads_data_with_the_same_options_as_fit() -> None:
    import dataclasses

    from eotransfer.api import FitConfig
    from eotransfer.cli import build_parser
    from eotransfer.data.options import DataOptions

    names = [f.name for f in dataclasses.fields(DataOptions)]
    for cls in (FitConfig, AdviseConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert all(
            fields[n].metadata == f.metadata for n, f in zip(names, dataclasses.fields(DataOptions), strict=True)
        )
    args = build_parser().parse_args(
        ["advise", "scene.tif", "--vector", "v.gpkg", "--label-field", "cls", "--patch-size", "8", "--nodata", "mask"]
    )
    assert (args.vector, args.label_field, args.patch_size, args.nodata) == ("v.gpkg", "cls", 8, "mask")


SCENE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "landsat8-scene"


@pytest.mark.skipif(not SCENE.is_dir(), reason="../shared/data/landsat8-scene not available")
def test_inspect_a_raster_with_labelled_polygons() -> None:
    tif = SCENE / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    vec = SCENE / "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg"
    f, ds = inspect_task(AdviseConfig(data=str(tif), vector=str(vec), label_field="name", patch_size=8,
                                      bands="landsat8:B2,B3,B4"))  # fmt: skip
    assert f.classes == ["crop", "developed", "tree", "water"] and f.n_samples == len(ds) == 10
    assert sorted(f.labels_per_class.values()) == [1, 1, 4, 4]
    from eotransfer.evaluation.advise import cautions

    (warning,) = cautions(f)
    assert "crop (4), developed (1), tree (1), water (4)" in warning and "zero-shot" in warning
    assert cautions(facts(k=5)) == []
    (auto_warning,) = cautions(facts(k=20), auto=True)  # measured: --auto's folds are too small below 100 samples
    assert "--auto with 60 labelled samples: its cross-validation folds" in auto_warning
    assert "in 4 and 3 of 8 settings" in auto_warning and "--auto-min-samples 100" in auto_warning
    assert cautions(facts(k=34), auto=True) == [] and cautions(facts(k=20)) == []  # 102 samples; no --auto
    (deferred,) = cautions(facts(k=20), auto=True, auto_min_samples=100)
    assert (
        "keeps the ranking's first choice without cross-validating" in deferred and "--auto-min-samples 0" in deferred
    )
    # measured on the east -> west EuroSAT grid: on new regions with few labels the reference can win
    (regions,) = cautions(facts(k=11, new_regions=True))
    assert "new regions with 11 labels per class" in regions and "0.480 vs. 0.445" in regions
    assert cautions(facts(k=60, new_regions=True)) == []


def test_auto_cross_validates_only_what_the_labelled_data_can_measure() -> None:
    from eotransfer.evaluation.advise import Recommendation, cv_measurable

    assert not any(cv_measurable(s) for s in ("coral", "dann", "mmd", "adabn", "distill", "zero-shot"))
    assert all(cv_measurable(s) for s in ("finetune", "feature-extraction", "progressive-unfreeze", "adversarial"))
    # protonet on the labelled classes is an ordinary classifier; for new classes at prediction time, or with
    # classes held out of meta-training, cross-validation on the labelled classes does not measure its point
    assert cv_measurable("protonet")
    assert not cv_measurable(Recommendation("protonet", {"novel_classes": "water"}, "", 0.0))
    (proto,) = [r for r in recommend(facts(), AdviseConfig(new_classes_at_prediction=True)) if r.strategy == "protonet"]
    assert proto.capability and not cv_measurable(proto)


def test_without_transferable_weights_few_labels_add_protonet_as_a_candidate() -> None:
    for k, shots in ((5, 1), (9, 3)):  # under 10 labels per class protonet is second: less stable
        recs = recommend(facts(k=k, weights=None), AdviseConfig())
        assert [r.strategy for r in recs] == ["finetune", "protonet", "feature-extraction"]
        assert recs[1].options == {"weights": None, "shots": shots}  # leaves queries in a 3-fold CV training fold
        assert "episodic" in recs[1].reason and "less stable" in recs[1].reason
    for k in (10, 20, 60, 500):  # from 10 labels per class it leads training from scratch end to end
        recs = recommend(facts(k=k, weights=None), AdviseConfig())
        assert [r.strategy for r in recs] == ["protonet", "finetune", "feature-extraction"]
        assert recs[0].options["shots"] == min(5, (k * 2 // 3) // 2) and "less stable" not in recs[0].reason
    assert "protonet" not in ranked(facts(k=1, weights=None))  # no query left beside a support sample
    # with transferable weights the pre-trained candidates stay as they were
    assert "protonet" not in ranked(facts(k=5))


def test_weights_whose_kernels_each_fill_two_bands_give_way_to_training_from_scratch() -> None:
    """A pre/post stack on single-date weights: the first layer sees pre + post, never the change."""
    shared = {
        "sentinel2-l1c:B04": ["rgb-pre:pre_red", "rgb:red"],
        "sentinel2-l1c:B03": ["rgb-pre:pre_green", "rgb:green"],
    }
    f = facts(k=5, weights_same_sensor=False, shared_kernels=shared, shared_kernel_share=1.0)
    assert f.weights_transfer and not f.weights_see_bands_apart  # no probe needed: structural
    recs = recommend(f, AdviseConfig())
    assert [r.strategy for r in recs][:2] == ["finetune", "protonet"]  # 5 labels per class: fine-tuning first
    assert all(r.options.get("weights") is None for r in recs)
    assert "100% of the data's bands" in recs[0].reason and "B04 fills rgb-pre:pre_red, rgb:red" in recs[0].reason
    assert "never their difference" in recs[0].reason
    assert ranked(facts(k=20, shared_kernels=shared, shared_kernel_share=1.0))[0] == "protonet"
    # a minority of shared kernels (B08 and B8A on one Landsat nir kernel) keeps the pre-trained ranking
    minor = facts(
        k=5, shared_kernels={"landsat8:B5": ["sentinel2-l1c:B08", "sentinel2-l1c:B8A"]}, shared_kernel_share=0.15
    )
    assert minor.weights_see_bands_apart and ranked(minor)[0] == "progressive-unfreeze"


def test_a_stack_of_dates_is_encoded_per_date_first() -> None:
    """Two dates of the same bands: one network per date (siamese) leads, from scratch: fine-tuning below 50 labels
    per class, protonet above."""
    shared = {"sentinel2-l1c:B04": ["rgb-pre:pre_red", "rgb:red"]}
    for k in (5, 20):
        recs = recommend(facts(k=k, shared_kernels=shared, shared_kernel_share=1.0, dates=2), AdviseConfig())
        assert recs[0].strategy == "finetune" and recs[0].options == {"weights": None, "per_date": True}
        assert "stack 2 dates" in recs[0].reason and "never their difference" in recs[0].reason
        assert sum(bool(r.options.get("per_date")) for r in recs) == 1  # the stacked candidates stay behind it
    many = recommend(facts(k=200, shared_kernels=shared, shared_kernel_share=1.0, dates=2), AdviseConfig())
    assert many[0].strategy == "protonet" and many[0].options == {"weights": None, "per_date": True, "shots": 5}
    assert "led on xBD with all labels; 200 labels per class here" in many[0].reason
    # one date: nothing to encode apart
    assert not any(r.options.get("per_date") for r in recommend(facts(k=5, dates=1), AdviseConfig()))


def test_inspect_real_xbd_finds_the_shared_kernels() -> None:
    root = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "xbd"
    if not root.is_dir():
        pytest.skip("shared xBD data not available")
    f, _ = inspect_task(AdviseConfig(data=str(root), patch_size=32, probe=False))
    assert f.weights == "eotransfer:eurosat-s2-resnet10t-moco" and f.band_coverage == 1.0
    assert f.shared_kernels == {
        "sentinel2-l1c:B04": ["rgb-pre:pre_red", "rgb:red"],
        "sentinel2-l1c:B03": ["rgb-pre:pre_green", "rgb:green"],
        "sentinel2-l1c:B02": ["rgb-pre:pre_blue", "rgb:blue"],
    }
    assert f.shared_kernel_share == 1.0 and not f.weights_see_bands_apart and f.dates == 2
    assert all(r.options.get("weights") is None for r in recommend(f, AdviseConfig()))


class Located:
    """A stand-in labelled data set with locations (``lonlat``) and optional groups, as ``EODataset`` has."""

    def __init__(self, lonlat: list[tuple[float, float]], labels: list[int], groups: list[str] | None = None) -> None:
        import numpy as np

        self._lonlat = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = ["Forest", "River", "SeaLake"][: int(self.labels.max()) + 1]
        self.groups = None if groups is None else np.asarray(groups)

    def lonlat(self):  # type: ignore[no-untyped-def]
        return self._lonlat

    def __len__(self) -> int:
        return len(self.labels)


def six_blocks(nan: bool = False) -> Located:
    """Two classes in six 1-degree blocks, 4 samples each, every class in four blocks."""
    lonlat, labels = [], []
    for b in range(6):
        for j in range(4):
            lonlat.append((float("nan"), float("nan")) if nan else (10.0 + b + 0.1 * j, 45.5))
            labels.append((b + j // 2) % 2 if b < 4 else j % 2)
    return Located(lonlat, labels, groups=[f"event{b}" for b in range(6) for _ in range(4)] if nan else None)


def test_spatial_folds_hold_out_whole_blocks_and_keep_every_class_in_training() -> None:
    import numpy as np

    from eotransfer.data.splits import block_ids
    from eotransfer.evaluation import advise as adv

    ds = six_blocks()
    folds, how = adv.spatial_folds(ds, AdviseConfig(folds=3))
    assert folds is not None and how == "3 folds of whole 1° blocks (6)"
    blocks = block_ids(ds.lonlat(), "lonlat-block", 1.0)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(24))  # each sample once
    for train, test in folds:
        assert not set(blocks[train]) & set(blocks[test])  # no block on both sides
        assert set(ds.labels[train]) == {0, 1}
    # --new-regions makes them --auto's folds; without it (or with stratified) samples are drawn at random
    assert adv.cv_folds(ds, AdviseConfig(folds=3, new_regions=True))[1] == how
    random_folds, how = adv.cv_folds(ds, AdviseConfig(folds=3))
    assert how == "3 stratified folds"
    assert any(set(blocks[tr]) & set(blocks[te]) for tr, te in random_folds)
    assert adv.cv_folds(ds, AdviseConfig(folds=3, new_regions=True, cv_split="stratified"))[1] == how
    # 10-degree blocks: all six fall in one, fewer than the folds
    assert adv.spatial_folds(ds, AdviseConfig(folds=3, cv_block_deg=10.0)) == (
        None, "the samples fall in 1 10° blocks, fewer than the 3 folds")  # fmt: skip


def test_spatial_folds_fall_back_with_the_reason_or_refuse_when_asked_for() -> None:
    from eotransfer.evaluation import advise as adv

    ds = six_blocks()  # both classes in every block
    ds.labels[:4] = 2  # 'SeaLake' only in the first block: a fold would train without it
    ds.classes = ["Forest", "River", "SeaLake"]
    folds, why = adv.spatial_folds(ds, AdviseConfig(folds=3))
    assert folds is None and why == "class 'SeaLake' lies in one of the 6 1° blocks, so a fold would train without it"
    assert adv.cv_folds(ds, AdviseConfig(folds=3, new_regions=True, cv_split="auto"))[1] == (
        f"3 stratified folds (not spatial: {why})")  # fmt: skip
    with pytest.raises(ConfigError, match="--cv-split spatial: class 'SeaLake' lies in one of the 6"):
        adv.cv_folds(ds, AdviseConfig(folds=3, cv_split="spatial"))
    # no locations: the data's groups (xBD events) are the blocks; neither: the reason
    grouped = six_blocks(nan=True)
    assert adv.spatial_folds(grouped, AdviseConfig(folds=3))[1] == "3 folds of whole groups (6)"
    grouped.groups = None
    assert adv.spatial_folds(grouped, AdviseConfig(folds=3)) == (None, "the samples have no locations and no groups")
    with pytest.raises(ConfigError, match="--cv-split: 'block' is not one of auto, spatial, stratified"):
        advise("x", cv_split="block")


def test_auto_scores_every_candidate_and_the_reference_on_the_same_spatial_folds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eotransfer.evaluation import advise as adv

    seen: list[object] = []

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        seen.append(kw["folds"])
        return [0.5] * 3 if rec is None else [0.7] * 3

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    recs = [adv.Recommendation("linear-probe", {}, "", 8.6), adv.Recommendation("finetune", {}, "", 8.2)]
    res = adv.measure_candidates(six_blocks(), recs, AdviseConfig(top=2, new_regions=True))
    assert res["cv_folds"] == "3 folds of whole 1° blocks (6)" and len(seen) == 3
    assert all(f is seen[0] for f in seen)  # reference and both candidates: one set of folds


def test_a_target_implies_new_regions_for_the_folds_too() -> None:
    from eotransfer.evaluation import advise as adv

    ds = six_blocks()
    assert AdviseConfig(target="t").for_new_regions and not AdviseConfig().for_new_regions
    assert adv.cv_folds(ds, AdviseConfig(folds=3, target="elsewhere"))[1] == "3 folds of whole 1° blocks (6)"
    assert adv.cv_folds(ds, AdviseConfig(folds=3, target="elsewhere", cv_split="stratified"))[1] == "3 stratified folds"


def test_the_transfer_probe_holds_out_whole_places_for_new_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from eotransfer.data.splits import block_ids
    from eotransfer.evaluation import advise as adv

    seen: list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = []

    def fake_cv(
        ds: object, rec: object, cfg: object, deadline: float, indices: np.ndarray, folds: object
    ) -> list[float]:
        seen.append((indices, folds))  # type: ignore[arg-type]
        return [0.8, 0.6, 0.7] if rec is None else [0.5, 0.5, 0.5]

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    ds = six_blocks()
    res = adv.transfer_probe(ds, "w", AdviseConfig(folds=3, new_regions=True))
    assert res.folds == "3 folds of whole 1° blocks (6)" and res.reference == pytest.approx(0.7)
    assert len(seen) == 3 and all(f is seen[0][1] for _, f in seen)  # the three feature sets: one set of folds
    idx, folds = seen[0]
    blocks = block_ids(ds.lonlat()[idx], "lonlat-block", 1.0)
    for train, test in folds:
        assert not set(blocks[train]) & set(blocks[test])
    # a subsample: positions in it, still whole blocks; without --new-regions, stratified folds
    seen.clear()
    res = adv.transfer_probe(ds, "w", AdviseConfig(folds=3, new_regions=True, probe_samples=20))
    idx, folds = seen[0]
    assert len(idx) < len(ds) and max(max(t) for _, t in folds) < len(idx)
    blocks = block_ids(ds.lonlat()[idx], "lonlat-block", 1.0)
    assert all(not set(blocks[tr]) & set(blocks[te]) for tr, te in folds)
    assert adv.transfer_probe(ds, "w", AdviseConfig(folds=3)).folds == "3 stratified folds"
    # a subsample where a class sits in one block falls back, saying why, even with --cv-split spatial
    ds.labels[:4] = 2
    ds.classes = ["Forest", "River", "SeaLake"]
    res = adv.transfer_probe(ds, "w", AdviseConfig(folds=3, cv_split="spatial"))
    assert res.folds.startswith("3 stratified folds (not spatial: class 'SeaLake' lies in one of")


def test_auto_for_new_regions_warns_that_its_cv_accuracy_is_measured_in_the_labelled_regions() -> None:
    from eotransfer.evaluation.advise import cautions

    warn = "its cross-validation accuracies are measured in the labelled regions"
    assert any(warn in line for line in cautions(facts(k=200, new_regions=True), auto=True))
    assert not any(warn in line for line in cautions(facts(k=200, new_regions=True), auto=False))
    assert not any(warn in line for line in cautions(facts(k=200), auto=True))


def test_a_candidate_that_cannot_train_on_a_fold_gives_its_place_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    from eotransfer.evaluation import advise as adv

    calls: list[str | None] = []

    def fake_cv(ds: object, rec: adv.Recommendation | None, cfg: object, deadline: float, **kw: object) -> list[float]:
        calls.append(None if rec is None else rec.strategy)
        if rec is not None and rec.strategy == "protonet":
            raise ConfigError("--shots: 1 shots leave no query sample in class 'River' (1 training samples)")
        return [0.5] * 3 if rec is None else {"finetune": [0.6] * 3, "feature-extraction": [0.7] * 3}[rec.strategy]

    monkeypatch.setattr(adv, "cross_validate", fake_cv)
    monkeypatch.setattr(adv, "cv_folds", thirds)
    recs = [
        adv.Recommendation(s, {}, "", 9.0 - i) for i, s in enumerate(["finetune", "protonet", "feature-extraction"])
    ]
    res = adv.measure_candidates([0] * 3000, recs, AdviseConfig(top=2))
    assert calls == [None, "finetune", "protonet", "feature-extraction"]
    assert res["skipped"] == [
        ("protonet", "--shots: 1 shots leave no query sample in class 'River' (1 training samples)")
    ]
    assert res["best"].strategy == "feature-extraction" and recs[1].cv_accuracy is None
    calls.clear()
    assert adv.measure_candidates([0] * 3000, recs, AdviseConfig(top=1))["skipped"] == []  # finetune fills the top
    assert calls == [None, "finetune"]
    with pytest.raises(ConfigError, match=r"no candidate could be measured on the folds \(protonet: --shots: 1"):
        adv.measure_candidates([0] * 3000, recs[1:2], AdviseConfig(top=2))


def test_under_robust_the_reference_leads_only_where_it_holds_above_a_constant_answer() -> None:
    holds = facts(
        k=50, reference_robust=0.80, reference_certified=0.62, majority_accuracy=0.55, reference_robust_se=0.05
    )
    recs = recommend(holds, AdviseConfig(robust=True, robust_eps="0.004"))
    assert recs[0].strategy == "feature-extraction" and recs[0].options == {
        "backbone": "band-stats",
        "classifier": "logreg",
    }
    assert "keeps 0.800" in recs[0].reason and "certified >= 0.620" in recs[0].reason and "0.550" in recs[0].reason
    assert recs[1].strategy == "adversarial" and recs[1].options["eps"] == "0.004"
    assert sum(r.options.get("backbone") == "band-stats" for r in recs) == 1  # not proposed twice
    # within one standard error of the majority class: adversarial fine-tuning first, with the measured reason
    near = facts(k=50, reference_robust=0.58, reference_certified=0.3, majority_accuracy=0.55, reference_robust_se=0.05)
    assert not near.reference_holds_under_attack
    first = recommend(near, AdviseConfig(robust=True))[0]
    assert first.strategy == "adversarial" and first.options["eps"] == "0.002"
    assert (
        "not above a constant answer by more than one standard error" in first.reason and "5-14 points" in first.reason
    )
    assert "value_per_reflectance" not in first.options  # guessed by the strategy from the data when not given
    # not measured (no probe): adversarial, and the reason claims nothing about the reference
    plain = recommend(facts(), AdviseConfig(robust=True))[0]
    assert plain.strategy == "adversarial" and "keeps" not in plain.reason


def test_robust_inspection_attacks_the_reference_by_cross_validation(eurosat_like: Path) -> None:
    cfg = AdviseConfig(data=str(eurosat_like), bands="eurosat-ms", robust=True, robust_eps="0.0035",
                       robust_value_per_reflectance=10000.0, probe=False, verbose=False)  # fmt: skip
    f, _ = inspect_task(cfg)
    assert f.reference_robust is not None and f.reference_certified is not None and f.majority_accuracy is not None
    assert 0.0 <= f.reference_certified <= f.reference_robust <= 1.0
    assert f.majority_accuracy == pytest.approx(1 / 3, abs=0.05)  # the fixture's classes are balanced
    small, _ = inspect_task(AdviseConfig(**{**cfg.__dict__, "robust_eps": "0.0001"}))
    assert small.reference_robust == pytest.approx(1.0) and small.reference_holds_under_attack
    with pytest.raises(ConfigError, match="--robust-eps: 0.5 reflectance .* exceeds the whole range"):
        inspect_task(AdviseConfig(**{**cfg.__dict__, "robust_eps": "0.5"}))


def test_auto_under_robust_scores_each_fold_under_attack(eurosat_like: Path) -> None:
    import numpy as np

    from eotransfer.api import load_data
    from eotransfer.evaluation.advise import Recommendation, cross_validate, stratified_folds

    ds = load_data(AdviseConfig(data=str(eurosat_like), bands="eurosat-ms"))
    plain = AdviseConfig(data=str(eurosat_like), bands="eurosat-ms", folds=2)
    robust = AdviseConfig(**{**plain.__dict__, "robust": True, "robust_eps": "0.0035",
                             "robust_value_per_reflectance": 10000.0})  # fmt: skip
    assert plain.robustness is None and robust.robustness == {
        "attack": "pgd", "eps": "0.0035", "pgd_steps": 10, "value_per_reflectance": 10000.0}  # fmt: skip
    folds = stratified_folds(np.asarray(ds.labels), plain)
    fe = Recommendation("feature-extraction", {"weights": None, "classifier": "logreg"}, "", 0.0)
    for rec in (None, fe):
        clean = cross_validate(ds, rec, plain, float("inf"), folds=folds)
        under_attack = cross_validate(ds, rec, robust, float("inf"), folds=folds)
        assert len(clean) == len(under_attack) == 2
        assert all(a <= c for a, c in zip(under_attack, clean, strict=True))
    assert sum(cross_validate(ds, None, robust, float("inf"), folds=folds)) < sum(
        cross_validate(ds, None, plain, float("inf"), folds=folds))  # the budget bites on the fixture  # fmt: skip
    knn = Recommendation("feature-extraction", {"weights": None, "classifier": "knn"}, "", 0.0)
    with pytest.raises(ConfigError, match="--robust: no robust accuracy .*not linear"):
        cross_validate(ds, knn, robust, float("inf"), folds=folds)


def test_the_transfer_probe_scores_clean_accuracy_under_robust_too(eurosat_like: Path) -> None:
    from eotransfer.api import load_data
    from eotransfer.evaluation.advise import transfer_probe

    plain = AdviseConfig(data=str(eurosat_like), bands="eurosat-ms", folds=2)
    robust = AdviseConfig(**{**plain.__dict__, "robust": True, "robust_eps": "0.0035"})
    ds = load_data(plain)
    weights = "eotransfer:eurosat-s2-resnet10t-moco"
    assert transfer_probe(ds, weights, robust) == transfer_probe(ds, weights, plain)


def test_robust_caution_when_even_the_reference_does_not_beat_a_constant_answer() -> None:
    from eotransfer.evaluation.advise import cautions

    level = facts(k=40, reference_robust=0.138, reference_certified=0.02, majority_accuracy=0.120,
                  reference_robust_se=0.05)  # fmt: skip  # EuroSAT at 0.01, seed 3: within one SE
    (warning,) = cautions(level)
    assert "keeps only 0.138 under attack, not above a constant answer (0.120" in warning
    assert "measure the candidates with --auto" in warning and "0.149" in warning
    (with_auto,) = cautions(level, auto=True)
    assert "--auto's robust scores below" in with_auto and "(0.120) holds no better than a constant answer" in with_auto
    assert ranked(level, robust=True)[0] == "adversarial"  # the ranking itself is unchanged
    holds = facts(k=40, reference_robust=0.295, reference_certified=0.13, majority_accuracy=0.120,
                  reference_robust_se=0.05)  # fmt: skip
    assert cautions(holds) == [] and cautions(facts(k=40)) == []  # held, or not asked with --robust
