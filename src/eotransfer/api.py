"""The Python API: ``fit``, ``evaluate``, ``predict``.  The CLI is generated from the same dataclasses.

>>> import eotransfer
>>> result = eotransfer.fit("data/eurosat-ms", bands="eurosat-ms", strategy="finetune",
...                         labels_per_class=10, out="models/eurosat")        # doctest: +SKIP
>>> result.metrics["test"]["overall_accuracy"]                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.data.base import EODataset, Subset, open_dataset
from eotransfer.data.normalization import Normalizer
from eotransfer.data.options import DATA_KEYS, DataOptions, parse_class_merge
from eotransfer.data.splits import SPLIT_KINDS, Split, make_split, restrict_to_k_per_class
from eotransfer.engine.checkpoint import config_hash
from eotransfer.engine.loop import Engine, EngineConfig
from eotransfer.engine.metrics import classification_metrics
from eotransfer.errors import ConfigError
from eotransfer.strategies.base import get_strategy, make_params, param, validate_params


@dataclass
class FitConfig(DataOptions):
    """Everything ``fit`` needs besides the strategy's own parameters (CLI options and YAML keys).

    The data set and its reading options come first (:class:`~eotransfer.data.options.DataOptions`).
    """

    strategy: str = param("finetune", "transfer strategy (see `eotransfer strategies`)")
    backbone: str = param("resnet18", "backbone architecture (see `eotransfer backbones`)")
    weights: str | None = param(None, "pre-trained weights: a path, a TorchGeo name, 'imagenet', or none")
    band_policy: str | None = param(
        None, "unmatched bands: zero | mean | random (default: error)", choices=(None, "zero", "mean", "random")
    )
    use_bands: str | None = param(None, "train on these bands only, comma-separated (e.g. B02,B03,B04)")
    per_date: bool = param(
        False,
        "the bands stack several dates of the same bands (xBD pre/post): run one backbone on each date with shared "
        "weights and classify the last date's features with their change (siamese, Daudt et al. 2018)",
    )
    normalization: str = param(
        "auto",
        "per-band normalisation: auto (the pre-trained weights' own statistics when they cover the data's bands, "
        "else standard) | standard | percentile (both from the training split)",
        choices=("auto", "standard", "percentile"),
    )
    split: str = param("stratified", "split: " + " | ".join(SPLIT_KINDS), choices=SPLIT_KINDS)
    labels_per_class: int | None = param(None, "labelled training samples per class (few-shot); rest is test", 1, 10**7)
    val_per_class: int = param(1, "validation samples per class with --labels-per-class (0 = none)", 0, 10**6)
    test_fraction: float = param(0.3, "test fraction (stratified and spatial splits)", 0.01, 0.99)
    val_fraction: float = param(0.1, "validation fraction of the training side", 0.0, 0.9)
    block_deg: float = param(1.0, "block size in degrees for --split lonlat-block", 1e-6, 180.0)
    test_blocks: str | None = param(
        None, "spatial/group splits: the test blocks, comma-separated (UTM zones such as 33N, lon_lat cells, xBD "
        "events), or east / west: the easternmost / westernmost blocks up to --test-fraction",
    )  # fmt: skip
    seed: int = param(0, "random seed (split, initialisation, shuffling)", 0, 2**31 - 1)
    out: str | None = param(None, "model directory to write (atomically)")
    resume: bool = param(False, "resume from the last checkpoint in --out")
    accelerator: str = param("auto", "cpu | cuda | auto")
    devices: int = param(1, "number of devices (DDP when > 1)", 1, 1024)
    progress: bool = param(True, "show progress bars")
    verbose: bool = param(True, "print the band mapping and the metrics")


@dataclass
class FitResult:
    """What ``fit`` returns: the trained network, its card, metrics and history."""

    model: torch.nn.Module
    card: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    split: Split
    out: Path | None = None
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


def load_data(cfg: Any) -> EODataset:
    """Open ``cfg.data`` with the data options of a config (shared by fit, evaluate and the CLI)."""
    kwargs = {k: getattr(cfg, k) for k in DATA_KEYS if getattr(cfg, k, None) is not None}
    if "patch_size" in kwargs:
        kwargs["chip_size"] = kwargs["patch_size"]
    fmt = kwargs.pop("format", None)
    ds = open_dataset(cfg.data, format=fmt, **kwargs)
    if getattr(cfg, "merge_classes", None):
        ds.merge_classes(parse_class_merge(cfg.merge_classes))
    if getattr(cfg, "use_bands", None):
        ds.select_bands([b.strip() for b in cfg.use_bands.split(",") if b.strip()])
    return ds


def make_fit_split(cfg: FitConfig, ds: EODataset) -> Split:
    if cfg.split == "k-per-class" or (cfg.split == "stratified" and cfg.labels_per_class):
        if not cfg.labels_per_class:
            raise ConfigError("--split k-per-class needs --labels-per-class")
        return make_split("k-per-class", ds.labels, seed=cfg.seed, k=cfg.labels_per_class,
                          val_per_class=cfg.val_per_class, classes=ds.classes)  # fmt: skip
    groups = getattr(ds, "events", None)
    groups = getattr(ds, "groups", None) if groups is None else groups
    lonlat = ds.lonlat() if cfg.split in ("utm-zone", "lonlat-block") else None
    test_blocks = [b.strip() for b in cfg.test_blocks.split(",") if b.strip()] if cfg.test_blocks else None
    if test_blocks and cfg.split not in ("utm-zone", "lonlat-block", "group"):
        raise ConfigError(f"--test-blocks: needs --split utm-zone, lonlat-block or group, not {cfg.split}")
    split = make_split(cfg.split, ds.labels, lonlat, seed=cfg.seed, test_fraction=cfg.test_fraction, groups=groups,
                       val_fraction=cfg.val_fraction, block_deg=cfg.block_deg, test_blocks=test_blocks)  # fmt: skip
    if cfg.labels_per_class:
        split = restrict_to_k_per_class(split, ds.labels, cfg.labels_per_class, cfg.seed, ds.classes)
    return split


def choose_normalizer(cfg: Any, ds: EODataset, train: np.ndarray, weights_norm: dict[str, Any] | None) -> Normalizer:
    """The weights' own statistics under ``auto`` when they name every data band; else fitted on ``train``.

    Self-supervised weights learnt their features (and BatchNorm statistics) on inputs scaled by
    their pool's statistics; a few labelled samples give a noisier estimate of the same thing.
    """
    if cfg.normalization == "auto" and weights_norm and set(ds.bands.keys) <= set(weights_norm.get("bands", [])):
        return Normalizer.from_dict(weights_norm).subset(ds.bands.keys)
    method = "standard" if cfg.normalization == "auto" else cfg.normalization
    return Normalizer.fit(ds.checked_read, train, ds.bands, method, seed=cfg.seed)


def fit(
    data: str | Path | EODataset = "", strategy_params: dict[str, Any] | None = None, split_override: Split | None = None,
    **options: Any,
) -> FitResult:  # fmt: skip
    """Adapt a backbone to a labelled data set with one strategy; evaluate; optionally save.

    ``options`` are :class:`FitConfig` fields; ``strategy_params`` (or any other keyword) are the
    strategy's own parameters.  ``data`` may be an already opened :class:`EODataset`, and
    ``split_override`` a precomputed split (benchmarks that hold one test set fixed across seeds).
    """
    from eotransfer.models.backbones import check_backbone_strategy, create_backbone, get_architecture
    from eotransfer.models.model import EOClassifier
    from eotransfer.predict.raster import training_crs

    t0 = time.perf_counter()
    fit_fields = {f.name for f in dataclasses.fields(FitConfig)}
    sparams = dict(strategy_params or {})
    sparams.update({k: v for k, v in options.items() if k not in fit_fields})
    cfg = FitConfig(**{k: v for k, v in options.items() if k in fit_fields})
    ds = data if isinstance(data, EODataset) else None
    if ds is None:
        cfg.data = str(data or cfg.data)
    validate_params(cfg)
    strategy_cls = get_strategy(cfg.strategy)
    strategy = strategy_cls(make_params(strategy_cls, sparams))
    get_architecture(cfg.backbone)  # an unknown name fails before any data is read
    check_backbone_strategy(cfg.backbone, strategy.name, cfg.weights, cfg.per_date)
    if ds is None:
        ds = load_data(cfg)
    split = split_override if split_override is not None else make_fit_split(cfg, ds)
    img_size = int(ds.checked_read(int(split.train[0])).shape[-1])
    backbone = create_backbone(cfg.backbone, ds.bands, cfg.weights, cfg.band_policy, img_size, cfg.seed, cfg.verbose,
                               cfg.per_date)  # fmt: skip
    normalizer = choose_normalizer(cfg, ds, split.train, backbone.weights.get("normalization"))
    model = EOClassifier(backbone.module, backbone.num_features, len(ds.classes), len(ds.bands))
    torch.manual_seed(cfg.seed)
    model.head.reset_parameters()
    model.normalize.set_from(normalizer)

    out = Path(cfg.out) if cfg.out else None
    settings = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in ("out", "resume", "progress", "verbose", "accelerator", "devices")
    }
    chash = config_hash({"fit": settings, "strategy": dataclasses.asdict(strategy.params)})
    ckpt_dir = out.with_name(f".{out.name}.checkpoints") if out else None
    engine = Engine(EngineConfig(seed=cfg.seed, accelerator=cfg.accelerator, devices=cfg.devices, checkpoint_dir=ckpt_dir,
                                 resume=cfg.resume, config_hash=chash, progress=cfg.progress,
                                 run_kind=f"fit:{strategy.name}"))  # fmt: skip
    train, val, test = Subset(ds, split.train), Subset(ds, split.val), Subset(ds, split.test)
    strategy.prepare(ds, split, model)
    classifier: dict[str, Any] | None = None
    if strategy.classical:  # a classifier on the frozen backbone's features: no network trains
        history: list[dict[str, Any]] = []
        classifier = strategy.fit_classifier(*strategy.frozen_features(engine, model, train), len(ds.classes), cfg.seed)
    else:
        history = engine.fit(model, strategy, train, val if len(split.val) else None)
        strategy.after_training(model, engine, train)

    metrics: dict[str, Any] = {}
    for name, subset in (("test", test), ("val", val)):
        if len(subset):
            if strategy.classical:
                feats, y_true = strategy.frozen_features(engine, model, subset)
                pred = strategy.predict_proba(feats).argmax(1)
            else:
                logits, y = engine.predict_logits(model, subset)
                pred, y_true = logits.argmax(1).numpy(), y.numpy()
            metrics[name] = classification_metrics(y_true, pred, ds.classes)
    for name, extra in strategy.after_fit(model, engine, {"test": test, "val": val}).items():
        metrics.setdefault(name, {}).update(extra)
    card = {
        "name": out.name if out else f"{cfg.strategy}-{cfg.backbone}",
        "arch": cfg.backbone,
        "num_features": backbone.num_features,
        "img_size": img_size,
        "bands": ds.bands.to_list(),
        "band_mapping": backbone.mapping.to_dict() if backbone.mapping else None,
        "weights": backbone.weights,
        "normalization": normalizer.to_dict(),
        "classes": ds.classes,
        "strategy": {"name": strategy.name, "params": dataclasses.asdict(strategy.params)},
        "fit": settings,
        "data": {
            **ds.provenance(),
            "scale": cfg.scale,
            "offset": cfg.offset,
            "split": split.to_dict(),
            "crs": training_crs(ds.locations),
        },  # fmt: skip
        "metrics": metrics,
        "training": {
            "epochs_run": len(history),
            "device": str(engine.fabric.device),
            "seconds": round(time.perf_counter() - t0, 2),
        },
    }
    if classifier is not None:
        card["classifier"] = classifier
    if out is not None:
        from eotransfer.card import save_model

        extra = {"history.csv": history_csv(history), "metrics.json": json.dumps(metrics, indent=2)}
        save_model(out, model, card, extra={**extra, **strategy.model_files()})
        if ckpt_dir is not None and ckpt_dir.exists():
            import shutil

            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if cfg.verbose and "test" in metrics:
        from eotransfer.engine.metrics import metrics_table

        print(metrics_table(metrics["test"]))
    if cfg.verbose and metrics.get("domain"):
        d = metrics["domain"]
        stages = [(k, d[f"pad_{k}"], d.get(f"target_accuracy_{k}")) for k in ("initial", "before_adabn", "adapted")
                  if f"pad_{k}" in d]  # fmt: skip
        print("domain gap (proxy A-distance, 0 = same, 2 = separable; target accuracy where its labels are known): "
              + "; ".join(f"{k} {pad:.3f}" + ("" if acc is None else f" (target accuracy {acc:.3f})")
                          for k, pad, acc in stages))  # fmt: skip
    return FitResult(model, card, metrics, history, split, out, time.perf_counter() - t0)


def history_csv(history: list[dict[str, Any]]) -> str:
    """The per-epoch history as CSV: the usual columns first, then whatever a strategy's monitor added."""
    first = ["phase", "epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
    keys = [k for k in first if any(k in row for row in history)] or first
    keys += sorted({k for row in history for k in row} - set(keys))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()


def evaluate(model_dir: str | Path, data: str | Path | EODataset, **options: Any) -> dict[str, Any]:
    """Score a saved model on a labelled data set (all of it, or the test side of ``split``).

    ``options``: the data options of :class:`FitConfig` (``bands``, ``format``, ``nodata`` ...)
    and optionally ``split``/``seed``/``test_fraction``/``block_deg`` to score only the test side.
    ``domain_gap``: the source data (a path or data set, read with the same options); adds the
    proxy A-distance between its and the scored samples' backbone features (``proxy_a_distance``,
    :mod:`eotransfer.evaluation.domain`).
    ``task``: which task of a multi-task (progressive) model to score; default its newest.
    ``attack`` (fgsm | pgd | square), ``eps`` (reflectance units), ``pgd_steps``, ``loss`` (ce | margin, what
    fgsm and pgd ascend), ``queries`` (square's), ``value_per_reflectance``: adds
    clean and robust accuracy under that attack, with the budget and valid range used (``metrics["attack"]``,
    :mod:`eotransfer.evaluation.attacks`).
    """
    from eotransfer.card import load_model

    saved = load_model(model_dir, task=options.get("task"))
    cfg = FitConfig(**{k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(FitConfig)}})
    if isinstance(data, EODataset):
        ds = data
    else:
        cfg.data = str(data)
        if cfg.bands is None:
            cfg.bands = ",".join(saved.bands.keys) if options.get("use_bands") is None else None
        # chips cut as in training (xBD, raster + vector), unless --patch-size says otherwise
        if cfg.patch_size is None:
            cfg.patch_size = (saved.card.get("fit") or {}).get("patch_size")
        ds = load_data(cfg)
    align_bands(saved.bands, ds, options.get("missing_bands", "error"), bool(options.get("verbose", True)))
    _check_classes_and_bands(saved.classes, saved.bands.keys, ds)
    indices = np.arange(len(ds)) if "split" not in options else make_fit_split(cfg, ds).test
    probs = predict_samples(saved, ds, indices)
    label_map = np.array([saved.classes.index(c) for c in ds.classes])
    metrics = classification_metrics(label_map[ds.labels[indices]], probs.argmax(1), saved.classes)
    source = options.get("domain_gap")
    if source is not None:
        from eotransfer.evaluation.domain import model_domain_gap

        if not isinstance(source, EODataset):
            source = load_data(
                dataclasses.replace(cfg, data=str(source), bands=cfg.bands or ",".join(saved.bands.keys))
            )
        if source.bands.keys != saved.bands.keys:
            raise ConfigError(
                f"--domain-gap: data bands {source.bands.describe()} differ from the model's; pass --bands"
            )
        metrics["proxy_a_distance"] = model_domain_gap(saved, source, ds, indices, seed=cfg.seed)
    if options.get("attack") is not None or options.get("eps") is not None:
        from eotransfer.evaluation.attacks import attack_saved_model

        metrics["attack"] = attack_saved_model(saved, ds, indices, label_map[ds.labels[indices]], **options)
    return metrics


