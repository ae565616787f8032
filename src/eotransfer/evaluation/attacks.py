"""Adversarial perturbations in reflectance units per band: FGSM and PGD, and robust accuracy.

FGSM (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples", ICLR)
takes one step of size ε along the sign of the input gradient of the loss; PGD (Madry et al. 2018,
"Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR) starts at a random point of
the ε-ball and takes several signed steps, projecting back onto the ball after each.  Both ascend the
cross-entropy by default, or (``loss="margin"``) the logit margin of Carlini & Wagner 2017 ("Towards
Evaluating the Robustness of Neural Networks", IEEE S&P), which does not saturate: a model whose
softmax is saturated (a prototype head's logits are squared distances) gives the cross-entropy an input
gradient that underflows towards zero (and a signed step of an exact zero never moves), which reads as
robustness that is not there (gradient masking, Athalye, Carlini & Wagner 2018, ICML).  The Square Attack (Andriushchenko et
al. 2020, "Square Attack: a query-efficient black-box adversarial attack via random search", ECCV)
uses no gradient at all: it searches the corners of the ε-box by random square-shaped updates, kept
when they lower the margin, so a gradient-masking defence gains nothing against it.

Models take raw values in the data's units (normalisation is a buffer inside the network), so the
budget is set where it means something physically: ``eps`` in *reflectance units* per band (0.01 =
one percent reflectance), converted to the data's units by ``value_per_reflectance`` (10⁴ for
Sentinel-2 digital numbers, 255 for 8-bit RGB; guessed from the data's largest value when not
given, as the pre-training augmentations do), and not in RGB pixel steps.  Every adversarial image
is clipped to a valid range per band ``[lo, hi]`` (by default the observed minimum and maximum of
each band).  A pixel that already lies outside that range is never pushed further out, nor moved
by more than ε: ``‖x_adv − x‖∞ ≤ ε`` holds per band in every case.  Masked (NaN) pixels stay NaN.

Attacks run with the network in eval mode (BatchNorm running statistics, no dropout) and restore
each submodule's mode afterwards; they take gradients with respect to the input only, so nothing
accumulates in the parameters' ``.grad``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eotransfer.data.augment import guess_value_per_reflectance
from eotransfer.errors import BandError, ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PerBand = float | Sequence[float] | np.ndarray | torch.Tensor
ATTACKS = ("fgsm", "pgd", "square")
#: the losses the gradient attacks ascend (``--attack-loss``); the Square Attack always lowers the margin
ATTACK_LOSSES = ("ce", "margin")
#: the Square Attack's default query budget (forward passes per image)
SQUARE_QUERIES = 1000


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss the attacks ascend by default (summed, so each sample's gradient is its own)."""
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def margin_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carlini & Wagner's (2017) margin, summed: ``max_{j≠y} z_j − z_y`` per sample, positive once misclassified.

    It grows without bound as the attack succeeds and its gradient never vanishes with a saturated softmax.
    """
    return -true_margin(logits, labels).sum()


def true_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y − max_{j≠y} z_j`` per sample: positive while correctly classified (what the Square Attack lowers)."""
    z = logits.float()
    true = z.gather(1, labels[:, None])[:, 0]
    others = z.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(1).values


def attack_loss(name: str) -> LossFn:
    """The loss ``--attack-loss NAME`` names (:data:`ATTACK_LOSSES`)."""
    if name not in ATTACK_LOSSES:
        raise ConfigError(f"--attack-loss: {name!r} is not one of {', '.join(ATTACK_LOSSES)}")
    return cross_entropy_sum if name == "ce" else margin_sum


def _per_band(v: PerBand, x: torch.Tensor) -> torch.Tensor:
    """A scalar or one value per band as a 1×C×1×1 tensor on ``x``'s device and dtype."""
    t = torch.as_tensor(np.asarray(v, dtype=np.float64) if not isinstance(v, torch.Tensor) else v)
    t = t.to(device=x.device, dtype=x.dtype)
    if t.numel() not in (1, x.shape[1]):
        raise ConfigError(f"attack: {t.numel()} per-band values for an image of {x.shape[1]} bands")
    return t.reshape(1, -1, 1, 1) if t.numel() > 1 else t.reshape(1, 1, 1, 1)


