"""Export a saved model to ONNX and TorchScript, checked against PyTorch, with its card beside it.

The whole :class:`~eotransfer.models.model.EOClassifier` is exported — normalisation included — so
the graph takes raw pixel values in the card's band order (after the data's ``scale``/``offset``),
with NaN marking masked pixels exactly as the PyTorch model does.  Every export is run on the same
inputs as the PyTorch network before it is kept (real patches from ``check_data`` when given, else
samples drawn from the card's per-band statistics), and the largest absolute difference of the
logits and the argmax agreement are written to ``export.json``.

A feature-extraction model whose scikit-learn classifier is linear (``logreg``, ``linear-svm``) on the
pooled features, the ``band-stats`` reference among them, is exported with the classifier folded into
the network's linear head (:func:`~eotransfer.evaluation.classical.linear_head`); the folded head's
probabilities are first checked against the classifier's own (``export.json``'s ``head``).  Other
classifiers (kNN, RBF SVM, random forest) have no graph form here and are refused.

* ONNX: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``
  (https://docs.pytorch.org/docs/stable/onnx_torchscript.html), which needs no ``onnxscript`` and
  exports ``nan_to_num`` as ``IsNaN``/``Where``; run with ONNX Runtime
  (https://onnxruntime.ai/docs/api/python/api_summary.html).  The card travels in the file's
  ``metadata_props`` too (https://onnx.ai/onnx/repo-docs/IR.html#metadata).
* TorchScript: ``torch.jit.trace`` (https://docs.pytorch.org/docs/stable/generated/torch.jit.trace.html);
  the card is stored as an extra file of the archive (``torch.jit.load(..., _extra_files=...)``).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer import __version__
from eotransfer.card import CARD_MD, atomic_write_dir, load_model
from eotransfer.data.base import EODataset, open_dataset
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import ConfigError, DataError, WeightError
from eotransfer.evaluation.classical import folded_network
from eotransfer.models.weights import CARD_FILE

FORMATS = ("onnx", "torchscript")
FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
EXPORT_FILE = "export.json"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
PROBABILITY_TOLERANCE = 1e-5  # folded scikit-learn head vs. the classifier itself (float32 vs. float64)
ONNX_TOLERANCE = 1e-4  # max |Δ logit| on CPU: float32 kernels differ in summation order, not more
RANDOM_SEED = 0


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """``"onnx,torchscript"`` or a sequence → the list of formats, checked."""
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [n for n in dict.fromkeys(names) if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        what = f"unknown export format '{unknown[0]}'" if unknown else "no export format given"
        raise ConfigError(f"--format: {what}; choose from {', '.join(FORMATS)} (comma-separated)")
    return names


def export_model(
    model_dir: str | Path,
    out: str | Path,
    formats: str | Sequence[str] = FORMATS,
    check_data: str | Path | EODataset | None = None,
    check_bands: str | None = None,
    n_check: int = 32,
    opset: int = 17,
    batch_dynamic: bool = True,
) -> dict[str, Any]:
    """Export the saved model at ``model_dir`` into the folder ``out`` (written atomically).

    ``out`` receives ``model.onnx`` and/or ``model.torchscript.pt``, the model's ``card.json`` and
    ``card.md``, and ``export.json`` (input, bands, normalisation, classes, parity results), which
    is also returned (with ``path``).  An export whose logits differ from PyTorch's by more than
    1e-4 raises :class:`WeightError` and leaves nothing behind.
    """
    names = parse_formats(formats)
    if isinstance(n_check, bool) or not isinstance(n_check, int) or n_check < 1:
        raise ConfigError(f"n_check: expected a positive number of check samples, got {n_check!r}")
    src = Path(model_dir)
    if not src.is_dir():
        raise WeightError(f"{src}: no such model directory; pass a folder written by `eotransfer fit --out`")
    target = Path(out)
    if target.resolve() == src.resolve():
        raise ConfigError(f"--out {target}: is the model directory itself; choose another folder for the export")
    saved = load_model(src)
    card = saved.card
    net = folded_network(saved, "ONNX/TorchScript")
    n_bands, img_size = len(card["bands"]), int(card["img_size"])
    inputs, provenance = _check_inputs(card, check_data, check_bands, n_check)
    masked = _mask(inputs)
    with torch.no_grad():
        reference = net(torch.from_numpy(inputs)).numpy()
        reference_masked = net(torch.from_numpy(masked)).numpy()
    head = None if saved.classifier is None else _head_parity(saved, src, reference, inputs, reference_masked, masked)

    center, scale = Normalizer.from_dict(card["normalization"]).center_scale()
    report: dict[str, Any] = {
        "kind": "eotransfer-export",
        "eotransfer_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": {"path": str(src), "name": card.get("name"), "arch": card["arch"]},
        "formats": {},
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch" if batch_dynamic else 1, n_bands, img_size, img_size],
            "dtype": "float32",
            "layout": "NCHW",
            "values": "raw pixel values in the band order below, after the data's scale and offset "
            f"(scale={card.get('data', {}).get('scale', 1.0)}, offset={card.get('data', {}).get('offset', 0.0)}); "
            "NaN marks a masked pixel",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch" if batch_dynamic else 1, len(card["classes"])],
            "dtype": "float32",
            "meaning": "logits in class order (softmax gives probabilities)",
        },  # fmt: skip
        "bands": [
            {
                "index": i,
                "key": f"{b['sensor']}:{b['name']}",
                "common_name": b.get("common_name"),
                "wavelength_nm": b.get("wavelength_nm"),
                "bandwidth_nm": b.get("bandwidth_nm"),
                "centre": float(center[i]),
                "scale": float(scale[i]),
            }  # fmt: skip
            for i, b in enumerate(card["bands"])
        ],
        "normalization": {
            "method": card["normalization"].get("method", "standard"),
            "in_graph": True,
            "formula": "(x - centre) / scale per band; NaN (masked) then becomes 0, the band's training mean",
        },
        "classes": list(card["classes"]),
        **({"head": head} if head is not None else {}),
        "opset": opset if "onnx" in names else None,
        "parity": {
            "device": "cpu",
            "tolerance": ONNX_TOLERANCE,
            "inputs": provenance,
            "n": len(inputs),
            "masked_variant": "the same inputs with the top-left quarter of every band and one whole band "
            "(sample i: band i mod C) set to NaN",
        },
    }

    def write(tmp: Path) -> None:
        example = torch.from_numpy(inputs[:2] if batch_dynamic else inputs[:1]).clone()
        card_json = (src / CARD_FILE).read_text()
        for name in names:
            path = tmp / FILES[name]
            if name == "onnx":
                report["formats"][name] = _export_onnx(net, example, path, opset, batch_dynamic, card_json)
                run = _onnx_runner(path, batch_dynamic)
            else:
                report["formats"][name] = _export_torchscript(net, example, path, card_json)
                run = _torchscript_runner(path)
            result = {
                "file": FILES[name],
                **_compare(reference, run(inputs)),
                "masked": _compare(reference_masked, run(masked)),
            }
            report["parity"][name] = result
            worst = max(result["max_abs_diff"], result["masked"]["max_abs_diff"])
            if not worst <= ONNX_TOLERANCE:  # NaN counts as a failure
                raise WeightError(
                    f"{src}: the {name} export's logits differ from PyTorch's by {worst:.3g} (> {ONNX_TOLERANCE:g}) "
                    f"on {provenance['kind']} inputs; nothing was written to {target}. "
                    + ("Try another --opset." if name == "onnx" else "Export to ONNX instead.")
                )
        shutil.copy2(src / CARD_FILE, tmp / CARD_FILE)
        if (src / CARD_MD).is_file():
            shutil.copy2(src / CARD_MD, tmp / CARD_MD)
        (tmp / EXPORT_FILE).write_text(json.dumps(report, indent=2, default=str))

    atomic_write_dir(target, write)
    return {**report, "path": str(target)}


def _head_parity(
    saved: Any, src: Path, logits: np.ndarray, inputs: np.ndarray, logits_masked: np.ndarray, masked: np.ndarray
) -> dict[str, Any]:
    """The folded head's probabilities against the scikit-learn classifier's own; raises beyond the tolerance."""
    result: dict[str, Any] = {
        "kind": "the scikit-learn classifier folded into the linear head (scaler and coefficients in one layer)",
        "classifier": (saved.card.get("classifier") or {}).get("name"),
        "tolerance": PROBABILITY_TOLERANCE,
    }
    for key, x, z in (("max_abs_prob_diff", inputs, logits), ("masked_max_abs_prob_diff", masked, logits_masked)):
        want = saved.predict_proba(x).astype(np.float64)
        got = torch.softmax(torch.from_numpy(z).double(), dim=1).numpy()
        worst = float(np.abs(want - got).max()) if want.size else 0.0
        result[key] = worst
        if not worst <= PROBABILITY_TOLERANCE:
            raise WeightError(
                f"{src}: the folded linear head's probabilities differ from the scikit-learn classifier's by "
                f"{worst:.3g} (> {PROBABILITY_TOLERANCE:g}); nothing was exported"
            )
    return result


def _check_inputs(
    card: dict[str, Any], check_data: str | Path | EODataset | None, check_bands: str | None, n: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """N×C×H×W float32 inputs for the parity check, and where they came from."""
    keys = [f"{b['sensor']}:{b['name']}" for b in card["bands"]]
    img_size = int(card["img_size"])
    if check_data is None:
        norm = card["normalization"]
        rng = np.random.default_rng(RANDOM_SEED)
        mean = np.asarray(norm["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(norm["std"], dtype=np.float64).reshape(1, -1, 1, 1)
        x = mean + std * rng.standard_normal((n, len(keys), img_size, img_size))
        kind = {
            "kind": "random",
            "source": f"normal(mean, std) per band from the card's normalisation, seed {RANDOM_SEED}",
        }
        return x.astype(np.float32), kind
    if isinstance(check_data, EODataset):
        ds, source = check_data, "EODataset"
    else:
        data = card.get("data", {})
        source = str(check_data)
        ds = open_dataset(check_data, bands=check_bands or ",".join(keys), nodata="mask",
                          scale=float(data.get("scale", 1.0)), offset=float(data.get("offset", 0.0)))  # fmt: skip
    if ds.bands.keys != keys:
        raise ConfigError(
            f"--check-bands: the check data's bands {ds.bands.describe()} differ from the model's {','.join(keys)}; "
            "give the data's bands so that they match the model's, in its order"
        )
    if len(ds) == 0:
        raise DataError(f"--check-data {source}: no samples to check the export on")
    indices = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    x = np.stack([ds.checked_read(int(i)) for i in indices]).astype(np.float32)
    if x.shape[-2:] != (img_size, img_size):
        raise DataError(
            f"--check-data {source}: patches are {x.shape[-2]}×{x.shape[-1]} px "
            f"but the model takes {img_size}×{img_size}"
        )
    return x, {"kind": "data", "source": source, "indices": [int(i) for i in indices]}


def _mask(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    h, w = x.shape[-2:]
    out[:, :, : max(1, h // 4), : max(1, w // 4)] = np.nan
    out[np.arange(len(x)), np.arange(len(x)) % x.shape[1]] = np.nan
    return out


def _compare(reference: np.ndarray, exported: np.ndarray) -> dict[str, Any]:
    diff = np.abs(reference.astype(np.float64) - exported.astype(np.float64))
    agree = int((reference.argmax(1) == exported.argmax(1)).sum())
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0, "argmax_agree": agree,
            "argmax_all_agree": agree == len(reference)}  # fmt: skip


def _export_onnx(
    net: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, batch_dynamic: bool, card_json: str
) -> dict[str, Any]:
    import onnx

    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch_dynamic else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces the dynamo one
            torch.onnx.export(net, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=opset, dynamo=False)  # fmt: skip
    except Exception as exc:  # the exporter raises many kinds (unsupported op or opset)
        raise WeightError(f"ONNX export failed at --opset {opset}: {exc}; try another --opset (e.g. 17)") from exc
    model = onnx.load(str(path))
    for key, value in (("eotransfer.card", card_json), ("eotransfer.version", __version__)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "eotransfer classifier: raw pixels in the card's band order (NaN = masked) -> logits"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    import onnxruntime

    return {"file": path.name, "opset": opset, "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}  # fmt: skip


def _onnx_runner(path: Path, batch_dynamic: bool) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # share the CPU as the caller set it for torch
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        if batch_dynamic:
            return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
        return np.concatenate(
            [np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0]) for i in range(len(x))]
        )

    return run


def _export_torchscript(net: torch.nn.Module, example: torch.Tensor, path: Path, card_json: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the way to TorchScript
        with torch.no_grad():
            traced = torch.jit.trace(net, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={CARD_FILE: card_json})
    return {"file": path.name, "method": "torch.jit.trace", "torch": torch.__version__,
            "extra_files": [CARD_FILE]}  # fmt: skip


def _torchscript_runner(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(x)).numpy())

    return run


def parity_table(report: dict[str, Any]) -> str:
    """The parity results of :func:`export_model` as a small table for the CLI."""
    parity = report["parity"]
    lines = [
        f"parity with PyTorch on {parity['n']} {parity['inputs']['kind']} inputs "
        f"(CPU, tolerance {parity['tolerance']:g}):",
        f"{'format':<12} {'max |Δ logit|':>14} {'argmax agrees':>14} {'masked max |Δ|':>15} {'masked argmax':>14}",
    ]
    for name in report["formats"]:
        r = parity[name]
        lines.append(
            f"{name:<12} {r['max_abs_diff']:>14.3g} {r['argmax_agree']:>9}/{parity['n']:<4} "
            f"{r['masked']['max_abs_diff']:>15.3g} {r['masked']['argmax_agree']:>9}/{parity['n']:<4}"
        )
    if "head" in report:
        head = report["head"]
        worst = max(head["max_abs_prob_diff"], head["masked_max_abs_prob_diff"])
        lines.append(f"head: the scikit-learn {head['classifier']} folded into a linear layer; "
                     f"max |Δ probability| vs. scikit-learn {worst:.3g} (tolerance {head['tolerance']:g})")  # fmt: skip
    return "\n".join(lines)


__all__ = ["EXPORT_FILE", "FILES", "FORMATS", "export_model", "parity_table", "parse_formats"]
