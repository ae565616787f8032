"""``eotransfer pretrain``: self-supervised pre-training of a registered backbone on unlabelled imagery.

From scratch or continued from existing weights (local, catalogue or TorchGeo: domain-adaptive
pre-training, Gururangan et al. 2020, "Don't Stop Pretraining", ACL), on the same engine as every
strategy (CPU, one GPU with bf16, several by DDP; resumable).  The output is a backbone folder —
``weights.safetensors`` and a card stating bands, wavelengths, normalisation, the data and its
licence, method, steps, hardware and the monitor's accuracy — that every ``--weights`` accepts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.bands import BandSet
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import ConfigError
from eotransfer.strategies.base import make_params, param, validate_params

#: licences under which weights trained on the data may be shipped
REDISTRIBUTABLE = ("mit", "cdla-permissive-1.0", "public-domain", "cc0-1.0", "cc-by-4.0", "apache-2.0", "bsd-3-clause")


@dataclass
class PretrainConfig:
    """Everything ``pretrain`` needs besides the method's own parameters (CLI options and YAML keys)."""

    data: str = param("", "unlabelled pool: data sets, folders, .npz packs or rasters, comma-separated")
    method: str = param("moco", "self-supervised method (moco | byol)")
    backbone: str = param("resnet18", "backbone architecture (see `eotransfer backbones`)")
    weights: str | None = param(None, "continue pre-training from these weights (path, catalogue or TorchGeo name)")
    band_policy: str | None = param(
        None, "bands the weights lack: zero | mean | random", choices=(None, "zero", "mean", "random")
    )
    bands: str | None = param(None, "the pool's bands where files do not name them (e.g. eurosat-ms)")
    pool_bands: str | None = param(None, "map every source to this band set; bands a source lacks are masked")
    format: str | None = param(None, "data format of the sources (detected if omitted)")
    scale: float = param(1.0, "multiply raw pixel values by this")
    offset: float = param(0.0, "then add this")
    nodata_value: float | None = param(None, "pixel value meaning no data in rasters that declare none (Landsat: 0)")
    patch_size: int = param(64, "patch size in pixels", 8, 4096)
    patches: int = param(0, "patches per epoch drawn over all sources (0 = one per sample)", 0, 10**9)
    monitor: str | None = param(None, "labelled data set for the kNN / linear monitor (its bands as the pool's)")
    monitor_bands: str | None = param(None, "the monitor data's bands where its files do not name them")
    monitor_per_class: int = param(
        20, "monitor: labelled samples per class in the kNN bank (rest: monitor test)", 1, 10**6
    )
    data_licence: str = param("unspecified", "licence of the pool's data, comma-separated per source (e.g. MIT)")
    normalization: str = param(
        "standard", "per-band normalisation: standard | percentile", choices=("standard", "percentile")
    )
    seed: int = param(0, "random seed", 0, 2**31 - 1)
    out: str = param("", "backbone folder to write (atomically)")
    register: str | None = param(None, "also add the result to the local catalogue under this name")
    half: bool = param(False, "store the weights as float16 (half the size; loaded back as float32)")
    int8: bool = param(False, "store the weights as per-channel int8 (a quarter of the size; loaded back as float32)")
    max_minutes: float | None = param(None, "stop after the epoch that passes this many minutes (a time budget)", 0.0)
    resume: bool = param(False, "resume from the last checkpoint of --out")
    accelerator: str = param("auto", "cpu | cuda | auto")
    devices: int = param(1, "number of devices (DDP when > 1)", 1, 1024)
    num_workers: int = param(0, "data loader worker processes", 0, 64)
    progress: bool = param(True, "show progress bars")
    verbose: bool = param(True, "print the band mapping and the monitor")


