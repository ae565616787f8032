"""The benchmark grid: strategies × backbones/weights × labels per class × seeds on one data set.

``eotransfer benchmark CONFIG.yaml --out DIR`` reads a :class:`BenchmarkConfig`, checks all of it
before any fit (every unknown strategy, parameter, backbone, weight or split is reported at once),
then runs one cell (one ``api.fit``) at a time and appends its row to ``DIR/results.csv``; a cell
already in the table is skipped, so a stopped run resumes where it stopped.  Each seed draws one
split whose test side is shared by every strategy, model and label count of that seed.

Every table carries the two reference rows on the same split and seeds: band statistics + logistic
regression (:mod:`eotransfer.evaluation.reference`) and training from scratch (the same strategy
and backbone with no weights; added to the grid when the config names only pre-trained weights).
Summaries give the mean and the 95 % Student-t interval over seeds; :func:`labels_needed` gives how
many times fewer labels one method needs to reach another's accuracy (the label-efficiency ratio of
e.g. Wang et al. 2022, "Self-supervised learning in remote sensing: a review", IEEE GRSM).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer import api
from eotransfer.data.base import EODataset
from eotransfer.data.options import DATA_OPTION_KEYS
from eotransfer.data.splits import SPLIT_KINDS, Split, make_split, restrict_to_k_per_class, without_classes
from eotransfer.engine.metrics import mean_ci95
from eotransfer.errors import ConfigError, EOTransferError, did_you_mean
from eotransfer.evaluation.reference import band_statistics_matrix, fit_band_statistics_classifier

ALL = "all"
RESULTS_CSV = "results.csv"
#: the run's configuration, source and machine, beside ``results.csv``
BENCHMARK_JSON = "benchmark.json"
#: under a grid's output folder: the models of teaching cells, while a ``distill`` cell still needs them
TEACHERS_DIR = "teachers"
#: under a grid's output folder: the earlier tasks' models of ``progressive`` rows, while a cell still needs them
PREVIOUS_DIR = "previous"
#: the earlier tasks' test scores, kept when their models are removed
PREVIOUS_JSON = "previous_tasks.json"
REFERENCE = "band-stats+LR"
NO_MODEL = "—"
#: the tidy table's columns, one row per fitted cell; ``finished`` last, so a torn last line reads as unfinished
COLUMNS = ("cell", "data", "split", "strategy", "strategy_name", "backbone", "weights", "init", "k", "n_train",
           "n_val", "n_test", "seed", "accuracy", "macro_f1", "robust_accuracy", "attack",
           "certified_accuracy", "unseen_classes", "seen_accuracy", "unseen_accuracy", "harmonic_mean", "seconds",
           "confusion_matrix", "finished")  # fmt: skip
#: the columns only ``robustness:`` fills (``certified_accuracy``: the reference row's certified lower bound)
ROBUST_COLUMNS = ("robust_accuracy", "attack", "certified_accuracy")
#: the columns only ``unseen_classes:`` fills: the cell's unseen classes and its generalised zero-shot scores
ZEROSHOT_COLUMNS = ("unseen_classes", "seen_accuracy", "unseen_accuracy", "harmonic_mean")
#: the columns of tables recorded before ``robustness:`` existed; such a table keeps its header until a row
#: with a robust accuracy is appended, which rewrites it with :data:`COLUMNS`
COLUMNS_BEFORE_ROBUSTNESS = tuple(c for c in COLUMNS if c not in ROBUST_COLUMNS + ZEROSHOT_COLUMNS)
CONFIG_KEYS = ("name", "data", "data_options", "size", "in_memory", "split", "strategies", "models",
               "labels_per_class", "seeds", "fit", "robustness", "unseen_classes", "time_budget_s")  # fmt: skip
ROBUSTNESS_KEYS = ("attack", "eps", "pgd_steps", "value_per_reflectance", "loss", "queries")
SPLIT_OPTIONS = ("kind", "test_fraction", "val_fraction", "block_deg", "seed", "test_blocks")
#: split kinds whose test side can be named (``test_blocks``: zones, lon/lat cells, groups, or east / west)
BLOCK_SPLITS = ("utm-zone", "lonlat-block", "group")
#: FitConfig fields the grid sets itself (or takes from ``data_options``): not allowed under ``fit:``
GRID_FIT_FIELDS = ("data", "strategy", "backbone", "weights", "seed", "split", "labels_per_class", "out", "resume",
                   "progress", "verbose", "val_per_class", "test_fraction", "val_fraction", "block_deg", *DATA_OPTION_KEYS,
                   "use_bands")  # fmt: skip


# -- the data, held in memory -------------------------------------------------------------------------------------
class ArrayDataset(EODataset):
    """Decoded (and optionally resized) samples of a data set, held in memory as their source dtype."""

    format_name = "array"

    def __init__(self, src: EODataset, indices: np.ndarray | None = None, size: int | None = None,
                 labels: np.ndarray | None = None, classes: list[str] | None = None) -> None:  # fmt: skip
        super().__init__("mask")
        idx = np.arange(len(src)) if indices is None else np.asarray(indices)
        # in the source's bands (--use-bands, a band mapping), nodata kept as NaN: this copy is read with "mask"
        first = src.select_channels(src.read(int(idx[0])))
        dtype = np.uint8 if np.nanmax(first) <= 255 and src.bands.keys[0].startswith("rgb") else np.float32
        arrs = []
        for i in idx:
            x = torch.from_numpy(np.ascontiguousarray(src.select_channels(src.read(int(i)))))
            if size and x.shape[-1] != size:
                x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True)[0]
            arrs.append(x.numpy().round() if dtype == np.uint8 else x.numpy())
        self.pixels = np.stack(arrs).astype(dtype)
        self.bands, self.root = src.bands, src.root
        self.source_format = src.format_name
        self.classes = classes or list(src.classes)
        self.labels = (labels if labels is not None else src.labels[idx]).astype(np.int64)
        self.locations = [src.locations[int(i)] for i in idx]
        self.sources = [src.sources[int(i)] for i in idx]
        self.groups = getattr(src, "groups", None)
        if self.groups is not None:
            self.groups = np.asarray(self.groups)[idx]

    def read(self, index: int) -> np.ndarray:
        return self.pixels[index].astype(np.float32)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "source_format": self.source_format}


# -- intervals and the labels-needed ratio ---------------------------------------------------------------------------
def interval95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the 95 % Student-t interval (low, high) of ``values``; NaN bounds for fewer than two values."""
    mean, half = mean_ci95(values)
    return mean, mean - half, mean + half


@dataclass
class LabelsNeeded:
    """How many labelled samples method A needs to reach method B's accuracy at B's largest label count."""

    target: float  # B's mean accuracy at n_b
    n_b: float
    n_a: float | None  # None: A never reaches the target on its measured curve
    ratio: float | None  # n_b / n_a: how many times fewer labels A needs (> 1: A is more label-efficient)
    at_most: bool = False  # A's first point already reaches the target: n_a is an upper bound, the ratio a lower one


def labels_needed(row_a: dict[float, float], row_b: dict[float, float]) -> LabelsNeeded:
    """The labels-needed ratio between two summary rows (``{n_train: mean accuracy}`` each).

    The target is B's accuracy at its largest ``n_train``; A's label count for it is interpolated
    linearly in log(n) between A's last point below and first point at or above the target.
    """
    if not row_a or not row_b:
        raise ConfigError("labels_needed: both rows need at least one (n_train, accuracy) point")
    n_b = max(row_b)
    target = row_b[n_b]
    pts = sorted(row_a.items())
    for i, (n, acc) in enumerate(pts):
        if acc >= target:
            if i == 0:
                return LabelsNeeded(target, n_b, float(n), n_b / n, at_most=True)
            n0, a0 = pts[i - 1]
            frac = (target - a0) / (acc - a0)
            n_a = math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))
            return LabelsNeeded(target, n_b, n_a, n_b / n_a)
    return LabelsNeeded(target, n_b, None, None)


# -- the configuration ------------------------------------------------------------------------------------------------
@dataclass
class TeacherSpec:
    """The grid row whose model teaches a ``distill`` row: its strategy row name and model, at the same k and seed.

    The teacher is trained on the cell's own labelled samples, so a distilled student sees no label
    its row's k does not allow (a fixed ``params.teacher`` trained on every label would).
    """

    strategy: str
    backbone: str
    weights: str | None = None

    @property
    def init(self) -> str:
        return "scratch" if self.weights is None else self.weights

    def text(self) -> str:
        return f"{self.strategy} ({self.backbone}, {self.init})"


@dataclass
class PreviousSpec:
    """The earlier task of a ``progressive`` row: a model fitted once per grid on another data set (every label
    of it, its own default split), whose network becomes the frozen first column of every cell of the row.

    Progressive networks (Rusu et al. 2016) transfer from a task learnt before; in a grid that task is
    fixed, so it is trained once, not per cell, and its test score is kept in ``previous_tasks.json``.
    """

    data: str
    strategy: str
    backbone: str
    weights: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    #: the earlier task's images resized to this many pixels (as the grid's ``size``); None: as read
    size: int | None = None

    def text(self) -> str:
        return f"{self.strategy} ({self.backbone}, {self.weights or 'scratch'}) on {Path(self.data).name}"

    @functools.cached_property
    def fingerprint(self) -> str:
        """The earlier task's :func:`data_fingerprint`, listed once (cell keys and model folders hash it)."""
        return data_fingerprint(self.data)

    def to_dict(self, fingerprint: bool = True) -> dict[str, Any]:
        """As recorded (``fingerprint=False``: the data path) and hashed (the data's :attr:`fingerprint`);
        without ``size`` when unset, so the keys of earlier rows stay what they were."""
        out = dataclasses.asdict(self)
        if self.size is None:
            del out["size"]
        return out | {"data": self.fingerprint} if fingerprint else out


