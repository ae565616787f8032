"""The command line, generated from the same dataclasses as the Python API and the YAML configs.

``eotransfer fit`` takes every :class:`~eotransfer.api.FitConfig` field and every registered
strategy's parameters as options (``--labels-per-class 5``, ``--head-epochs 10``); ``--config
file.yaml`` supplies the same keys, and options given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from eotransfer.errors import ConfigError, EOTransferError

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str}


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, seen: set[str]) -> None:
    for f in dataclasses.fields(cls):
        if f.name in seen or f.name == "data":
            continue
        seen.add(f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        annotation = str(f.type)
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if annotation.startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text, **kwargs)
            continue
        base = annotation.split("|")[0].strip()
        kwargs["type"] = _TYPES.get(base, str)
        default = f.default if f.default is not dataclasses.MISSING else None
        parser.add_argument(flag, help=f"{help_text} (default: {default})", **kwargs)


def _strategy_param_classes() -> list[type]:
    from eotransfer import strategies
    from eotransfer.strategies.base import STRATEGIES

    strategies.load_all()
    return [cls.Params for cls in STRATEGIES.values()]


def _method_param_classes() -> list[type]:
    from eotransfer import pretrain
    from eotransfer.pretrain.base import METHODS

    pretrain.load_all()
    return [cls.Params for cls in METHODS.values()]


def _add_config_command(
    sub: Any, name: str, help_text: str, data_help: str, config: type, kind: str, param_classes: list[type]
) -> None:
    """A command whose options come from ``config`` and from every registered ``kind``'s Params (and ``--config`` YAML)."""
    cmd = sub.add_parser(name, help=help_text)
    cmd.add_argument("data", nargs="?", help=f"{data_help} (or `data:` in --config)")
    cmd.add_argument("--config", help="YAML file with the same keys as the options")
    seen: set[str] = set()
    _add_dataclass_options(cmd, config, seen)
    group = cmd.add_argument_group(f"{kind} parameters (each applies to the {kind}s that declare it)")
    for cls in param_classes:
        _add_dataclass_options(group, cls, seen)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    from eotransfer.api import FitConfig
    from eotransfer.evaluation.attacks import ATTACK_LOSSES, ATTACKS

    parser = argparse.ArgumentParser(prog="eotransfer", description="Transfer learning for Earth-observation imagery.")
    sub = parser.add_subparsers(dest="command", required=True)

    from eotransfer.pretrain.run import PretrainConfig

    _add_config_command(sub, "fit", "adapt a backbone to a labelled data set", "data set path", FitConfig,
                        "strategy", _strategy_param_classes())  # fmt: skip
    _add_config_command(sub, "pretrain", "self-supervised pre-training of a backbone on unlabelled imagery",
                        "unlabelled pool: data sets, folders, .npz packs or rasters, comma-separated", PretrainConfig,
                        "method", _method_param_classes())  # fmt: skip
    from eotransfer.evaluation.advise import AdviseConfig

    _add_config_command(sub, "advise", "rank the transfer strategies for a task, with reasons (--auto: measure them)",
                        "labelled data set", AdviseConfig, "advisor", [])  # fmt: skip

    ev = sub.add_parser("evaluate", help="score a saved model on labelled data")
    ev.add_argument("model", help="model directory")
    ev.add_argument("data", help="labelled data set")
    for name in (
        "bands",
        "use-bands",
        "format",
        "vector",
        "label-field",
        "merge-classes",
        "nodata",
        "split",
        "block-deg",
        "test-fraction",
        "test-blocks",
    ):
        ev.add_argument(f"--{name}", dest=name.replace("-", "_"), default=argparse.SUPPRESS)
    ev.add_argument(
        "--missing-bands", choices=("error", "mask"), default=argparse.SUPPRESS,
        help="model bands the data lack (another sensor): error (default), or mask them (filled with the training mean)",
    )  # fmt: skip
    ev.add_argument("--patch-size", dest="patch_size", type=int, default=argparse.SUPPRESS,
                    help="patch/chip size for xBD and raster-vector data (default: the model's training size)")  # fmt: skip
    ev.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    ev.add_argument("--scale", type=float, default=argparse.SUPPRESS)
    ev.add_argument("--offset", type=float, default=argparse.SUPPRESS)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument(
        "--task", default=argparse.SUPPRESS, help="a progressive model's task to score (default: its newest)"
    )
    ev.add_argument(
        "--domain-gap", metavar="SOURCE_DATA", default=argparse.SUPPRESS,
        help="source-domain data: also print the proxy A-distance between its and the data's backbone features",
    )  # fmt: skip
    ev.add_argument("--attack", choices=ATTACKS, default=argparse.SUPPRESS,
                    help="also report robust accuracy under this attack (needs --eps); square: gradient-free")  # fmt: skip
    ev.add_argument("--attack-loss", dest="loss", choices=ATTACK_LOSSES, default=argparse.SUPPRESS,
                    help="what fgsm/pgd ascend: ce (default) or margin (Carlini & Wagner; immune to a saturated softmax)")  # fmt: skip
    ev.add_argument("--queries", type=int, default=argparse.SUPPRESS,
                    help="the square attack's forward passes per image (default 1000)")  # fmt: skip
    ev.add_argument("--eps", default=argparse.SUPPRESS,
                    help="attack budget in reflectance units: 0.005 (all bands) and/or BAND=value, e.g. 0.005,B10=0.0005")  # fmt: skip
    ev.add_argument("--pgd-steps", dest="pgd_steps", type=int, default=argparse.SUPPRESS, help="PGD steps (default 10)")
    ev.add_argument("--value-per-reflectance", dest="value_per_reflectance", type=float, default=argparse.SUPPRESS,
                    help="data units per reflectance unit (10000 for Sentinel-2 x10^4, 255 for 8-bit); guessed if omitted")  # fmt: skip

    pr = sub.add_parser("predict", help="predict patches (CSV) or a GeoTIFF of any size (class map + PNG)")
    pr.add_argument("model", help="model directory")
    pr.add_argument("input", help="a GeoTIFF, a folder of patches, or an image with --buildings (xBD: the post image)")
    pr.add_argument("--out", required=True, help="output COG (raster input), CSV (patches) or GeoJSON (--buildings)")
    pr.add_argument(
        "--raster-bands", help="the raster's bands, e.g. landsat8:B2,B3,B4 (mapped to the model's by name/wavelength)"
    )
    pr.add_argument("--scale", type=float, default=1.0, help="multiply raw pixels by this")
    pr.add_argument("--offset", type=float, default=0.0, help="then add this")
    pr.add_argument("--match-statistics", action="store_true", help="match each band's mean/std to the training data")
    pr.add_argument("--overlap", type=float, default=0.5, help="window overlap fraction")
    pr.add_argument(
        "--nodata-value", type=float, help="pixel value meaning no data when the file declares none (Landsat: 0)"
    )
    pr.add_argument(
        "--crs-policy", choices=("refuse", "reproject"), default="refuse",
        help="raster in another CRS than the model's training data: refuse, or reproject it on the fly",
    )  # fmt: skip
    pr.add_argument(
        "--buildings", help="building polygons (xBD label JSON or GeoJSON): predict each building's damage to GeoJSON"
    )
    pr.add_argument("--no-progress", action="store_true")
    pr.add_argument("--task", help="a progressive model's task to predict (default: its newest)")
    pr.add_argument("--accelerator", default="auto", help="cpu | cuda | auto (CUDA when torch sees one)")
    pr.add_argument("--batch-size", type=int, default=64, help="windows (or patches) per forward pass")
    pr.add_argument(
        "--read-ahead", type=int, default=None,
        help="raster blocks read and decoded ahead on a background thread (default: 2 when the network runs on a "
        "GPU, 0 on the CPU, where the network uses every core)",
    )  # fmt: skip

    fs = sub.add_parser("predict-fewshot", help="classify patches by the nearest prototype of a new support set")
    fs.add_argument("model", help="model directory (its backbone embeds support and input)")
    fs.add_argument("input", help="a folder of patches (flat, or class folders whose labels are ignored)")
    fs.add_argument("--support", required=True, help="class folders with a few examples each, in the model's bands")
    fs.add_argument("--out", required=True, help="output CSV of probabilities")
    fs.add_argument("--format", default=None, help="data format of support and input (detected if omitted)")
    fs.add_argument("--scale", type=float, default=1.0, help="multiply raw pixels by this")
    fs.add_argument("--offset", type=float, default=0.0, help="then add this")
    fs.add_argument("--nodata", default="error", choices=("error", "mask"), help="NaN/nodata pixels")

    bands = sub.add_parser("bands", help="print the band catalogue")
    bands.add_argument(
        "sensor", nargs="?", help="one sensor (sentinel2-l1c, sentinel2-l2a, landsat8, landsat7, sentinel1, rgb, rgbn)"
    )
    sub.add_parser("backbones", help="list architectures and TorchGeo weights with their bands")
    sub.add_parser("strategies", help="list the registered strategies and their parameters")
    seq = sub.add_parser(
        "progressive-sequence", help="a task sequence: progressive networks vs. sequential fine-tuning"
    )
    seq.add_argument("config", help="YAML with 'tasks' (see eotransfer.strategies._progressive_sequence)")
    demo = sub.add_parser("demo", help="run the main job end to end on real data")
    demo.add_argument("--data-root", help="folder holding eurosat-ms/ and landsat8-scene/ (default: ../shared/data)")
    demo.add_argument("--out", default="demo-output", help="output folder")
    demo.add_argument("--seeds", type=int, default=5)
    exp = sub.add_parser("export", help="export a saved model to ONNX/TorchScript, checked against PyTorch")
    exp.add_argument("model", help="model directory")
    exp.add_argument("--out", required=True, help="output folder (written atomically)")
    exp.add_argument("--format", default="onnx,torchscript", help="comma-separated: onnx, torchscript")
    exp.add_argument("--check-data", help="data set whose patches check the export (default: random inputs)")
    exp.add_argument("--check-bands", help="the check data's bands (default: the model's)")
    exp.add_argument("--n-check", type=int, default=32, help="patches in the parity check")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset")
    bench = sub.add_parser(
        "benchmark", help="run a grid of strategies x weights x labels per class x seeds (resumable)"
    )
    bench.add_argument("config", help="benchmark YAML (see benchmarks/configs/)")
    bench.add_argument("--out", required=True, help="output folder: results.csv (cells already there are skipped)")
    bench.add_argument("--no-progress", action="store_true", help="print no line per cell")
    rep = sub.add_parser(
        "report",
        help="a self-contained HTML report of a saved model or a benchmark folder; "
        "several benchmark folders (or a folder of them) make one evidence page",
    )
    rep.add_argument(
        "path",
        nargs="+",
        help="model directory (card.json), benchmark output folder (results.csv), "
        "or several benchmark folders / a folder of them (the evidence page, with its table as .csv)",
    )
    rep.add_argument("--out", required=True, help="HTML file to write (PNGs are written beside it)")
    return parser


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: no such file {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of option names to values")
    flat = {k.replace("-", "_"): v for k, v in data.items() if k != "strategy_params"}
    flat.update({k.replace("-", "_"): v for k, v in (data.get("strategy_params") or {}).items()})
    return flat


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    """``--config`` YAML, overridden by the options given on the command line."""
    values = _load_yaml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k not in ("command", "config", "data")})
    if args.data:
        values["data"] = args.data
    if not values.get("data"):
        raise ConfigError(f"{args.command}: give the data path (positional) or `data:` in --config")
    return values


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from eotransfer.pretrain.run import pretrain

    result = pretrain(**_config_values(args))
    print(f"backbone written to {result.out} (use --weights {result.out})")
    return 0


