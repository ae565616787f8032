"""``eotransfer advise``: which transfer strategy fits this task, and why.

The advisor inspects the task — labelled samples per class, classes the user wants predicted without
labels, an unlabelled target region or sensor and its domain gap to the labelled data, how well the
available pre-trained weights cover the data's bands, the compute budget and a deployment limit —
and ranks strategies with a reason for each.  The rules encode what this project's own benchmarks
measured (``benchmarks/README.md``): with few labels a classifier on frozen pre-trained features is
as good as fine-tuning and far cheaper; fine-tuning pays off from tens of labels per class; weights
whose bands do not cover the data's transfer poorly, and so do weights whose first-layer kernels each fill
several data bands (a pre/post stack on single-date weights sees only the sum of the dates, never the
change); a large proxy A-distance (Ben-David et al. 2010)
calls for domain adaptation.  Because a rule can be wrong for a given data set, ``--auto`` measures
the top candidates by cross-validation on the labelled data (with the band-statistics reference
beside them) and keeps the best: the ranking proposes, the data decide.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from eotransfer.data.options import DataOptions
from eotransfer.errors import ConfigError, DataError
from eotransfer.models.band_mapping import BandMapping, map_bands
from eotransfer.strategies.base import param, validate_params

#: pre-trained weights worth proposing only when they fill at least this share of the data's bands
MIN_BAND_COVERAGE = 0.5
#: a proxy A-distance above this (on band statistics) counts as a domain shift worth adapting to
PAD_SHIFT = 1.0
#: pre-trained weights are not counted on when at least this share of the data's bands shares a first-layer
#: kernel with another data band (a pre/post stack on single-date weights: the network sees only their sum)
MAX_SHARED_KERNELS = 0.5
#: strategies that classify a network's frozen features, what the transfer probe measures
FROZEN_FEATURE_STRATEGIES = frozenset({"linear-probe", "feature-extraction"})

#: how to fit the band-statistics reference as a deployable model (models/band_statistics.py)
REFERENCE_FIT = "eotransfer fit {data} --backbone band-stats --strategy feature-extraction --out MODEL_DIR"
#: the fit options of that model, as --auto keeps it
REFERENCE_OPTIONS: dict[str, Any] = {"backbone": "band-stats", "classifier": "logreg"}


def reference_candidate() -> Recommendation:
    """The band-statistics reference as a recommendation (ranked below every strategy)."""
    return Recommendation(
        "feature-extraction", dict(REFERENCE_OPTIONS),
        "per-band statistics + logistic regression (the reference row; models/band_statistics.py): no candidate "
        "came within one standard error of it on the same folds", float("-inf"),
    )  # fmt: skip


#: ``--cv-split`` choices: how ``--auto`` draws its cross-validation folds
CV_SPLITS = ("auto", "spatial", "stratified")

#: below this many labelled samples, --auto's folds are too small to rank candidates reliably (measured, see
#: :func:`cautions`): it warns, and ``--auto-min-samples`` can make it keep the ranking's first choice instead
AUTO_MIN_SAMPLES = 100


@dataclass
class AdviseConfig(DataOptions):
    """What ``advise`` needs: the labelled data (read as ``fit`` reads it) and the user's constraints."""

    target: str | None = param(None, "unlabelled target-domain imagery (another region or sensor), if any")
    target_bands: str | None = param(None, "the bands of --target, as --bands")
    new_regions: bool = param(
        False,
        "the model will be applied to regions no label comes from (what a spatial split tests); implied by --target",
    )
    unseen_classes: str | None = param(None, "classes to predict that have no labels, comma-separated")
    new_classes_at_prediction: bool = param(False, "new classes will be given by a few examples at prediction time")
    backbone: str = param("resnet10t", "backbone architecture for the candidates")
    weights: str | None = param(None, "pre-trained weights to consider (default: the local catalogue)")
    budget_minutes: float = param(30.0, "compute budget for training, minutes", 0.1, 1e6)
    max_params_m: float | None = param(None, "deployment limit: millions of parameters of the final model", 0.01)
    robust: bool = param(False, "the model must withstand adversarial perturbations")
    robust_eps: str = param(
        "0.002",
        "--robust: the L∞ budget the model must withstand, in reflectance units (one value and/or BAND=value, as "
        "adversarial's --eps); the band-statistics reference is attacked at it in cross-validation",
    )
    robust_value_per_reflectance: float | None = param(
        None,
        "--robust: data units per reflectance (10000 for Sentinel-2 DN, 255 for 8-bit RGB; guessed if not given)",
        1e-9,
    )
    auto: bool = param(False, "measure the top candidates by cross-validation and keep the best (writes --out)")
    top: int = param(3, "candidates measured by --auto", 1, 20)
    folds: int = param(3, "cross-validation folds of --auto", 2, 20)
    cv_split: str = param(
        "auto",
        "--auto's folds: 'spatial' holds out whole --cv-block-deg lon/lat blocks (or the data's groups) together, "
        "'stratified' draws samples at random; 'auto' is spatial with --new-regions where every sample has a location",
        choices=CV_SPLITS,
    )
    cv_block_deg: float = param(1.0, "--cv-split spatial: size of the lon/lat blocks held out together, degrees", 1e-3)
    one_se: bool = param(
        True, "--auto keeps the highest-ranked candidate within one standard error of the best CV accuracy"
    )
    auto_min_samples: int = param(
        0,
        "below this many labelled samples --auto keeps the ranking's first choice without cross-validating "
        "(e.g. 100: folds of a few samples per class rank the candidates no better than the ranking does, "
        "benchmarks/README.md); 0 always cross-validates",
        0,
        10**9,
    )
    auto_reference: bool = param(
        True,
        "--auto counts the band-statistics reference (--backbone band-stats) as its last-ranked candidate: kept "
        "only when no candidate comes within one standard error of it",
    )
    seed: int = param(0, "random seed", 0, 2**31 - 1)
    out: str | None = param(None, "--auto: directory of the winning model")
    probe: bool = param(
        True, "check that the pre-trained features transfer: a quick CV of frozen features vs. a random-init network's"
    )
    probe_samples: int = param(600, "labelled samples the transfer probe uses at most", 20, 10**6)
    verbose: bool = param(True, "print the inspection and the ranking")

    @property
    def robustness(self) -> dict[str, Any] | None:
        """``--robust``: the attack ``--auto`` scores candidates under (a benchmark's ``robustness:``), else None."""
        if not self.robust:
            return None
        return {"attack": "pgd", "eps": self.robust_eps, "pgd_steps": 10,
                "value_per_reflectance": self.robust_value_per_reflectance}  # fmt: skip

    @property
    def for_new_regions(self) -> bool:
        """The model will be applied where no label comes from: ``--new-regions``, or implied by ``--target``."""
        return self.new_regions or bool(self.target)

    @property
    def wants_spatial_folds(self) -> bool:
        """Cross-validation should hold out whole places: ``--cv-split spatial``, or ``auto`` for new regions."""
        return self.cv_split == "spatial" or (self.cv_split == "auto" and self.for_new_regions)


@dataclass
class Recommendation:
    """One ranked strategy: its fit options and why it is proposed."""

    strategy: str
    options: dict[str, Any]
    reason: str
    score: float
    cv_accuracy: float | None = None
    cv_ci95: float | None = None
    #: proposed for what the labelled classes cannot show (e.g. new classes given at prediction time), so
    #: ``--auto`` does not put it in a cross-validation contest it is not meant to win
    capability: bool = False