@dataclass
class StrategySpec:
    """One strategy row of the grid: its row name (``label``), registered ``name`` and parameters."""

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    #: for ``distill``: the row of this grid that trains each cell's teacher
    teacher: TeacherSpec | None = None
    #: for ``progressive``: the earlier task whose model is the first column
    previous: PreviousSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """As recorded and hashed into cell keys; without ``teacher``/``previous`` when unset (keys stay as before).

        ``previous`` enters without its data path, by the data's :func:`data_fingerprint`."""
        out = dataclasses.asdict(self)
        if self.teacher is None:
            del out["teacher"]
        if self.previous is None:
            del out["previous"]
        else:
            out["previous"] = self.previous.to_dict()
        return out


@dataclass
class ModelSpec:
    """One backbone and its initial weights (None: from scratch)."""

    backbone: str
    weights: str | None = None
    added: bool = False  # the from-scratch reference, added because the config did not name it

    @property
    def init(self) -> str:
        return "scratch" if self.weights is None else self.weights


@dataclass
class Cell:
    """One fit of the grid (or one reference row) and its identity in ``results.csv``."""

    strategy: StrategySpec | None  # None: the band-statistics reference
    model: ModelSpec | None
    k: int | str
    seed: int
    key: str = ""
    #: the keys earlier versions recorded this cell under (their hash held the data's path, not its contents)
    legacy_keys: tuple[str, ...] = ()


def check_weights(spec: str) -> str | None:
    """Why ``--weights spec`` cannot resolve (None when it can), without loading or downloading anything."""
    from eotransfer.models.catalogue import find_local, local_catalogue
    from eotransfer.models.weights import list_torchgeo_weights

    if Path(spec).expanduser().exists() or spec.startswith("timm:") or spec == "imagenet":
        return None
    if "_Weights." in spec:
        known = list_torchgeo_weights()
        return None if spec in known else f"unknown TorchGeo weight '{spec}'" + did_you_mean(spec, known)
    if find_local(spec) is not None:
        return None
    names = ["eotransfer:" + r["name"] for r in local_catalogue() if "name" in r]
    return (f"unknown weights '{spec}': neither a file/folder, a TorchGeo weight, 'imagenet', 'timm:<model>' nor a "
            "local catalogue name" + did_you_mean(spec, names))  # fmt: skip


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def data_fingerprint(data: str | Path) -> str:
    """What a grid's data is, wherever it lies: a hash of its files' relative paths and sizes.

    A cell's key holds this, not the path, so ``data: ../shared/data/eurosat-ms`` and
    ``data: /work/shared/data/eurosat-ms`` (or a copy of the folder on another machine, under another
    name) resume the same cells, while adding, removing or replacing an image makes every cell new.
    A single file counts by its name and size; in a folder, hidden files and folders (``.DS_Store``,
    ``.ipynb_checkpoints``) are left out.  Sizes, not contents, are read, so a folder of many
    gigabytes is fingerprinted in the time it takes to list it.
    """
    root = Path(data).expanduser()
    if root.is_file():
        entries = [(root.name, root.stat().st_size)]
    elif root.is_dir():
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith("."):
                    p = Path(dirpath) / name
                    entries.append((p.relative_to(root).as_posix(), p.stat().st_size))
        entries.sort()
    else:
        raise ConfigError(f"data: {data}: no such file or folder")
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