def _bounds(x: torch.Tensor, eps: PerBand, lo: PerBand, hi: PerBand) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds of the adversarial image: the ε-ball around ``x`` within the valid range.

    The range is widened to ``x`` itself where ``x`` lies outside it, so that the intersection is
    never empty and clipping never moves a pixel by more than ε.
    """
    e = _per_band(eps, x)
    lo_t, hi_t = _per_band(lo, x), _per_band(hi, x)
    lower = torch.maximum(x - e, torch.minimum(lo_t, x))
    upper = torch.minimum(x + e, torch.maximum(hi_t, x))
    return lower, upper


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """∂loss/∂x with NaN (masked) pixels given zero gradient; the parameters' ``.grad`` is untouched."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(xr), y), xr)
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def _finish(x: torch.Tensor, x_adv: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    out = torch.minimum(torch.maximum(x_adv, lower), upper)
    return torch.where(torch.isnan(x), x, out).detach()


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: PerBand, lo: PerBand, hi: PerBand,
    loss_fn: LossFn = cross_entropy_sum,
) -> torch.Tensor:  # fmt: skip
    """Fast gradient sign method: ``clip(x + ε·sign(∇x loss))`` (Goodfellow et al. 2015).

    ``eps``, ``lo`` and ``hi`` are in the data's units, one value for all bands or one per band.
    """
    lower, upper = _bounds(x, eps, lo, hi)
    with eval_mode(model):
        grad = _input_gradient(model, x, y, loss_fn)
    return _finish(x, x + _per_band(eps, x) * grad.sign(), lower, upper)


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: PerBand, lo: PerBand, hi: PerBand,
    steps: int = 10, step_size: PerBand | None = None, generator: torch.Generator | None = None,
    random_start: bool = True, loss_fn: LossFn = cross_entropy_sum,
) -> torch.Tensor:  # fmt: skip
    """Projected gradient descent on the loss in the L∞ ball (Madry et al. 2018).

    ``steps`` signed steps of ``step_size`` (default ``2.5·ε/steps``, Madry et al.'s choice, so the
    walk can cross the ball), each followed by projection onto the ball and the valid range.  The
    random start is uniform in the ball, drawn on the CPU from ``generator`` (reproducible on any
    device).  Returns the last iterate.
    """
    if steps < 1:
        raise ConfigError(f"--pgd-steps: {steps} must be at least 1")
    e = _per_band(eps, x)
    alpha = 2.5 * e / steps if step_size is None else _per_band(step_size, x)
    lower, upper = _bounds(x, eps, lo, hi)
    x_adv = x.detach()
    if random_start:
        u = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
        x_adv = _finish(x, x + (2 * u - 1) * e, lower, upper)
    with eval_mode(model):
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, y, loss_fn)
            x_adv = _finish(x, x_adv + alpha * grad.sign(), lower, upper)
    return x_adv


