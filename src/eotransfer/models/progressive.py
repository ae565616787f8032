"""Progressive neural networks for ResNet-family backbones (Rusu et al. 2016, arXiv:1606.04671).

Each new task adds a *column*: a fresh backbone whose stage inputs also receive, through lateral
adapters, the activations of every earlier column at the same depth.  Earlier columns and their
heads are frozen (parameters and BatchNorm statistics alike), so earlier tasks' predictions stay
bit-identical however many columns follow: forgetting is zero by construction.

The adapters are Rusu et al.'s non-linear ones (their section 2, "Adapters"): the concatenated
activations of the earlier columns are scaled by a learned scalar per column (α), projected by a
1×1 convolution (V), passed through a ReLU and projected again (U) onto the new column's channels,
then added to the new column's activation after the stem and after each of ``layer1..layer4``.
``U`` starts at zero, so an untrained new column computes exactly what an independent one would.

Every task keeps its own normalisation and head.  A task's normalised input reaches each earlier
column in that column's bands, mapped by name, common name, then wavelength
(:func:`eotransfer.models.band_mapping.map_bands`); a column band the task lacks is filled by a
declared policy (``zero``: the band's mean after standardisation, ``mean``: the mean of the task's
bands), never silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from eotransfer.bands import BandSet
from eotransfer.errors import BandError, ConfigError
from eotransfer.models.band_mapping import map_bands
from eotransfer.models.model import EOClassifier, Normalize

#: backbone families whose stages (stem, layer1..layer4) progressive columns can be wired between
SUPPORTED_FAMILIES = ("resnet",)
INPUT_POLICIES = ("zero", "mean")
BUILDER = "progressive"


@dataclass
class TaskSpec:
    """One task of a progressive network: its name, classes, bands and its column's architecture."""

    name: str
    classes: list[str]
    bands: BandSet
    arch: str
    img_size: int | None = None
    #: fills the bands of earlier columns that this task lacks: zero | mean | None (error)
    band_policy: str | None = None
    normalization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "bands": self.bands.to_list(), "arch": self.arch,
                "img_size": self.img_size, "band_policy": self.band_policy, "normalization": self.normalization}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        return cls(d["name"], list(d["classes"]), BandSet.from_list(d["bands"]), d["arch"], d.get("img_size"),
                   d.get("band_policy"), d.get("normalization"))  # fmt: skip


def check_family(arch_name: str, option: str = "--backbone") -> None:
    """Refuse an architecture whose stages progressive columns cannot be wired between."""
    from eotransfer.models.backbones import get_architecture

    family = get_architecture(arch_name).family
    if family not in SUPPORTED_FAMILIES:
        raise ConfigError(
            f"{option}: progressive networks wire lateral connections between the stages of "
            f"{'/'.join(SUPPORTED_FAMILIES)} backbones; '{arch_name}' is a {family}. Choose resnet10t, resnet18, "
            "resnet34 or resnet50"
        )