@dataclass
class BenchmarkConfig:
    """A benchmark grid, as read from YAML (the keys are the field names)."""

    data: str
    strategies: list[StrategySpec]
    models: list[ModelSpec]
    labels_per_class: list[int | str]
    seeds: list[int]
    name: str = "benchmark"
    data_options: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    in_memory: bool = True
    split: dict[str, Any] = field(default_factory=lambda: {"kind": "stratified"})
    fit: dict[str, Any] = field(default_factory=dict)
    time_budget_s: float | None = None
    source: str = "benchmark config"
    #: ``{attack, eps, pgd_steps, value_per_reflectance}``: score every cell under that attack as well
    robustness: dict[str, Any] | None = None
    #: generalised zero-shot: these classes (or, as a count, that many drawn per seed) lose every training
    #: and validation label in every cell; the test side keeps them (:func:`unseen_for_seed`)
    unseen_classes: list[str] | int | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> BenchmarkConfig:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"benchmark config {p}: no such file")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"benchmark config {p}: not valid YAML ({exc})") from None
        base = p.parent
        cfg = cls.from_dict(raw, source=str(p))
        if not Path(cfg.data).is_absolute() and not Path(cfg.data).exists() and (base / cfg.data).exists():
            cfg.data = str(base / cfg.data)
        return cfg

    @classmethod
    def from_dict(cls, raw: Any, source: str = "benchmark config") -> BenchmarkConfig:
        """Parse and check everything; every problem is collected and raised together in one ConfigError."""
        from eotransfer.models.backbones import ARCHITECTURES, check_backbone_strategy
        from eotransfer.strategies.base import get_strategy, make_params, validate_params

        problems: list[str] = []
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping with the keys {', '.join(CONFIG_KEYS)}")
        for k in raw:
            if k not in CONFIG_KEYS:
                problems.append(f"{k}: unknown key" + did_you_mean(str(k), CONFIG_KEYS))
        data = str(raw.get("data") or "")
        if not data:
            problems.append("data: missing; give the data set path")
        data_options = dict(raw.get("data_options") or {})
        for k in data_options:
            if k not in (*DATA_OPTION_KEYS, "use_bands"):
                problems.append(
                    f"data_options.{k}: unknown data option" + did_you_mean(k, (*DATA_OPTION_KEYS, "use_bands"))
                )
        split = raw.get("split") or {"kind": "stratified"}
        split = {"kind": split} if isinstance(split, str) else dict(split)
        split.setdefault("kind", "stratified")
        for k in split:
            if k not in SPLIT_OPTIONS:
                problems.append(f"split.{k}: unknown split option" + did_you_mean(k, SPLIT_OPTIONS))
        kinds = [s for s in SPLIT_KINDS if s != "k-per-class"]  # labels per class come from labels_per_class
        if split["kind"] not in kinds:
            problems.append(f"split.kind: unknown split '{split['kind']}'" + did_you_mean(str(split["kind"]), kinds))
        if "test_blocks" in split:
            blocks = split["test_blocks"]
            blocks = [b.strip() for b in blocks.split(",")] if isinstance(blocks, str) else blocks
            if split["kind"] not in BLOCK_SPLITS:
                problems.append(f"split.test_blocks: needs split.kind {', '.join(BLOCK_SPLITS)}, not {split['kind']}")
            elif not isinstance(blocks, list) or not blocks or not all(isinstance(b, str) and b for b in blocks):
                problems.append(f"split.test_blocks: {blocks!r}; give block names (e.g. [32N, 33N]) or east / west")
            else:
                split["test_blocks"] = [str(b) for b in blocks]

        fit_opts = dict(raw.get("fit") or {})
        fit_fields = {f.name for f in dataclasses.fields(api.FitConfig)}
        for k in fit_opts:
            if k in GRID_FIT_FIELDS:
                problems.append(
                    f"fit.{k}: set by the grid (use data, data_options, split, models, labels_per_class, seeds)"
                )
        fit_common = {k: v for k, v in fit_opts.items() if k in fit_fields and k not in GRID_FIT_FIELDS}
        try:
            validate_params(api.FitConfig(**fit_common))
        except (ConfigError, TypeError) as exc:
            problems.append(f"fit: {exc}")
        strategy_common = {k: v for k, v in fit_opts.items() if k not in fit_fields}

        strategies: list[StrategySpec] = []
        for i, s in enumerate(raw.get("strategies") or []):
            s = {"name": s} if isinstance(s, str) else dict(s or {})
            name, params = str(s.get("name", "")), dict(s.get("params") or {})
            extra = set(s) - {"name", "label", "params", "teacher", "previous"}
            if extra:
                problems.append(f"strategies[{i}]: unknown keys {', '.join(sorted(extra))} (use name, label, params, "
                                "teacher, previous)")  # fmt: skip
            teacher = parse_teacher(s.get("teacher"), f"strategies[{i}].teacher", problems)
            previous = parse_previous(s.get("previous"), f"strategies[{i}].previous", problems)
            if previous is not None and not _takes(name, "previous"):
                problems.append(f"strategies[{i}].previous: strategy '{name}' takes no earlier task (progressive does)")
                previous = None
            elif previous is not None and params.get("previous"):
                problems.append(f"strategies[{i}]: give either previous (an earlier task the grid trains) or "
                                "params.previous (a saved model), not both")  # fmt: skip
            try:
                scls = get_strategy(name)
                if teacher is not None and "teacher" not in _param_names(scls):
                    problems.append(f"strategies[{i}].teacher: strategy '{name}' takes no teacher (distill does)")
                    teacher = None
                elif teacher is not None and params.get("teacher"):
                    problems.append(f"strategies[{i}]: give either teacher (a row of this grid) or params.teacher "
                                    "(a saved model), not both")  # fmt: skip
                elif s.get("teacher") is None and "teacher" in _param_names(scls) and not params.get("teacher"):
                    problems.append(f"strategies[{i}].teacher: '{name}' needs a teacher; name a row of this grid "
                                    "(teacher: {strategy: finetune, backbone: resnet18, weights: none}) or a saved "
                                    "model (params.teacher: DIR)")  # fmt: skip
                make_params(scls, {**{k: v for k, v in strategy_common.items() if k in _param_names(scls)}, **params})
                unused = [k for k in strategy_common if k not in _param_names(scls) and not _any_strategy_has(k)]
                if unused:
                    problems.append(f"fit.{unused[0]}: not an option of fit nor a parameter of any strategy")
            except (ConfigError, TypeError) as exc:
                problems.append(f"strategies[{i}].name/params: {exc}")
            strategies.append(StrategySpec(str(s.get("label") or name), name, params, teacher, previous))
        if not strategies:
            problems.append("strategies: give at least one (name + params)")
        labels = [s.label for s in strategies]
        for lab in sorted({x for x in labels if labels.count(x) > 1}):
            problems.append(f"strategies: the row name '{lab}' appears twice; give each a distinct label")

        models: list[ModelSpec] = []
        for i, m in enumerate(raw.get("models") or []):
            m = dict(m or {})
            extra = set(m) - {"backbone", "weights"}
            if extra:
                problems.append(f"models[{i}]: unknown keys {', '.join(sorted(extra))} (use backbone, weights)")
            backbone = str(m.get("backbone", ""))
            models.append(ModelSpec(backbone, check_model(backbone, m.get("weights"), f"models[{i}]", problems)))
        if not models:
            problems.append("models: give at least one backbone (weights: none for from scratch)")
        for i, m in enumerate(models):  # a backbone without parameters takes only some strategies
            for st in strategies if m.backbone in ARCHITECTURES else []:
                try:
                    check_backbone_strategy(m.backbone, st.name, m.weights)
                except ConfigError as exc:
                    problems.append(f"models[{i}] with strategies '{st.label}': {exc}")
        for i, st in enumerate(strategies):  # a teacher is a (strategy row, model) of this grid
            t = st.teacher
            if t is None:
                continue
            row = next((o for o in strategies if o.label == t.strategy), None)
            if row is None:
                problems.append(f"strategies[{i}].teacher.strategy: '{t.strategy}' is no row of this grid"
                                + did_you_mean(t.strategy, labels))  # fmt: skip
            elif row.teacher is not None or _takes_teacher(row.name):
                problems.append(f"strategies[{i}].teacher.strategy: '{t.strategy}' is itself distilled; "
                                "name a row that trains on the labels")  # fmt: skip
            if not any(m.backbone == t.backbone and m.weights == t.weights for m in models):
                have = "; ".join(f"{m.backbone} ({m.init})" for m in models)
                problems.append(f"strategies[{i}].teacher: the model {t.backbone} ({t.init}) is not in models "
                                f"({have}); add it there")  # fmt: skip
        for m in list(models):  # the from-scratch reference of every pre-trained model
            if m.weights and not any(o.backbone == m.backbone and o.weights is None for o in models):
                models.append(ModelSpec(m.backbone, None, added=True))

        ks: list[int | str] = []
        for v in raw.get("labels_per_class") or [ALL]:
            if v == ALL or v == 0:
                ks.append(ALL)
            elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
                ks.append(v)
            else:
                problems.append(f"labels_per_class: {v!r} is neither a positive integer nor 'all'")
        seeds_raw = raw.get("seeds", 3)
        seeds: list[int] = []
        if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw > 0:
            seeds = list(range(seeds_raw))
        elif isinstance(seeds_raw, list) and seeds_raw and all(isinstance(s, int) and s >= 0 for s in seeds_raw):
            seeds = list(seeds_raw)
        else:
            problems.append(f"seeds: {seeds_raw!r} must be a positive count or a list of non-negative integers")
        size = raw.get("size")
        if size is not None and (not isinstance(size, int) or size < 8):
            problems.append(f"size: {size!r} must be an integer ≥ 8 (pixels) or left out")
        budget = raw.get("time_budget_s")
        if budget is not None and (not isinstance(budget, int | float) or budget <= 0):
            problems.append(f"time_budget_s: {budget!r} must be a positive number of seconds or left out")
        if data and not Path(data).exists():
            problems.append(f"data: {data}: no such file or folder")
        robustness = parse_robustness(raw.get("robustness"), problems)
        unseen = parse_unseen_classes(raw.get("unseen_classes"), problems)
        if raw.get("unseen_classes") is not None:
            for i, st in enumerate(strategies):
                if st.params.get("unseen_classes"):
                    problems.append(f"strategies[{i}].params.unseen_classes: set by the grid's unseen_classes; "
                                    "remove it here")  # fmt: skip
        if problems:
            raise ConfigError(f"{source}: {len(problems)} problem(s), nothing was run:\n  - " + "\n  - ".join(problems))
        return cls(data, strategies, models, ks, seeds, str(raw.get("name") or Path(data).name), data_options, size,
                   bool(raw.get("in_memory", True)), split, fit_opts, budget, source, robustness, unseen)  # fmt: skip

    def settings(self, data: str | None = None) -> dict[str, Any]:
        """What a cell's result depends on besides its strategy, model, k and seed.

        The data enter as their :func:`data_fingerprint`, not their path; ``data`` replaces that
        (the path-keyed settings of earlier versions, for :meth:`cells`' ``legacy_keys``).
        """
        out: dict[str, Any] = {"data": data_fingerprint(self.data) if data is None else data,
                               "data_options": self.data_options, "size": self.size, "split": self.split,
                               "fit": self.fit}  # fmt: skip
        if self.robustness is not None:  # only when set: the keys of grids without it stay what they were
            out["robustness"] = self.robustness
        if self.unseen_classes is not None:
            out["unseen_classes"] = self.unseen_classes
        return out

    def legacy_data_names(self) -> list[str]:
        """The ``data`` strings earlier versions hashed into a key: the path as written and as resolved."""
        return list(dict.fromkeys([self.data, str(Path(self.data).expanduser().resolve())]))

    def cells(self) -> list[Cell]:
        """Seeds outermost (a time budget cuts seeds, not label counts); the reference row first in each (seed, k)."""
        bases = [self.settings(), *(self.settings(d) for d in self.legacy_data_names())]
        out = []
        for seed in self.seeds:
            for k in self.labels_per_class:
                ref = Cell(None, None, k, seed)
                keys = [f"{REFERENCE}|{NO_MODEL}|{NO_MODEL}|k={k}|seed={seed}|{_short_hash(b)}" for b in bases]
                ref.key, ref.legacy_keys = keys[0], tuple(keys[1:])
                out.append(ref)
                for m in self.models:
                    for s in self.strategies:
                        c = Cell(s, m, k, seed)
                        what = {"strategy": s.to_dict(), "model": [m.backbone, m.weights]}
                        keys = [f"{s.label}|{m.backbone}|{m.init}|k={k}|seed={seed}|{_short_hash({**b, **what})}"
                                for b in bases]  # fmt: skip
                        c.key, c.legacy_keys = keys[0], tuple(keys[1:])
                        out.append(c)
        return out

    def teacher_cells(self, cells: Sequence[Cell]) -> dict[str, Cell]:
        """For every cell of a row with a ``teacher``: its teacher's cell (the same k and seed), by the cell's key."""
        by_what = {(c.strategy.label, c.model.backbone, c.model.weights, c.k, c.seed): c
                   for c in cells if c.strategy is not None and c.model is not None}  # fmt: skip
        out = {}
        for c in cells:
            t = c.strategy.teacher if c.strategy is not None else None
            if t is not None:
                out[c.key] = by_what[(t.strategy, t.backbone, t.weights, c.k, c.seed)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "data_options": self.data_options, "size": self.size,
                "in_memory": self.in_memory, "split": self.split,
                "strategies": [s.to_dict() | ({"previous": s.previous.to_dict(fingerprint=False)} if s.previous else {})
                               for s in self.strategies],
                "models": [{"backbone": m.backbone, "weights": m.weights} for m in self.models if not m.added],
                "added_scratch_references": [m.backbone for m in self.models if m.added],
                "labels_per_class": self.labels_per_class, "seeds": self.seeds, "fit": self.fit,
                **({"robustness": self.robustness} if self.robustness is not None else {}),
                **({"unseen_classes": self.unseen_classes} if self.unseen_classes is not None else {}),
                "time_budget_s": self.time_budget_s}  # fmt: skip


def weights_spec(raw: Any) -> str | None:
    """A config's ``weights:`` value: None (from scratch) for none/scratch or no value, else the spec as text."""
    return None if raw is None or str(raw).lower() in ("none", "scratch") else str(raw)


