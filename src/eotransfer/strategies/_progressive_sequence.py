"""A sequence of tasks from one config: progressive networks against naive sequential fine-tuning and independent columns.

The config (a dict, or a YAML file for ``eotransfer progressive-sequence``)::

    backbone: resnet10t
    weights: eotransfer:eurosat-s2-resnet10t-moco
    seed: 0
    out: runs/sequence              # one model directory per method and step, and the tables
    band_policy: zero               # bands a column or backbone lacks: zero | mean (default: error)
    params: {head_epochs: 10, epochs: 5}   # strategy parameters of every step
    methods: [progressive, naive, independent]
    tasks:
      - {name: eurosat, data: data/eurosat-ms, bands: eurosat-ms}
      - {name: harvey, data: data/hurricane-harvey, epochs: 3}   # any fit option or strategy parameter

Step 1 fine-tunes the backbone on the first task (``finetune``); that model is the first column of
the progressive networks and the start of the other two methods.  At step k:

* ``progressive``: ``fit --strategy progressive --previous <step k-1>`` (Rusu et al. 2016);
* ``naive``: ``finetune`` starting from the step k-1 network's backbone, a new head; the earlier
  heads are kept and score their tasks through the *current* backbone, which shows forgetting;
* ``independent``: ``finetune`` of the pre-trained backbone on task k alone.

Every model is scored on the fixed test split of every task seen so far.  Forgetting of a task is
its accuracy right after its step minus its accuracy after the last step; forward transfer is the
accuracy on the new task minus the independent column's.  Each task's test split is the same for
the three methods.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eotransfer.errors import ConfigError

METHODS = ("progressive", "naive", "independent")


class NaiveTaskNetwork(nn.Module):
    """An earlier task's normaliser and head around the current, sequentially fine-tuned backbone."""

    def __init__(self, earlier: nn.Module, current: nn.Module, input_map: nn.Module) -> None:
        super().__init__()
        self.normalize, self.head = earlier.normalize, earlier.head  # type: ignore[union-attr]
        self.input_map, self.backbone = input_map, current.backbone  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.input_map(self.normalize(x))))  # type: ignore[operator]


@torch.no_grad()
def accuracy(network: nn.Module, ds: Any, indices: np.ndarray, batch_size: int = 128) -> float:
    """Overall accuracy of ``network`` (raw images → logits in the data set's class order) on ``indices``."""
    network.eval()
    correct = 0
    for s in range(0, len(indices), batch_size):
        idx = indices[s : s + batch_size]
        x = torch.from_numpy(np.stack([ds.checked_read(int(i)) for i in idx]))
        correct += int((network(x).argmax(1).numpy() == ds.labels[idx]).sum())
    return correct / max(len(indices), 1)


