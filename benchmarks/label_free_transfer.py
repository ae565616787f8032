"""Can unlabelled images tell whether pre-trained weights transfer?  Label-free signals against the grids.

``advise`` decides whether the pre-trained weights transfer with its transfer probe: a cross-validated
logistic regression on frozen pre-trained vs. randomly initialised features.  With 5-20 labels per class
(10-40 samples) the probe is too noisy to decide (``results/advise_validation_auto/``: on xBD it kept the
EuroSAT weights, which cost 11-24 points).  Users hold many unlabelled images, so this script measures
three signals that need no labels, on each grid's images, and sets them beside what the grid measured:

- **RankMe** (Garrido et al. 2023, "RankMe: Assessing the Downstream Performance of Pretrained
  Self-Supervised Representations by Their Rank", ICML): the effective rank exp(H(σ/‖σ‖₁)) of the
  pooled feature matrix, pre-trained against random init; on raw and on per-feature standardised features.
- **BatchNorm mismatch** (the premise of AdaBN, Li et al. 2016): the mean KL divergence between each
  BatchNorm layer's input statistics on these images and its stored running statistics.
- for reference, the transfer probe with *every* label (5-fold logistic regression, pre-trained vs. random),
  and the grid's gain: best pre-trained strategy minus best from-scratch strategy at each labels-per-class
  setting (strategies adapting to the test images left out).

A signal is useful if it orders the data sets as the grids' gains do: here xBD is the one where the
EuroSAT weights do not transfer.

    OMP_NUM_THREADS=1 python benchmarks/label_free_transfer.py \
        --grid benchmarks/configs/eurosat_grid.yaml:benchmarks/results/eurosat_grid_cpu/results.csv \
        --grid benchmarks/configs/harvey_grid.yaml:benchmarks/results/harvey_grid_cpu/results.csv \
        --grid benchmarks/configs/xbd_grid.yaml:benchmarks/results/xbd_grid_cpu/results.csv \
        --out benchmarks/results/label_free_transfer_cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

WEIGHTS = "eotransfer:eurosat-s2-resnet10t-moco"


def effective_rank(features: np.ndarray) -> float:
    """RankMe: exp of the entropy of the normalised singular values (Garrido et al. 2023, eq. 1)."""
    s = np.linalg.svd(np.asarray(features, dtype=np.float64), compute_uv=False)
    p = s / max(float(s.sum()), 1e-12) + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def gaussian_kl(mean: torch.Tensor, var: torch.Tensor, ref_mean: torch.Tensor, ref_var: torch.Tensor) -> float:
    """Mean over channels of KL(N(mean, var) ‖ N(ref_mean, ref_var))."""
    kl = 0.5 * (torch.log(ref_var / var) + (var + (mean - ref_mean) ** 2) / ref_var - 1)
    return float(kl.mean())


@torch.no_grad()
def signals(ds: Any, idx: np.ndarray, weights: str | None, seed: int = 0) -> tuple[np.ndarray, float]:
    """Pooled resnet10t features of ``ds[idx]`` (inputs normalised as ``fit`` would) and the BatchNorm mismatch."""
    from eotransfer.api import choose_normalizer
    from eotransfer.models.backbones import create_backbone

    size = int(ds.checked_read(int(idx[0])).shape[-1])
    bb = create_backbone("resnet10t", ds.bands, weights, None, size, seed, False)
    cfg = argparse.Namespace(normalization="auto", seed=0)
    norm = choose_normalizer(cfg, ds, idx, bb.weights.get("normalization"))
    net = bb.module.eval()
    mismatch: list[float] = []

    def hook(mod: torch.nn.BatchNorm2d, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inp[0]
        assert mod.running_mean is not None and mod.running_var is not None
        mismatch.append(gaussian_kl(x.mean((0, 2, 3)), x.var((0, 2, 3)) + mod.eps, mod.running_mean,
                                    mod.running_var + mod.eps))  # fmt: skip

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    feats = []
    for s in range(0, len(idx), 100):
        x = norm(torch.stack([torch.as_tensor(ds.checked_read(int(i))) for i in idx[s : s + 100]]).float())
        out = net(x)
        feats.append((out if out.ndim == 2 else out.mean((2, 3))).numpy())
    for h in hooks:
        h.remove()
    return np.concatenate(feats), float(np.mean(mismatch))


def grid_gains(table: Path) -> dict[str, float]:
    """Best pre-trained minus best from-scratch mean accuracy per labels-per-class setting of a grid table."""
    import dataclasses

    from eotransfer.evaluation.benchmark import read_results
    from eotransfer.strategies.base import get_strategy

    def adapts(strategy: str) -> bool:  # it adapts to the test side's images: not comparable without them
        return "target" in {f.name for f in dataclasses.fields(get_strategy(strategy).Params)}

    acc: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in read_results(table):
        if r["init"] == "—" or adapts(str(r["strategy_name"])):  # the band-statistics reference; adaptation
            continue
        init = "pretrained" if r["weights"] else "scratch"
        acc[(str(r["k"]), init, r["strategy"])].append(float(r["accuracy"]))
    gains = {}
    for k in sorted({key[0] for key in acc}, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0)):
        best = {i: max((float(np.mean(v)) for (kk, ii, _), v in acc.items() if kk == k and ii == i), default=np.nan)
                for i in ("pretrained", "scratch")}  # fmt: skip
        gains[k] = round(100 * (best["pretrained"] - best["scratch"]), 1)
    return gains


def main() -> None:
    from eotransfer.evaluation.benchmark import BenchmarkConfig, open_benchmark_data
    from eotransfer.evaluation.classical import fit_cv

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", action="append", required=True, help="CONFIG.yaml:results.csv of a finished grid")
    ap.add_argument("--samples", type=int, default=800, help="images per data set (a seeded random subset)")
    ap.add_argument("--init-seeds", type=int, default=3, help="initialisations of the random network")
    ap.add_argument("--out", default="benchmarks/results/label_free_transfer_cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.grid:
        config, table = spec.split(":")
        t0 = time.time()
        bench = BenchmarkConfig.from_yaml(config)
        ds = open_benchmark_data(bench)
        idx = np.sort(np.random.default_rng(0).choice(len(ds), min(len(ds), args.samples), replace=False))
        y = np.asarray(ds.labels)[idx]
        row: dict[str, Any] = {"data": bench.name, "n": len(idx)}
        for name, w in (("pretrained", WEIGHTS), ("random", None)):
            # the random network's signals vary with its initialisation: the mean over --init-seeds (and the spread)
            per_seed = []
            for seed in range(1 if w else args.init_seeds):
                f, bn = signals(ds, idx, w, seed)
                per_seed.append([effective_rank(f), effective_rank((f - f.mean(0)) / (f.std(0) + 1e-6)), bn,
                                 float(fit_cv("logreg", f, y, 5, 0)[1]["cv_score"])])  # fmt: skip
            m, sd = np.mean(per_seed, 0), np.std(per_seed, 0)
            for j, (key, nd) in enumerate((("rankme", 1), ("rankme_std", 1), ("bn_kl", 2), ("probe", 3))):
                row[f"{key}_{name}"] = round(float(m[j]), nd)
                # one pre-trained network: no spread to report (None, not a standard deviation of 0)
                row[f"{key}_{name}_sd"] = round(float(sd[j]), nd + 1) if len(per_seed) > 1 else None
        row["gain_points"] = grid_gains(Path(table))
        row["seconds"] = round(time.time() - t0)
        print(json.dumps(row), flush=True)
        rows.append(row)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# Label-free transfer signals vs. the grids (EuroSAT MoCo resnet10t vs. random init)", "",
        f"`{' '.join(['python', *sys.argv])}` — {platform.node() or 'this machine'}, CPU, 1 torch thread", "",
        "| data | images | RankMe pre / random (ratio) | RankMe standardised pre / random (ratio) | BatchNorm KL pre-trained "
        "| probe, every label: pre / random | grid gain, best pre-trained − best scratch (points) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    lines.insert(3, f"Random init: mean ± standard deviation over {args.init_seeds} initialisations.\n")
    for r in rows:
        gains = ", ".join(f"k={k}: {g:+.1f}" for k, g in r["gain_points"].items())
        lines.append(
            f"| {r['data']} | {r['n']} | {r['rankme_pretrained']} / {r['rankme_random']} "
            f"± {r['rankme_random_sd']} ({r['rankme_pretrained'] / r['rankme_random']:.2f}) | {r['rankme_std_pretrained']} / "
            f"{r['rankme_std_random']} ± {r['rankme_std_random_sd']} ({r['rankme_std_pretrained'] / r['rankme_std_random']:.2f}) | "
            f"{r['bn_kl_pretrained']} | {r['probe_pretrained']:.3f} / {r['probe_random']:.3f} ± {r['probe_random_sd']} | {gains} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