@dataclass
class TaskFacts:
    """What the inspection found."""

    n_samples: int
    classes: list[str]
    labels_per_class: dict[str, int]
    bands: list[str]
    weights: str | None
    band_coverage: float
    unseen_classes: list[str] = field(default_factory=list)
    target_pad: float | None = None
    gpu: bool = False
    seconds_per_epoch_estimate: float = 0.0
    #: transfer probe: CV accuracy of logistic regression on frozen pre-trained / random-init features
    probe_pretrained: float | None = None
    probe_random: float | None = None
    #: standard error of the probe's fold-wise difference (pre-trained minus random, on the same folds)
    probe_se: float | None = None
    #: the band-statistics reference (per-band statistics + logistic regression) on the probe's folds, and the
    #: standard error of its fold-wise difference from the feature set the ranking counts on (pre-trained
    #: when :attr:`weights_transfer`, else random init)
    probe_reference: float | None = None
    probe_reference_se: float | None = None
    #: how the probe's folds were drawn (:func:`cv_folds`: whole places for new regions)
    probe_folds: str | None = None
    #: the weights were pre-trained on the data's own bands (same sensor); False: bands matched by common
    #: name or wavelength from another sensor (e.g. 10 m Sentinel-2 weights on aerial RGB); None: unknown
    weights_same_sensor: bool | None = None
    #: weight bands whose first-layer kernel fills several data bands ({weight band: [data bands]}), and the
    #: share of the data's bands in such groups (``BandMapping.shared_kernels``)
    shared_kernels: dict[str, list[str]] = field(default_factory=dict)
    shared_kernel_share: float = 0.0
    #: dates of a multi-date stack (one band definition repeated per date, ``eotransfer.models.per_date.date_groups``);
    #: 1: one date
    dates: int = 1
    #: the model is meant for regions no label comes from (``--new-regions``, or a ``--target`` is given)
    new_regions: bool = False
    #: ``--robust``: the band-statistics reference under attack at ``--robust-eps`` (cross-validated,
    #: :func:`robust_reference_probe`): robust accuracy (PGD-10 and the worst per-band offsets), its certified
    #: lower bound, the majority class's accuracy on the same folds, and the standard error of the fold-wise
    #: difference robust minus majority
    reference_robust: float | None = None
    reference_certified: float | None = None
    majority_accuracy: float | None = None
    reference_robust_se: float | None = None

    @property
    def weights_see_bands_apart(self) -> bool:
        """False when most data bands share a first-layer kernel with another (:data:`MAX_SHARED_KERNELS`).

        Each weight band's kernel then fills two or more data bands and the first layer adds them: the
        network sees only, say, pre + post, never the change between the dates, and any signal that lies in
        that difference (building damage in a pre/post stack) cannot reach its features.  Structural, so it
        needs no labels; the transfer probe's few-label estimate is too noisy to show it (measured on xBD with
        5 and 20 labels per class, benchmarks/README.md).
        """
        return self.shared_kernel_share < MAX_SHARED_KERNELS

    @property
    def weights_transfer(self) -> bool:
        """False when the probe found the pre-trained features worse than a random network's beyond noise.

        The pre-trained weights are the prior: they are set aside only when the random-init features beat
        them by more than one standard error of the paired fold-wise difference (``probe_se``), as in the
        one-standard-error rule of ``--auto``.  With a few labels per class the folds hold a handful of
        samples, and a tie or a difference of a sample or two says nothing about the weights.
        """
        if self.probe_pretrained is None or self.probe_random is None:
            return True
        return self.probe_random - self.probe_pretrained <= (self.probe_se or 0.0)

    @property
    def reference_holds_under_attack(self) -> bool:
        """``--robust``: the reference under attack still beats the majority class by more than one standard error.

        Per-band statistics move by at most the budget under any perturbation within it, so a linear classifier
        on them loses a bounded margin (:func:`~eotransfer.evaluation.reference.certified_correct`); where it
        keeps robust accuracy above a constant answer, it was the most robust row on this project's robust grids,
        and where it fell below one, adversarial fine-tuning led (benchmarks/README.md, "Clean and robust accuracy").
        """
        if self.reference_robust is None or self.majority_accuracy is None:
            return False
        return self.reference_robust - self.majority_accuracy > (self.reference_robust_se or 0.0)

    @property
    def reference_leads(self) -> bool:
        """True when the band-statistics reference beat the probe's network features by more than one standard error.

        The same test as :attr:`weights_transfer`, one step further: the network's features (pre-trained when
        they transfer, else random init) are the prior, and the reference displaces them only when it scores
        above them by more than one standard error of the paired fold-wise difference.  A logistic regression
        on a network's frozen features is the cheapest strategy built on it; when plain band statistics beat
        it on these labels, the spectra carry the classes better than the features do, as on EuroSAT east ->
        west at 3 labels per class (benchmarks/README.md, "New regions").
        """
        if self.probe_reference is None or self.probe_pretrained is None or self.probe_random is None:
            return False
        arm = self.probe_pretrained if self.weights_transfer else self.probe_random
        return self.probe_reference - arm > (self.probe_reference_se or 0.0)


def band_coverage(data_bands: Any, weight_bands: Any) -> float:
    """Share of the data's bands that the weights' bands fill (by name, common name or wavelength)."""
    return map_bands(weight_bands, data_bands, policy="zero").coverage


def best_weights(data_bands: Any, arch: str) -> tuple[str | None, float]:
    """The local catalogue's weights of architecture ``arch`` covering most of the data's bands."""
    from eotransfer.bands import BandSet
    from eotransfer.models.catalogue import local_catalogue

    best: tuple[str | None, float] = (None, 0.0)
    for row in local_catalogue():
        if row.get("arch") != arch:
            continue
        card = json.loads((Path(row["path"]) / "card.json").read_text())
        cov = band_coverage(data_bands, BandSet.from_list(card["bands"]))
        if cov > best[1]:
            best = (row["name"], cov)
    return best


def inspect_task(cfg: AdviseConfig, ds: Any = None) -> tuple[TaskFacts, Any]:
    """Open the data (and the target) and gather the facts the rules use.

    ``ds``: an already opened data set to inspect instead of ``cfg.data`` (e.g. one training side of a split).
    """
    import torch

    from eotransfer.api import load_data
    from eotransfer.data.pool import open_pool_source
    from eotransfer.errors import BandError
    from eotransfer.evaluation.domain import proxy_a_distance
    from eotransfer.evaluation.reference import band_statistics_matrix
    from eotransfer.models.per_date import date_groups
    from eotransfer.models.weights import resolve_weights

    ds = load_data(cfg) if ds is None else ds
    try:
        dates = len(date_groups(ds.bands))
    except BandError:  # one date, or bands that do not repeat evenly
        dates = 1
    counts = ds.class_counts()
    unseen = [c.strip() for c in (cfg.unseen_classes or "").split(",") if c.strip()]
    weights = cfg.weights or best_weights(ds.bands, cfg.backbone)[0]
    weight_bands = resolve_weights(weights, cfg.backbone).bands if weights else None
    mapping = map_bands(weight_bands, ds.bands, policy="zero") if weight_bands is not None else None
    cov = mapping.coverage if mapping is not None else 0.0
    same_sensor = None if weight_bands is None else set(ds.bands.keys) <= set(weight_bands.keys)
    pad = None
    if cfg.target:
        tgt = open_pool_source(cfg.target, bands=cfg.target_bands)
        if tgt.bands.keys != ds.bands.keys:
            tgt.map_bands_to(ds.bands, missing="mask")
        rng = np.random.default_rng(cfg.seed)
        s_idx = rng.choice(len(ds), min(len(ds), 500), replace=False)
        t_idx = rng.choice(len(tgt), min(len(tgt), 500), replace=False)
        pad = proxy_a_distance(band_statistics_matrix(ds.checked_read, s_idx),
                               band_statistics_matrix(tgt.checked_read, t_idx), cfg.seed)  # fmt: skip
    h, w = ds.checked_read(0).shape[-2:]
    # a resnet10t training step costs ~4 ms per 64x64 image on two CPU cores (benchmarks/README.md), ~50x less on a GPU
    gpu = torch.cuda.is_available()
    per_epoch = len(ds) * 0.004 * (h * w) / (64 * 64) / (50 if gpu else 1)
    facts = TaskFacts(len(ds), list(ds.classes), counts, ds.bands.keys, weights, cov, unseen, pad, gpu, per_epoch,
                      weights_same_sensor=same_sensor, shared_kernels=mapping.shared_kernels if mapping else {},
                      shared_kernel_share=mapping.shared_share if mapping else 0.0, dates=dates,
                      new_regions=cfg.for_new_regions)  # fmt: skip
    if cfg.probe and weights is not None and cov >= MIN_BAND_COVERAGE and min(counts.values(), default=0) >= 2:
        probe = transfer_probe(ds, weights, cfg)
        facts.probe_pretrained, facts.probe_random, facts.probe_se = probe.pretrained, probe.random, probe.se
        facts.probe_reference, facts.probe_reference_se = probe.reference, probe.reference_se
        facts.probe_folds = probe.folds
    if cfg.robust and min(counts.values(), default=0) >= 2:
        rob = robust_reference_probe(ds, cfg)
        facts.reference_robust, facts.reference_certified = rob.robust, rob.certified
        facts.majority_accuracy, facts.reference_robust_se = rob.majority, rob.se
    return facts, ds


