"""What a strategy is: its parameters (declared once), its training phases, and its loss.

The engine (:mod:`eotransfer.engine.loop`) knows no strategy by name.  A strategy says which
parameters train, at what learning rate, for how many epochs in each phase, and what the loss of a
batch is; CLI options, YAML keys and API arguments are generated from its ``Params`` dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from eotransfer.errors import ConfigError, did_you_mean
from eotransfer.registry import Registry


def param(
    default: Any,
    help: str,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A dataclass field with the metadata the CLI and validation read."""
    meta = {"help": help, "min": minimum, "max": maximum, "choices": choices}
    return field(default=default, metadata=meta)


def validate_params(obj: Any) -> None:
    """Check every field against its declared range and choices; the message names the option."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        opt = "--" + f.name.replace("_", "-")
        lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
        if choices is not None and v not in choices:
            hint = did_you_mean(v, [str(c) for c in choices]) if isinstance(v, str) else ""
            hint = hint if hint.startswith("; did you mean") else ""
            raise ConfigError(f"{opt}: {v!r} is not one of {', '.join(map(str, choices))}{hint}")
        if lo is not None and v is not None and v < lo:
            raise ConfigError(f"{opt}: {v} is below the minimum {lo}")
        if hi is not None and v is not None and v > hi:
            raise ConfigError(f"{opt}: {v} is above the maximum {hi}")


@dataclass
class Phase:
    """One stage of training: which parameters train, at which learning rates, for how long.

    ``param_groups`` are optimizer groups (``{"params": [...], "lr": float}``); every parameter not
    in a group is frozen.  ``frozen_backbone`` lets the engine compute backbone features once and
    train the head on them (exact when no augmentation is applied).
    """

    name: str
    epochs: int
    param_groups: list[dict[str, Any]]
    frozen_backbone: bool = False
    augment: bool = True
    #: restore the weights of the best validation epoch at the end (False: keep the last, as
    #: self-supervised pre-training does, where the monitor only reports)
    keep_best: bool = True


@dataclass
class CommonParams:
    """Training settings shared by every strategy."""

    epochs: int = param(30, "epochs of the main phase", 1, 10_000)
    lr: float = param(1e-3, "learning rate of the head", 1e-7, 10.0)
    weight_decay: float = param(1e-4, "AdamW weight decay", 0.0, 1.0)
    batch_size: int = param(32, "samples per batch", 1, 4096)
    patience: int = param(10, "early stopping: epochs without validation improvement (0 = off)", 0, 10_000)
    augment: bool = param(True, "random flips and 90° rotations during training")
    band_dropout: float = param(
        0.0, "probability that each band of a training sample is masked (as missing), for models that must "
        "cope with missing bands or other sensors; needs --augment", 0.0, 0.95,
    )  # fmt: skip


class Strategy:
    """Base class: subclasses set ``name``, ``Params`` and implement :meth:`phases`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = CommonParams
    summary: ClassVar[str] = ""

    def __init__(self, params: Any) -> None:
        validate_params(params)
        self.params = params

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        """Called by ``fit`` before training with the opened data set, its split and the model.

        Strategies that need the data (a teacher checked against its bands and classes, say) hook in here.
        """

    def phases(self, model: nn.Module) -> list[Phase]:
        raise NotImplementedError

    #: the data set indices of the batch :meth:`training_loss` is called with (set by the engine just
    #: before), for strategies whose targets live beside the images (``multitask``'s label tables)
    batch_indices: torch.Tensor | None = None

    #: True for a classical strategy: no network trains; ``fit`` computes the frozen backbone's
    #: features and calls :meth:`fit_classifier`, then scores with :meth:`predict_proba` and saves
    #: :meth:`model_files` in the model directory (see ``feature_extraction.py``)
    classical: ClassVar[bool] = False

    def frozen_features(self, engine: Any, model: nn.Module, subset: Any) -> tuple[Any, Any]:
        """Backbone features and labels of ``subset`` for a classical strategy (which embedding, cached or not)."""
        raise NotImplementedError

    def fit_classifier(self, features: Any, labels: Any, n_classes: int, seed: int) -> dict[str, Any]:
        """Fit a classifier on backbone features; returns what the card records about it."""
        raise NotImplementedError

    def predict_proba(self, features: Any) -> Any:
        """Class probabilities (N×classes numpy array) from backbone features."""
        raise NotImplementedError

    def model_files(self) -> dict[str, bytes]:
        """Extra files of the model directory (name → content)."""
        return {}

    def loss(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of a batch; cross-entropy by default."""
        return nn.functional.cross_entropy(logits, labels)

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """Loss of a batch of images when the whole network trains.

        The default is :meth:`loss` on the model's logits; methods that need more than one forward
        pass (two augmented views, a momentum encoder) override this.  ``gen`` is the epoch's seeded
        generator, for augmentations drawn inside the method.
        """
        return self.loss(model, model(images), labels)

    def after_training(self, model: nn.Module, engine: Any, train: Any) -> None:
        """Called by ``fit`` once training has ended, before any score: a last change to the trained model
        that is not a training phase (AdaBN's re-estimated BatchNorm statistics, say).  ``train`` is the
        training subset.  The default does nothing."""

    def after_fit(self, model: nn.Module, engine: Any, subsets: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Called by ``fit`` after the test/validation scores, with ``{"test": ..., "val": ...}`` subsets.

        Returns extra metrics per subset name, merged into the card's and ``metrics.json``'s (the
        auxiliary heads of ``multitask``, say); a strategy may also tidy the model here.
        """
        return {}

    def state(self) -> dict[str, Any]:
        """Tensors the strategy trains outside the model (a domain discriminator, say), for checkpoints.

        Saved with every checkpoint and given back to :meth:`load_state` on ``--resume``, so that a
        resumed run continues exactly; they are not part of the saved model.
        """
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (called after :meth:`phases`, before training resumes)."""

    def after_step(self, model: nn.Module, progress: float) -> None:
        """Called after every optimiser step; ``progress`` runs from 0 to 1 over the phase."""

    def validate(self, model: nn.Module, val: Any, engine: Any) -> dict[str, float]:
        """Scores of ``model`` on ``val`` after an epoch; ``val_accuracy``/``val_loss`` drive early stopping."""
        logits, yv = engine.predict_logits(model, val)
        return {
            "val_loss": float(nn.functional.cross_entropy(logits, yv)),
            "val_accuracy": float((logits.argmax(1) == yv).float().mean()),
        }


def head_phase(model: nn.Module, epochs: int, lr: float, augment: bool = False) -> Phase:
    """Train only the new head; without augmentation the backbone's features are computed once."""
    head = list(model.head.parameters())  # type: ignore[union-attr]
    return Phase("head", epochs, [{"params": head, "lr": lr}], frozen_backbone=not augment, augment=augment)


def _load_strategies() -> None:
    from eotransfer import strategies

    strategies.load_all()


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "--strategy", _load_strategies)
register_strategy = STRATEGIES.register
get_strategy = STRATEGIES.lookup


def make_params(strategy: type[Strategy], values: dict[str, Any]) -> Any:
    """Build a strategy's Params from a dict, refusing unknown keys with a suggestion."""
    names = {f.name for f in dataclasses.fields(strategy.Params)}
    unknown = [k for k in values if k not in names]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"'{k}' is not a parameter of strategy '{strategy.name}'" + did_you_mean(k, names))
    return strategy.Params(**values)


ParamFilter = Callable[[str], bool]