def _square_fraction(i: int, queries: int, p_init: float) -> float:
    """The share of the image a square covers at query ``i``: Andriushchenko et al.'s halving schedule.

    ``p_init`` halves at the paper's iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000,
    rescaled to ``queries``.
    """
    i = int(i / queries * 10_000)
    halvings = sum(i > t for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


def square(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: PerBand, lo: PerBand, hi: PerBand,
    queries: int = 1000, p_init: float = 0.05, generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """The L∞ Square Attack (Andriushchenko et al. 2020): a random search that needs no gradient.

    It starts at vertical stripes (each column of each band at one end of its ε-interval) and then, for
    ``queries − 1`` rounds, redraws one square window per still-correct sample (side ``√(p·H·W)``, ``p``
    on :func:`_square_fraction`'s schedule), every band of it set to one end of its interval, keeping the
    change where the margin ``z_y − max_{j≠y} z_j`` drops.  The ends are the per-pixel bounds of the
    ε-ball within the valid range (see :func:`pgd`), so the same budget holds.  Draws come from
    ``generator`` on the CPU (reproducible on any device).  Each round is one forward pass.
    """
    if queries < 1:
        raise ConfigError(f"--queries: {queries} must be at least 1")
    n, c, h, w = x.shape
    lower, upper = _bounds(x, eps, lo, hi)

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(x.device)

    def corner(pick: torch.Tensor, low: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return torch.where(pick < 0.5, low, up)

    x_adv = _finish(x, corner(draw(n, c, 1, w).expand(n, c, h, w), lower, upper), lower, upper)
    with eval_mode(model), torch.no_grad():
        margin = true_margin(model(x_adv), y)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        for i in range(1, queries):
            live = torch.nonzero(margin >= 0)[:, 0]  # a tie is no misclassification yet
            if len(live) == 0:
                break
            side = int(round(math.sqrt(_square_fraction(i, queries, p_init) * h * w)))
            side = max(1, min(side, h - 1, w - 1))
            top = (draw(len(live)) * (h - side + 1)).long().clamp_max(h - side)
            left = (draw(len(live)) * (w - side + 1)).long().clamp_max(w - side)
            inside = ((rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side))[:, :, None] & (
                (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + side)
            )[:, None, :]
            ends = corner(draw(len(live), c, 1, 1), lower[live], upper[live])
            candidate = torch.where(inside[:, None], ends, x_adv[live])
            candidate = _finish(x[live], candidate, lower[live], upper[live])
            m_new = true_margin(model(candidate), y[live])
            better = m_new < margin[live]
            x_adv[live[better]] = candidate[better]
            margin[live[better]] = m_new[better]
    return x_adv.detach()


# -- budgets in reflectance units ----------------------------------------------------------------------
def parse_eps(spec: str | float, option: str = "--eps") -> tuple[float | None, dict[str, float]]:
    """``'0.01'`` (every band), ``'B04=0.01,B08=0.02'`` (those bands only) or ``'0.01,B10=0.0005'``.

    Returns the value for unnamed bands (None: they are not perturbed) and the per-band values.
    """
    default: float | None = None
    named: dict[str, float] = {}
    items = [spec] if isinstance(spec, int | float) else [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise ConfigError(f"{option}: empty; give a budget in reflectance units, e.g. {option} 0.005")
    for item in items:
        name, _, value = str(item).rpartition("=")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(
                f"{option}: {item!r} is not a number; write one budget in reflectance units (0.005) and/or "
                "BAND=value pairs (0.005,B10=0.0005)"
            ) from None
        if not np.isfinite(v) or v <= 0:
            raise ConfigError(f"{option}: {item!r} must be a positive budget in reflectance units (0.01 = 1 %)")
        if not name:
            if default is not None:
                raise ConfigError(f"{option}: two budgets for all bands ({default} and {v}); give one")
            default = v
        else:
            named[name.strip()] = v
    return default, named


@dataclass
class Budget:
    """An L∞ budget and the valid range, per band, in the data's units (what the attacks take)."""

    eps: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    value_per_reflectance: float
    eps_reflectance: np.ndarray

    def to_dict(self, band_names: Sequence[str]) -> dict[str, Any]:
        return {
            "value_per_reflectance": self.value_per_reflectance,
            "eps_reflectance": dict(zip(band_names, map(float, self.eps_reflectance), strict=True)),
            "eps_data_units": dict(zip(band_names, map(float, self.eps), strict=True)),
            "range_data_units": {b: [float(a), float(z)] for b, a, z in zip(band_names, self.lo, self.hi, strict=True)},
        }


def band_range(read: Callable[[int], np.ndarray], indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each band's minimum and maximum over the samples ``indices`` (NaN pixels ignored)."""
    lo = hi = None
    for i in indices:
        img = read(int(i))
        flat = img.reshape(img.shape[0], -1)
        mn, mx = np.nanmin(flat, 1), np.nanmax(flat, 1)
        lo = mn if lo is None else np.fmin(lo, mn)
        hi = mx if hi is None else np.fmax(hi, mx)
    if lo is None or hi is None:
        raise ConfigError("attack: no samples to take the valid range from")
    return lo.astype(np.float64), hi.astype(np.float64)


def make_budget(
    spec: str | float, bands: Any, lo: np.ndarray, hi: np.ndarray, value_per_reflectance: float | None = None,
    option: str = "--eps",
) -> Budget:  # fmt: skip
    """The budget ``spec`` (reflectance units, see :func:`parse_eps`) for the :class:`~eotransfer.bands.BandSet`
    ``bands`` with valid range ``lo..hi`` (data units).  A budget wider than a band's range is refused."""
    default, named = parse_eps(spec, option)
    vpr = value_per_reflectance or guess_value_per_reflectance(float(np.nanmax(hi)))
    eps_r = np.full(len(bands), default if default is not None else 0.0)
    for name, v in named.items():
        try:
            eps_r[bands.index(name)] = v
        except BandError as e:
            raise ConfigError(f"{option}: {e}") from None
    eps = eps_r * vpr
    span = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    for i, b in enumerate(bands.names):
        if eps[i] > span[i]:
            others = [f"{n}={v:g}" for n, v in named.items() if bands.index(n) != i]
            hint = ",".join(
                ([f"{default:g}"] if default is not None else []) + others + [f"{b}={span[i] / vpr / 10:.2g}"]
            )
            raise ConfigError(
                f"{option}: {eps_r[i]:g} reflectance ({eps[i]:g} data units at {vpr:g} per reflectance) exceeds the "
                f"whole range of band {b} ({lo[i]:g}..{hi[i]:g}); give it a smaller budget, e.g. {option} {hint}"
            )
    return Budget(eps, np.asarray(lo, np.float64), np.asarray(hi, np.float64), float(vpr), eps_r)


def clean_and_attacked_logits(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], budget: Budget, attack: str = "pgd",
    steps: int = 10, generator: torch.Generator | None = None, loss: str = "ce",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """``model``'s logits on each batch ``(x, y)`` (data units) and on its attacked copy, with the labels (on CPU).

    The attack runs with the model in eval mode (its BatchNorm statistics fixed), as in evaluation.
    ``steps``: PGD's steps, or the Square Attack's queries; ``loss``: what FGSM and PGD ascend.
    """
    device = next(model.parameters()).device
    loss_fn = attack_loss(loss)
    clean, adv, ys = [], [], []
    for xb, yb in batches:
        x, y = xb.float().to(device), yb.long().to(device)
        if attack == "fgsm":
            xa = fgsm(model, x, y, budget.eps, budget.lo, budget.hi, loss_fn=loss_fn)
        elif attack == "square":
            xa = square(model, x, y, budget.eps, budget.lo, budget.hi, queries=steps, generator=generator)
        else:
            xa = pgd(model, x, y, budget.eps, budget.lo, budget.hi, steps=steps, generator=generator, loss_fn=loss_fn)
        with eval_mode(model), torch.no_grad():
            clean.append(model(x).float().cpu())
            adv.append(model(xa).float().cpu())
        ys.append(y.cpu())
    if not ys:
        empty = torch.zeros(0, 0)
        return empty, empty, torch.zeros(0, dtype=torch.long)
    return torch.cat(clean), torch.cat(adv), torch.cat(ys)


def robust_accuracy(
    model: nn.Module, read: Callable[[int], np.ndarray], indices: Sequence[int] | np.ndarray, labels: np.ndarray,
    budget: Budget, attack: str = "pgd", steps: int = 10, seed: int = 0, batch_size: int = 64, loss: str = "ce",
) -> dict[str, Any]:  # fmt: skip
    """Clean and adversarial accuracy of ``model`` on the samples ``indices`` (``read(i)``: C×H×W, data units).

    ``labels`` are the model's class indices of those samples; the PGD random starts (and the Square
    Attack's draws) come from ``seed``.  ``steps``: PGD's steps or the Square Attack's queries.
    """
    if attack not in ATTACKS:
        raise ConfigError(f"--attack: {attack!r} is not one of {', '.join(ATTACKS)}")
    batches = (
        (torch.from_numpy(np.stack([read(int(i)) for i in indices[s : s + batch_size]]).astype(np.float32)),
         torch.as_tensor(labels[s : s + batch_size], dtype=torch.long))
        for s in range(0, len(indices), batch_size)
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    logits_clean, logits_adv, _ = clean_and_attacked_logits(model, batches, budget, attack, steps, gen, loss)
    pred_clean = logits_clean.argmax(1).numpy() if len(logits_clean) else np.zeros(0, np.int64)
    pred_adv = logits_adv.argmax(1).numpy() if len(logits_adv) else np.zeros(0, np.int64)
    n = len(pred_clean)
    return {
        "attack": attack,
        "steps": steps if attack != "fgsm" else 1,
        "loss": "margin" if attack == "square" else loss,
        "n": n,
        "clean_accuracy": float((pred_clean == labels).mean()) if n else 0.0,
        "robust_accuracy": float((pred_adv == labels).mean()) if n else 0.0,
        "predicted_clean": pred_clean.tolist(),
        "predicted_adversarial": pred_adv.tolist(),
    }


def attack_network(
    network: nn.Module, bands: Any, read: Callable[[int], np.ndarray], indices: np.ndarray, labels: np.ndarray,
    attack: str = "pgd", eps: str | float = "", pgd_steps: int | None = None, value_per_reflectance: float | None = None,
    seed: int = 0, option: str = "--eps", loss: str = "ce", queries: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Clean and robust accuracy of ``network`` (raw data units in, logits out) on the samples ``indices``.

    ``bands``: the network's :class:`~eotransfer.bands.BandSet`, which names the per-band budget; the valid
    range is each band's min..max over the attacked samples.  The result records the budget (reflectance and
    data units), the attack and its steps with the accuracies.  ``option`` names the budget in errors.
    ``loss``: what FGSM and PGD ascend (:data:`ATTACK_LOSSES`); ``queries``: the Square Attack's (default
    :data:`SQUARE_QUERIES`).
    """
    if attack not in ATTACKS:
        raise ConfigError(f"--attack: {attack!r} is not one of {', '.join(ATTACKS)}")
    attack_loss(loss)
    if attack == "square":
        steps = int(queries) if queries is not None else SQUARE_QUERIES
    else:
        steps = int(pgd_steps) if pgd_steps is not None else 10
    lo, hi = band_range(read, indices)
    budget = make_budget(eps, bands, lo, hi, value_per_reflectance, option)
    result = robust_accuracy(network, read, indices, labels, budget, attack, steps, seed, loss=loss)
    return {**result, "eps": str(eps), **budget.to_dict(bands.names), "range_from": "evaluated samples"}


def attack_saved_model(saved: Any, ds: Any, indices: np.ndarray, labels: np.ndarray, **options: Any) -> dict[str, Any]:
    """``eotransfer evaluate --attack``: robust accuracy of a saved model on ``ds``'s samples ``indices``.

    The valid range is each band's min..max over those samples; the result records it with the
    budget (reflectance and data units), the attack and its steps.
    """
    attack, eps = options.get("attack"), options.get("eps")
    if attack is None:
        raise ConfigError("--eps: give --attack fgsm|pgd|square as well (the budget alone runs no attack)")
    if eps is None:
        raise ConfigError(f"--attack {attack}: needs --eps, the budget in reflectance units (e.g. --eps 0.005)")
    from eotransfer.evaluation.classical import folded_network

    try:  # a linear scikit-learn head folds into the network, which gives the input gradient
        network = folded_network(saved, "a gradient attack")
    except ConfigError as e:
        raise ConfigError(f"--attack: {e}") from e
    return attack_network(network, saved.bands, ds.checked_read, indices, labels, attack, eps, options.get("pgd_steps"),
                          options.get("value_per_reflectance"), int(options.get("seed") or 0),
                          loss=options.get("loss") or "ce", queries=options.get("queries"))  # fmt: skip
