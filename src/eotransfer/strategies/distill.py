"""``distill``: a saved teacher trains a smaller student on its softened outputs and the hard labels.

Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531): the student minimises ``α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE``
(:func:`eotransfer.losses.distillation_loss`).  The teacher is any saved eotransfer model; it must
know the data's bands (in the same order) and classes.  The student is the ``fit`` backbone
(``--backbone``, initialised from ``--weights``) and trains end to end.  The teacher lives in the
strategy, not in the student, so checkpoints and the saved student hold the student alone.

With ``--unlabelled`` the student also learns from unlabelled imagery that the teacher labels: the
"transfer set" of Hinton et al. 2015, section 2, need not be the labelled training set.  Each step
draws ``--unlabelled-per-batch`` patches (of the labelled images' size, mapped to the data's bands)
from the epoch's generator and adds the pure soft-target term ``α·T²·KL(teacher_T ‖ student_T)`` on
them, with no hard labels, to the labelled loss.  ``--unlabelled @unlabelled`` takes the training
side's images whose labels a k-per-class restriction set aside (a benchmark grid's k): the student
then learns from every training image, but from only k labels per class, directly and through the
teacher, whose own training saw the same k.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from eotransfer.errors import BandError, ConfigError, EOTransferError
from eotransfer.losses.distillation import distillation_loss
from eotransfer.strategies.base import CommonParams, Phase, Strategy, param, register_strategy


@dataclass
class DistillParams(CommonParams):
    teacher: str = param("", "the teacher: a saved eotransfer model directory (required)")
    temperature: float = param(4.0, "softmax temperature T of the soft targets", 0.05, 100.0)
    alpha: float = param(0.9, "weight of the distillation term; 1 − alpha weighs cross-entropy on the labels", 0.0, 1.0)
    epochs: int = param(30, "epochs of end-to-end student training", 1, 10_000)
    lr: float = param(1e-3, "learning rate of the whole student", 1e-7, 10.0)
    unlabelled: str = param(
        "", "unlabelled imagery the teacher labels (soft targets only): data sets, folders or rasters, comma-separated; @unlabelled for the training side's images whose labels --labels-per-class set aside, @test for the test side's (transductive)"
    )  # fmt: skip
    unlabelled_bands: str | None = param(None, "the bands of the --unlabelled files, as --bands (default: inferred)")
    unlabelled_per_batch: int = param(0, "unlabelled patches per step (0 = --batch-size)", 0, 4096)


def _difference(data: list[str], teacher: list[str]) -> str:
    only_data = [x for x in data if x not in teacher]
    only_teacher = [x for x in teacher if x not in data]
    if not only_data and not only_teacher:
        return f"same set, other order: data {', '.join(data)}; teacher {', '.join(teacher)}"
    return f"only in the data: {', '.join(only_data) or '—'}; only in the teacher: {', '.join(only_teacher) or '—'}"


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@register_strategy
class Distill(Strategy):
    name = "distill"
    Params = DistillParams
    summary = "a saved teacher trains a smaller student on its softened outputs (Hinton et al. 2015)"

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.teacher: nn.Module | None = None
        self.pool: Any = None

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        from eotransfer.card import load_model
        from eotransfer.evaluation.classical import folded_network

        path = self.params.teacher
        if not path:
            raise ConfigError("--teacher: distill needs a teacher; pass the directory of a saved eotransfer model")
        try:
            saved = load_model(path)
        except EOTransferError as e:
            raise ConfigError(f"--teacher: {e}") from e
        bands = saved.bands.keys
        if list(dataset.bands.keys) != bands:
            raise BandError(
                f"--teacher: {path} was trained on other bands than the data's ({_difference(list(dataset.bands.keys), bands)}); "
                "pass --bands/--use-bands to give the teacher's bands in its order, or a teacher trained on these bands"
            )  # fmt: skip
        if list(dataset.classes) != saved.classes:
            raise ConfigError(
                f"--teacher: {path} knows other classes than the data's ({_difference(list(dataset.classes), saved.classes)}); "
                "distil from a teacher trained on these classes"
            )  # fmt: skip
        try:  # a linear scikit-learn head (feature-extraction) folds into logits to soften
            teacher = folded_network(saved, "distillation")
        except ConfigError as e:
            raise ConfigError(f"--teacher: {e}") from e
        teacher.requires_grad_(False)
        n_student, n_teacher = n_parameters(model), n_parameters(teacher)
        if n_student > n_teacher:
            warnings.warn(
                f"--backbone: the student ({n_student:,} parameters) is larger than the teacher {saved.card['arch']} "
                f"({n_teacher:,}); distillation is meant to compress, choose a smaller --backbone",
                UserWarning,
                stacklevel=2,
            )
        self.teacher = teacher
        self.pool = self._open_unlabelled(dataset, split) if self.params.unlabelled else None

    def _open_unlabelled(self, dataset: Any, split: Any = None) -> Any:
        """A :class:`~eotransfer.data.pool.PatchPool` of the ``--unlabelled`` data in the data's bands
        (:func:`~eotransfer.strategies._target.open_target_pool`; None when ``@unlabelled`` alone holds no image)."""
        from eotransfer.strategies._target import open_target_pool

        p = self.params
        return open_target_pool(p.unlabelled, p.unlabelled_bands, dataset, option="--unlabelled", split=split,
                                allow_empty=True, use="distillation")  # fmt: skip

    def _unlabelled_batch(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        from eotransfer.strategies._target import target_batch

        return target_batch(self.pool, self.params.unlabelled_per_batch or self.params.batch_size, images, gen)

    def after_fit(self, model: nn.Module, engine: Any, subsets: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """For the card: how many unlabelled images the teacher labelled (the transfer set beyond the labels)."""
        if not self.params.unlabelled:
            return {}
        return {"transfer_set": {"unlabelled_images": len(self.pool) if self.pool is not None else 0}}

    def phases(self, model: nn.Module) -> list[Phase]:
        p = self.params
        # frozen_backbone=False: the engine must hand training_loss the images, which the teacher needs
        return [Phase("student", p.epochs, [{"params": list(model.parameters()), "lr": p.lr}], augment=p.augment)]

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        teacher = self.teacher
        if teacher is None:
            raise ConfigError("--teacher: the teacher was not loaded; fit calls prepare() before training")
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        p = self.params
        n = images.shape[0]
        if self.pool is not None:  # one forward pass over labelled and unlabelled images
            images = torch.cat([images, self._unlabelled_batch(images, gen)])
        with torch.no_grad():
            teacher_logits = teacher(images)
        student_logits = model(images)
        loss = distillation_loss(student_logits[:n], teacher_logits[:n], labels, p.temperature, p.alpha)
        if self.pool is not None:  # soft targets only: alpha=1 drops the (absent) hard term
            s, t = student_logits[n:], teacher_logits[n:]
            dummy = torch.zeros(s.shape[0], dtype=torch.long, device=s.device)
            loss = loss + p.alpha * distillation_loss(s, t, dummy, p.temperature, alpha=1.0)
        return loss
