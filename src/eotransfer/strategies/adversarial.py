"""``adversarial``: fine-tuning on clean plus adversarial examples, with the budget in reflectance units.

Adversarial training (Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples":
clean and FGSM examples mixed; Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks": PGD examples), or TRADES (Zhang et al. 2019, "Theoretically Principled
Trade-off between Robustness and Accuracy", ICML): ``CE(f(x), y) + β·KL(f(x) ‖ f(x_adv))`` with
``x_adv`` found by PGD on the KL term.  As ``finetune``, the head first trains on the frozen
backbone; the adversarial term acts in the end-to-end phase.

The budget ``--eps`` is in reflectance units per band (:mod:`eotransfer.evaluation.attacks`), and
adversarial images are clipped to each band's valid range: by default the minimum and maximum of
that band over the training split (found in :meth:`Adversarial.prepare`), or ``--valid-range``.
The range and budget used are saved beside the model (``adversarial.json``).

Which end-to-end epoch is kept, and when training stops early, is decided by the *robust*
validation accuracy (PGD at the training budget, ``--val-pgd-steps`` steps) by default, as Rice,
Wong & Kolter 2020 ("Overfitting in adversarially robust deep learning", ICML) do: clean accuracy
falls as adversarial training proceeds (the trade-off of Tsipras et al. 2019 and Zhang et al. 2019),
so selecting on it keeps the least adversarially trained epoch, and early stopping on it ends the
adversarial phase after a few epochs (``--select-on clean`` does that, as ``finetune``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eotransfer.data.augment import guess_value_per_reflectance
from eotransfer.errors import ConfigError
from eotransfer.evaluation.attacks import (
    Budget,
    band_range,
    clean_and_attacked_logits,
    eval_mode,
    fgsm,
    make_budget,
    parse_eps,
    pgd,
)
from eotransfer.strategies.base import Phase, Strategy, param, register_strategy
from eotransfer.strategies.finetune import FinetuneParams, finetune_phases_with


@dataclass
class AdversarialParams(FinetuneParams):
    """Fine-tuning's schedule, plus how the adversarial examples are made and weighed."""

    attack: str = param("pgd", "adversarial examples: fgsm (one step) | pgd (several steps, random start)",
                        choices=("fgsm", "pgd"))  # fmt: skip
    eps: str = param("0.002", "L∞ budget in reflectance units (0.01 = 1 %): one value for all bands and/or "
                     "BAND=value pairs, e.g. 0.005,B10=0.0005")  # fmt: skip
    pgd_steps: int = param(3, "PGD steps per adversarial example (step size 2.5·eps/steps)", 1, 1000)
    adv_ratio: float = param(0.5, "mixed loss: weight of the adversarial cross-entropy (1 − it weighs the clean one)",
                             0.0, 1.0)  # fmt: skip
    adv_loss: str = param("mixed", "mixed: clean + adversarial cross-entropy | trades: CE(clean) + β·KL(clean‖adv)",
                          choices=("mixed", "trades"))  # fmt: skip
    trades_beta: float = param(6.0, "TRADES: weight β of the KL term (Zhang et al. 2019 use 6)", 0.0, 1000.0)
    select_on: str = param("robust", "validation score that picks the kept epoch and drives early stopping: robust "
                           "(accuracy under PGD at --eps, Rice et al. 2020) | clean", choices=("robust", "clean"))  # fmt: skip
    val_pgd_steps: int = param(10, "PGD steps of the validation attack (--select-on robust)", 1, 1000)
    value_per_reflectance: float | None = param(
        None, "data units per reflectance unit (10000 for Sentinel-2 x10^4, 255 for 8-bit); guessed if omitted", 1e-6
    )
    valid_range: str | None = param(None, "LO,HI in reflectance units that adversarial images are clipped to "
                                    "(default: each band's min..max over the training split)")  # fmt: skip


