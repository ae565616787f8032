"""Large-raster prediction: throughput (pixels per second) and peak resident memory against raster size.

For each size S in ``--sizes``: a S×S, 13-band uint16 tiled GeoTIFF (Sentinel-2 L1C-like DN,
UTM 33N, 10 m) is generated on disk, then predicted by ``predict_raster`` in a *fresh* subprocess
(so its peak memory is its own) into a Cloud-Optimised GeoTIFF: resnet10t with the shipped
``eotransfer:eurosat-s2-resnet10t-moco`` backbone (13 S2 bands, its own normalisation) and a
seeded random 10-class head; ``--patch`` px windows, ``--overlap``, blocks of ``--block-size``.
The child reports wall time (prediction; overviews + COG copy), pixels/s, and the peak resident
set (``ru_maxrss`` and /proc VmHWM); with ``--accelerator cuda`` the network runs on the GPU (windows are
still read, cut, blended and written on the CPU) and the child also reports the GPU's peak allocated
memory.  Each generated raster and its output are deleted afterwards; results are written after each size.

The content is a 512×512 pattern of smooth spectra repeated over the raster, each repeat shifted
by a random per-tile 13-band offset (seed 0), so the class map varies from tile to tile.

    .venv/bin/python benchmarks/large_raster.py [--sizes 2500,5000,20000] [--patch 32] [--overlap 0]
        [--batch-size 256] [--block-size 512] [--threads 2] [--accelerator cpu|cuda|auto] [--network-windows N]
        [--read-ahead N] [--compress none|deflate|zstd]
        [--workdir /tmp/eot-large-raster] [--out benchmarks/results/large_raster_cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

N_BANDS = 13
TILE = 512
MODELS = {
    "resnet10t": "resnet10t, eotransfer:eurosat-s2-resnet10t-moco, random 10-class head (seed 0)",
    "band-means": "no network: window band means through a fixed random 13x10 linear map + softmax (seed 0)",
}


def generate(path: Path, size: int, seed: int = 0, compress: str = "none") -> float:
    """Write the S×S×13 uint16 raster (512 px tiles; ``compress``: none, deflate or zstd) block by block.

    Returns seconds.  Compressed inputs use the horizontal predictor, as Sentinel-2 COGs do.
    """
    import rasterio
    from affine import Affine

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    base = np.stack([1200 + 400 * np.sin(x / (40 + 7 * b) + b) * np.cos(y / (55 + 5 * b)) for b in range(N_BANDS)])
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": N_BANDS, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5_000_000.0),
        "tiled": True, "blockxsize": TILE, "blockysize": TILE, "interleave": "pixel", "BIGTIFF": "YES",
    }  # fmt: skip
    if compress != "none":
        profile.update(compress=compress, predictor=2)
    from rasterio.windows import Window

    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, TILE):
            for c in range(0, size, TILE):
                h, w = min(TILE, size - r), min(TILE, size - c)
                shift = rng.normal(0, 600, (N_BANDS, 1, 1)).astype(np.float32)
                block = np.clip(base[:, :h, :w] + shift, 1, 65535).astype(np.uint16)
                dst.write(block, window=Window(c, r, w, h))
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """Predict one raster (run in its own process) and print a JSON line of timings and memory."""
    import torch

    torch.set_num_threads(args.threads)
    from eotransfer.bands import BandSet
    from eotransfer.card import SavedModel
    from eotransfer.data.normalization import Normalizer
    from eotransfer.models.backbones import create_backbone
    from eotransfer.models.model import EOClassifier
    from eotransfer.predict import cog
    from eotransfer.predict.raster import predict_raster

    bands = BandSet.parse("eurosat-ms")
    classes = [f"class{i}" for i in range(10)]
    if args.predictor == "resnet10t":
        bb = create_backbone("resnet10t", bands, "eotransfer:eurosat-s2-resnet10t-moco", None, args.patch, 0, False)
        net = EOClassifier(bb.module, bb.num_features, len(classes), len(bands))
        torch.manual_seed(0)
        net.head.reset_parameters()
        net.normalize.set_from(Normalizer.from_dict(bb.weights["normalization"]).subset(bands.keys))
        saved = SavedModel(net.eval(), {"bands": bands.to_list(), "classes": classes}, Path(".")).to(args.accelerator)

        def predictor(x: np.ndarray) -> np.ndarray:
            return saved.predict_proba(x, batch_size=args.batch_size)
    else:  # band means through a fixed random linear map: everything but the network
        w = np.random.default_rng(0).normal(0, 1 / 600, (N_BANDS, len(classes))).astype(np.float32)

        def predictor(x: np.ndarray) -> np.ndarray:
            z = (np.nanmean(x, axis=(2, 3)) - 1200) @ w
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

    network: dict[str, float] = {}
    if args.network_windows:  # the predictor alone on in-memory windows: the rate the network allows
        xs = np.random.default_rng(0).uniform(500, 3000, (args.batch_size, N_BANDS, args.patch, args.patch))
        xs = xs.astype(np.float32)
        predictor(xs)  # warm-up (cuDNN's choice of kernels, allocator)
        t, n = time.perf_counter(), 0
        while n < args.network_windows:
            predictor(xs)
            n += len(xs)
        rate = n / (time.perf_counter() - t)
        network = {"network_windows_per_s": round(rate, 1), "network_pixels_per_s": round(rate * args.patch**2)}
    timings = {"finish_s": 0.0}
    real_finish = cog.CogWriter.finish

    def timed(fn: Any) -> Any:
        def wrapper(self: Any) -> None:
            t = time.perf_counter()
            fn(self)
            timings["finish_s"] += time.perf_counter() - t

        return wrapper

    cog.CogWriter.finish = timed(real_finish)  # type: ignore[method-assign]  # it calls close_parts (no preview)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
    t0 = time.perf_counter()
    summary = predict_raster(
        args.child[0], predictor, args.child[1], classes,
        args.patch, overlap=args.overlap, batch_size=args.batch_size, block_size=args.block_size, progress=False,
        **({} if args.read_ahead is None else {"read_ahead": args.read_ahead}),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = ru.ru_utime + ru.ru_stime - cpu0
    hwm = next(
        (
            int(line.split()[1])
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM")
        ),
        None,
    )
    pixels = summary["width"] * summary["height"]
    print(json.dumps({
        "size": summary["width"], "pixels": pixels, "windows": summary["n_windows"], "seconds": round(wall, 2),
        "predict_s": round(wall - timings["finish_s"], 2), "overviews_and_cog_s": round(timings["finish_s"], 2),
        "pixels_per_s": round(pixels / wall), "windows_per_s": round(summary["n_windows"] / wall, 1),
        "cpu_s": round(cpu_s, 1), "pixels_per_cpu_s": round(pixels / cpu_s),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_model_load_mib": round(rss_before / 1024, 1),
        "vm_hwm_mib": round(hwm / 1024, 1) if hwm else None,
        "output_bytes": Path(args.child[1]).stat().st_size, "overviews": summary["overviews"],
        **network, "gpu_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }))  # fmt: skip


def write_results(args: argparse.Namespace, out: Path, rows: list[dict[str, Any]]) -> None:
    """results.json and results.md for the sizes done so far."""
    gpu = None
    if args.accelerator != "cpu":
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    cpu = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "hardware": f"GPU {gpu} (the network); {cpu} (reading, windows, blending, writing, overviews)"
        if gpu else f"CPU, {cpu}, shared with other work",
        "python": platform.python_version(), "seed": 0, "model": MODELS[args.predictor],
        "load_average_at_start": args.load_at_start, "accelerator": "cuda" if gpu else "cpu", "patch": args.patch, "overlap": args.overlap, "batch_size": args.batch_size,
        "block_size": args.block_size, "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M"),
        "read_ahead": args.read_ahead, "input_compress": args.compress,
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# Large-raster prediction, {'GPU' if gpu else 'CPU'}", "", f"`{meta['command']}`", "",
        f"{meta['hardware']}; {meta['model']}; {args.patch} px windows, overlap {args.overlap}, "
        f"batches of {args.batch_size}, {args.block_size} px blocks, {args.threads} torch threads, read-ahead "
        f"{'default' if args.read_ahead is None else args.read_ahead}; input: 13-band uint16 tiled GeoTIFF "
        f"({args.compress}; generated, seed 0, deleted afterwards); output: COG, class + 10 "
        "probability bands (uint8 percent) with overviews.", "",
        f"Load average when it started: {meta['load_average_at_start']} (where cores are shared, wall times "
        "are inflated by other work; pixels per CPU-second is the steadier figure).", "",
        "| side px | pixels | windows | total s | predict s | overviews+COG s | pixels/s | CPU s | pixels/CPU-s "
        "| peak RSS MiB | VmHWM MiB |" + (" GPU peak MiB |" if gpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['pixels']:,} | {r['windows']:,} | {r['seconds']} | {r['predict_s']} | "
            f"{r['overviews_and_cog_s']} | {r['pixels_per_s']:,} | {r['cpu_s']} | {r['pixels_per_cpu_s']:,} | "
            f"{r['peak_rss_mib']} | {r['vm_hwm_mib']} |" + (f" {r.get('gpu_peak_mib')} |" if gpu else "")
        )
    for r in rows:
        if "network_windows_per_s" in r:
            lines.append(
                f"\nThe predictor alone on in-memory {args.patch} px windows ({r['size']:,}² run, batches of "
                f"{args.batch_size}, host-to-device copies included): {r['network_windows_per_s']:,} windows/s = "
                f"{r['network_pixels_per_s']:,} pixels/s at overlap 0."
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2500,5000,20000", help="raster sides in pixels, comma-separated")
    p.add_argument("--predictor", choices=("resnet10t", "band-means"), default="resnet10t")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--overlap", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--block-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--accelerator", default="cpu", help="where the network runs: cpu | cuda | auto")
    p.add_argument("--network-windows", type=int, default=0,
                   help="also time the predictor alone on this many in-memory windows (0: skip)")  # fmt: skip
    p.add_argument("--read-ahead", type=int, default=None,
                   help="blocks read ahead on a background thread (default: predict_raster's)")  # fmt: skip
    p.add_argument("--compress", choices=("none", "deflate", "zstd"), default="none",
                   help="compression of the generated input raster")  # fmt: skip
    p.add_argument("--workdir", default="/tmp/eot-large-raster")
    p.add_argument("--out", default="benchmarks/results/large_raster_cpu")
    p.add_argument("--child", nargs=2, metavar=("RASTER", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    args.load_at_start = os.getloadavg()
    work, out = Path(args.workdir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(work).free / 2**30
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        need_gib = size * size * N_BANDS * 2 * 1.1 / 2**30
        if need_gib > free_gib - 5:
            print(f"skip {size}: needs {need_gib:.1f} GiB, {free_gib:.1f} GiB free", flush=True)
            continue
        raster, result = work / f"raster_{size}.tif", work / f"classes_{size}.tif"
        try:
            gen_s = generate(raster, size, compress=args.compress)
            print(f"{size}²: generated {raster.stat().st_size / 2**30:.2f} GiB in {gen_s:.0f} s", flush=True)
            cmd = [sys.executable, __file__, "--child", str(raster), str(result), "--patch", str(args.patch),
                   "--overlap", str(args.overlap), "--predictor", args.predictor, "--batch-size", str(args.batch_size),
                   "--block-size", str(args.block_size), "--threads", str(args.threads),
                   "--accelerator", args.accelerator, "--network-windows", str(args.network_windows)]  # fmt: skip
            if args.read_ahead is not None:
                cmd += ["--read-ahead", str(args.read_ahead)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["generate_s"] = round(gen_s, 1)
            row["input_gib"] = round(raster.stat().st_size / 2**30, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_results(args, out, rows)
        finally:
            for f in (raster, result):
                f.unlink(missing_ok=True)
    write_results(args, out, rows)


if __name__ == "__main__":
    main()
