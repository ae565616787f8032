"""The one training loop every strategy runs on.

Built on Lightning Fabric so that the same loop runs on the CPU, one GPU (bf16 autocast,
channels_last) or several GPUs by DDP, while the loop itself stays readable here.  Shuffling and
augmentation draw from generators seeded by (seed, phase, epoch), so a run resumed from its last
epoch checkpoint reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from eotransfer.data.augment import band_dropout
from eotransfer.engine.checkpoint import atomic_torch_save, load_checkpoint
from eotransfer.strategies.base import Phase, Strategy

CHECKPOINT_NAME = "last.ckpt"


@dataclass
class EngineConfig:
    """Where and how to run; none of it changes the result on the CPU."""

    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str | None = None  # None: bf16-mixed on GPU, 32-true on CPU
    checkpoint_dir: Path | None = None
    resume: bool = False
    config_hash: str = ""
    #: what kind of run writes the checkpoints (e.g. ``fit:finetune``, ``pretrain:moco``), checked on resume
    run_kind: str = ""
    progress: bool = True
    num_workers: int = 0
    eval_batch_size: int = 128
    #: write a checkpoint at most this often (and always after the first and last epoch of a phase),
    #: so that cheap epochs (a head on cached features) are not dominated by checkpoint writes
    checkpoint_interval_s: float = 30.0
    #: stop training after the epoch that passes this many seconds since ``fit`` began (None = no limit);
    #: the run ends as if its phases had finished, with a checkpoint, and the history says so
    time_budget_s: float | None = None


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90° rotations per sample: the dihedral group, valid for overhead imagery."""
    ops = torch.randint(0, 8, (x.shape[0],), generator=gen)
    out = x.clone()
    for op in range(1, 8):
        sel = ops == op
        if sel.any():
            y = torch.rot90(x[sel], op % 4, dims=(-2, -1))
            out[sel] = torch.flip(y, dims=(-1,)) if op >= 4 else y
    return out