def predict_samples(saved: Any, ds: EODataset, indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of the samples ``indices``, read and predicted a batch at a time."""
    chunks = [
        saved.predict_proba(np.stack([ds[int(i)]["image"].numpy() for i in indices[s : s + batch_size]]))
        for s in range(0, len(indices), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, len(saved.classes)), dtype=np.float32)


def align_bands(model_bands: Any, ds: EODataset, missing: str = "error", verbose: bool = True) -> None:
    """Give ``ds`` the model's bands in the model's order (cross-sensor application).

    Bands are matched by name, common name, then wavelength; model bands the data lack are an error,
    or masked with ``missing="mask"`` (``--missing-bands``; see :meth:`EODataset.map_bands_to`).
    """
    if ds.bands.keys == list(model_bands.keys):
        return
    mapping = ds.map_bands_to(model_bands, missing)
    if verbose:
        print(mapping.table(target="model band", source="data band", unmatched="masked"))
    for source, targets in mapping.shared_kernels.items():
        warnings.warn(
            f"data band {source} fills the model bands {', '.join(targets)}: the model sees the same image in each "
            "(one date given to a model of several dates sees no change between them); give the data every band "
            "the model was trained on",
            stacklevel=2,
        )


def _check_classes_and_bands(model_classes: list[str], model_bands: list[str], ds: EODataset) -> None:
    unknown = [c for c in ds.classes if c not in model_classes]
    if unknown:
        raise ConfigError(
            f"data classes {', '.join(unknown)} are unknown to the model (it knows {', '.join(model_classes)})"
        )
    if ds.bands.keys != model_bands:
        raise ConfigError(
            f"data bands {ds.bands.describe()} differ from the model's {','.join(model_bands)}; pass --bands/--use-bands "
            "to give the model's bands in its order"
        )


def default_read_ahead(device: Any) -> int:
    """Blocks a raster prediction reads ahead on a background thread: 2 when the network runs on a GPU, else 0.

    Reading ahead pays when the predicting thread leaves a core idle: on 2 CPU cores it cut the predict stage of
    a network-free predictor by 5-30 %, but slowed a CPU network that uses every core by 15 %
    (benchmarks/README.md, "the CPU side of the pipeline").
    """
    return 2 if getattr(device, "type", str(device)) == "cuda" else 0


def predict(model_dir: str | Path, source: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Predict a raster (GeoTIFF → class map + PNG preview) or a folder of patches (→ CSV of probabilities)."""
    from eotransfer.card import atomic_write_text, load_model

    saved = load_model(model_dir, task=options.get("task")).to(str(options.get("accelerator") or "auto"))
    batch_size = int(options.get("batch_size") or 64)
    src = Path(source)
    if options.get("buildings"):
        from eotransfer.predict.buildings import model_phases, phase_images, predict_buildings

        images = phase_images(src, model_phases(saved.bands.keys))
        return predict_buildings(
            images, options["buildings"], saved.predict_proba, saved.classes, int(saved.card["img_size"]), out,
            scale=float(options.get("scale", 1.0)), offset=float(options.get("offset", 0.0)), batch_size=batch_size,
        )  # fmt: skip
    if src.is_file() and src.suffix.lower() in (".tif", ".tiff"):
        from eotransfer.predict.raster import predict_raster

        band_indices = raster_band_indices(saved.bands, options.get("raster_bands"), src)
        scale: float | list[float] = float(options.get("scale", 1.0))
        offset: float | list[float] = float(options.get("offset", 0.0))
        nodata = options.get("nodata_value")
        if options.get("match_statistics"):
            scale, offset = match_statistics(
                src, band_indices, saved.card["normalization"], float(options.get("scale", 1.0)),
                float(options.get("offset", 0.0)), nodata,
            )  # fmt: skip
        return predict_raster(
            src, saved.predict_proba, out, saved.classes, int(saved.card["img_size"]),
            band_indices=band_indices, overlap=float(options.get("overlap", 0.5)), scale=scale, offset=offset,
            batch_size=batch_size,
            preview_png=Path(out).with_suffix(".png"), progress=bool(options.get("progress", True)), nodata=nodata,
            expected_crs=(saved.card.get("data") or {}).get("crs"), crs_policy=options.get("crs_policy") or "refuse",
            read_ahead=default_read_ahead(saved.device) if options.get("read_ahead") is None else options["read_ahead"],
        )  # fmt: skip
    flat = src.is_dir() and not any(d.is_dir() for d in src.iterdir())
    ds = open_dataset(
        src, format=options.get("format"), bands=",".join(saved.bands.keys), nodata=options.get("nodata", "error"),
        scale=float(options.get("scale", 1.0)), offset=float(options.get("offset", 0.0)), unlabelled=flat,
    )  # fmt: skip
    rows = ["file," + ",".join(["predicted", *[f"p_{c}" for c in saved.classes]])]
    counts: dict[str, int] = {}
    probs = predict_samples(saved, ds, np.arange(len(ds)), batch_size=batch_size)
    for i, p in enumerate(probs):
        cls = saved.classes[int(p.argmax())]
        counts[cls] = counts.get(cls, 0) + 1
        rows.append(f"{ds.sources[i]},{cls}," + ",".join(f"{v:.5f}" for v in p))
    atomic_write_text(Path(out), "\n".join(rows) + "\n")
    return {"path": str(out), "n": len(ds), "predicted": counts}


def raster_band_indices(model_bands: Any, raster_bands: str | None, raster: Path) -> list[int] | None:
    """Which raster bands feed the model, in its order (see :mod:`eotransfer.predict.bands`)."""
    from eotransfer.predict.bands import raster_band_indices as indices

    return indices(model_bands, raster_bands, raster)


def match_statistics(
    raster: Path, band_indices: list[int] | None, normalization: dict[str, Any], scale: float, offset: float,
    nodata: float | None, max_pixels: int = 1_000_000,
) -> tuple[list[float], list[float]]:  # fmt: skip
    """Per-band linear transform giving the raster the training data's mean and std (moment matching).

    The simplest correction of a radiometric shift between sensors or scenes (e.g. Landsat DN vs
    Sentinel-2 reflectance); statistics come from a decimated read of the whole raster.
    """
    import rasterio

    with rasterio.open(raster) as src:
        step = max(1, int(np.sqrt(src.width * src.height / max_pixels)))
        idx = [i + 1 for i in band_indices] if band_indices is not None else list(range(1, src.count + 1))
        data = src.read(idx, out_shape=(len(idx), src.height // step, src.width // step), masked=True)
    px = np.ma.filled(data.astype(np.float64), np.nan).reshape(len(idx), -1)
    if nodata is not None:
        px[px == nodata] = np.nan
    px = px * scale + offset
    mean, std = np.nanmean(px, 1), np.nanstd(px, 1)
    target_mean = np.asarray(normalization["mean"], dtype=np.float64)
    target_std = np.asarray(normalization["std"], dtype=np.float64)
    gain = target_std / np.maximum(std, 1e-9)
    return [float(g * scale) for g in gain], [
        float(t + g * (offset - m)) for g, t, m in zip(gain, target_mean, mean, strict=True)
    ]