@dataclass
class PretrainResult:
    model: torch.nn.Module
    card: dict[str, Any]
    history: list[dict[str, Any]]
    out: Path | None
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def open_pool(cfg: PretrainConfig, opened: list[Any] | None = None) -> Any:
    from eotransfer.data.pool import PatchPool, open_pool_source

    paths = _split_list(cfg.data)
    if opened:
        pool_bands = BandSet.parse(cfg.pool_bands) if cfg.pool_bands else None
        return PatchPool(opened, cfg.patch_size, cfg.patches, pool_bands, seed=cfg.seed)
    if not paths:
        raise ConfigError("pretrain: give the unlabelled data (positional, or `data:` in --config)")
    options = {"bands": cfg.bands, "format": cfg.format, "scale": cfg.scale, "offset": cfg.offset,
               "nodata_value": cfg.nodata_value}  # fmt: skip
    sources = [open_pool_source(p, **options) for p in paths]
    pool_bands = BandSet.parse(cfg.pool_bands) if cfg.pool_bands else None
    return PatchPool(sources, cfg.patch_size, cfg.patches, pool_bands, seed=cfg.seed)


def _monitor(cfg: PretrainConfig, pool_bands: BandSet, opened: Any = None) -> tuple[Any, Any, int] | None:
    """(bank, test, classes) of the labelled monitor, its bands mapped to the pool's."""
    if not cfg.monitor and opened is None:
        return None
    from eotransfer.data.base import Subset, open_dataset
    from eotransfer.data.pool import PatchPool
    from eotransfer.data.splits import make_split

    ds = opened if opened is not None else open_dataset(str(cfg.monitor), bands=cfg.monitor_bands, nodata="mask")
    split = make_split("k-per-class", ds.labels, seed=cfg.seed, k=cfg.monitor_per_class, val_per_class=0,
                       classes=ds.classes)  # fmt: skip
    if len(split.test) == 0:
        raise ConfigError(
            f"--monitor {cfg.monitor}: no samples left to test after --monitor-per-class {cfg.monitor_per_class}"
        )
    mapped = PatchPool([ds], cfg.patch_size, 0, pool_bands, seed=cfg.seed)  # centre-free crops, pool bands
    mapped.labels = ds.labels.copy()

    class _Labelled(Subset):
        def __getitem__(self, i: int) -> dict[str, Any]:
            j = int(self.indices[i])
            return {"image": torch.from_numpy(mapped.read(j)), "label": int(ds.labels[j]), "index": j}

    return _Labelled(ds, split.train), _Labelled(ds, split.test), len(ds.classes)


def _hardware(engine: Any) -> str:
    dev = engine.fabric.device
    if dev.type == "cuda":
        return f"{engine.fabric.world_size}× {torch.cuda.get_device_name(dev)} ({engine.fabric._precision.__class__.__name__})"
    return f"CPU ({os.cpu_count()} cores, {platform.machine()}, {torch.get_num_threads()} threads)"


