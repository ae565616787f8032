"""Do single-date weights see the change in a pre/post stack?  Swap the two dates and compare the features.

When a data set stacks two dates of the same bands (xBD: ``rgb-pre:pre_red/green/blue`` and
``rgb:red/green/blue``) and the weights were trained on one date (the EuroSAT Sentinel-2 weights), the band
mapping fills both dates' channels with the same kernel (``B04`` for ``pre_red`` and ``red``).  The first
convolution then computes ``k * pre + k * post = k * (pre + post)``: the network as loaded is blind to the
order of the dates, hence to the difference between them, which is what damage is.  ``advise`` sets such weights
aside (``BandMapping.shared_kernels``); this script measures the blindness directly:

- pooled features of each chip, and of the same chip with its two dates swapped, for the pre-trained network and
  for randomly initialised ones (whose first-layer kernels differ between the two dates' channels);
- the largest and the mean absolute change of the features, relative to the features' own spread.

A network that sees the change moves its features when the dates swap; one that sees only their sum does not
(up to float rounding).

    OMP_NUM_THREADS=1 python benchmarks/shared_kernels.py --config benchmarks/configs/xbd_grid.yaml \\
        --out benchmarks/results/shared_kernels_cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

WEIGHTS = "eotransfer:eurosat-s2-resnet10t-moco"


def date_swap(keys: list[str], shared: dict[str, list[str]]) -> list[int]:
    """Channel permutation exchanging the data bands that share each kernel (two per kernel: the two dates)."""
    perm = list(range(len(keys)))
    for bands in shared.values():
        if len(bands) != 2:
            raise SystemExit(f"kernel shared by {len(bands)} bands ({', '.join(bands)}): expected two dates")
        a, b = keys.index(bands[0]), keys.index(bands[1])
        perm[a], perm[b] = b, a
    return perm


@torch.no_grad()
def swap_change(ds: Any, idx: np.ndarray, weights: str | None, seed: int, perm: list[int]) -> dict[str, float]:
    """Pooled resnet10t features of ``ds[idx]`` and of the same chips with ``perm`` applied to the channels."""
    from eotransfer.api import choose_normalizer
    from eotransfer.models.backbones import create_backbone

    size = int(ds.checked_read(int(idx[0])).shape[-1])
    bb = create_backbone("resnet10t", ds.bands, weights, None, size, seed, False)
    norm = choose_normalizer(argparse.Namespace(normalization="auto", seed=0), ds, idx, bb.weights.get("normalization"))
    net = bb.module.eval()
    feats, swapped = [], []
    for s in range(0, len(idx), 100):
        x = norm(torch.stack([torch.as_tensor(ds.checked_read(int(i))) for i in idx[s : s + 100]]).float())
        for store, inp in ((feats, x), (swapped, x[:, perm])):
            out = net(inp)
            store.append(out if out.ndim == 2 else out.mean((2, 3)))
    f, g = torch.cat(feats), torch.cat(swapped)
    spread = float(f.std(0).mean())
    return {"max_abs": float((f - g).abs().max()), "mean_abs_rel": float((f - g).abs().mean()) / max(spread, 1e-12)}


def main() -> None:
    from eotransfer.evaluation.benchmark import BenchmarkConfig, open_benchmark_data
    from eotransfer.models.backbones import create_backbone

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="benchmarks/configs/xbd_grid.yaml", help="a benchmark config (its data)")
    ap.add_argument("--samples", type=int, default=400, help="chips (a seeded random subset)")
    ap.add_argument("--init-seeds", type=int, default=3, help="initialisations of the random network")
    ap.add_argument("--out", default="benchmarks/results/shared_kernels_cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    bench = BenchmarkConfig.from_yaml(args.config)
    ds = open_benchmark_data(bench)
    mapping = create_backbone("resnet10t", ds.bands, WEIGHTS, None, int(ds.checked_read(0).shape[-1]), 0, False).mapping
    assert mapping is not None
    print(mapping.table(kernels=True), flush=True)
    if not mapping.shared_kernels:
        raise SystemExit(f"{args.config}: no kernel of {WEIGHTS} fills two data bands; nothing to swap")
    perm = date_swap(list(ds.bands.keys), mapping.shared_kernels)
    idx = np.sort(np.random.default_rng(0).choice(len(ds), min(len(ds), args.samples), replace=False))
    rows: list[dict[str, Any]] = [{"network": "pre-trained", "seed": 0, **swap_change(ds, idx, WEIGHTS, 0, perm)}]
    rows += [
        {"network": "random init", "seed": s, **swap_change(ds, idx, None, s, perm)} for s in range(args.init_seeds)
    ]
    result = {
        "config": args.config, "weights": WEIGHTS, "chips": len(idx), "shared_kernels": mapping.shared_kernels,
        "swap": [ds.bands.keys[i] for i in perm], "rows": rows, "seconds": round(time.time() - t0),
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Features with the two dates swapped: {bench.name}, {WEIGHTS} vs. random init (resnet10t)", "",
        f"`{' '.join(['python', *sys.argv])}` — {platform.node() or 'this machine'}, CPU, 1 torch thread, "
        f"{len(idx)} chips, {result['seconds']} s", "",
        "Shared kernels: " + "; ".join(f"{k} fills {', '.join(v)}" for k, v in mapping.shared_kernels.items()), "",
        "| network | init seed | max abs. change of a feature | mean abs. change / feature spread |",
        "|---|---|---|---|",
    ]  # fmt: skip
    lines += [f"| {r['network']} | {r['seed']} | {r['max_abs']:.2e} | {r['mean_abs_rel']:.2e} |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