class ProbeResult(NamedTuple):
    """The transfer probe's mean CV accuracies and the standard errors of their paired fold-wise differences."""

    pretrained: float
    random: float
    #: of pre-trained minus random
    se: float
    #: band statistics + logistic regression on the same folds
    reference: float
    #: of the reference minus the feature set the ranking counts on (pre-trained unless random beat it beyond ``se``)
    reference_se: float
    #: how the folds were drawn (:func:`cv_folds`)
    folds: str = ""


def probe_indices(ds: Any, cfg: AdviseConfig) -> np.ndarray:
    """The probes' samples: every one, or a stratified subsample of ``probe_samples`` (each class keeps its share,
    at least 2), drawn with ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    idx = np.arange(len(ds))
    if len(idx) > cfg.probe_samples:
        share = cfg.probe_samples / len(idx)
        idx = np.sort(np.concatenate([
            rng.choice(c_idx, min(len(c_idx), max(2, round(share * len(c_idx)))), replace=False)
            for c in np.unique(ds.labels) if len(c_idx := np.flatnonzero(ds.labels == c))
        ]))  # fmt: skip
    return idx


class RobustProbe(NamedTuple):
    """``--robust``: the band-statistics reference under attack, mean over the probe's folds."""

    robust: float
    certified: float
    #: the best constant answer's accuracy on the held-out folds (the majority class's share of each)
    majority: float
    #: of robust minus majority, fold by fold
    se: float


def robust_reference_probe(ds: Any, cfg: AdviseConfig) -> RobustProbe:
    """How robust is the cheapest model here?  The band-statistics reference attacked at ``--robust-eps``, by CV.

    On the transfer probe's samples and folds (:func:`probe_indices`, :func:`cv_folds`), each fold's reference
    (:func:`~eotransfer.evaluation.reference.fit_band_statistics_classifier`) is attacked on its held-out fold by
    :func:`~eotransfer.evaluation.reference.attack_reference`: PGD-10 (Madry et al. 2018) and the worst uniform
    offset of each band, with its certified lower bound beside.  Beside it, the best constant answer on the same
    held-out fold (its majority class's share): a constant answer is immune to any perturbation, so robust
    accuracy below it is no better than answering one class everywhere.  The held-out share, not the training
    fold's majority: with a fixed number of labels per class the training fold is balanced, and its majority
    class can be the held-out fold's rarest (spatial folds share the classes unevenly).
    """
    from eotransfer.engine.metrics import standard_error
    from eotransfer.evaluation.reference import (
        attack_reference,
        band_statistics_matrix,
        fit_band_statistics_classifier,
    )

    idx = probe_indices(ds, cfg)
    splits, _ = cv_folds(ds, cfg, indices=idx, strict=False)
    feats = band_statistics_matrix(ds.checked_read, idx)
    labels = np.asarray(ds.labels)[idx]
    robust, cert, major = [], [], []
    for tr, te in splits:
        clf = fit_band_statistics_classifier(feats[tr], labels[tr], cfg.seed)
        res = attack_reference(clf, ds.bands, ds.checked_read, idx[te], labels[te], len(ds.classes), seed=cfg.seed,
                               option="--robust-eps", **(cfg.robustness or {}))  # fmt: skip
        robust.append(res["robust_accuracy"])
        cert.append(res["certified_accuracy"])
        major.append(float(np.bincount(labels[te]).max() / len(te)))  # the best constant answer on this fold
    r, m = np.asarray(robust), np.asarray(major)
    return RobustProbe(float(r.mean()), float(np.mean(cert)), float(m.mean()), standard_error(r - m))


def transfer_probe(ds: Any, weights: str, cfg: AdviseConfig) -> ProbeResult:
    """Do the weights' features transfer to these images?  Mean CV accuracy, pre-trained vs. random init.

    Returns both means and the standard error of their fold-wise difference (the folds are the same), and
    the band-statistics reference on the same folds (:attr:`TaskFacts.reference_leads`).

    Run by :func:`inspect_task` when every class has at least two labelled samples (two folds).

    A logistic regression on frozen, globally pooled features, cross-validated on at most
    ``probe_samples`` labelled samples, once with the pre-trained weights and once with the same
    architecture randomly initialised: the cheap "linear evaluation" of representation learning
    (Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?", CVPR).  Weights pre-trained
    on another sensor or resolution (10 m Sentinel-2 weights on 0.5 m aerial chips, say) can do no
    better than random features; then the rules do not count on them.

    The folds are drawn as ``--auto``'s are (:func:`cv_folds`, on the subsample): for new regions they hold
    out whole places where the subsample allows, so the three feature sets are compared on what a model for
    new regions must do; where it does not, stratified folds, and :attr:`ProbeResult.folds` says why.
    """
    from eotransfer.engine.metrics import standard_error

    idx = probe_indices(ds, cfg)
    splits, how = cv_folds(ds, cfg, indices=idx, strict=False)
    cfg = dataclasses.replace(cfg, robust=False)  # the probe asks whether features transfer: clean accuracy
    accs = []
    for w in (weights, None):
        rec = Recommendation("feature-extraction", {"weights": w, "classifier": "logreg"}, "probe", 0.0)
        accs.append(np.asarray(cross_validate(ds, rec, cfg, math.inf, indices=idx, folds=splits)))
    pre, rnd = accs
    se = standard_error(pre - rnd)
    ref = np.asarray(cross_validate(ds, None, cfg, math.inf, indices=idx, folds=splits))
    arm = pre if rnd.mean() - pre.mean() <= se else rnd  # as TaskFacts.weights_transfer decides
    return ProbeResult(float(pre.mean()), float(rnd.mean()), se, float(ref.mean()), standard_error(ref - arm), how)