@register_strategy
class Adversarial(Strategy):
    name = "adversarial"
    Params = AdversarialParams
    summary = "fine-tuning on clean + FGSM/PGD examples (Goodfellow 2015, Madry 2018) or TRADES (Zhang 2019), eps in reflectance"  # fmt: skip

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        parse_eps(params.eps)  # a malformed budget fails before any data is read
        if params.adv_loss == "trades" and params.attack == "fgsm":
            raise ConfigError(
                "--adv-loss trades: needs --attack pgd (the KL term has zero gradient at the clean image, so one "
                "FGSM step from it does not move); or use --adv-loss mixed with fgsm"
            )
        self._valid_range()
        self.budget: Budget | None = None
        self.band_names: list[str] = []

    def _valid_range(self) -> tuple[float, float] | None:
        if self.params.valid_range is None:
            return None
        try:
            lo, hi = (float(v) for v in str(self.params.valid_range).split(","))
        except ValueError:
            raise ConfigError(f"--valid-range: {self.params.valid_range!r} is not LO,HI (e.g. 0,1.5)") from None
        if not lo < hi:
            raise ConfigError(f"--valid-range: LO {lo} must be below HI {hi}")
        return lo, hi

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        """The valid range per band (the training split's min..max, or ``--valid-range``) and the budget."""
        p = self.params
        lo, hi = band_range(dataset.checked_read, split.train)
        given = self._valid_range()
        if given is not None:
            vpr = p.value_per_reflectance or guess_value_per_reflectance(float(np.nanmax(hi)))
            lo, hi = np.full_like(lo, given[0] * vpr), np.full_like(hi, given[1] * vpr)
        self.budget = make_budget(p.eps, dataset.bands, lo, hi, p.value_per_reflectance)
        self.band_names = list(dataset.bands.names)

    def phases(self, model: nn.Module) -> list[Phase]:
        """Fine-tuning's phases; the end-to-end one (never on cached features) adds the adversarial term."""
        return finetune_phases_with(self.params, model, "adversarial")

    def adversarial_examples(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """Adversarial versions of ``images`` (the model in eval mode while they are made)."""
        b, p = self.budget, self.params
        if b is None:
            raise RuntimeError(f"{self.name}: no budget; fit calls prepare() before training")
        if p.attack == "fgsm":
            return fgsm(model, images, labels, b.eps, b.lo, b.hi)
        if p.adv_loss == "trades":  # ascend KL(f(x) ‖ f(x_adv)), as Zhang et al.'s inner maximisation
            with eval_mode(model), torch.no_grad():
                log_p_clean = F.log_softmax(model(images).float(), 1)

            def kl(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
                return F.kl_div(F.log_softmax(logits.float(), 1), log_p_clean, reduction="sum", log_target=True)

            return pgd(model, images, labels, b.eps, b.lo, b.hi, p.pgd_steps, generator=gen, loss_fn=kl)
        return pgd(model, images, labels, b.eps, b.lo, b.hi, p.pgd_steps, generator=gen)

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        p = self.params
        if p.adv_loss == "mixed" and p.adv_ratio == 0.0:
            return self.loss(model, model(images), labels)
        x_adv = self.adversarial_examples(model, images, labels, gen)
        n = images.shape[0]
        if p.adv_loss == "trades":
            logits = model(torch.cat([images, x_adv])).float()
            log_p_clean = F.log_softmax(logits[:n], 1)
            kl = F.kl_div(F.log_softmax(logits[n:], 1), log_p_clean, reduction="batchmean", log_target=True)
            return F.cross_entropy(logits[:n], labels) + p.trades_beta * kl
        if p.adv_ratio == 1.0:
            return self.loss(model, model(x_adv), labels)
        logits = model(torch.cat([images, x_adv]))  # one forward: BatchNorm sees clean and adversarial alike
        ce_clean, ce_adv = self.loss(model, logits[:n], labels), self.loss(model, logits[n:], labels)
        return (1.0 - p.adv_ratio) * ce_clean + p.adv_ratio * ce_adv

    def validate(self, model: nn.Module, val: Any, engine: Any) -> dict[str, float]:
        """Clean and robust validation scores; ``val_accuracy``/``val_loss`` (which select) are the robust ones.

        Robust: PGD (``--val-pgd-steps`` steps, random start drawn from a fixed seed, so every epoch
        faces the same starts) at the training budget, the model in eval mode (Rice et al. 2020 stop
        early on this).  With ``--select-on clean``: the clean scores, as every other strategy.
        """
        b, p = self.budget, self.params
        if p.select_on == "clean" or b is None:
            return super().validate(model, val, engine)
        batch_size = max(1, int(getattr(getattr(engine, "cfg", None), "eval_batch_size", 128)))

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for s in range(0, len(val), batch_size):
                items = [val[i] for i in range(s, min(s + batch_size, len(val)))]
                yield (torch.stack([torch.as_tensor(it["image"]) for it in items]),
                       torch.as_tensor([int(it["label"]) for it in items]))  # fmt: skip

        gen = torch.Generator().manual_seed(0)
        clean, adv, yv = clean_and_attacked_logits(model, batches(), b, "pgd", p.val_pgd_steps, gen)
        return {
            "val_loss": float(F.cross_entropy(adv, yv)),
            "val_accuracy": float((adv.argmax(1) == yv).float().mean()),
            "val_clean_loss": float(F.cross_entropy(clean, yv)),
            "val_clean_accuracy": float((clean.argmax(1) == yv).float().mean()),
        }

    def model_files(self) -> dict[str, bytes]:
        """``adversarial.json``: the budget and valid range the model was trained with, per band."""
        if self.budget is None:
            return {}
        record = {
            "attack": self.params.attack,
            "adv_loss": self.params.adv_loss,
            "select_on": self.params.select_on,
            **self.budget.to_dict(self.band_names),
        }
        return {"adversarial.json": json.dumps(record, indent=2).encode()}
