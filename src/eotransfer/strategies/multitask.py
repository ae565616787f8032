"""``multitask``: one backbone, the class label plus auxiliary heads, each with its own loss and metric.

Multi-task learning (Caruana 1997, "Multitask Learning", Machine Learning 28): related targets that
share the backbone act as an inductive bias for the main task.  The main task is the data set's class
label; auxiliary tasks come from

- ``--tasks ndvi,ndwi``: spectral indices of the sample's own bands, computed with spyndex (Montero et
  al. 2023, "A standardized catalogue of spectral indices", Scientific Data 10) and averaged over the
  valid pixels: regression targets that need no extra labels (bands found by common name, else
  wavelength; a fully masked sample has no label);
- ``--task-labels FILE.csv`` (columns ``sample,task,value``; ``sample`` a path as the data set lists it,
  a file name or an index): classification, multi-label (values ``a;b``) or regression per
  ``--task-types``; samples absent from the file have no label for that task.

Missing labels are masked out of each task's loss; the losses combine statically (``--task-weights``)
or by learnt uncertainty (Kendall, Gal & Cipolla 2018; :class:`~eotransfer.losses.multitask.MultiTaskLoss`).
Regression targets are standardised by the training split.  The schedule is ``finetune``'s: every head
on the frozen backbone (the images are read each epoch, the index targets come from their pixels),
then end to end.  The heads are ``model.aux_tasks`` while training, so best-epoch restores and
checkpoints hold them; :meth:`Multitask.after_fit` scores them, records their metrics and takes them
off, leaving a plain classifier that ``predict`` loads; ``tasks.safetensors``/``tasks.json`` keep them.

A batch's ``--task-labels`` targets are looked up by the data set indices the engine hands over
(:attr:`~eotransfer.strategies.base.Strategy.batch_indices`).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eotransfer.engine.metrics import classification_metrics
from eotransfer.errors import ConfigError, did_you_mean
from eotransfer.losses.multitask import TASK_KINDS, MultiTaskLoss, masked_task_loss, present_labels
from eotransfer.strategies._target import logits_and_features
from eotransfer.strategies.base import Phase, Strategy, param, register_strategy
from eotransfer.strategies.finetune import FinetuneParams


@dataclass
class MultitaskParams(FinetuneParams):
    """Fine-tuning's schedule, plus the auxiliary tasks and how their losses are weighted."""

    tasks: str = param("ndvi,ndwi", "auxiliary regression targets: spectral indices (spyndex names) of each sample's own bands, comma-separated ('' = none)")  # fmt: skip
    task_labels: str = param("", "CSV of extra labels (columns sample,task,value; sample = path, file name or index); missing entries allowed")  # fmt: skip
    task_types: str = param("", "kind of each --task-labels task, name=classification|multilabel|regression, comma-separated (default regression)")  # fmt: skip
    weighting: str = param("uncertainty", "static (--task-weights) | uncertainty (learnt σ per task, Kendall et al. 2018)", choices=("static", "uncertainty"))  # fmt: skip
    task_weights: str = param("", "static weights name=w, comma-separated ('label' = the class label); unnamed tasks weigh 1")  # fmt: skip


@dataclass
class Task:
    """An auxiliary task: a spectral index (``index``) or a column of the ``--task-labels`` file."""

    name: str
    kind: str
    index: str = ""
    classes: list[str] = field(default_factory=list)
    mean: float = 0.0  # standardisation of regression targets (training split)
    std: float = 1.0

    @property
    def n_out(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)