def _cmd_advise(args: argparse.Namespace) -> int:
    from eotransfer.evaluation.advise import advise

    advise(**_config_values(args))
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from eotransfer.api import fit

    result = fit(**_config_values(args))
    test = result.metrics.get("test", {})
    print(
        f"test overall accuracy {test.get('overall_accuracy', float('nan')):.3f}, macro-F1 {test.get('macro_f1', float('nan')):.3f}"
    )
    if result.out:
        print(f"model written to {result.out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from eotransfer.api import predict

    summary = predict(
        args.model, args.input, args.out, raster_bands=args.raster_bands, scale=args.scale, offset=args.offset,
        match_statistics=args.match_statistics, overlap=args.overlap, progress=not args.no_progress,
        nodata_value=args.nodata_value, crs_policy=args.crs_policy, buildings=args.buildings, task=args.task,
        accelerator=args.accelerator, batch_size=args.batch_size, read_ahead=args.read_ahead,
    )  # fmt: skip
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _cmd_backbones() -> int:
    from eotransfer.models.backbones import ARCHITECTURES
    from eotransfer.models.weights import torchgeo_catalogue

    print("architectures (timm):")
    for a in ARCHITECTURES.values():
        print(f"  {a.name:<24} family={a.family:<9} first layer={a.first_conv or '— (no parameters)'}")
    from eotransfer.models.catalogue import local_catalogue

    print("\nlocal catalogue (--weights eotransfer:NAME; pre-trained with `eotransfer pretrain`):")
    for r in local_catalogue() or [{"name": "(empty)"}]:
        if "arch" in r:
            print(f"  {r['name']:<40} {r['where']:<8} model={r['arch']!s:<14} bands={r['n_bands']:<3} method={r['method']} "
                  f"data={r['data']} monitor={json.dumps(r['monitor'])}")  # fmt: skip
        else:
            print(f"  {r['name']}")
    print("\nTorchGeo weights (--weights NAME; downloaded with checksum into the cache):")
    for row in torchgeo_catalogue():
        print(f"  {row['name']:<52} model={row['model']!s:<28} in_chans={row['in_chans']!s:<4} {row['bands']}")
    return 0


def _cmd_strategies() -> int:
    from eotransfer import strategies
    from eotransfer.strategies.base import STRATEGIES

    strategies.load_all()
    for name, cls in sorted(STRATEGIES.items()):
        print(f"{name}: {cls.summary}")
        for f in dataclasses.fields(cls.Params):
            print(f"    --{f.name.replace('_', '-'):<22} {f.default!s:<8} {f.metadata.get('help', '')}")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "fit":
        return _cmd_fit(args)
    if args.command == "pretrain":
        return _cmd_pretrain(args)
    if args.command == "advise":
        return _cmd_advise(args)
    if args.command == "evaluate":
        from eotransfer.api import evaluate
        from eotransfer.engine.metrics import metrics_table

        opts = {k: v for k, v in vars(args).items() if k not in ("command", "model", "data", "json")}
        metrics = evaluate(args.model, args.data, **opts)
        print(json.dumps(metrics, indent=1) if args.json else metrics_table(metrics))
        if "proxy_a_distance" in metrics and not args.json:
            print(
                f"proxy A-distance to {args.domain_gap}: {metrics['proxy_a_distance']:.3f} (0 = same domain, 2 = separable)"
            )
        if "attack" in metrics and not args.json:
            a = metrics["attack"]
            print(f"{a['attack']} (steps {a['steps']}, {a['loss']} loss, eps {a['eps']} reflectance): clean accuracy "
                  f"{a['clean_accuracy']:.3f}, robust accuracy {a['robust_accuracy']:.3f}")  # fmt: skip
        return 0
    if args.command == "predict":
        return _cmd_predict(args)
    if args.command == "predict-fewshot":
        from eotransfer.evaluation.fewshot import predict_fewshot

        summary = predict_fewshot(args.model, args.support, args.input, args.out, format=args.format,
                                  scale=args.scale, offset=args.offset, nodata=args.nodata)  # fmt: skip
        print(json.dumps(summary, indent=1, default=str))
        return 0
    if args.command == "bands":
        from eotransfer.bands import band_table

        print(band_table(args.sensor))
        return 0
    if args.command == "backbones":
        return _cmd_backbones()
    if args.command == "progressive-sequence":
        from eotransfer.strategies.progressive import run_sequence

        result = run_sequence(args.config)
        print((Path(result["out"]) / "sequence.md").read_text() + f"models and tables written to {result['out']}")
        return 0
    if args.command == "strategies":
        return _cmd_strategies()
    if args.command == "demo":
        from eotransfer.demo import run_demo

        return run_demo(args.data_root, args.out, args.seeds)
    if args.command == "benchmark":
        from eotransfer.evaluation.benchmark import BenchmarkConfig, run_benchmark

        rows = run_benchmark(BenchmarkConfig.from_yaml(args.config), args.out, progress=not args.no_progress)
        print(f"{len(rows)} rows in {Path(args.out) / 'results.csv'}; summary in {Path(args.out) / 'summary.md'}")
        return 0
    if args.command == "report":
        from eotransfer.evaluation.report import build_report

        print(f"report written to {build_report(args.path, args.out)}")
        return 0
    if args.command == "export":
        from eotransfer.export import export_model, parity_table

        report = export_model(args.model, args.out, args.format, args.check_data, args.check_bands, args.n_check,
                              args.opset)  # fmt: skip
        print(parity_table(report))
        print(f"export written to {report['path']}")
        return 0
    return 2


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors print one line and exit non-zero, without a traceback."""
    try:
        code = run(argv)
    except EOTransferError as exc:
        print(f"eotransfer: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("eotransfer: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