def parse_teacher(raw: Any, where: str, problems: list[str]) -> TeacherSpec | None:
    """A strategy row's ``teacher: {strategy, backbone, weights}`` (problems appended); None when not given."""
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or not raw.get("strategy")
        or not raw.get("backbone")
        or set(raw) - {"strategy", "backbone", "weights"}
    ):
        problems.append(f"{where}: {raw!r}; give the teaching row as {{strategy: ROW, backbone: NAME, weights: "
                        "WEIGHTS or none}, a row and a model of this grid")  # fmt: skip
        return None
    return TeacherSpec(str(raw["strategy"]), str(raw["backbone"]), weights_spec(raw.get("weights")))


def check_model(backbone: str, weights: Any, where: str, problems: list[str]) -> str | None:
    """Check a config's ``backbone`` and ``weights`` (appending to ``problems``); returns the weights spec."""
    from eotransfer.models.backbones import get_architecture

    try:
        get_architecture(backbone)
    except ConfigError as exc:
        problems.append(f"{where}.backbone: {exc}")
    spec = weights_spec(weights)
    why = check_weights(spec) if spec else None
    if why:
        problems.append(f"{where}.weights: {why}")
    return spec


PREVIOUS_KEYS = ("data", "data_options", "size", "strategy", "backbone", "weights", "params", "seed")


def parse_previous(raw: Any, where: str, problems: list[str]) -> PreviousSpec | None:
    """A row's ``previous: {data, data_options, size, strategy, backbone, weights, params, seed}``, checked like
    the grid."""
    from eotransfer.strategies.base import get_strategy, make_params

    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: give a mapping ({', '.join(PREVIOUS_KEYS)})")
        return None
    n = len(problems)
    for k in raw:
        if k not in PREVIOUS_KEYS:
            problems.append(f"{where}.{k}: unknown key" + did_you_mean(str(k), PREVIOUS_KEYS))
    data, strategy, backbone = (
        str(raw.get("data") or ""),
        str(raw.get("strategy") or ""),
        str(raw.get("backbone") or ""),
    )
    if not data:
        problems.append(f"{where}.data: missing; give the earlier task's data set path")
    elif not Path(data).expanduser().exists():
        problems.append(f"{where}.data: {data}: no such file or folder")
    options = dict(raw.get("data_options") or {})
    for k in options:
        if k not in (*DATA_OPTION_KEYS, "use_bands"):
            problems.append(f"{where}.data_options.{k}: unknown data option" + did_you_mean(k, DATA_OPTION_KEYS))
    params = dict(raw.get("params") or {})
    try:
        scls = get_strategy(strategy)
        if "teacher" in _param_names(scls) or "previous" in _param_names(scls):
            problems.append(f"{where}.strategy: '{strategy}' needs a model of its own; train the earlier task with "
                            "a strategy that learns from labels (finetune, say)")  # fmt: skip
        make_params(scls, params)
    except (ConfigError, TypeError) as exc:
        problems.append(f"{where}.strategy/params: {exc}")
    weights = check_model(backbone, raw.get("weights"), where, problems)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"{where}.seed: {seed!r} must be a non-negative integer")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 8):
        problems.append(f"{where}.size: {size!r} must be an integer ≥ 8 (pixels) or left out")
    if len(problems) > n:
        return None
    return PreviousSpec(data, strategy, backbone, weights, options, params, int(seed), size)


def fit_previous(spec: PreviousSpec, folder: Path) -> dict[str, Any]:
    """Fit the earlier task of a ``progressive`` row into ``folder`` (atomically); returns its test metrics."""
    if spec.size is None:
        data: str | EODataset = spec.data
        options = dict(spec.data_options)
    else:  # opened with its data options and resized in memory, as the grid's own data
        data, options = open_data(spec.data, spec.data_options, spec.size), {}
    res = api.fit(data, strategy=spec.strategy, backbone=spec.backbone, weights=spec.weights, seed=spec.seed,
                  progress=False, verbose=False, out=str(folder), **options, **spec.params)  # fmt: skip
    return dict(res.metrics.get("test", {}))


def parse_unseen_classes(raw: Any, problems: list[str]) -> list[str] | int | None:
    """A config's ``unseen_classes:``: class names (a list or comma-separated), a count drawn per seed, or None."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw >= 1:
            return raw
    elif isinstance(raw, str | list):
        names = [c.strip() for c in raw.split(",")] if isinstance(raw, str) else raw
        if names and all(isinstance(c, str) and c.strip() for c in names):
            if len(set(names)) == len(names):
                return [c.strip() for c in names]
            problems.append(f"unseen_classes: {raw!r} names a class twice")
            return None
    problems.append(f"unseen_classes: {raw!r}; give class names (e.g. [Forest, River]) or how many to draw per seed")
    return None


def unseen_for_seed(cfg: BenchmarkConfig, classes: list[str], seed: int) -> list[str]:
    """The seed's unseen classes, in the data's class order: the named ones, or ``n`` drawn with the seed.

    Raises ConfigError for a name that is no class of the data, or when no class would stay seen.
    """
    wanted = cfg.unseen_classes
    if wanted is None:
        return []
    if isinstance(wanted, int):
        if wanted >= len(classes):
            raise ConfigError(f"unseen_classes: {wanted} of {len(classes)} classes leaves none seen; draw fewer")
        drawn = set(np.random.default_rng(np.random.SeedSequence([seed, 7919])).choice(len(classes), wanted, False))
        return [c for i, c in enumerate(classes) if i in drawn]
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise ConfigError(
            f"unseen_classes: '{unknown[0]}' is not a class of {cfg.data}" + did_you_mean(unknown[0], classes)
        )
    if len(wanted) >= len(classes):
        raise ConfigError("unseen_classes: at least one class must stay seen (trained on)")
    return [c for c in classes if c in wanted]


def gzsl_scores(cm: Any, classes: list[str], unseen: list[str]) -> dict[str, float]:
    """Generalised zero-shot accuracy from a confusion matrix (rows true, columns predicted; Xian et al. 2018):
    the per-class accuracy averaged over the seen and over the unseen test classes, and their harmonic mean."""
    cm = np.asarray(cm, dtype=np.float64)
    present = cm.sum(1) > 0
    per_class = np.divide(np.diag(cm), cm.sum(1), out=np.zeros(len(cm)), where=present)
    is_unseen = np.array([c in unseen for c in classes])
    s_mask, u_mask = present & ~is_unseen, present & is_unseen
    acc_s = float(per_class[s_mask].mean()) if s_mask.any() else float("nan")
    acc_u = float(per_class[u_mask].mean()) if u_mask.any() else float("nan")
    h = 2 * acc_s * acc_u / (acc_s + acc_u) if acc_s + acc_u > 0 else 0.0
    return {"seen_accuracy": acc_s, "unseen_accuracy": acc_u, "harmonic_mean": h}


def parse_robustness(raw: Any, problems: list[str]) -> dict[str, Any] | None:
    """The config's ``robustness:`` mapping, checked (problems appended), with its defaults filled in."""
    from eotransfer.evaluation.attacks import ATTACK_LOSSES, ATTACKS, SQUARE_QUERIES, parse_eps

    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"robustness: {raw!r}; give a mapping, e.g. {{attack: pgd, eps: '0.005', pgd_steps: 10}}")
        return None
    for k in raw:
        if k not in ROBUSTNESS_KEYS:
            problems.append(f"robustness.{k}: unknown key" + did_you_mean(str(k), ROBUSTNESS_KEYS))
    out: dict[str, Any] = {"attack": str(raw.get("attack", "pgd")), "eps": raw.get("eps"),
                           "pgd_steps": raw.get("pgd_steps", 10),
                           "value_per_reflectance": raw.get("value_per_reflectance")}  # fmt: skip
    if out["attack"] not in ATTACKS:
        problems.append(f"robustness.attack: {out['attack']!r} is not one of {', '.join(ATTACKS)}")
    if out["eps"] is None:
        problems.append("robustness.eps: missing; give the budget in reflectance units, e.g. eps: '0.005'")
    else:
        out["eps"] = str(out["eps"])
        try:
            parse_eps(out["eps"], "robustness.eps")
        except ConfigError as exc:
            problems.append(str(exc))
    steps = out["pgd_steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        problems.append(f"robustness.pgd_steps: {steps!r} must be an integer from 1 to 1000")
    if out["attack"] == "fgsm":
        out["pgd_steps"] = 1
    # ``loss`` and ``queries`` enter the mapping (and so the grid's key) only where they change the attack
    loss = raw.get("loss", "ce")
    if loss not in ATTACK_LOSSES:
        problems.append(f"robustness.loss: {loss!r} is not one of {', '.join(ATTACK_LOSSES)}")
    elif out["attack"] == "square" and "loss" in raw and loss != "margin":
        problems.append("robustness.loss: the square attack always lowers the margin; leave loss out")
    elif loss != "ce" and out["attack"] != "square":
        out["loss"] = loss
    if out["attack"] == "square":
        out["pgd_steps"] = 1
        queries = raw.get("queries", SQUARE_QUERIES)
        if not isinstance(queries, int) or isinstance(queries, bool) or not 1 <= queries <= 100_000:
            problems.append(f"robustness.queries: {queries!r} must be an integer from 1 to 100000")
        out["queries"] = queries
    elif "queries" in raw:
        problems.append(f"robustness.queries: only the square attack takes queries (attack is {out['attack']})")
    vpr = out["value_per_reflectance"]
    if vpr is not None and (not isinstance(vpr, int | float) or isinstance(vpr, bool) or not vpr > 0):
        problems.append(f"robustness.value_per_reflectance: {vpr!r} must be a positive number or left out")
    return out


def check_robustness_budget(cfg: BenchmarkConfig, ds: EODataset, split: Split) -> None:
    """Refuse, before a seed's first cell, a ``robustness.eps`` wider than a band's range over its test side."""
    from eotransfer.evaluation.attacks import band_range, make_budget

    if cfg.robustness is None:
        return
    lo, hi = band_range(ds.checked_read, split.test)
    try:
        make_budget(cfg.robustness["eps"], ds.bands, lo, hi, cfg.robustness["value_per_reflectance"],
                    "robustness.eps")  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"{cfg.source}: {exc}; nothing of this seed was run") from None