def _pairs(text: str, option: str) -> dict[str, str]:
    out = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        if "=" not in item:
            raise ConfigError(f"{option}: {item!r} is not name=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def index_targets(images: torch.Tensor, index: str, params: dict[str, Any]) -> torch.Tensor:
    """Per sample, the mean of spectral ``index`` over its valid pixels (NaN when none is valid).

    ``params`` maps spyndex symbols to a channel (int) of ``images`` (N×C×H×W reflectance) or a constant.
    """
    import spyndex

    x = images.double()
    args = {s: x[:, v] if isinstance(v, int) else float(v) for s, v in params.items()}
    value = torch.as_tensor(spyndex.computeIndex(index, params=args)).reshape(len(x), -1)
    return torch.nanmean(torch.where(torch.isfinite(value), value, torch.nan), dim=1)


def index_params(index: str, bands: Any) -> dict[str, Any]:
    """spyndex symbols of ``index`` → channels of ``bands`` (common name, else wavelength) or constants."""
    import spyndex

    out: dict[str, Any] = {}
    for sym in spyndex.indices[index].bands:
        if sym in spyndex.constants:
            out[sym] = float(spyndex.constants[sym].default)
            continue
        if sym not in spyndex.bands:
            raise ConfigError(f"--tasks: {index} needs {sym!r}, which is not a reflectance band; choose another index")
        sb = spyndex.bands[sym]
        hits = [i for i, b in enumerate(bands) if b.common_name == sb.common_name]
        hits = hits or [i for i, b in enumerate(bands) if sb.min_wavelength <= b.wavelength_nm <= sb.max_wavelength]
        if not hits:
            raise ConfigError(
                f"--tasks: task '{index.lower()}' has no labels: it needs band {sym} ({sb.common_name}, "
                f"{sb.min_wavelength:.0f}-{sb.max_wavelength:.0f} nm), which the data lack ({bands.describe()}); "
                "drop it from --tasks"
            )
        out[sym] = hits[0]
    return out


def task_metrics(task: Task, pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """RMSE/R² (regression, original units), accuracy/macro-F1 (classification), per-label F1 (multi-label)."""
    keep = present_labels(task.kind, target)
    if task.kind == "regression":
        p, y = pred.reshape(-1)[keep].double() * task.std + task.mean, target[keep].double()
        ss = float(((y - y.mean()) ** 2).sum())
        rmse = float(((p - y) ** 2).mean().sqrt()) if len(y) else float("nan")
        r2 = 1.0 - float(((p - y) ** 2).sum()) / ss if ss > 0 else float("nan")
        return {"kind": task.kind, "rmse": rmse, "r2": r2, "n": len(y)}
    if task.kind == "classification":
        m = classification_metrics(target[keep].numpy(), pred[keep].argmax(1).numpy(), task.classes)
        return {"kind": task.kind, "accuracy": m["overall_accuracy"], "macro_f1": m["macro_f1"], "n": m["n"]}
    f1 = {}
    for j, c in enumerate(task.classes):
        k = keep[:, j]
        y, p = target[k, j] > 0.5, pred[k, j] > 0
        tp, denom = int((y & p).sum()), int(y.sum() + p.sum())
        f1[c] = 2 * tp / denom if denom else float("nan")
    mean = float(np.nanmean(list(f1.values()))) if any(np.isfinite(list(f1.values()))) else float("nan")
    return {"kind": task.kind, "f1": f1, "mean_f1": mean, "n": int(keep.any(1).sum())}


class AuxiliaryTasks(nn.Module):
    """One linear head per auxiliary task on the backbone's features, and the loss that weighs them."""

    def __init__(self, tasks: list[Task], n_features: int, weighting: str, weights: list[float]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({t.name: nn.Linear(n_features, t.n_out) for t in tasks})
        self.loss = MultiTaskLoss(["classification"] + [t.kind for t in tasks], weighting, weights)


@register_strategy
class Multitask(Strategy):
    name = "multitask"
    Params = MultitaskParams
    summary = "class label plus auxiliary heads (spectral indices, extra labels), static or uncertainty weighting (Kendall et al. 2018)"  # fmt: skip

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.tasks, self.rows = self._declared_tasks()
        names = ["label"] + [t.name for t in self.tasks]
        weights = _pairs(self.params.task_weights, "--task-weights")
        for k in weights:
            if k not in names:
                raise ConfigError(f"--task-weights: {k!r} is not a task{did_you_mean(k, names)}")
        try:
            self.weights = [float(weights.get(n, 1.0)) for n in names]
        except ValueError as e:
            raise ConfigError(f"--task-weights: {e}; give numbers, e.g. label=1,ndvi=0.5") from None
        self.targets: dict[str, np.ndarray] = {}  # --task-labels targets by sample index
        self.index_args: dict[str, dict[str, Any]] = {}
        self.saved: dict[str, Any] = {}

    def _declared_tasks(self) -> tuple[list[Task], list[tuple[int, str, str, str]]]:
        import spyndex

        p, tasks = self.params, []
        known = {k.lower(): k for k in spyndex.indices}
        for name in (x.strip() for x in p.tasks.split(",") if x.strip()):
            if name.lower() not in known:
                raise ConfigError(f"--tasks: {name!r} is not a spyndex spectral index{did_you_mean(name.upper(), known.values())}")  # fmt: skip
            tasks.append(Task(name.lower(), "regression", index=known[name.lower()]))
        types, rows = _pairs(p.task_types, "--task-types"), []
        if p.task_labels:
            path = Path(p.task_labels)
            if not path.is_file():
                raise ConfigError(f"--task-labels: {path} is not a file; pass a CSV with columns sample,task,value")
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not {"sample", "task", "value"} <= set(reader.fieldnames or []):
                    raise ConfigError(f"--task-labels: {path} needs the columns sample,task,value (has {reader.fieldnames})")  # fmt: skip
                rows = [(i + 2, r["sample"].strip(), r["task"].strip(), (r["value"] or "").strip()) for i, r in enumerate(reader)]  # fmt: skip
            for name in dict.fromkeys(r[2] for r in rows):
                kind = types.get(name, "regression")
                if kind not in TASK_KINDS:
                    raise ConfigError(f"--task-types: {name}={kind} is not one of {', '.join(TASK_KINDS)}")
                vals = [r[3] for r in rows if r[2] == name and r[3]]
                labels = {v for x in vals for v in x.split(";") if v} if kind == "multilabel" else set(vals)
                tasks.append(Task(name, kind, classes=sorted(labels) if kind != "regression" else []))
            unknown = [k for k in types if k not in {t.name for t in tasks}]
            if unknown:
                raise ConfigError(f"--task-types: {unknown[0]!r} is not a task of {path}")
        seen = set()
        for t in tasks:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", t.name) or t.name == "label" or t.name in seen:
                raise ConfigError(f"--tasks/--task-labels: task name {t.name!r} is reserved, repeated or not a plain identifier")  # fmt: skip
            seen.add(t.name)
        return tasks, rows

    def _file_targets(self, dataset: Any) -> None:
        """``--task-labels`` rows → one target array per task over the data set's samples."""
        where: dict[str, int] = {}
        for i, s in enumerate(dataset.sources):
            for key in (str(s), str(Path(s).name)):
                where[key] = -1 if key in where and where[key] != i else i
        n = len(dataset)
        for t in self.tasks:
            if not t.index:
                self.targets[t.name] = np.full((n, t.n_out), np.nan) if t.kind == "multilabel" else (
                    np.full(n, -1, dtype=np.int64) if t.kind == "classification" else np.full(n, np.nan))  # fmt: skip
        for line, sample, name, value in self.rows:
            i = where.get(sample, int(sample) if sample.isdigit() and int(sample) < n else -1)
            if i < 0:
                raise ConfigError(f"--task-labels: {self.params.task_labels} line {line}: sample {sample!r} is not one of the data set's (a unique path, file name, or an index 0-{n - 1})")  # fmt: skip
            t, arr = next(t for t in self.tasks if t.name == name), self.targets[name]
            try:
                if t.kind == "multilabel":
                    arr[i] = [float(c in value.split(";")) for c in t.classes]
                elif value:
                    arr[i] = t.classes.index(value) if t.kind == "classification" else float(value)
            except ValueError:
                raise ConfigError(f"--task-labels: {self.params.task_labels} line {line}: {value!r} is not a number; declare {name} in --task-types if it is a class") from None  # fmt: skip

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        self.index_args = {t.name: index_params(t.index, dataset.bands) for t in self.tasks if t.index}
        self._file_targets(dataset)
        train = np.asarray(split.train)
        computed: dict[str, list[torch.Tensor]] = {t.name: [] for t in self.tasks if t.index}
        for s in range(0, len(train), 256):  # a chunk at a time: the training split may not fit in memory
            x = torch.stack([dataset[int(i)]["image"] for i in train[s : s + 256]])
            for name, ys in computed.items():
                t = next(t for t in self.tasks if t.name == name)
                ys.append(index_targets(x, t.index, self.index_args[name]))
        for t in self.tasks:
            y = torch.cat(computed[t.name]).numpy() if t.index else self.targets[t.name][train]
            has = np.isfinite(y) if t.kind != "classification" else y >= 0
            if not has.any():
                option = "--tasks" if t.index else "--task-labels"
                raise ConfigError(f"{option}: task '{t.name}' has no label in any of the {len(train)} training samples (all masked or absent); drop it from {option} or supply its labels")  # fmt: skip
            if t.kind == "regression":
                t.mean, t.std = float(y[has].mean()), float(y[has].std()) or 1.0
        self.attach(model)

    def attach(self, model: nn.Module) -> AuxiliaryTasks:
        """The model's auxiliary heads, added (next to ``model.head``) if it has none yet."""
        if not isinstance(getattr(model, "aux_tasks", None), AuxiliaryTasks):
            head: nn.Linear = model.head  # type: ignore[assignment]
            aux = AuxiliaryTasks(self.tasks, head.in_features, self.params.weighting, self.weights)
            model.add_module("aux_tasks", aux.to(head.weight.device))
        return model.aux_tasks  # type: ignore[return-value]

    def phases(self, model: nn.Module) -> list[Phase]:
        p, aux = self.params, self.attach(model)
        learnt = [x for x in aux.parameters() if p.weighting == "uncertainty" or x is not aux.loss.log_vars]
        heads = list(model.head.parameters()) + learnt  # type: ignore[union-attr]
        backbone = list(model.backbone.parameters())  # type: ignore[union-attr]
        phases = [Phase("heads", p.head_epochs, [{"params": heads, "lr": p.head_lr}], augment=False)] if p.head_epochs else []  # fmt: skip
        groups = [{"params": heads, "lr": p.lr}, {"params": backbone, "lr": p.lr * p.backbone_lr_factor}]
        return [*phases, Phase("end-to-end", p.epochs, groups, augment=p.augment)]

    def task_targets(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each task's targets for a batch (regression standardised); ``indices``: the samples' data set indices."""
        out = []
        for t in self.tasks:
            if t.index:
                y = index_targets(images, t.index, self.index_args[t.name]).float()
            else:
                if indices is None:
                    raise RuntimeError(
                        f"multitask: task '{t.name}' needs the batch's sample indices (the engine sets them)"
                    )
                arr = torch.as_tensor(self.targets[t.name])
                y = arr[indices.clamp_min(0)].clone()
                y[indices < 0] = -1 if t.kind == "classification" else torch.nan
            y = (y - t.mean) / t.std if t.kind == "regression" else y
            out.append(y.to(images.device))
        return out

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        aux = self.attach(model)
        logits, features = logits_and_features(model, images)
        targets = self.task_targets(images, self.batch_indices)
        losses: list[torch.Tensor | None] = [self.loss(model, logits, labels)]
        losses += [masked_task_loss(t.kind, aux.heads[t.name](features), y) for t, y in zip(self.tasks, targets, strict=True)]  # fmt: skip
        return aux.loss(losses)

    @torch.no_grad()
    def _score(self, model: nn.Module, subset: Any, device: Any) -> dict[str, Any]:
        model.eval()
        aux, rows = self.attach(model), []
        for batch in torch.utils.data.DataLoader(subset, batch_size=128):
            x = batch["image"].to(device)
            logits, feats = logits_and_features(model, x)
            preds = [aux.heads[t.name](feats).float().cpu() for t in self.tasks]
            raw = self.task_targets(x.cpu(), batch["index"])
            ys = [y * t.std + t.mean if t.kind == "regression" else y for t, y in zip(self.tasks, raw, strict=True)]
            rows.append((logits.float().cpu(), batch["label"], preds, ys))
        logits, labels = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
        tasks = {t.name: task_metrics(t, torch.cat([r[2][k] for r in rows]), torch.cat([r[3][k] for r in rows]))
                 for k, t in enumerate(self.tasks)}  # fmt: skip
        return {"logits": logits, "labels": labels, "tasks": tasks}

    def validate(self, model: nn.Module, val: Any, engine: Any) -> dict[str, float]:
        """The class label's loss and accuracy (early stopping), plus each task's metric."""
        s = self._score(model, val, engine.fabric.device)
        row = {"val_loss": float(nn.functional.cross_entropy(s["logits"], s["labels"])),
               "val_accuracy": float((s["logits"].argmax(1) == s["labels"]).float().mean())}  # fmt: skip
        for name, m in s["tasks"].items():
            row.update(
                {f"val_{name}_{k}": float(v) for k, v in m.items() if k in ("rmse", "r2", "accuracy", "mean_f1")}
            )
        return row

    def after_fit(self, model: nn.Module, engine: Any, subsets: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Score the auxiliary heads on each subset, keep them for :meth:`model_files`, and take them off the model."""
        aux = self.attach(model)
        out = {k: {"tasks": self._score(model, v, engine.fabric.device)["tasks"]} for k, v in subsets.items() if len(v)}
        self.saved = {
            "state": {k: v.detach().cpu().contiguous() for k, v in aux.state_dict().items()},
            "card": {"weighting": self.params.weighting, "weights": dict(zip(["label"] + [t.name for t in self.tasks], self.weights, strict=True)),
                     "sigmas": aux.loss.sigmas(), "tasks": [vars(t) for t in self.tasks],
                     "metrics": {k: v["tasks"] for k, v in out.items()}},
        }  # fmt: skip
        del model.aux_tasks
        return out

    def model_files(self) -> dict[str, bytes]:
        """``tasks.safetensors`` (the auxiliary heads) and ``tasks.json`` (tasks, standardisation, σ, metrics)."""
        if not self.saved:
            return {}
        from safetensors.torch import save

        return {"tasks.safetensors": save(self.saved["state"]), "tasks.json": json.dumps(self.saved["card"], indent=2).encode()}  # fmt: skip