def pretrain(
    data: str | Path | list[Any] = "", method_params: dict[str, Any] | None = None, monitor_data: Any = None,
    **options: Any,
) -> PretrainResult:  # fmt: skip
    """Self-supervised pre-training; ``options`` are :class:`PretrainConfig` fields, others the method's parameters.

    ``data`` may also be a list of opened :class:`~eotransfer.data.base.EODataset` (labels ignored), and
    ``monitor_data`` an opened labelled data set for the monitor.
    """
    from eotransfer.engine.checkpoint import config_hash
    from eotransfer.engine.loop import Engine, EngineConfig
    from eotransfer.evaluation.knn import FeatureMonitor
    from eotransfer.models.backbones import create_backbone, get_architecture
    from eotransfer.pretrain.base import SSLModel, get_method

    t0 = time.perf_counter()
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    mparams = dict(method_params or {})
    mparams.update({k: v for k, v in options.items() if k not in names})
    cfg = PretrainConfig(**{k: v for k, v in options.items() if k in names})
    opened = list(data) if isinstance(data, list) else None
    cfg.data = ",".join(str(getattr(d, "root", d)) for d in opened) if opened else str(data or cfg.data)
    validate_params(cfg)
    if not cfg.out:
        raise ConfigError("pretrain: --out (the backbone folder to write) is required")
    method_cls = get_method(cfg.method)
    method = method_cls(make_params(method_cls, mparams), patch_size=cfg.patch_size)
    arch = get_architecture(cfg.backbone)
    pool = open_pool(cfg, opened)
    if method.params.batch_size > len(pool):
        raise ConfigError(
            f"--batch-size {method.params.batch_size} is larger than the pool ({len(pool)} patches); lower "
            "--batch-size or draw more with --patches"
        )
    loaded_norm = None
    if cfg.weights:
        from eotransfer.models.weights import resolve_weights

        loaded = resolve_weights(cfg.weights, arch.name)
        if loaded.normalization and list(loaded.normalization.get("bands", [])) == pool.bands.keys:
            loaded_norm = Normalizer.from_dict(loaded.normalization)  # continued pre-training keeps its input scale
    normalizer = loaded_norm or Normalizer.fit(
        pool.read, np.arange(len(pool)), pool.bands, cfg.normalization, seed=cfg.seed
    )
    backbone = create_backbone(
        cfg.backbone, pool.bands, cfg.weights, cfg.band_policy, cfg.patch_size, cfg.seed, cfg.verbose
    )
    model = SSLModel(backbone.module, backbone.num_features, len(pool.bands))
    model.normalize.set_from(normalizer)
    torch.manual_seed(cfg.seed)
    method.build(model)
    monitor = _monitor(cfg, pool.bands, monitor_data)
    if monitor is not None:
        method.monitor = FeatureMonitor(monitor[0], monitor[1], monitor[2])

    out = Path(cfg.out)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("out", "resume", "progress", "verbose", "accelerator", "devices", "num_workers", "register")}  # fmt: skip
    chash = config_hash({"pretrain": settings, "method": dataclasses.asdict(method.params)})
    ckpt_dir = out.with_name(f".{out.name}.checkpoints")
    engine = Engine(EngineConfig(seed=cfg.seed, accelerator=cfg.accelerator, devices=cfg.devices, checkpoint_dir=ckpt_dir,
                                 resume=cfg.resume, config_hash=chash, progress=cfg.progress, num_workers=cfg.num_workers,
                                 time_budget_s=cfg.max_minutes * 60 if cfg.max_minutes else None, run_kind=f"pretrain:{method.name}"))  # fmt: skip
    history = engine.fit(model, method, pool, monitor[1] if monitor else None)
    seconds = time.perf_counter() - t0

    licences = _split_list(cfg.data_licence) or ["unspecified"]
    if len(licences) == 1:
        licences *= len(pool.sources)
    if len(licences) != len(pool.sources):
        raise ConfigError(
            f"--data-licence: {len(licences)} licences for {len(pool.sources)} sources; give one, or one per source"
        )
    data_rows = [
        {**row, "name": Path(row["path"]).name, "licence": lic}
        for row, lic in zip(pool.describe(), licences, strict=True)
    ]
    steps = sum(1 for _ in range(0, len(pool), method.params.batch_size)) * len(history)
    last = history[-1] if history else {}
    card: dict[str, Any] = {
        "kind": "eotransfer-backbone",
        "name": out.name,
        "arch": cfg.backbone,
        "num_features": backbone.num_features,
        "img_size": cfg.patch_size,
        "bands": pool.bands.to_list(),
        "normalization": normalizer.to_dict(),
        "band_mapping": backbone.mapping.to_dict() if backbone.mapping else None,
        "pretraining": {
            "method": method.name,
            "paper": _first_paragraph(method_cls),
            "params": dataclasses.asdict(method.params),
            "initialised_from": backbone.weights,
            "data": data_rows,
            "pool_patches": len(pool),
            "epochs": len(history),
            "steps": steps,
            "hardware": _hardware(engine),
            "seconds": round(seconds, 1),
            "final_loss": last.get("train_loss"),
            "monitor": {k: last[k] for k in ("knn_accuracy", "linear_accuracy") if k in last}
            | (
                {"data": cfg.monitor or str(getattr(monitor_data, "root", "")), "per_class": cfg.monitor_per_class}
                if monitor
                else {}
            ),
        },
        "licences": sorted(set(licences)),
        "redistributable": all(lic.lower().replace(" ", "-") in REDISTRIBUTABLE for lic in licences),
        "settings": settings,
    }
    save_backbone(out, model, card, history, half=cfg.half, int8=cfg.int8)
    import shutil

    shutil.rmtree(ckpt_dir, ignore_errors=True)
    if cfg.register:
        from eotransfer.models.catalogue import register

        print(f"registered as eotransfer:{cfg.register} in {register(out, cfg.register)}")
    if cfg.verbose:
        print(f"pre-trained {cfg.backbone} with {method.name}: {len(history)} epochs, {steps} steps, {seconds:.0f} s; "
              f"final loss {last.get('train_loss', float('nan')):.4f}; monitor {card['pretraining']['monitor']}")  # fmt: skip
    return PretrainResult(model, card, history, out, seconds)