def attack_text(robustness: dict[str, Any]) -> str:
    """``"pgd-10, eps 0.00784 reflectance"`` (``"pgd-10 margin, …"``, ``"square-1000, …"``): how a row's robust
    accuracy was measured."""
    counts = {"pgd": f"-{robustness['pgd_steps']}", "square": f"-{robustness.get('queries')}"}
    steps = counts.get(robustness["attack"], "")
    loss = f" {robustness['loss']}" if robustness.get("loss", "ce") != "ce" else ""
    vpr = robustness.get("value_per_reflectance")
    return f"{robustness['attack']}{steps}{loss}, eps {robustness['eps']} reflectance" + (f" (×{vpr:g})" if vpr else "")


def _param_names(scls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(scls.Params)}


def _takes(strategy: str, param_name: str) -> bool:
    """Whether a registered strategy has the parameter (``teacher``: distill); False for an unknown name."""
    from eotransfer.strategies.base import get_strategy

    try:
        return param_name in _param_names(get_strategy(strategy))
    except ConfigError:
        return False


def _takes_teacher(strategy: str) -> bool:
    """Whether a registered strategy learns from a teacher (``distill``); False for an unknown name."""
    return _takes(strategy, "teacher")


def _any_strategy_has(name: str) -> bool:
    from eotransfer.strategies.base import STRATEGIES

    STRATEGIES._load()
    return any(name in _param_names(c) for c in STRATEGIES.values())