def train_mode(model: nn.Module, trainable: set[int]) -> None:
    """Put ``model`` in training mode, except the submodules whose parameters are all frozen.

    A frozen part (the backbone of a linear probe with augmentation, say) stays in eval mode, so
    its BatchNorm running statistics are not updated and its dropout stays off: frozen means
    unchanged, buffers included.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(id(p) in trainable for p in params):
            module.eval()


def _epoch_generator(seed: int, phase: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, phase, epoch]).generate_state(1)[0]))


class Engine:
    """Runs a strategy's phases on a model; knows no strategy by name."""

    def __init__(self, config: EngineConfig) -> None:
        from lightning.fabric import Fabric

        self.cfg = config
        cuda = torch.cuda.is_available() and config.accelerator in ("auto", "cuda", "gpu")
        precision = config.precision or ("bf16-mixed" if cuda else "32-true")
        self.fabric = Fabric(accelerator=config.accelerator, devices=config.devices, precision=precision)  # type: ignore[arg-type]
        self.fabric.launch()

    # -- helpers ------------------------------------------------------------------------------
    def _loader(self, ds: Dataset[Any], indices: np.ndarray | None, batch_size: int) -> DataLoader[Any]:
        from torch.utils.data import Subset

        view = Subset(ds, indices.tolist()) if indices is not None else ds
        return DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=self.cfg.num_workers)

    @torch.no_grad()
    def _forward_all(self, fn: Any, ds: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        outs, labels = [], []
        for batch in self._loader(ds, None, self.cfg.eval_batch_size):
            x = batch["image"].to(self.fabric.device)
            with self.fabric.autocast():
                outs.append(fn(x).float().cpu())
            labels.append(batch["label"])
        return torch.cat(outs), torch.cat(labels)

    def predict_logits(self, model: nn.Module, ds: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of every sample of ``ds`` (model in eval mode)."""
        model.eval()
        model.to(self.fabric.device)
        return self._forward_all(model, ds)

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One optimisation step on ``loss``; with several processes, gradients are averaged first.

        Averaging the flattened gradients (data parallelism as in Horovod, Sergeev & Del Balso 2018)
        rather than wrapping the model in DDP keeps every strategy's forward free: two-view methods
        call sub-modules directly, which a DDP wrapper would not see.
        """
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        if self.fabric.world_size > 1:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

                flat = self.fabric.all_reduce(_flatten_dense_tensors(grads), reduce_op="mean")
                for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):  # type: ignore[arg-type]
                    g.copy_(avg)
        optimizer.step()
        return float(loss.detach())

    def _sync_buffers(self, model: nn.Module) -> None:
        """Average floating buffers (BatchNorm running statistics) across processes, so every rank holds one model."""
        if self.fabric.world_size > 1:
            for buf in model.buffers():
                if buf.is_floating_point():
                    buf.copy_(self.fabric.all_reduce(buf.detach().clone(), reduce_op="mean"))  # type: ignore[arg-type]

    # -- the loop -------------------------------------------------------------------------------
    def fit(
        self, model: nn.Module, strategy: Strategy, train: Dataset[Any], val: Dataset[Any] | None
    ) -> list[dict[str, Any]]:
        """Train ``model`` through every phase of ``strategy``; returns the per-epoch history."""
        cfg = self.cfg
        self._t_start = time.perf_counter()
        model.to(self.fabric.device)
        if self.fabric.device.type == "cuda":
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        phases = strategy.phases(model)
        ckpt_path = cfg.checkpoint_dir / CHECKPOINT_NAME if cfg.checkpoint_dir else None
        state: dict[str, Any] = {"phase": 0, "epoch": -1, "history": []}
        if cfg.resume and ckpt_path is not None:
            state = load_checkpoint(ckpt_path, cfg.config_hash, cfg.run_kind)
            model.load_state_dict(state["model"])
            strategy.load_state(state.get("strategy_state", {}))
        history: list[dict[str, Any]] = list(state["history"])
        for pi, phase in enumerate(phases):
            if pi < state["phase"]:
                continue
            if history and "stopped" in history[-1]:
                break  # the time budget ran out in an earlier phase
            start_epoch = state["epoch"] + 1 if pi == state["phase"] else 0
            resumed = state if (pi == state["phase"] and start_epoch > 0) else None
            self._run_phase(model, strategy, pi, phase, train, val, start_epoch, resumed, history, ckpt_path)
            state = {"phase": pi + 1, "epoch": -1, "history": history}
        return history

    def _run_phase(
        self, model: nn.Module, strategy: Strategy, pi: int, phase: Phase, train: Dataset[Any],
        val: Dataset[Any] | None, start_epoch: int, resumed: dict[str, Any] | None,
        history: list[dict[str, Any]], ckpt_path: Path | None,
    ) -> None:  # fmt: skip
        cfg, fabric = self.cfg, self.fabric
        trainable = {id(p) for g in phase.param_groups for p in g["params"]}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        base_lrs = [g["lr"] for g in phase.param_groups]
        optimizer = torch.optim.AdamW(
            [{"params": g["params"], "lr": g["lr"]} for g in phase.param_groups],
            weight_decay=strategy.params.weight_decay,
        )
        head: nn.Module | None = getattr(model, "head", None)
        feats_train = feats_val = None
        if phase.frozen_backbone:
            model.eval()
            feats_train, y_train = self._forward_all(model.features, train)  # type: ignore[operator]
            if val is not None and len(val):  # type: ignore[arg-type]
                feats_val, _ = self._forward_all(model.features, val)  # type: ignore[operator]
        best_score: tuple[float, float] = (-math.inf, -math.inf)
        best_state = copy.deepcopy(model.state_dict())
        bad_epochs = 0
        if resumed is not None:
            optimizer.load_state_dict(resumed["optimizer"])
            best_score = tuple(resumed["best_score"])  # type: ignore[assignment]
            best_state = resumed["best_state"]
            bad_epochs = int(resumed["bad_epochs"])
        n = len(train)  # type: ignore[arg-type]
        last_save = time.perf_counter()
        bar = tqdm(range(start_epoch, phase.epochs), desc=f"{strategy.name}:{phase.name}", disable=not cfg.progress,
                   leave=False, dynamic_ncols=True)  # fmt: skip
        for epoch in bar:
            t0 = time.perf_counter()
            for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
                g["lr"] = base * 0.5 * (1 + math.cos(math.pi * epoch / phase.epochs))
            gen = _epoch_generator(cfg.seed, pi, epoch)
            order = torch.randperm(n, generator=gen).numpy()
            order = order[fabric.global_rank :: fabric.world_size]
            batch_size = strategy.params.batch_size
            losses = []
            if feats_train is not None and head is not None:
                head.train()
                for s in range(0, len(order), batch_size):
                    idx = torch.from_numpy(order[s : s + batch_size])
                    x, y = feats_train[idx].to(fabric.device), y_train[idx].to(fabric.device)
                    with fabric.autocast():
                        loss = strategy.loss(model, head(x), y)
                    losses.append(self._step(loss, optimizer))
            else:
                train_mode(model, trainable)
                steps_per_epoch = max(1, math.ceil(len(order) / batch_size))
                for i, batch in enumerate(self._loader(train, order, batch_size)):
                    x, y = batch["image"], batch["label"]
                    if phase.augment:
                        x = augment_batch(x, gen)
                        if strategy.params.band_dropout > 0:  # masked bands become 0 after normalisation
                            x = band_dropout(x, gen, strategy.params.band_dropout)
                    x, y = x.to(fabric.device, non_blocking=True), y.to(fabric.device, non_blocking=True)
                    if len(y) < 2 and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
                        continue  # BatchNorm cannot train on a single sample
                    strategy.batch_indices = batch.get("index")
                    with fabric.autocast():
                        loss = strategy.training_loss(model, x, y, gen)
                    losses.append(self._step(loss, optimizer))
                    strategy.after_step(model, (epoch * steps_per_epoch + i + 1) / (phase.epochs * steps_per_epoch))
            self._sync_buffers(model)
            row: dict[str, Any] = {"phase": phase.name, "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                                   "lr": optimizer.param_groups[0]["lr"]}  # fmt: skip
            if val is not None and len(val):  # type: ignore[arg-type]
                if feats_val is not None and head is not None:
                    head.eval()
                    with torch.no_grad():
                        logits = head(feats_val.to(fabric.device)).float().cpu()
                    yv = torch.as_tensor(np.asarray(val.labels))  # type: ignore[attr-defined]
                    row["val_loss"] = float(nn.functional.cross_entropy(logits, yv))
                    row["val_accuracy"] = float((logits.argmax(1) == yv).float().mean())
                else:
                    row.update(strategy.validate(model, val, self))
                score = (row.get("val_accuracy", -math.inf), -row.get("val_loss", math.inf))
                if not phase.keep_best:
                    best_state = model.state_dict()
                elif score > best_score:
                    best_score, bad_epochs = score, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
            else:
                best_state = model.state_dict()
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k == "train_loss" or k.endswith("accuracy")})
            stop = bool(strategy.params.patience and bad_epochs >= strategy.params.patience)
            if cfg.time_budget_s is not None and time.perf_counter() - self._t_start > cfg.time_budget_s:
                row["stopped"] = f"time budget of {cfg.time_budget_s:.0f} s reached"
                stop = True
            due = (
                epoch == start_epoch
                or stop
                or epoch == phase.epochs - 1
                or time.perf_counter() - last_save >= cfg.checkpoint_interval_s
            )
            if ckpt_path is not None and fabric.is_global_zero and due:
                last_save = time.perf_counter()
                atomic_torch_save(
                    {"config_hash": cfg.config_hash, "kind": cfg.run_kind, "phase": pi, "epoch": epoch if not stop else phase.epochs - 1,
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_score": list(best_score),
                     "best_state": best_state, "bad_epochs": bad_epochs, "history": history,
                     "strategy_state": strategy.state()},
                    ckpt_path,
                )  # fmt: skip
            if stop:
                break
        bar.close()
        model.load_state_dict(best_state)