def _load_config(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(config, dict):
        return dict(config)
    import yaml

    p = Path(config)
    if not p.is_file():
        raise ConfigError(f"progressive-sequence: no such config file {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with a 'tasks' list")
    return {k.replace("-", "_"): v for k, v in data.items()}


def run_sequence(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """Run the tasks of ``config`` in order with each method; returns the per-step accuracies and a summary."""
    from eotransfer.api import FitConfig, fit, load_data, make_fit_split
    from eotransfer.card import load_model
    from eotransfer.data.base import EODataset
    from eotransfer.models.progressive import InputMap, TaskSpec
    from eotransfer.strategies.finetune import FinetuneParams
    from eotransfer.strategies.progressive import ProgressiveParams

    cfg = _load_config(config)
    tasks = cfg.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) and t.get("data") for t in tasks):
        raise ConfigError("tasks: give a list of tasks, each with its 'data' (and optionally name, bands, epochs ...)")
    methods = list(cfg.get("methods", METHODS))
    if unknown := [m for m in methods if m not in METHODS]:
        raise ConfigError(f"methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    fit_keys = {f.name for f in dataclasses.fields(FitConfig)}
    ft_keys = {f.name for f in dataclasses.fields(FinetuneParams)}
    prog_keys = {f.name for f in dataclasses.fields(ProgressiveParams)}
    policy = cfg.get("band_policy")
    shared_keys = ("backbone", "weights", "seed", "accelerator", "progress", "verbose")
    common: dict[str, Any] = {k: cfg[k] for k in shared_keys if k in cfg}
    common.setdefault("backbone", "resnet10t")
    out = Path(cfg["out"]) if cfg.get("out") else Path(tempfile.mkdtemp(prefix="eotransfer-sequence-"))
    params = dict(cfg.get("params") or {})
    names = [str(t.get("name") or Path(str(t["data"])).name) for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks: names must differ (got {', '.join(names)}); give each task a 'name'")

    opened: list[tuple[Any, Any, dict[str, Any]]] = []
    for name, t in zip(names, tasks, strict=True):
        options = {k: v for k, v in t.items() if k not in ("name", "data")}
        if bad := [k for k in options if k not in fit_keys | prog_keys]:
            raise ConfigError(f"tasks: '{bad[0]}' of task '{name}' is neither a fit option nor a strategy parameter")
        fc = FitConfig(**{**{k: v for k, v in common.items() if k in fit_keys},
                          **{k: v for k, v in options.items() if k in fit_keys}})  # fmt: skip
        ds = t["data"] if isinstance(t["data"], EODataset) else load_data(dataclasses.replace(fc, data=str(t["data"])))
        opened.append((ds, make_fit_split(fc, ds), options))

    dirs: dict[str, list[Path]] = {m: [] for m in methods}
    rows: list[dict[str, Any]] = []
    for k, (name, (ds, split, options)) in enumerate(zip(names, opened, strict=True)):
        fit_opts: dict[str, Any] = {
            **common,
            "band_policy": policy,
            **{kk: v for kk, v in options.items() if kk in fit_keys},
        }
        sp = {**params, **{kk: v for kk, v in options.items() if kk not in fit_keys}}
        runs: dict[str, dict[str, Any]] = {}
        for method in methods:
            if k == 0:  # one fine-tuned first column, shared by every method
                runs[method] = {"strategy": "finetune", "shared": True}
            elif method == "progressive":
                runs[method] = {"strategy": "progressive", "previous": str(dirs[method][-1]), "task": name,
                                "column_band_policy": policy}  # fmt: skip
            else:
                start = str(dirs[method][-1]) if method == "naive" else common.get("weights")
                runs[method] = {"strategy": "finetune", "weights": start}
        first: Path | None = None
        for method, run in runs.items():
            if run.pop("shared", False) and first is not None:
                dirs[method].append(first)
                continue
            keys = prog_keys if run["strategy"] == "progressive" else ft_keys
            target = out / name if k == 0 else out / method / f"step{k + 1}-{name}"  # card name = first task name
            own = {kk: v for kk, v in sp.items() if kk in keys and kk not in ("previous", "task")}
            fit(ds, split_override=split, out=str(target), **{**fit_opts, **run, **own})
            dirs[method].append(target)
            first = first or target
        for method in methods:  # score every task seen so far
            for c in range(k + 1):
                ds_c, split_c, _ = opened[c]
                if method == "progressive":
                    network = load_model(dirs[method][k], task=names[c] if k else None).network
                elif method == "independent" or c == k:
                    network = load_model(dirs[method][c]).network
                else:
                    current, earlier = load_model(dirs[method][k]), load_model(dirs[method][c])
                    spec = TaskSpec(names[c], earlier.classes, earlier.bands, "", band_policy=policy)
                    imap = InputMap(spec, current.bands, f"the step-{k + 1} backbone")
                    network = NaiveTaskNetwork(earlier.network, current.network, imap)
                acc = accuracy(network, ds_c, np.asarray(split_c.test))
                rows.append({"seed": common.get("seed", 0), "method": method, "step": k + 1, "trained": name,
                             "task": names[c], "accuracy": acc})  # fmt: skip
    summary = summarize(rows, names)
    write_tables(out, rows, summary)
    return {
        "rows": rows,
        "summary": summary,
        "dirs": {m: [str(d) for d in v] for m, v in dirs.items()},
        "out": str(out),
    }


def summarize(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Per method and task: accuracy right after its step and after the last, forgetting, and forward transfer."""
    acc = {(r["method"], r["step"], r["task"]): r["accuracy"] for r in rows}
    last = len(names)
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for c, name in enumerate(names):
            own, final = acc[(method, c + 1, name)], acc[(method, last, name)]
            indep = acc.get(("independent", c + 1, name))
            out.append({"method": method, "task": name, "after_own_step": own, "after_last_step": final,
                        "forgetting": own - final,
                        "forward_transfer": None if indep is None or c == 0 else own - indep})  # fmt: skip
    return out


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_tables(out: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    """``sequence.csv`` (every score) and ``sequence.md`` (the summary) under ``out``."""
    import csv
    import io

    from eotransfer.card import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "sequence.csv", buf.getvalue())
    head = list(summary[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(s[h]) for h in head) + " |" for s in summary]
    atomic_write_text(out / "sequence.md", "\n".join(lines) + "\n")