# -- running cells --------------------------------------------------------------------------------------------------
def reference_accuracy(ds: EODataset, split: Split, seed: int,
                       robustness: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Band statistics + logistic regression on ``split`` (the first reference row): accuracy and metrics.

    With ``robustness`` (see :class:`BenchmarkConfig`), also ``robust``: the attack's result on the test
    side, the fitted reference attacked as a network (:func:`~eotransfer.evaluation.reference.reference_network`).
    """
    from eotransfer.engine.metrics import classification_metrics
    from eotransfer.evaluation.reference import attack_reference

    f_train = band_statistics_matrix(ds.checked_read, split.train)
    f_test = band_statistics_matrix(ds.checked_read, split.test)
    clf = fit_band_statistics_classifier(f_train, ds.labels[split.train], seed)
    out = classification_metrics(ds.labels[split.test], clf.predict(f_test), ds.classes)
    if robustness is not None:
        out["robust"] = attack_reference(clf, ds.bands, ds.checked_read, split.test, ds.labels[split.test],
                                         len(ds.classes), seed=seed, option="robustness.eps", **robustness)  # fmt: skip
    return out


def fit_cell(ds: EODataset, split: Split, strategy: str, backbone: str, weights: str | None, seed: int,
             options: dict[str, Any], robustness: dict[str, Any] | None = None,
             keep: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """One ``api.fit`` on a fixed split; returns the test metrics (and ``seconds``, the fit's).

    ``keep``: save the model there (atomically; a grid's teacher), not only to a temporary folder.

    With ``robustness``, the model is saved to a temporary folder and attacked as ``eotransfer evaluate
    --attack`` attacks it (:func:`~eotransfer.evaluation.attacks.attack_saved_model`) on the test side:
    ``robust`` holds the result, or ``robust_skipped`` why no gradient attack applies (a kNN, RBF-SVM or
    random-forest head has no input gradient).
    """
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eotransfer-cell-") as tmp:
        out: dict[str, Any] = {"out": str(Path(tmp) / "model")} if robustness is not None else {}
        if keep is not None:
            out = {"out": str(keep)}
        res = api.fit(ds, split_override=split, strategy=strategy, backbone=backbone, weights=weights, seed=seed,
                      progress=False, verbose=False, **options, **out)  # fmt: skip
        metrics = {**res.metrics["test"], "seconds": round(time.perf_counter() - t0, 2)}
        if robustness is not None:
            from eotransfer.card import load_model
            from eotransfer.evaluation.attacks import attack_saved_model

            saved = load_model(out["out"])
            labels = np.array([saved.classes.index(c) for c in ds.classes])[ds.labels[split.test]]
            try:  # the budget was checked against the data (check_robustness_budget): this is the model's head
                metrics["robust"] = attack_saved_model(saved, ds, split.test, labels, seed=seed, **robustness)
            except ConfigError as exc:
                metrics["robust_skipped"] = str(exc)
    return metrics


def grid_split(ds: EODataset, base: Split, k: int | str, seed: int, unseen: Sequence[str] = ()) -> Split:
    """``base`` with ``k`` labelled training samples per class drawn with ``seed`` (``all``: ``base`` itself);
    then, for generalised zero-shot, the ``unseen`` classes' training and validation samples unlabelled."""
    split = base if k == ALL else restrict_to_k_per_class(base, ds.labels, int(k), seed, ds.classes)
    if unseen:
        split = without_classes(split, ds.labels, [ds.classes.index(c) for c in unseen], ds.classes)
    return split


def base_split(ds: EODataset, split: dict[str, Any], seed: int) -> Split:
    """The seed's split: one test side for every strategy, model and label count of that seed."""
    opts = {k: v for k, v in split.items() if k not in ("kind", "seed")}
    kind = split["kind"]
    groups = getattr(ds, "events", None)
    groups = getattr(ds, "groups", None) if groups is None else groups
    lonlat = ds.lonlat() if kind in ("utm-zone", "lonlat-block") else None
    return make_split(kind, ds.labels, lonlat, seed=int(split.get("seed", seed)), groups=groups, **opts)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The finished rows of a ``results.csv`` (numbers parsed; a torn last line is left out)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if not r.get("finished"):
                continue
            row: dict[str, Any] = dict(r)
            for c in ("n_train", "n_val", "n_test", "seed"):
                row[c] = int(row[c])
            for c in (
                "accuracy",
                "macro_f1",
                "seconds",
                "robust_accuracy",
                "certified_accuracy",
                *ZEROSHOT_COLUMNS[1:],
            ):
                row[c] = float(row[c]) if row.get(c) not in ("", None) else float("nan")
            row.setdefault("attack", "")
            row["k"] = int(row["k"]) if str(row["k"]).isdigit() else row["k"]
            rows.append(row)
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row (header first when the file is new), flushed to disk before the next cell starts.

    A table recorded with the columns of earlier versions keeps them, unless ``row`` has a value for a
    column they lack: then the table is first rewritten (atomically) with :data:`COLUMNS`, old rows blank there.
    """
    new = not path.is_file() or path.stat().st_size == 0
    columns: Sequence[str] = COLUMNS
    if not new:
        with path.open(newline="") as f:
            columns = next(csv.reader(f), list(COLUMNS))
        if any(row.get(c) not in (None, "") for c in COLUMNS if c not in columns):
            _widen_table(path)
            columns = COLUMNS
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a run killed mid-write: start a fresh line
    with path.open("a", newline="") as f:
        if not new and torn:
            f.write("\n")
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _widen_table(path: Path) -> None:
    """Rewrite ``path`` with the header :data:`COLUMNS` (a torn last line dropped); every value kept."""
    from eotransfer.card import atomic_write_text

    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("finished")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def rekey_legacy_rows(path: Path, cells: Sequence[Cell]) -> int:
    """Rename the rows of ``path`` recorded under a cell's :attr:`Cell.legacy_keys` to its key; returns how many.

    A row is renamed only when its cell's current key is not in the table yet (a resumed run would
    otherwise hold it twice).  The table is rewritten atomically, every other row and line untouched.
    """
    if not path.is_file():
        return 0
    with path.open(newline="") as f:
        parts = f.read().split("\n")
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])  # line endings kept as they are
    first = [next(csv.reader([line]), [""])[0] if line.strip() else "" for line in lines]
    if not first or first[0] != "cell":
        return 0
    present = set(first[1:])
    rename = {old: c.key for c in cells if c.key not in present for old in c.legacy_keys if old in present}
    if not rename:
        return 0
    n = 0
    for i, name in enumerate(first):
        if i and name in rename:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow([rename[name]])
            # the first field is replaced and the rest of the line kept byte for byte (line ending included)
            lines[i] = buf.getvalue() + lines[i][_first_field_end(lines[i]) :]
            n += 1
    from eotransfer.card import atomic_write_text

    atomic_write_text(path, "".join(lines))
    return n


def _first_field_end(line: str) -> int:
    """Where the first CSV field of ``line`` ends (the index of its comma, or of the line's end)."""
    if line.startswith('"'):
        i = 1
        while True:
            j = line.index('"', i)
            if line[j + 1 : j + 2] == '"':
                i = j + 2
                continue
            return j + 1
    ends = [j for j in (line.find(","), line.find("\r"), line.find("\n")) if j >= 0]
    return min(ends) if ends else len(line)


def open_data(data: str, options: dict[str, Any], size: int | None = None, in_memory: bool = True) -> EODataset:
    """``data`` opened with its data ``options``; held in memory (at ``size`` pixels when given)."""
    ns = dataclasses.replace(api.FitConfig(), data=data)
    for k, v in options.items():
        setattr(ns, k, v)
    ds = api.load_data(ns)
    return ArrayDataset(ds, None, size) if in_memory or size else ds


def open_benchmark_data(cfg: BenchmarkConfig) -> EODataset:
    return open_data(cfg.data, cfg.data_options, cfg.size, cfg.in_memory)


def grid_row(cfg: BenchmarkConfig, cell: Cell, split: Split, m: dict[str, Any],
             classes: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """The ``results.csv`` row of one cell from its test metrics ``m`` (:func:`fit_cell`, :func:`reference_accuracy`);
    where ``split`` holds unseen classes, their names and the generalised zero-shot scores (:func:`gzsl_scores`)."""
    unseen = list(split.info.get("unseen_classes") or [])
    gzsl: dict[str, Any] = {"unseen_classes": ",".join(unseen)} if unseen else {}
    if unseen:
        gzsl.update(gzsl_scores(m["confusion_matrix"], list(classes), unseen))
    return {**gzsl, "cell": cell.key, "data": cfg.name, "split": cfg.split["kind"],
            "strategy": cell.strategy.label if cell.strategy else REFERENCE,
            "strategy_name": cell.strategy.name if cell.strategy else REFERENCE,
            "backbone": cell.model.backbone if cell.model else NO_MODEL,
            "weights": (cell.model.weights or "") if cell.model else "",
            "init": cell.model.init if cell.model else NO_MODEL, "k": cell.k, "n_train": len(split.train),
            "n_val": len(split.val), "n_test": len(split.test), "seed": cell.seed,
            "accuracy": m["overall_accuracy"], "macro_f1": m["macro_f1"],
            "robust_accuracy": m["robust"]["robust_accuracy"] if "robust" in m else "",
            "attack": attack_text(cfg.robustness) if "robust" in m and cfg.robustness else "",
            "certified_accuracy": m.get("robust", {}).get("certified_accuracy", ""), "seconds": m["seconds"],
            "confusion_matrix": json.dumps(m["confusion_matrix"]), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip


def run_benchmark(cfg: BenchmarkConfig, out: str | Path, progress: bool = True,
                  log: Callable[[str], None] = print) -> list[dict[str, Any]]:  # fmt: skip
    """Run every cell of ``cfg`` not yet in ``out/results.csv``; then write the summary. Returns the grid's rows."""
    from eotransfer.card import CARD_FILE, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS_CSV
    cells = cfg.cells()
    rekeyed = rekey_legacy_rows(results, cells)
    if rekeyed:
        log(f"{rekeyed} rows of {results} recorded under the path-keyed cell names of earlier versions: renamed to "
            "their data-fingerprint keys")  # fmt: skip
    done = {r["cell"] for r in read_results(results)}
    todo = [c for c in cells if c.key not in done]
    teachers = cfg.teacher_cells(cells)
    # a teacher's cell runs (and keeps its model) before the rows it teaches: they go last in their (seed, k)
    teaching = {t.key for t in teachers.values()}
    order = {c.key: i for i, c in enumerate(cells)}
    todo.sort(key=lambda c: (cfg.seeds.index(c.seed), cfg.labels_per_class.index(c.k), c.key in teachers,
                             order[c.key]))  # fmt: skip

    def teacher_dir(teacher: Cell) -> Path:
        return out / TEACHERS_DIR / _short_hash(teacher.key)

    def previous_dir(spec: PreviousSpec) -> Path:
        return out / PREVIOUS_DIR / _short_hash(spec.to_dict())

    def ensure_previous(spec: PreviousSpec) -> Path:
        """The earlier task's model folder, fitted first when it is not there (a resumed run refits it)."""
        folder = previous_dir(spec)
        if not (folder / CARD_FILE).is_file():
            log(f"training the earlier task of a progressive row: {spec.text()}")
            t1 = time.perf_counter()
            m = fit_previous(spec, folder)
            record = json.loads((out / PREVIOUS_JSON).read_text()) if (out / PREVIOUS_JSON).is_file() else {}
            record[folder.name] = {"previous": spec.to_dict(fingerprint=False),
                                   "test_accuracy": m.get("overall_accuracy"), "test_macro_f1": m.get("macro_f1"),
                                   "n_test": m.get("n"), "seconds": round(time.perf_counter() - t1, 1)}  # fmt: skip
            atomic_write_text(out / PREVIOUS_JSON, json.dumps(record, indent=1, default=str))
            log(f"earlier task {spec.text()}: test accuracy {m.get('overall_accuracy', float('nan')):.3f}")
        return folder

    def run_fit(c: Cell, split: Split) -> dict[str, Any]:
        assert c.strategy is not None and c.model is not None and ds is not None
        opts = {**cfg.fit, **c.strategy.params}
        unseen = split.info.get("unseen_classes")
        if unseen and _takes(c.strategy.name, "unseen_classes"):
            opts["unseen_classes"] = ",".join(unseen)  # zero-shot: the grid's unseen classes
        t = teachers.get(c.key)
        if t is not None:
            opts["teacher"] = str(teacher_dir(t))
        if c.strategy.previous is not None:
            opts["previous"] = str(ensure_previous(c.strategy.previous))
        keep = teacher_dir(c) if c.key in teaching else None
        return fit_cell(ds, split, c.strategy.name, c.model.backbone, c.model.weights, c.seed, opts,
                        cfg.robustness, keep)  # fmt: skip

    def remove_unneeded_teachers(remaining: Sequence[Cell]) -> None:
        """Teachers' and earlier tasks' models are kept only while a cell still to run needs them (a resumed
        run retrains one)."""
        needs = {TEACHERS_DIR: {teacher_dir(teachers[c.key]).name for c in remaining if c.key in teachers},
                 PREVIOUS_DIR: {previous_dir(c.strategy.previous).name for c in remaining
                                if c.strategy is not None and c.strategy.previous is not None}}  # fmt: skip
        for sub, needed in needs.items():
            folder = out / sub
            if not folder.is_dir():
                continue
            for d in folder.iterdir():
                if d.name not in needed and not d.name.startswith("."):
                    shutil.rmtree(d, ignore_errors=True)
            if not any(folder.iterdir()):
                folder.rmdir()

    log(f"{cfg.name}: {len(cells)} cells, {len(cells) - len(todo)} already in {results}, {len(todo)} to run")
    t0 = time.time()
    ds: EODataset | None = None
    meta_path = out / BENCHMARK_JSON
    splits: dict[int, Split] = {}
    for n, cell in enumerate(todo, 1):
        if cfg.time_budget_s is not None and time.time() - t0 > cfg.time_budget_s:
            log(f"time budget of {cfg.time_budget_s:.0f} s reached: {len(todo) - n + 1} cells left; rerun to resume")
            break
        if ds is None:
            ds = open_benchmark_data(cfg)
            for seed in cfg.seeds:  # a class name the data lack fails here, before any cell runs
                unseen_for_seed(cfg, ds.classes, seed)
            meta = {"config": cfg.to_dict(), "source": cfg.source, "classes": ds.classes, "n_samples": len(ds),
                    "bands": ds.bands.keys, "torch": torch.__version__,
                    "device": "cuda" if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"}  # fmt: skip
            atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str))
            import yaml

            atomic_write_text(
                out / "benchmark.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
            )
        if cell.seed not in splits:
            splits[cell.seed] = base_split(ds, cfg.split, cell.seed)
            check_robustness_budget(cfg, ds, splits[cell.seed])
        try:
            split = grid_split(ds, splits[cell.seed], cell.k, cell.seed, unseen_for_seed(cfg, ds.classes, cell.seed))
            if cell.strategy is None or cell.model is None:
                t1 = time.perf_counter()
                m = reference_accuracy(ds, split, cell.seed, cfg.robustness)
                m["seconds"] = round(time.perf_counter() - t1, 2)
            else:
                teacher = teachers.get(cell.key)
                if teacher is not None and not (teacher_dir(teacher) / CARD_FILE).is_file():
                    # a resumed run whose teacher was removed (or a teacher that failed): train it again
                    log(f"[cell {n}/{len(todo)}] {cell.key}: training its teacher, {teacher.key}")
                    tm = run_fit(teacher, split)
                    if teacher.key not in done:
                        append_row(results, grid_row(cfg, teacher, split, tm, ds.classes))
                        done.add(teacher.key)
                m = run_fit(cell, split)
        except EOTransferError as exc:
            log(f"[cell {n}/{len(todo)}] {cell.key}: skipped ({exc})")
            continue
        finally:
            remove_unneeded_teachers(todo[n:])
        if "robust_skipped" in m:
            log(f"[cell {n}/{len(todo)}] {cell.key}: no robust accuracy ({m['robust_skipped']})")
        row = grid_row(cfg, cell, split, m, ds.classes)
        append_row(results, row)
        done.add(cell.key)
        if progress:
            robust = f", robust {row['robust_accuracy']:.3f}" if "robust" in m else ""
            log(f"[cell {n}/{len(todo)}] {row['strategy']} ({row['backbone']}, {row['init']}) k={cell.k} "
                f"seed={cell.seed}: accuracy {row['accuracy']:.3f}{robust} ({m['seconds']:.1f} s; elapsed "
                f"{time.time() - t0:.0f} s)")  # fmt: skip
    keys = {c.key for c in cells}
    rows = [r for r in read_results(results) if r["cell"] in keys]
    if rows:
        write_summary(rows, out)
    return rows


# -- summaries --------------------------------------------------------------------------------------------------------
Method = tuple[str, str, str]  # (strategy row name, backbone, init)


def method_of(row: dict[str, Any]) -> Method:
    return (str(row["strategy"]), str(row.get("backbone", NO_MODEL)), str(row["init"]))


def method_label(m: Method) -> str:
    strategy, backbone, init = m
    if init == NO_MODEL:
        return strategy
    return f"{strategy} ({backbone}, {init})" if backbone else f"{strategy} ({init})"


def summarise_rows(rows: Iterable[dict[str, Any]], value: str = "accuracy") -> list[dict[str, Any]]:
    """One record per (data, method, k): n seeds, mean, 95 % interval, mean training-set size."""
    groups: dict[tuple[str, Method, Any], list[dict[str, Any]]] = {}
    for r in rows:
        if value != "accuracy" and not math.isfinite(float(r.get(value, float("nan")))):
            continue  # a row without that score (e.g. no robust accuracy: a head without input gradient)
        groups.setdefault((str(r["data"]), method_of(r), r["k"]), []).append(r)
    out = []
    for (data, m, k), rs in groups.items():
        vals = [float(r[value]) for r in rs]
        mean, lo, hi = interval95(vals)
        out.append({"data": data, "strategy": m[0], "backbone": m[1], "init": m[2], "method": method_label(m), "k": k,
                    "n_train": float(np.mean([r["n_train"] for r in rs])), "n": len(vals), "mean": mean, "ci_low": lo,
                    "ci_high": hi})  # fmt: skip
    return out


def curves(summary: list[dict[str, Any]], data: str) -> dict[Method, dict[float, float]]:
    """``{method: {n_train: mean}}`` of one data set's summary."""
    out: dict[Method, dict[float, float]] = {}
    for s in summary:
        if s["data"] == data:
            out.setdefault((s["strategy"], s["backbone"], s["init"]), {})[s["n_train"]] = s["mean"]
    return out


def labels_needed_line(a: Method, row_a: dict[float, float], b: Method, row_b: dict[float, float], what: str) -> str:
    """One sentence: how many labels method ``a`` needs to reach ``b``'s accuracy with ``b``'s most labels."""
    r = labels_needed(row_a, row_b)
    head = f"labels needed, {method_label(a)} vs. {what}{method_label(b)} ({r.target:.3f} at n={r.n_b:.0f})"
    if r.ratio is None or r.n_a is None:
        return f"{head}: never reached on the measured curve"
    bound = "at most " if r.at_most else ""
    return f"{head}: {bound}{r.n_a:.0f} labels, {'≥ ' if r.at_most else ''}{r.ratio:.1f}× fewer"


def labels_needed_lines(summary: list[dict[str, Any]], data: str) -> list[str]:
    """For every pre-trained method: labels needed against the best from-scratch method with the most labels,
    and against the band-statistics reference with its most labels."""
    cv = curves(summary, data)
    scratch = {m: c for m, c in cv.items() if m[2] == "scratch"}
    references = {m: c for m, c in cv.items() if m[2] == NO_MODEL}
    lines = []
    for m, c in cv.items():
        if m[2] in ("scratch", NO_MODEL):
            continue
        same = {s: sc for s, sc in scratch.items() if s[1] == m[1]} or scratch
        if same:
            best = max(same, key=lambda s: same[s][max(same[s])])
            lines.append(labels_needed_line(m, c, best, same[best], "best scratch "))
        for ref, rc in references.items():
            lines.append(labels_needed_line(m, c, ref, rc, "reference "))
    return lines


def cell_text(s: dict[str, Any]) -> str:
    """``"0.712 ± 0.031 (n=5)"``; one seed has no interval: ``"0.712 (n=1)"``."""
    half = s["ci_high"] - s["mean"]
    return f"{s['mean']:.3f} ± {half:.3f} (n={s['n']})" if math.isfinite(half) else f"{s['mean']:.3f} (n={s['n']})"


def method_table(rows: list[dict[str, Any]], data: str, value: str = "accuracy") -> tuple[list[Any], list[list[str]]]:
    """One data set's ``(ks, [[method, cell per k], ...])``: mean ± 95 % interval of ``value`` per method and k
    (``—`` where no row has it)."""
    sub = [s for s in summarise_rows(rows, value) if s["data"] == data]
    ks = list(dict.fromkeys(r["k"] for r in rows if r["data"] == data))
    table = []
    for m in dict.fromkeys(method_of(r) for r in rows if r["data"] == data):
        cells = []
        for k in ks:
            s = next((s for s in sub if (s["strategy"], s["backbone"], s["init"]) == m and s["k"] == k), None)
            cells.append("—" if s is None else cell_text(s))
        table.append([method_label(m), *cells])
    return ks, table


def zeroshot_rows(rows: list[dict[str, Any]], data: str) -> list[dict[str, Any]]:
    """The rows of ``data`` scored with unseen classes (a grid with ``unseen_classes:``)."""
    return [r for r in rows if r["data"] == data and math.isfinite(float(r.get("harmonic_mean", float("nan"))))]


#: the generalised zero-shot scores: column, short name, long name
ZEROSHOT_SCORES = (("harmonic_mean", "H", "harmonic mean H"), ("unseen_accuracy", "U", "unseen classes U"),
                   ("seen_accuracy", "S", "seen classes S"))  # fmt: skip

ZEROSHOT_NOTE = ("generalised zero-shot: the unseen classes have no training or validation label in any cell and "
                 "every class is scored on the test side; per-class accuracy averaged over the seen (S) and the unseen "
                 "(U) test classes, and their harmonic mean H = 2SU/(S+U) (Xian et al. 2018). A method that never "
                 "predicts an unseen class has U = 0 and H = 0")  # fmt: skip


def robust_rows(rows: list[dict[str, Any]], data: str) -> tuple[list[dict[str, Any]], str]:
    """The rows of ``data`` scored under attack, and how (``attack_text``; several joined by ``; ``)."""
    sub = [r for r in rows if r["data"] == data and math.isfinite(float(r.get("robust_accuracy", float("nan"))))]
    return sub, "; ".join(dict.fromkeys(str(r.get("attack") or "?") for r in sub))


ROBUST_NOTE = ("accuracy on the test side under the attack, the budget in reflectance units per band clipped to "
               "each band's range over the test patches; — : no robust accuracy (a kNN, RBF-SVM or random-forest head "
               "has no input gradient to attack); band-stats+LR: a patch counts as robust only when it survives the "
               "attack and the worst uniform offset of each band as well; any attack's figure is an upper bound on "
               "the true robust accuracy, and PGD on the cross-entropy overstates heads whose softmax saturates "
               "(protonet's prototype head: 0.175 under it, 0.003 under PGD on the margin, benchmarks/README.md): "
               "check a row that looks robust with robustness.loss: margin or attack: square")  # fmt: skip


def certified_lines(rows: list[dict[str, Any]], data: str) -> list[str]:
    """The reference row's certified accuracy per k (a lower bound against any attack within the budget), if any."""
    cert = [s for s in summarise_rows(rows, "certified_accuracy") if s["data"] == data]
    if not cert:
        return []
    cells = ", ".join(f"k={s['k']} {cell_text(s)}" for s in cert)
    return [
        f"Certified accuracy of {REFERENCE} (no perturbation within the budget changes these predictions: a "
        f"lower bound on its robust accuracy against any attack, the row above an upper bound): {cells}.",
        "",
    ]


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown tables (mean ± 95 % CI over seeds, n seeds) per data set, and the labels-needed lines; where
    cells were scored under attack, the robust accuracies' table as well."""
    summary = summarise_rows(rows)
    lines: list[str] = []
    for data in dict.fromkeys(str(r["data"]) for r in rows):
        for value, head in (("accuracy", f"### {data}"), ("robust_accuracy", f"#### {data}: robust accuracy")):
            scored, how = robust_rows(rows, data) if value == "robust_accuracy" else (rows, "")
            if not scored:
                continue
            ks, table = method_table(rows, data, value)
            lines += [head + (f" ({how})" if how else ""), ""]
            lines += ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            lines += [f"| {' | '.join(t)} |" for t in table]
            lines += ["", *(labels_needed_lines(summary, data) if value == "accuracy" else [ROBUST_NOTE]), ""]
            if value == "robust_accuracy":
                lines += certified_lines(rows, data)
        if zeroshot_rows(rows, data):
            lines += [f"#### {data}: generalised zero-shot", "", ZEROSHOT_NOTE + ".", ""]
            for value, what, _ in ZEROSHOT_SCORES:
                ks, table = method_table(rows, data, value)
                lines += [f"| {what}: method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
                lines += [f"| {' | '.join(t)} |" for t in table] + [""]
    return "\n".join(lines)


def plot_label_efficiency(rows: list[dict[str, Any]], path: Path, title: str = "", value: str = "accuracy") -> Path:
    """Mean ``value`` (test accuracy, or robust accuracy) against labelled training samples (log x) with 95 %
    interval bands, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise_rows(rows, value)
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=100)
    for m in dict.fromkeys((s["strategy"], s["backbone"], s["init"]) for s in summary):
        pts = sorted((s["n_train"], s["mean"], s["ci_low"], s["ci_high"]) for s in summary
                     if (s["strategy"], s["backbone"], s["init"]) == m)  # fmt: skip
        xs, mu, lo, hi = (np.array(v, dtype=np.float64) for v in zip(*pts, strict=True))
        style: dict[str, Any] = {"ls": "--", "color": "0.3"} if m[2] == NO_MODEL else {}
        line = ax.plot(xs, mu, marker="o", ms=4, label=method_label(m), **style)[0]
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(xs[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training samples (log scale)")
    ax.set_ylabel("test overall accuracy" if value == "accuracy" else f"test {value.replace('_', ' ')}")
    ax.set_title(title or "label efficiency (mean, 95 % interval over seeds)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_clean_vs_robust(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Robust against clean test accuracy per method with the most labels (means, 95 % interval bars): the
    trade-off adversarial training buys; a point on the diagonal loses nothing under the attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if math.isfinite(float(r.get("robust_accuracy", float("nan"))))]
    k_max = max(scored, key=lambda r: r["n_train"])["k"]
    at_k = [r for r in scored if r["k"] == k_max]
    clean = {(s["strategy"], s["backbone"], s["init"]): s for s in summarise_rows(at_k)}
    robust = {(s["strategy"], s["backbone"], s["init"]): s for s in summarise_rows(at_k, "robust_accuracy")}
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    for m, r in robust.items():
        c = clean[m]
        err = [[[max(0.0, s["mean"] - s["ci_low"])], [max(0.0, s["ci_high"] - s["mean"])]] if math.isfinite(s["ci_low"])
               else None for s in (c, r)]  # fmt: skip
        style: dict[str, Any] = ({"color": "0.3", "marker": "s"} if m[2] == NO_MODEL
                                 else {"marker": "^" if m[2] == "scratch" else "o"})  # fmt: skip
        ax.errorbar(c["mean"], r["mean"], xerr=err[0], yerr=err[1], ms=5, capsize=2, lw=0.8, ls="none",
                    label=method_label(m), **style)  # fmt: skip
    lo = min(min(s["mean"] for s in robust.values()), min(s["mean"] for s in clean.values())) - 0.05
    ax.plot([lo, 1], [lo, 1], color="0.7", lw=0.8, ls=":")
    ax.set_xlabel(f"clean test accuracy (k={k_max})")
    ax.set_ylabel(f"robust test accuracy (k={k_max})")
    ax.set_title(title or "clean vs. robust accuracy (mean, 95 % interval over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _summary_csv(summary: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("data", "method", "strategy", "backbone", "init", "k", "n_train", "n", "mean", "ci_low", "ci_high"))
    for s in summary:
        w.writerow([s["data"], s["method"], s["strategy"], s["backbone"], s["init"], s["k"], f"{s['n_train']:.1f}",
                    s["n"], f"{s['mean']:.4f}", f"{s['ci_low']:.4f}", f"{s['ci_high']:.4f}"])  # fmt: skip
    return buf.getvalue()


def write_summary(rows: list[dict[str, Any]], out: Path) -> str:
    """``summary.csv`` (one record per method and k), ``summary.md``, per-data plots and ``results.parquet``;
    where cells were scored under attack, ``summary_robust.csv`` and the robust accuracies' plots as well."""
    from eotransfer.card import atomic_write_text

    atomic_write_text(out / "summary.csv", _summary_csv(summarise_rows(rows)))
    text = summary_markdown(rows)
    atomic_write_text(out / "summary.md", text)
    robust_any = zeroshot_any = False
    for data in dict.fromkeys(str(r["data"]) for r in rows):
        plot_label_efficiency([r for r in rows if r["data"] == data], out / f"label_efficiency_{data}.png", data)
        if zeroshot_rows(rows, data):
            zeroshot_any = True
            plot_label_efficiency(zeroshot_rows(rows, data), out / f"zeroshot_efficiency_{data}.png",
                                  f"{data}: generalised zero-shot H (mean, 95 % interval over seeds)", "harmonic_mean")  # fmt: skip
        scored, how = robust_rows(rows, data)
        if scored:
            robust_any = True
            plot_label_efficiency(scored, out / f"robust_efficiency_{data}.png", f"{data}: robust accuracy ({how})",
                                  "robust_accuracy")  # fmt: skip
            plot_clean_vs_robust(scored, out / f"clean_vs_robust_{data}.png", f"{data}: clean vs. robust ({how})")
    if robust_any:
        atomic_write_text(out / "summary_robust.csv", _summary_csv(summarise_rows(rows, "robust_accuracy")))
        certified = summarise_rows(rows, "certified_accuracy")
        if certified:
            atomic_write_text(out / "summary_certified.csv", _summary_csv(certified))
    import pyarrow as pa
    import pyarrow.parquet as pq

    if zeroshot_any:
        atomic_write_text(out / "summary_zeroshot.csv", _summary_csv(summarise_rows(rows, "harmonic_mean")))
    # tables without them keep their earlier schema
    drop = (*(() if robust_any else ROBUST_COLUMNS), *(() if zeroshot_any else ZEROSHOT_COLUMNS))
    tmp = out / f".results.parquet.{secrets.token_hex(4)}"
    try:
        pq.write_table(pa.Table.from_pylist([{**{c: v for c, v in r.items() if c not in drop}, "k": str(r["k"])}
                                             for r in rows]), tmp)  # fmt: skip
        os.replace(tmp, out / "results.parquet")
    finally:
        tmp.unlink(missing_ok=True)
    return text


# -- the legacy grid of benchmarks/pretrain_transfer.py and reuse_strategies.py ---------------------------------------
#: the strategies a label-efficiency grid compares: row name → ``fit`` options (``strategy`` defaults to the name)
CURVE_STRATEGIES: dict[str, dict[str, Any]] = {
    "linear-probe": {"epochs": 60, "lr": 1e-2, "patience": 15, "augment": False},
    "finetune": {"head_epochs": 20, "epochs": 15, "patience": 6},
}


def run_grid(name: str, ds: EODataset, base: Split, weights: str, ks: list[int], seeds: int, deadline: float,
             out: Path, backbone: str, fit_opts: dict[str, Any],
             strategies: dict[str, dict[str, Any]] = CURVE_STRATEGIES) -> None:  # fmt: skip
    """Every (seed, k, init, strategy) fit on ``base``'s test side, appended to ``out/rows.jsonl`` per (seed, k).

    ``k`` = 0 means all labels; ``init`` is ``scratch`` or ``pretrained`` (``weights``).  Seeds are
    outermost, so a ``deadline`` (a ``time.time()`` value) cuts seeds, not label counts.
    """
    rows_path = out / "rows.jsonl"
    for seed in range(seeds):
        for k in ks:
            if time.time() > deadline:
                print(f"[{name}] deadline reached before seed {seed} k={k}", flush=True)
                return
            try:
                split = grid_split(ds, base, k or ALL, seed)
            except EOTransferError as exc:
                print(f"[{name}] k={k}: {exc}", flush=True)
                continue
            n_train = len(split.train)
            rows = [{"data": name, "k": k or ALL, "n_train": n_train, "seed": seed, "init": NO_MODEL,
                     "strategy": REFERENCE, "accuracy": reference_accuracy(ds, split, seed)["overall_accuracy"],
                     "seconds": 0.0}]  # fmt: skip
            for init, w in (("scratch", None), ("pretrained", weights)):
                for strategy, params in strategies.items():
                    opts = {**params, **fit_opts}
                    test = fit_cell(ds, split, opts.pop("strategy", strategy), backbone, w, seed, opts)
                    rows.append({"data": name, "k": k or ALL, "n_train": n_train, "seed": seed, "init": init,
                                 "strategy": strategy, "accuracy": test["overall_accuracy"],
                                 "macro_f1": test.get("macro_f1"), "seconds": round(test["seconds"], 1)})  # fmt: skip
            with rows_path.open("a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            print(f"[{name}] seed {seed} k={k or ALL} (n_train {n_train}): "
                  + ", ".join(f"{r['init']}/{r['strategy']}={r['accuracy']:.3f}" for r in rows), flush=True)  # fmt: skip


def summarise(out: Path) -> str:
    """``results.md`` (mean ± 95 % CI over seeds, labels needed) and a plot per data set, from ``out/rows.jsonl``."""
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        r.setdefault("backbone", "")
    text = summary_markdown(rows)
    (out / "results.md").write_text(text)
    for data in dict.fromkeys(str(r["data"]) for r in rows):
        plot_label_efficiency([r for r in rows if r["data"] == data], out / f"label_efficiency_{data}.png", data)
    return text