class InputMap(nn.Module):
    """A task's normalised input in a column's bands: channels picked by the band mapping, the rest filled."""

    index: torch.Tensor
    missing: torch.Tensor

    def __init__(self, task: TaskSpec, column_bands: BandSet, column: str) -> None:
        super().__init__()
        mapping = map_bands(task.bands, column_bands, task.band_policy or "zero")
        if mapping.unmatched and task.band_policy not in INPUT_POLICIES:
            raise BandError(
                f"progressive task '{task.name}': {column} takes the bands {', '.join(mapping.unmatched)}, which the "
                f"task's data ({task.bands.describe()}) lack and cannot be mapped to by name or wavelength; pass "
                f"--column-band-policy {'|'.join(INPUT_POLICIES)} (the --band-policy of earlier columns' inputs) to "
                "fill them, or give the task those bands"
            )
        idx = [m.source_index if m.source_index is not None else 0 for m in mapping.matches]
        self.identity = idx == list(range(len(task.bands))) and not mapping.unmatched
        self.fill_mean = task.band_policy == "mean"
        self.register_buffer("index", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.register_buffer("missing", torch.tensor([m.source is None for m in mapping.matches]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        out = x.index_select(1, self.index)
        if bool(self.missing.any()):
            fill = x.mean(1, keepdim=True) if self.fill_mean else torch.zeros_like(x[:, :1])
            out = torch.where(self.missing.view(1, -1, 1, 1), fill, out)
        return out


class LateralAdapter(nn.Module):
    """Rusu et al.'s non-linear adapter ``U·ReLU(V·(α ⊙ h_<k))`` from earlier columns into one stage of column k."""

    def __init__(self, in_channels: list[int], out_channels: int, alpha: float = 0.1) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((len(in_channels),), alpha))
        self.reduce = nn.Conv2d(sum(in_channels), out_channels, 1)
        self.project = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        nn.init.zeros_(self.project.weight)  # an untrained column equals an independent one

    def forward(self, earlier: list[torch.Tensor]) -> torch.Tensor:
        scaled = torch.cat([a * h for a, h in zip(self.alpha, earlier, strict=True)], dim=1)
        return self.project(torch.relu(self.reduce(scaled)))


def stage_channels(column: nn.Module) -> list[int]:
    """Channels after the stem and after layer1..layer4 of a timm ResNet."""
    info = column.feature_info  # type: ignore[union-attr]
    return [int(fi["num_chs"]) for fi in info]  # type: ignore[union-attr]


def _stages(column: Any) -> list[Any]:
    stem = nn.Sequential(column.conv1, column.bn1, column.act1, column.maxpool)
    return [stem, column.layer1, column.layer2, column.layer3, column.layer4]


class ProgressiveBackbone(nn.Module):
    """The columns, their lateral adapters, and the frozen heads and normalisers of the earlier tasks.

    As the backbone of an :class:`~eotransfer.models.model.EOClassifier` it maps the newest task's
    normalised input to the newest column's pooled features; :meth:`task_logits` scores an earlier
    task through its own normaliser, columns and head.
    """

    def __init__(self, columns: list[nn.Module], tasks: list[TaskSpec]) -> None:
        super().__init__()
        if len(columns) != len(tasks):
            raise ValueError("one task per column")
        self.tasks = tasks
        self.columns = nn.ModuleList(columns)
        self.laterals = nn.ModuleList()
        for k, column in enumerate(columns):
            earlier = [stage_channels(c) for c in columns[:k]]
            own = stage_channels(column) if k else []
            self.laterals.append(nn.ModuleList(LateralAdapter([ch[s] for ch in earlier], n) for s, n in enumerate(own)))
        # past_heads/past_normalizers[k]: task k < newest (the newest's live in the EOClassifier)
        self.past_heads = nn.ModuleList(nn.Linear(int(c.num_features), len(t.classes))  # type: ignore[arg-type]
                                        for c, t in zip(columns[:-1], tasks[:-1], strict=True))  # fmt: skip
        self.past_normalizers = nn.ModuleList(Normalize(len(t.bands)) for t in tasks[:-1])
        self.input_maps = nn.ModuleList(
            nn.ModuleList(InputMap(task, tasks[c].bands, f"column {c + 1} ('{tasks[c].name}')") for c in range(k + 1))
            for k, task in enumerate(tasks)
        )  # fmt: skip
        self.num_features = int(columns[-1].num_features)  # type: ignore[arg-type]

    def column_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Pooled features of column ``task`` for ``x``, the task's normalised input in its own bands."""
        acts: list[list[torch.Tensor]] = []
        for k in range(task + 1):
            h = self.input_maps[task][k](x)  # type: ignore[index]
            out = []
            for s, stage in enumerate(_stages(self.columns[k])):
                h = stage(h)
                if k:
                    h = h + self.laterals[k][s]([acts[c][s] for c in range(k)])  # type: ignore[index]
                out.append(h)
            acts.append(out)
        return self.columns[task].forward_head(acts[task][-1], pre_logits=True)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.column_features(x, len(self.columns) - 1)

    def task_logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits of earlier task ``task`` for raw input ``x`` in that task's bands."""
        return self.past_heads[task](self.column_features(self.past_normalizers[task](x), task))  # type: ignore[index]

    def freeze_past(self) -> None:
        """Earlier columns, their adapters, heads and normalisers: no gradients, eval mode (BatchNorm frozen)."""
        for module in [*self.columns[:-1], *self.laterals[:-1], self.past_heads, self.past_normalizers]:
            module.requires_grad_(False)
            module.eval()

    def card_entries(self) -> dict[str, Any]:
        """What the model card records so that :func:`eotransfer.card.load_model` rebuilds the network."""
        return {"network": {"builder": BUILDER, "tasks": [t.to_dict() for t in self.tasks]}}


class TaskNetwork(nn.Module):
    """One earlier task of a progressive classifier as a network of its own (raw input → logits)."""

    def __init__(self, model: EOClassifier, task: int) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.backbone.task_logits(x, self.task)  # type: ignore[operator]


def build_columns(tasks: list[TaskSpec]) -> list[nn.Module]:
    """Randomly initialised columns for ``tasks``, each for its task's bands."""
    from eotransfer.models.backbones import build_network, get_architecture

    return [build_network(get_architecture(t.arch), len(t.bands), t.img_size) for t in tasks]


def grow(past: EOClassifier | None, past_tasks: list[TaskSpec], column: nn.Module, task: TaskSpec,
         model: EOClassifier) -> EOClassifier:  # fmt: skip
    """Turn ``model`` (the new task's normaliser, fresh column and head) into the next progressive network.

    ``past`` is the saved network of ``past_tasks`` (a progressive one, or a plain classifier for one
    task), or None for the first column.  Its parameters and buffers are copied, then frozen.
    """
    check_family(task.arch)
    for t in past_tasks:
        check_family(t.arch, "--previous")
    if past is not None and isinstance(past.backbone, ProgressiveBackbone):
        old = past.backbone
        columns = [*old.columns, column]
        heads, norms = [*old.past_heads, past.head], [*old.past_normalizers, past.normalize]
        laterals = list(old.laterals)
    else:
        columns = [past.backbone, column] if past is not None else [column]
        heads = [past.head] if past is not None else []
        norms = [past.normalize] if past is not None else []
        laterals = [nn.ModuleList()] if past is not None else []
    backbone = ProgressiveBackbone(columns, [*past_tasks, task])
    for k, lateral in enumerate(laterals):
        backbone.laterals[k] = lateral
    for k, (h, n) in enumerate(zip(heads, norms, strict=True)):
        backbone.past_heads[k], backbone.past_normalizers[k] = h, n
    backbone.freeze_past()
    model.backbone = backbone
    return model


def build_from_card(card: dict[str, Any]) -> nn.Module:
    """The network a progressive model directory holds (weights not loaded)."""
    tasks = [TaskSpec.from_dict(t) for t in card["network"]["tasks"]]
    backbone = ProgressiveBackbone(build_columns(tasks), tasks)
    return EOClassifier(backbone, backbone.num_features, len(tasks[-1].classes), len(tasks[-1].bands))


def task_view(network: nn.Module, card: dict[str, Any], name: str) -> tuple[nn.Module, dict[str, Any]]:
    """The network and card of task ``name`` of a saved progressive model."""
    tasks = [TaskSpec.from_dict(t) for t in card["network"]["tasks"]]
    names = [t.name for t in tasks]
    if name not in names:
        raise ConfigError(f"--task: no task '{name}' in this progressive model; its tasks are {', '.join(names)}")
    k = names.index(name)
    if k == len(tasks) - 1:
        return network, card
    t = tasks[k]
    view = {"bands": t.bands.to_list(), "classes": t.classes, "normalization": t.normalization, "arch": t.arch,
            "img_size": t.img_size, "task": t.name}  # fmt: skip
    return TaskNetwork(network, k).eval(), {**card, **view}  # type: ignore[arg-type]
