"""``progressive``: a new column per task, laterally connected to the frozen columns of earlier tasks.

Progressive neural networks (Rusu et al. 2016, "Progressive Neural Networks", arXiv:1606.04671):
``--previous`` names the earlier tasks, a saved progressive model or any saved ResNet eotransfer
model (its backbone becomes the first column); the ``fit`` backbone (``--backbone``/``--weights``)
becomes the new column.  Only the new column, its lateral adapters and its head train, on the
phases of ``finetune`` (the head on the frozen network, then end to end); earlier columns, heads
and normalisers are frozen, so earlier tasks' predictions never change.  The saved model holds
every column and head and lists its tasks in the card (``load_model(path, task=NAME)`` scores an
earlier one).  The network itself is :mod:`eotransfer.models.progressive`;
:func:`run_sequence` runs a list of tasks from one config against naive sequential fine-tuning
and independent columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from eotransfer.errors import ConfigError, EOTransferError
from eotransfer.models.progressive import BUILDER, SUPPORTED_FAMILIES, ProgressiveBackbone, TaskSpec, check_family, grow
from eotransfer.strategies.base import Phase, Strategy, head_phase, param, register_strategy
from eotransfer.strategies.finetune import FinetuneParams


@dataclass
class ProgressiveParams(FinetuneParams):
    """Fine-tuning's schedule for the new column, plus the earlier tasks and how inputs reach their columns."""

    previous: str = param("", "earlier tasks: a saved progressive model, or any saved ResNet eotransfer model as the first column (empty: this task is the first column)")  # fmt: skip
    task: str = param("", "name of the new task (default: the data folder's name)")
    column_band_policy: str | None = param(
        None, "bands of an earlier column that the new task lacks: zero | mean (default: error)",
        choices=(None, "zero", "mean"),
    )  # fmt: skip
    lateral_lr_factor: float = param(1.0, "learning rate of the lateral adapters = lr × this factor", 0.0, 100.0)


def _arch_name(column: nn.Module) -> str:
    from eotransfer.models.backbones import ARCHITECTURES

    timm_name = getattr(column, "pretrained_cfg", {}).get("architecture")
    names = [a.name for a in ARCHITECTURES.values() if a.timm_name == timm_name]
    if not names:
        raise ConfigError(f"--backbone: progressive needs a registered backbone; got a {type(column).__name__}")
    return names[0]


def load_previous(path: str) -> tuple[Any, list[TaskSpec]]:
    """The saved network of ``--previous`` and its tasks (one for a plain model)."""
    from eotransfer.card import load_model
    from eotransfer.evaluation.classical import folded_network

    try:
        saved = load_model(path)
    except EOTransferError as e:
        raise ConfigError(f"--previous: {e}") from e
    card = saved.card
    try:  # a linear scikit-learn head (feature-extraction) is kept as the linear layer it folds into
        network = folded_network(saved, "a progressive network's earlier column")
    except ConfigError as e:
        raise ConfigError(f"--previous: {e}") from e
    builder = card.get("network", {}).get("builder")
    if builder not in (None, BUILDER):
        raise ConfigError(f"--previous: {path} holds a '{builder}' network; progressive networks grow from a plain "
                          "model (one backbone under one head) or a progressive one")  # fmt: skip
    if "network" in card:
        tasks = [TaskSpec.from_dict(t) for t in card["network"]["tasks"]]
        tasks[-1].normalization = card["normalization"]
    else:
        check_family(card["arch"], "--previous")
        tasks = [TaskSpec(card.get("name") or Path(path).name, list(card["classes"]), saved.bands, card["arch"],
                          card.get("img_size"), None, card["normalization"])]  # fmt: skip
    return network, tasks


@register_strategy
class Progressive(Strategy):
    name = "progressive"
    Params = ProgressiveParams
    summary = "a new laterally connected column per task, earlier columns frozen: no forgetting (Rusu et al. 2016)"
    #: backbone families this strategy can train (others raise a ConfigError)
    architectures: ClassVar[tuple[str, ...]] = SUPPORTED_FAMILIES

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        p = self.params
        column: nn.Module = model.backbone  # type: ignore[assignment]
        arch = _arch_name(column)
        check_family(arch)
        past, past_tasks = load_previous(p.previous) if p.previous else (None, [])
        name = p.task or Path(getattr(dataset, "root", "task")).name or f"task{len(past_tasks) + 1}"
        if name in [t.name for t in past_tasks]:
            raise ConfigError(f"--task: '{name}' is already a task of --previous {p.previous}; name the new task")
        img_size = int(dataset.checked_read(int(split.train[0])).shape[-1])
        task = TaskSpec(name, list(dataset.classes), dataset.bands, arch, img_size, p.column_band_policy)
        grow(past, past_tasks, column, task, model)  # type: ignore[arg-type]

    def phases(self, model: nn.Module) -> list[Phase]:
        p = self.params
        backbone = model.backbone
        if not isinstance(backbone, ProgressiveBackbone):
            raise ConfigError(f"{self.name}: the network was not grown; fit calls prepare() before training")
        head = list(model.head.parameters())  # type: ignore[union-attr]
        column = list(backbone.columns[-1].parameters())
        laterals = list(backbone.laterals[-1].parameters())
        phases = [head_phase(model, p.head_epochs, p.head_lr)] if p.head_epochs else []
        groups = [{"params": head, "lr": p.lr}, {"params": column, "lr": p.lr * p.backbone_lr_factor}]
        if laterals:
            groups.append({"params": laterals, "lr": p.lr * p.lateral_lr_factor})
        phases.append(Phase("column", p.epochs, groups, augment=p.augment))
        return phases


def run_sequence(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """Run a sequence of tasks from one config; see :mod:`eotransfer.strategies._progressive_sequence`."""
    from eotransfer.strategies._progressive_sequence import run_sequence as run

    return run(config)