def _first_paragraph(cls: type) -> str:
    """The first paragraph of the module docstring of ``cls`` (which names the method and its paper)."""
    import importlib

    doc = importlib.import_module(cls.__module__).__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def render_backbone_card(card: dict[str, Any]) -> str:
    """The Markdown model card of a pre-trained backbone."""
    pre = card["pretraining"]
    norm = Normalizer.from_dict(card["normalization"])
    center, scale = norm.center_scale()
    lines = [f"# Pre-trained backbone: {card['name']}", "",
             f"- **architecture**: {card['arch']} ({card['num_features']} features), trained on {card['img_size']} px patches",
             f"- **method**: {pre['method']} — {pre['paper']}",
             f"- **initialised from**: {json.dumps(pre['initialised_from'])}",
             f"- **training**: {pre['epochs']} epochs, {pre['steps']} steps over {pre['pool_patches']} patches, "
             f"{pre['seconds']} s on {pre['hardware']}; final loss {pre['final_loss']}",
             f"- **monitor** (frozen features): {json.dumps(pre['monitor'])}",
             f"- **licences of the data**: {', '.join(card['licences'])} — weights "
             + ("may be redistributed" if card["redistributable"] else "must NOT be redistributed or shipped"),
             "", "## Bands (input order) and normalisation", "", "| # | band | λ nm | centre | scale |", "|---|---|---|---|---|"]  # fmt: skip
    for i, b in enumerate(card["bands"]):
        lines.append(
            f"| {i} | {b['sensor']}:{b['name']} ({b['common_name']}) | {b['wavelength_nm']:.0f} | {center[i]:.4g} | {scale[i]:.4g} |"
        )
    lines += [
        "",
        "## Data",
        "",
        "| source | format | samples | patches | licence | pool bands it fills |",
        "|---|---|---|---|---|---|",
    ]
    for d in pre["data"]:
        lines.append(
            f"| {d['path']} | {d['format']} | {d['samples']} | {d['patches']} | {d['licence']} | {len(d['fills'])} of {len(card['bands'])} |"
        )
    lines += ["", "## Method parameters", "", "```json", json.dumps(pre["params"], indent=1), "```", ""]
    return "\n".join(lines)


def save_backbone(
    out: Path, model: Any, card: dict[str, Any], history: list[dict[str, Any]], half: bool = False, int8: bool = False
) -> Path:
    """Write the backbone folder atomically: weights, card.json, card.md, history.csv, loss.png."""
    from safetensors.torch import save_file

    from eotransfer import __version__
    from eotransfer.api import history_csv
    from eotransfer.card import atomic_write_dir
    from eotransfer.evaluation.plots import plot_history

    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.backbone.state_dict().items()}  # fmt: skip
    card = {**card, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "eotransfer_version": __version__,
            "dtype": "int8" if int8 else "float16" if half else "float32"}  # fmt: skip
    if int8:
        from eotransfer.models.weights import quantize_int8

        state = quantize_int8(state)

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / "weights.safetensors"))
        (tmp / "card.json").write_text(json.dumps(card, indent=1, default=str))
        (tmp / "card.md").write_text(render_backbone_card(card))
        (tmp / "history.csv").write_text(history_csv(history))
        if history:
            plot_history(
                history, tmp / "history.png", title=f"{card['pretraining']['method']} pre-training of {card['arch']}"
            )

    return atomic_write_dir(out, write)