def recommend(facts: TaskFacts, cfg: AdviseConfig) -> list[Recommendation]:
    """Ranked strategies for the task (highest score first), each with its reason."""
    k = min(facts.labels_per_class.values()) if facts.labels_per_class else 0
    pre = (facts.weights is not None and facts.band_coverage >= MIN_BAND_COVERAGE and facts.weights_transfer
           and facts.weights_see_bands_apart)  # fmt: skip
    w = {"weights": facts.weights} if pre else {}
    src = f"the pre-trained weights {facts.weights} (they fill {facts.band_coverage:.0%} of the data's bands)"
    epochs_affordable = cfg.budget_minutes * 60 / max(facts.seconds_per_epoch_estimate, 1e-3)
    recs: list[Recommendation] = []

    def add(strategy: str, score: float, reason: str, capability: bool = False, **options: Any) -> None:
        recs.append(Recommendation(strategy, {**w, **options}, reason, score, capability=capability))

    if facts.unseen_classes:
        # uncalibrated, no EuroSAT test patch went to an unseen class (U = 0); prior matching gave H 0.24-0.34
        # (benchmarks/README.md, "Generalised zero-shot inside the grid")
        pool: dict[str, Any] = {"calibration_pool": cfg.target} if cfg.target else {}
        how = (f"calibrated stacking's γ chosen by prior matching on the unlabelled {cfg.target}" if cfg.target else
               "calibrated stacking; uncalibrated, it sends every image to a seen class, so give unlabelled imagery "
               "holding the unseen classes as --calibration-pool (or set --calibration)")  # fmt: skip
        add("zero-shot", 10, f"classes {', '.join(facts.unseen_classes)} have no labels: only their descriptions can "
            f"name them (generalised zero-shot, {how})", unseen_classes=",".join(facts.unseen_classes), **pool)  # fmt: skip
    if cfg.new_classes_at_prediction:
        add("protonet", 9, "new classes arrive with a few examples at prediction time: prototypes from a new support "
            "set need no retraining", capability=True)  # fmt: skip
    if facts.target_pad is not None and facts.target_pad >= PAD_SHIFT:
        add("coral", 8.5, f"the target differs from the labelled data (proxy A-distance {facts.target_pad:.2f} ≥ "
            f"{PAD_SHIFT}); CORAL aligns their feature covariances, the most stable of the adaptation losses",
            target=cfg.target)  # fmt: skip
        add("dann", 7.5, "the same shift; adversarial alignment (DANN) is stronger but less stable", target=cfg.target)
        # measured (benchmarks/README.md, "AdaBN"): target BatchNorm statistics cost 23 points on EuroSAT west -> east
        # (calibrated reflectance, where the channel means carry the class mix) and nothing on Harvey west -> east
        add("adabn", 5.5, "the cheapest adaptation (BatchNorm statistics of the target, no training), but risky: "
            "it removes real differences of the channel means along with the shift (measured: -23 points on "
            "EuroSAT west to east, +-0 on Harvey); check it on a few labelled target samples first", target=cfg.target)  # fmt: skip
    if pre:
        # measured (benchmarks/README.md, "Reuse strategies"): with few labels, unfreezing top-down was the best
        # or tied-best pre-trained strategy on EuroSAT (5 and all ~13 per class) and on Harvey (5 per class), a
        # logistic regression on frozen features close behind at a fraction of the cost; from ~50 labels per
        # class end-to-end fine-tuning catches up
        fe_score = 8.0 if k < 50 else 6.0
        pu_score = 8.2 if k < 50 else 7.7
        ft_score = 7.8 if k >= 50 else (6.5 if k >= 20 else 4.0)
        cross = facts.weights_same_sensor is False
        if cross and k < 50:
            # measured (benchmarks/README.md, Harvey grid): weights from another sensor and resolution (10 m
            # Sentinel-2 on 0.5 m aerial RGB) adapted with 5-20 labels per class fell to a constant answer or
            # below frozen features + logistic regression, which led there; on EuroSAT (the weights' own
            # sensor) unfreezing led.  From ~50 labels per class fine-tuning leads on both.
            fe_score, pu_score, ft_score = 8.4, 7.0, min(ft_score, 4.0)
        lp_score = 5.0
        elsewhere = facts.new_regions and not cross and k < 50
        if elsewhere:
            # Kumar et al. 2022 ("Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
            # ICLR): adapting the backbone to the labelled regions moves the features of other regions less than
            # theirs, a linear head on frozen features does not.  Measured (benchmarks/README.md, "new regions"):
            # EuroSAT west -> east, the linear probe led with 5 and all ~10 labels per class (0.668 / 0.694 against
            # unfreezing's 0.635 / 0.681), which led on the random split; checked east -> west out of sample
            lp_score = 8.6
        if epochs_affordable < 30:  # the budget cannot train end to end for long: frozen features first
            pu_score, ft_score = min(pu_score, fe_score - 0.5), min(ft_score, fe_score - 1)
        add("progressive-unfreeze", pu_score, f"{k} labels per class with {src}: unfreezing top-down keeps the "
            "pre-trained features while adapting them" + ("" if epochs_affordable >= 30 else
            "; the budget allows few epochs on this machine"))  # fmt: skip
        fe_why = (f"{k} labels per class and weights from another sensor (bands matched by common name or "
                  "wavelength): a logistic regression on their frozen features is safer than adapting them "
                  "with so few labels" if cross and k < 50 else
                  f"{k} labels per class: a logistic regression on frozen features of {src}, close to the best "
                  "with few labels at a fraction of the cost")  # fmt: skip
        add("feature-extraction", fe_score, fe_why, classifier="logreg")
        add("finetune", ft_score, f"{k} labels per class with {src}: end-to-end fine-tuning at a lower backbone "
            "learning rate" + ("" if epochs_affordable >= 30 else "; the budget allows few epochs on this machine"))  # fmt: skip
        add("linear-probe", lp_score, (f"{k} labels per class and the model is for regions no label comes from: a "
            f"linear head on the frozen features of {src} generalises there better than features adapted to the "
            "labelled regions (Kumar et al. 2022)") if elsewhere else
            f"a linear head on the frozen features of {src}; cheap and hard to overfit")  # fmt: skip
    else:
        if facts.weights is None:
            why = "no local pre-trained weights of this architecture"
        elif facts.band_coverage < MIN_BAND_COVERAGE:
            why = f"the weights {facts.weights} fill only {facts.band_coverage:.0%} of the data's bands"
        elif not facts.weights_see_bands_apart:
            pairs = BandMapping.describe_shared(facts.shared_kernels, short=True)
            why = (f"the weights {facts.weights} fill {facts.shared_kernel_share:.0%} of the data's bands with a kernel "
                   f"another data band shares ({pairs}): their first layer sees only the sum of such bands, never "
                   "their difference (the change between two dates of a stack)")  # fmt: skip
        else:
            why = (f"frozen features of the weights {facts.weights} classify these images worse than a randomly "
                   f"initialised network's (logistic regression, cross-validated: {facts.probe_pretrained:.3f} vs. "
                   f"{facts.probe_random:.3f}), so they do not transfer here (another sensor or resolution)")  # fmt: skip
        add("finetune", 6 if k >= 50 else 3, f"{why}: train end to end from scratch ({k} labels per class here); "
            "self-supervised pre-training on unlabelled imagery of this sensor (eotransfer pretrain) would help",
            weights=None)  # fmt: skip
        add("feature-extraction", 2.5, f"{why}: a logistic regression on the features of a randomly initialised "
            "network, a cheap baseline", weights=None, classifier="logreg")  # fmt: skip
        if k >= 2:
            # Snell et al. 2017: episodic training of an embedding, nearest-prototype classification.  Measured from
            # scratch (benchmarks/README.md, the four grids): above fine-tuning from scratch in 6 of 7 settings
            # (xBD 20 and all labels per class: 0.923 / 0.955 vs. 0.857 / 0.948; Harvey 5, 20, all; EuroSAT west ->
            # east 5 and all), below it only at xBD's 5 labels per class, where one seed of five collapsed: so first
            # from 10 labels per class, second below.  Shots leave queries in a cross-validation training fold.
            shots = max(1, min(5, (k * (cfg.folds - 1) // cfg.folds) // 2))
            score = (6.2 if k >= 50 else 3.2) if k >= 10 else 2.8
            add("protonet", score, f"{why}: {k} labels per class, so episodic prototypical training from scratch "
                f"({shots}-shot episodes), which led training from scratch end to end on most of this project's grids"
                + ("" if k >= 10 else "; less stable than fine-tuning with under ~10 labels per class"),
                weights=None, shots=shots)  # fmt: skip
        if facts.dates > 1:
            # Daudt et al. 2018: one encoder with shared weights per date, the head compares their features.
            # Measured from scratch on xBD (benchmarks/README.md, "Per-date encoding"): above the same strategy on
            # the six-band stack in 9 of 12 settings; fine-tuning led with 5 and 20 labels per class (0.894 / 0.928
            # against the stack's best, 0.870 / 0.923), protonet with every label (0.967 against 0.955); the
            # weights run per date did no better than scratch
            per_date: tuple[str, dict[str, Any]] = ("finetune", {}) if k < 50 else ("protonet", {"shots": shots})
            add(per_date[0], 3.6 if k < 50 else 6.4, f"{why}, but the bands stack {facts.dates} dates of the same "
                "bands: train from scratch with one network run on each date (shared weights, siamese) and the "
                f"last date's features and their change given to the head ({per_date[0]}, which led on xBD with "
                f"{'5-20 labels per class' if k < 50 else 'all labels'}; {k} labels per class here)", weights=None,
                per_date=True,
                **per_date[1])  # fmt: skip
    if cfg.robust:
        # measured (benchmarks/README.md, "Clean and robust accuracy", PGD-10 at the training budget, 5 seeds):
        # adversarial fine-tuning led under attack on Harvey (0.568 at 20 labels per class, 0.520 from scratch at
        # all), where the reference fell below the majority class, and cost 5-14 clean points there at all labels;
        # the reference led on xBD with all labels (0.889 vs. 0.659) and on EuroSAT (0.295 / 0.190 vs. <= 0.124)
        budget = f"--robust-eps {cfg.robust_eps} reflectance"
        adv_opts: dict[str, Any] = {"eps": cfg.robust_eps}
        if cfg.robust_value_per_reflectance is not None:
            adv_opts["value_per_reflectance"] = cfg.robust_value_per_reflectance
        ref = facts.reference_robust
        measured = "" if ref is None else (
            f"the band-statistics reference keeps {ref:.3f} under PGD-10 and the worst per-band offsets at {budget} "
            f"(cross-validated; certified >= {facts.reference_certified:.3f}), the majority class {facts.majority_accuracy:.3f}")  # fmt: skip
        adv_why = (f"the model must withstand perturbations of {budget}: adversarial fine-tuning (PGD, Madry et al. "
                   "2018) at that budget; it costs clean accuracy (5-14 points with every label on this project's "
                   "Harvey grid)")  # fmt: skip
        if facts.reference_holds_under_attack:
            recs.append(Recommendation("feature-extraction", dict(REFERENCE_OPTIONS), f"{measured}: above a constant "
                "answer beyond one standard error. Band statistics move by at most the budget whatever the "
                "perturbation, so a linear classifier on them loses a bounded margin; on this project's robust grids "
                "it was the most robust row wherever it held like this (xBD with every label 0.889 vs. adversarial "
                "fine-tuning's 0.659; EuroSAT 0.295 vs. 0.111), at no training cost", 9.6))  # fmt: skip
            add("adversarial", 9.4, f"{adv_why}; check it against the reference, which holds here", **adv_opts)
        else:
            weak = f"; {measured}, not above a constant answer by more than one standard error" if measured else ""
            add("adversarial", 9.5, adv_why + weak, **adv_opts)
    if cfg.max_params_m is not None:
        from eotransfer.models.backbones import build_network, get_architecture

        # the count depends on the number of bands only (band keys of a stack, rgb-pre:..., are not in the catalogue)
        net = build_network(get_architecture(cfg.backbone), len(facts.bands), 64)
        n = sum(p.numel() for p in net.parameters())
        if n / 1e6 > cfg.max_params_m:
            add("distill", 9.8, f"{cfg.backbone} has {n / 1e6:.1f} M parameters, above the {cfg.max_params_m} M limit: "
                "train the best strategy, then distil it into a smaller student (--teacher)")  # fmt: skip
    recs.sort(key=lambda r: -r.score)
    first_is_reference = bool(recs) and recs[0].options.get("backbone") == REFERENCE_OPTIONS["backbone"]
    if facts.reference_leads and recs and recs[0].strategy in FROZEN_FEATURE_STRATEGIES and not first_is_reference:
        # the probe measured what the first choice is, a classifier on the network's frozen features, and the
        # reference beat it; a first choice that adapts the features (unfreezing, fine-tuning, from scratch)
        # was not measured by the probe, and cautions() says so instead
        arm = "pre-trained" if facts.weights_transfer else "randomly initialised"
        recs.insert(0, Recommendation(
            "feature-extraction", dict(REFERENCE_OPTIONS),
            f"per-band statistics + logistic regression (the reference row, --backbone band-stats) beat a logistic "
            f"regression on the {arm} network's frozen features by more than one standard error on these labels "
            f"(transfer probe, cross-validated: {facts.probe_reference:.3f} vs. "
            f"{facts.probe_pretrained if facts.weights_transfer else facts.probe_random:.3f}), and the first choice, "
            f"{recs[0].strategy}, is such a classifier: the spectra carry these classes better than the features do",
            recs[0].score + 0.1,
        ))  # fmt: skip
    return recs


#: parameters that mark a strategy whose worth cross-validation on the labelled data cannot measure: it adapts
#: to target imagery (its gain lies there), needs a teacher model, or names classes without labels
NOT_CV_MEASURABLE = frozenset({"target", "teacher", "unseen_classes"})
#: options that make a recommendation about classes without (enough) labels when they are set
NOT_CV_MEASURABLE_OPTIONS = frozenset({"novel_classes", "base_classes"})


def cv_measurable(rec: Recommendation | str) -> bool:
    """Whether ``--auto`` can rank a recommendation (or a strategy with default options) by cross-validation.

    Not: a strategy whose parameters include one of :data:`NOT_CV_MEASURABLE`, a recommendation that sets one
    of :data:`NOT_CV_MEASURABLE_OPTIONS`, or one proposed for a capability (``Recommendation.capability``).
    ``protonet`` on the labelled classes is an ordinary classifier and is measured like the others.
    """
    from eotransfer.strategies.base import get_strategy

    if isinstance(rec, str):
        rec = Recommendation(rec, {}, "", 0.0)
    fields = {f.name for f in dataclasses.fields(get_strategy(rec.strategy).Params)}
    if fields & NOT_CV_MEASURABLE or rec.capability:
        return False
    return not any(rec.options.get(name) for name in NOT_CV_MEASURABLE_OPTIONS)


def cautions(facts: TaskFacts, min_per_class: int = 5, auto: bool = False, auto_min_samples: int = 0) -> list[str]:
    """What makes any ranking unreliable: classes too small to train on, to score a model on, or to cross-validate.

    With ``new_regions`` and under 50 labels per class: the ranking's first choice held in one direction of
    the EuroSAT UTM-zone split only, and the band-statistics reference beat transfer in the other
    (benchmarks/README.md, "New regions").

    With ``auto`` and ``new_regions``: cross-validation measures the labelled regions, not new ones (measured by
    ``benchmarks/cv_calibration.py``: 13-17 points mean absolute difference from the test side on the EuroSAT
    UTM-zone grids, spatial or stratified folds).

    With ``auto``: fewer than :data:`AUTO_MIN_SAMPLES` labelled samples (with fewer than ``auto_min_samples``,
    ``--auto`` keeps the ranking's first choice instead of a cross-validated one, and says so).  Measured out
    of sample (``benchmarks/advise_validation.py --auto``, benchmarks/README.md): with 10 to 50 labelled samples
    (1 to 20 per class), the cross-validated pick missed the best strategy by more than 2 points in 4 of 8 grid
    settings and the ranking's first choice in 3 of 8 (mean gaps 2.8 and 2.3 points, 3 seeds), but the ranking
    lost on the one grid its rules were not read from (east -> west, 5.8 vs. 3.1 points); with 97 to 1,585
    (every label), the cross-validated pick was within 1 point in all 4 grids.
    """
    out = []
    few = {c: n for c, n in facts.labels_per_class.items() if n < min_per_class}
    if few:
        names = ", ".join(f"{c} ({n})" for c, n in few.items())
        out.append(
            f"classes with fewer than {min_per_class} labelled samples: {names}. No strategy can be compared on "
            "held-out data with so few; label more (even 5 per class), or name such classes with zero-shot "
            "(--unseen-classes) or give them at prediction time (protonet)"
        )
    k = min(facts.labels_per_class.values()) if facts.labels_per_class else 0
    if facts.new_regions and 0 < k < 50:
        out.append(
            f"new regions with {k} labels per class: the first choice is least certain here. On this project's "
            "EuroSAT grids split by UTM zone, the best pre-trained strategy differed between west -> east "
            "(linear-probe) and east -> west (progressive-unfreeze) by 3 points, and per-band statistics + "
            "logistic regression beat every transfer strategy east -> west at 3 labels per class (0.480 vs. "
            "0.445). Compare against that reference on a held-out region of your own (eotransfer benchmark "
            "reports it beside every strategy; --backbone band-stats --strategy feature-extraction fits it as a model)"
        )
    if facts.reference_leads and facts.probe_reference is not None:
        out.append(
            f"per-band statistics + logistic regression beat the network's frozen features on the transfer probe "
            f"({facts.probe_reference:.3f} vs. "
            f"{facts.probe_pretrained if facts.weights_transfer else facts.probe_random:.3f}, beyond one standard "
            "error). Strategies that adapt the features may still do better, which the probe does not measure: "
            "compare them with --auto, which counts the reference as a candidate"
        )
    if auto and facts.new_regions:
        out.append(
            "--auto with --new-regions: its cross-validation accuracies are measured in the labelled regions "
            "(spatial folds hold out whole places there, --cv-split) and do not tell the accuracy in new ones. "
            "On this project's EuroSAT grids split by UTM zone they were 13-17 points off the test accuracy in the "
            "other zones on average, above it east -> west and below it west -> east, with either kind of folds; "
            "label a few samples in the region to be mapped to measure it there"
        )
    if (
        facts.reference_robust is not None
        and facts.majority_accuracy is not None
        and not facts.reference_holds_under_attack
    ):
        how = ("--auto's robust scores below measure each candidate on held-out folds: one that does not beat the "
               f"majority class there ({facts.majority_accuracy:.3f}) holds no better than a constant answer"
               if auto else "measure the candidates with --auto, which scores their robust accuracy on held-out folds")  # fmt: skip
        out.append(
            f"--robust: even the band-statistics reference, whose margin a perturbation moves the least, keeps only "
            f"{facts.reference_robust:.3f} under attack, not above a constant answer ({facts.majority_accuracy:.3f}, "
            "the majority class) by more than one standard error: the budget is near what these data allow. The "
            "ranking puts adversarial fine-tuning first without measuring it; on this project's EuroSAT grid at "
            "0.01 reflectance every network, adversarially trained or not, fell below chance under PGD-10 while the "
            f"reference kept 0.149 (benchmarks/README.md). Consider a smaller budget, and {how}"
        )
    n = sum(facts.labels_per_class.values())
    measured = (
        "Measured on this project's grids with 10 to 50 labelled samples, the cross-validated pick and the "
        "ranking's first choice missed the best strategy by more than 2 points in 4 and 3 of 8 settings"
    )
    if auto and n < auto_min_samples:
        out.append(
            f"--auto with {n} labelled samples keeps the ranking's first choice without cross-validating "
            f"(--auto-min-samples {auto_min_samples}): folds of a handful of samples per class cannot tell the "
            f"candidates apart. {measured}; pass --auto-min-samples 0 to cross-validate anyway"
        )
    elif auto and n < AUTO_MIN_SAMPLES:
        out.append(
            f"--auto with {n} labelled samples: its cross-validation folds hold a handful of samples per class, too "
            f"few to tell the candidates (or the transfer probe's two feature sets) apart. {measured}; pass "
            f"--auto-min-samples {AUTO_MIN_SAMPLES} to keep the ranking's first choice and save the measuring time"
        )
    return out


def facts_table(facts: TaskFacts) -> str:
    k = list(facts.labels_per_class.values())
    rows = [
        ("samples", f"{facts.n_samples} in {len(facts.classes)} classes"),
        ("labels per class", f"min {min(k)}, median {int(np.median(k))}, max {max(k)}" if k else "none"),
        ("bands", f"{len(facts.bands)}: " + ", ".join(b.split(":")[-1] for b in facts.bands)),
        (
            "pre-trained weights",
            f"{facts.weights} (fill {facts.band_coverage:.0%} of the bands; "
            + ("same sensor" if facts.weights_same_sensor else "another sensor, matched by name/wavelength")
            + ")"
            if facts.weights
            else "none",
        ),  # fmt: skip
        (
            "transfer probe",
            "not run"
            if facts.probe_pretrained is None or facts.probe_random is None
            else f"frozen features + logistic regression (CV): pre-trained {facts.probe_pretrained:.3f}, random init "
            f"{facts.probe_random:.3f}, standard error of the difference {facts.probe_se or 0.0:.3f}"
            + ("" if facts.weights_transfer else ": the weights do not transfer")
            + (
                ""
                if facts.probe_reference is None
                else f"; band statistics {facts.probe_reference:.3f} (SE {facts.probe_reference_se or 0.0:.3f})"
                + (": the reference leads" if facts.reference_leads else "")
            )
            + (f"; {facts.probe_folds}" if facts.probe_folds else ""),
        ),  # fmt: skip
        *(
            [
                (
                    "reference under attack",
                    f"band statistics + logistic regression (CV): robust {facts.reference_robust:.3f} (certified >= "
                    f"{facts.reference_certified or 0.0:.3f}), majority class {facts.majority_accuracy or 0.0:.3f}"
                    + (
                        ": it holds"
                        if facts.reference_holds_under_attack
                        else ": not above a constant answer by more than one standard error"
                    ),
                )
            ]
            if facts.reference_robust is not None
            else []
        ),  # fmt: skip
        (
            "shared kernels",
            "none"
            if not facts.shared_kernels
            else f"{facts.shared_kernel_share:.0%} of the bands: "
            + BandMapping.describe_shared(facts.shared_kernels)
            + ("" if facts.weights_see_bands_apart else ": the weights cannot see these bands apart"),
        ),  # fmt: skip
        (
            "dates",
            f"{facts.dates}: the bands repeat per date (fit --per-date runs a network on each)"
            if facts.dates > 1
            else "one",
        ),  # fmt: skip
        ("classes without labels", ", ".join(facts.unseen_classes) or "none"),
        (
            "applied to",
            "regions no label comes from" if facts.new_regions else "the labelled regions (no --new-regions)",
        ),
        (
            "target domain gap (PAD)",
            "no target" if facts.target_pad is None else f"{facts.target_pad:.2f} (0 = same, 2 = separable)",
        ),  # fmt: skip
        (
            "compute",
            f"{'GPU' if facts.gpu else 'CPU'}, ~{facts.seconds_per_epoch_estimate:.0f} s per fine-tuning epoch (estimate)",
        ),  # fmt: skip
    ]
    return "\n".join(f"{a:<26} {b}" for a, b in rows)


def ranking_table(recs: list[Recommendation]) -> str:
    lines = ["| rank | strategy | options | CV accuracy | why |", "|---|---|---|---|---|"]
    for i, r in enumerate(recs, 1):
        opts = ", ".join(f"{k}={v}" for k, v in r.options.items() if v is not None) or "—"
        cv = "—" if r.cv_accuracy is None else f"{r.cv_accuracy:.3f} ± {r.cv_ci95:.3f}"
        lines.append(f"| {i} | {r.strategy} | {opts} | {cv} | {r.reason} |")
    return "\n".join(lines)


def spatial_folds(
    ds: Any, cfg: AdviseConfig, indices: np.ndarray | None = None
) -> tuple[list[tuple[np.ndarray, np.ndarray]] | None, str]:
    """``cfg.folds`` folds that hold out whole places, or ``None`` and why they cannot be drawn.

    Over ``indices`` (default every sample); the folds hold positions in ``indices``.

    Spatial (block) cross-validation: samples of one ``cfg.cv_block_deg`` lon/lat block, or of one of the
    data's groups (an xBD event, the polygon a raster-vector patch came from) where locations are unknown, go
    to the same fold, so a fold's accuracy measures prediction in places its training side never saw, as a
    model for new regions will be used; random folds mix neighbouring, near-duplicate patches across the
    train/test boundary and reward what does not extrapolate (Roberts et al. 2017, "Cross-validation
    strategies for data with temporal, spatial, hierarchical, or phylogenetic structure", Ecography 40;
    Ploton et al. 2020, "Spatial validation reveals poor predictive performance of large-scale ecological
    mapping models", Nature Communications 11).  Folds are balanced by class over the blocks
    (``StratifiedGroupKFold``).  Refused, with the reason, when fewer blocks than folds exist or a fold's
    training side would miss a class (all of its samples in one block).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from eotransfer.data.splits import block_ids

    idx = np.arange(len(ds)) if indices is None else np.asarray(indices)
    lonlat = np.asarray(ds.lonlat())[idx]
    if len(lonlat) and not np.isnan(lonlat).any():
        blocks, what = block_ids(lonlat, "lonlat-block", cfg.cv_block_deg), f"{cfg.cv_block_deg:g}° blocks"
    elif getattr(ds, "groups", None) is not None:
        blocks, what = np.asarray(ds.groups)[idx].astype(str), "groups"
    else:
        return None, "the samples have no locations and no groups"
    labels = np.asarray(ds.labels)[idx]
    n_blocks = len(np.unique(blocks))
    if n_blocks < cfg.folds:
        return None, f"the samples fall in {n_blocks} {what}, fewer than the {cfg.folds} folds"
    splitter = StratifiedGroupKFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    folds = list(splitter.split(labels, labels, blocks))
    present = np.unique(labels)
    for train, _ in folds:
        missing = np.setdiff1d(present, labels[train])
        if len(missing):
            name = ds.classes[int(missing[0])]
            return None, f"class '{name}' lies in one of the {n_blocks} {what}, so a fold would train without it"
    return folds, f"{cfg.folds} folds of whole {what} ({n_blocks})"


def cv_folds(
    ds: Any, cfg: AdviseConfig, indices: np.ndarray | None = None, strict: bool = True
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """``--auto``'s folds over ``indices`` of ``ds`` (default every sample; positions in ``indices``) and how
    they were drawn (``cfg.cv_split``).

    ``spatial`` (or ``auto`` for new regions: ``--new-regions`` or a ``--target``) asks :func:`spatial_folds`;
    where they cannot be drawn, ``spatial`` is an error (unless not ``strict``, as for the transfer probe's
    subsample) and ``auto`` falls back to stratified folds, saying why.
    """
    idx = np.arange(len(ds)) if indices is None else np.asarray(indices)
    labels = np.asarray(ds.labels)[idx]
    why = ""
    if cfg.wants_spatial_folds:
        folds, why = spatial_folds(ds, cfg, idx)
        if folds is not None:
            return folds, why
        if cfg.cv_split == "spatial" and strict:
            raise ConfigError(f"--cv-split spatial: {why}; use --cv-split stratified or a smaller --cv-block-deg")
        why = f" (not spatial: {why})"
    folds = stratified_folds(labels, cfg)
    return folds, f"{len(folds)} stratified folds{why}"


def stratified_folds(labels: np.ndarray, cfg: AdviseConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """``cfg.folds`` stratified folds (fewer where the smallest class has fewer samples), shuffled by ``cfg.seed``."""
    from sklearn.model_selection import StratifiedKFold

    present = np.bincount(labels)
    n = min(cfg.folds, int(present[present > 0].min()))
    if n < 2:
        raise ConfigError("--auto: cross-validation needs at least 2 labelled samples per class")
    return list(StratifiedKFold(n, shuffle=True, random_state=cfg.seed).split(labels, labels))


def cross_validate(
    ds: Any, rec: Recommendation | None, cfg: AdviseConfig, deadline: float, indices: np.ndarray | None = None,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[float]:  # fmt: skip
    """Accuracy on each of ``cfg.folds`` stratified folds (of ``indices``, default every sample), or on ``folds``.

    ``rec=None`` scores the band-statistics reference.  ``folds`` (positions in ``indices``) come from
    :func:`cv_folds`.  With ``--robust`` the score is the robust accuracy on the held-out fold under PGD-10 at
    ``--robust-eps`` (the fold's model saved and attacked as ``eotransfer benchmark``'s ``robustness:`` attacks a
    cell); a candidate whose head has no input gradient (kNN, RBF-SVM, random forest) cannot be scored so and
    raises a :class:`ConfigError` (``--auto`` skips it and says why).
    """
    from eotransfer.data.splits import Split
    from eotransfer.evaluation.benchmark import fit_cell, reference_accuracy

    robustness = cfg.robustness

    idx = np.arange(len(ds)) if indices is None else np.asarray(indices)
    labels = ds.labels[idx]
    if folds is None:
        folds = stratified_folds(labels, cfg)
    accs: list[float] = []
    for train, test in folds:
        if time.time() > deadline and accs:
            break
        split = Split(idx[train], np.zeros(0, np.int64), idx[test])
        if rec is None:
            m = reference_accuracy(ds, split, cfg.seed, robustness)
        else:
            options = dict(rec.options)
            backbone = options.pop("backbone", cfg.backbone)  # the reference brings its own
            weights = options.pop("weights", None)
            m = fit_cell(ds, split, rec.strategy, backbone, weights, cfg.seed, options, robustness)
        if robustness is None:
            accs.append(float(m["overall_accuracy"]))
        elif "robust" in m:
            accs.append(float(m["robust"]["robust_accuracy"]))
        else:
            raise ConfigError(f"--robust: no robust accuracy ({m.get('robust_skipped', 'not attacked')})")
    return accs


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent predictions: sqrt(p (1 - p) / n)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n) if n > 0 else 0.0


def _cv_se(accs: list[float], mean: float, n_held_out: int) -> float:
    """The standard error of a cross-validated accuracy: the folds' or the binomial one, whichever is larger."""
    from eotransfer.engine.metrics import standard_error

    return max(standard_error(accs), binomial_se(mean, n_held_out))


def measure_candidates(ds: Any, recs: list[Recommendation], cfg: AdviseConfig) -> dict[str, Any]:
    """``--auto``'s measurement: the top ``cfg.top`` cross-validation-measurable candidates and the reference.

    Each candidate's ``cv_accuracy``/``cv_ci95`` is set in place; returns ``reference_cv`` (mean, 95 % half-width
    of band statistics + logistic regression on the same folds), ``best_measured`` (the highest mean CV
    accuracy), ``best`` (the kept candidate), ``beats_reference``, ``cross_validated`` and ``cv_folds`` (how
    the folds were drawn, :func:`cv_folds`: whole places with ``--new-regions``) and ``skipped`` (candidates
    that could not be trained on a fold, with the reason; the next measurable one is measured in their place).
    Within ``cfg.budget_minutes`` every candidate gets at least one fold.

    With fewer than ``cfg.auto_min_samples`` labelled samples nothing is measured: ``best`` is the ranking's
    first measurable candidate, ``cross_validated`` is False and ``reference_cv``, ``best_measured`` and
    ``beats_reference`` are None.  Cross-validation on so few samples underrates the strategies that gain most
    from more labels (each fold trains on two thirds of them), and out of sample its picks fell 5-6 points below
    the best strategy where the ranking's did not (benchmarks/README.md, "``advise --auto``, out of sample").  With ``cfg.one_se`` the kept candidate is the highest-ranked one whose CV
    accuracy lies within one standard error (over folds) of the best measured: the one-standard-error rule
    (Hastie, Tibshirani & Friedman 2009, "The Elements of Statistical Learning", §7.10), so that with a few
    labels per class, where folds of a handful of samples differ by chance, the ranking's prior is not
    overturned by noise.  The standard error is the larger of the folds' (standard deviation / sqrt(folds)) and
    the binomial one of an accuracy over the held-out predictions, sqrt(p (1 - p) / n): a spread of three
    folds is itself a noisy estimate, and fold-based estimates of the variance of K-fold cross-validation are
    biased low (Bengio & Grandvalet 2004, "No Unbiased Estimator of the Variance of K-Fold Cross-Validation",
    JMLR 5), so with 10 held-out samples three folds can agree by chance while the accuracy is known to no
    better than about ±0.13.

    The one-standard-error rule runs among the ranked strategies alone.  The reference (``cfg.auto_reference``,
    appended last unless the ranking holds it) is a fallback: it replaces their pick only when the best strategy
    falls more than one standard error of the reference's own estimate below it.  It decides whether to fall back,
    not which strategy: counted in the rule's bar, a reference far ahead would lift the bar above the ranking's
    first choice and hand the pick to whichever strategy scored highest on the folds (benchmarks/README.md, "The
    reference in the transfer probe").
    """
    from eotransfer.engine.metrics import mean_ci95

    deadline = time.time() + cfg.budget_minutes * 60
    measurable = [r for r in recs if cv_measurable(r)]
    if len(ds) < cfg.auto_min_samples:
        if not measurable:
            raise ConfigError("--auto: no candidate can be trained on the labelled data alone; see the ranking")
        return {"reference_cv": None, "best": measurable[0], "best_measured": None, "beats_reference": None,
                "kept_reference": False, "cross_validated": False, "cv_folds": None, "skipped": [],
                "reference_ranked": False}  # fmt: skip
    splits, how = cv_folds(ds, cfg)
    ref_accs = cross_validate(ds, None, cfg, deadline, folds=splits)
    ref = mean_ci95(ref_accs)
    scored: list[tuple[Recommendation, list[float]]] = []  # (candidate, its fold accuracies), rank order
    skipped: list[tuple[str, str]] = []  # (candidate, why it could not be trained on a fold)
    for r in measurable:
        if len(scored) >= cfg.top:
            break
        try:
            accs = cross_validate(ds, r, cfg, deadline, folds=splits)
        except (ConfigError, DataError) as exc:  # e.g. protonet's shots leave no query in a fold's class
            skipped.append((r.strategy, str(exc)))
            continue
        r.cv_accuracy, r.cv_ci95 = mean_ci95(accs)
        if math.isnan(r.cv_ci95):
            r.cv_ci95 = 0.0
        if accs:
            scored.append((r, accs))
    if not scored:
        if skipped:
            why = "; ".join(f"{name}: {reason}" for name, reason in skipped)
            raise ConfigError(f"--auto: no candidate could be measured on the folds ({why}); label more samples per "
                              "class or use fewer --folds")  # fmt: skip
        raise ConfigError("--auto: no candidate could be measured within --budget-minutes; raise the budget")
    ranked_reference = any(r.options.get("backbone") == REFERENCE_OPTIONS["backbone"] for r, _ in scored)

    def held_out(accs: list[float]) -> int:  # predictions behind the folds that ran (they run in order)
        return sum(len(test) for _, test in splits[: len(accs)])

    top, top_accs = max(scored, key=lambda pair: pair[0].cv_accuracy or 0.0)
    best = top
    if cfg.one_se:  # among the strategies alone: the appended reference below is a fallback, not a bar
        top_se = _cv_se(top_accs, top.cv_accuracy or 0.0, held_out(top_accs))
        best = next(r for r, _ in scored if (r.cv_accuracy or 0.0) >= (top.cv_accuracy or 0.0) - top_se)
    reference = None
    if cfg.auto_reference and ref_accs and not ranked_reference:  # kept only when no candidate is within 1 SE
        reference = reference_candidate()
        reference.cv_accuracy, reference.cv_ci95 = ref[0], 0.0 if math.isnan(ref[1]) else ref[1]
        ref_se = _cv_se(ref_accs, ref[0], held_out(ref_accs)) if cfg.one_se else 0.0
        if (top.cv_accuracy or 0.0) < ref[0] - ref_se:
            best = reference
        if (top.cv_accuracy or 0.0) < ref[0]:
            top = reference
    kept_reference = best is reference or best.options.get("backbone") == REFERENCE_OPTIONS["backbone"]
    return {"reference_cv": ref, "best": best, "best_measured": top, "kept_reference": kept_reference,
            "beats_reference": not kept_reference and (best.cv_accuracy or 0.0) > ref[0],
            "cross_validated": True, "cv_folds": how, "skipped": skipped,
            "reference_ranked": ranked_reference}  # fmt: skip


def advise(data: str | Any = "", **options: Any) -> dict[str, Any]:
    """Inspect the task, rank the strategies, and with ``auto`` measure the top ones and keep the best."""
    cfg = AdviseConfig(**{k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(AdviseConfig)}})
    cfg.data = str(data or cfg.data)
    validate_params(cfg)
    if not cfg.data:
        raise ConfigError("advise: give the labelled data set (DATA)")
    facts, ds = inspect_task(cfg)
    recs = recommend(facts, cfg)
    result: dict[str, Any] = {
        "facts": dataclasses.asdict(facts),
        "ranking": recs,
        "warnings": cautions(facts, auto=cfg.auto, auto_min_samples=cfg.auto_min_samples),
    }
    if cfg.auto:
        result.update(measure_candidates(ds, recs, cfg))
        best = result["best"]
        if cfg.out:
            from eotransfer.api import fit

            options = dict(best.options)
            backbone = options.pop("backbone", cfg.backbone)  # the reference brings its own
            fit(ds, strategy=best.strategy, backbone=backbone, seed=cfg.seed, out=cfg.out, progress=False,
                verbose=False, **options)  # fmt: skip
    if cfg.verbose:
        print(facts_table(facts))
        print()
        for line in result["warnings"]:
            print(f"warning: {line}")
        print(ranking_table(recs))
        if cfg.auto and not result["cross_validated"]:
            print(f"\nkept: {result['best'].strategy}, the ranking's first candidate (not cross-validated: "
                  f"{facts.n_samples} labelled samples, under --auto-min-samples {cfg.auto_min_samples})"
                  + (f"; model written to {cfg.out}" if cfg.out else ""))  # fmt: skip
        elif cfg.auto:
            m, h = result["reference_cv"]
            print(f"\ncross-validation: {result['cv_folds']}")
            if cfg.robust:
                print(f"--robust: every score below is robust accuracy on the held-out folds under PGD-10 at "
                      f"--robust-eps {cfg.robust_eps} reflectance")  # fmt: skip
            for name, why in result["skipped"]:
                print(f"not measured: {name} could not be trained on a fold ({why}); the next candidate was")
            print(f"band statistics + logistic regression (reference), same folds: {m:.3f} ± {h:.3f}")
            b, top = result["best"], result["best_measured"]
            verdict = (
                ", which beats the reference" if result["beats_reference"] else ", which does NOT beat the reference"
            )
            name = b.strategy
            if result["kept_reference"]:
                name, verdict = (
                    "the band-statistics reference (--backbone band-stats --strategy feature-extraction)",
                    "",
                )
            rule = "" if b is top else (f" (the highest-ranked candidate within one standard error of the best "
                                        f"measured, {top.strategy} {top.cv_accuracy:.3f})")  # fmt: skip
            print(f"kept: {name} ({b.cv_accuracy:.3f}){rule}{verdict}"
                  + (f"; model written to {cfg.out}" if cfg.out else ""))  # fmt: skip
            if result["kept_reference"]:
                why = ("the ranking put the reference first and no candidate beat it by more than one standard error"
                       if result["reference_ranked"] else
                       "no candidate came within one standard error of the reference")  # fmt: skip
                print(f"{why}; the same by hand: {REFERENCE_FIT.format(data=cfg.data)}")
            elif not result["beats_reference"]:
                print(f"the reference is a model too: {REFERENCE_FIT.format(data=cfg.data)}")
    return result
