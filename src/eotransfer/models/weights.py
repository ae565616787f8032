"""Weight sources: a local file or model directory, a TorchGeo weight by name, a timm pretrained tag.

Each resolves to a state dict plus the bands (and normalisation) the weights were trained with.
Files are only ever loaded safely (safetensors, or ``torch.load(weights_only=True)``).  Downloads
go to a cache (``$EOTRANSFER_CACHE`` or ``~/.cache/eotransfer``) and are verified against the
SHA-256 prefix in the file name (the torch.hub convention TorchGeo's URLs follow); offline, the
error says where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eotransfer.bands import BandSet
from eotransfer.errors import BandError, OfflineError, WeightError, did_you_mean

WEIGHT_FILE = "weights.safetensors"
CARD_FILE = "card.json"


@dataclass
class LoadedWeights:
    """A state dict and what its card says about it."""

    state_dict: dict[str, torch.Tensor]
    bands: BandSet
    arch: str | None
    normalization: dict[str, Any] | None
    source: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {**self.source, "bands": self.bands.keys, "arch": self.arch, "normalization": self.normalization}


def cache_dir() -> Path:
    return Path(os.environ.get("EOTRANSFER_CACHE", Path.home() / ".cache" / "eotransfer")) / "weights"


INT8_SCALE = ".int8_scale"


def quantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Symmetric per-output-channel int8 for every floating tensor of 2+ dimensions (convolutions, linears).

    Each such tensor ``k`` is stored as int8 plus a float32 ``k.int8_scale`` per output channel
    (``w ≈ q · scale``, ``scale = max|w| / 127``; Jacob et al. 2018, "Quantization and Training of
    Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR); the rest is kept as
    float16.  :func:`dequantize` undoes it on load, so a quarter-size file loads as float32.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.ndim >= 2:
            flat = v.float().reshape(v.shape[0], -1)
            scale = (flat.abs().amax(1) / 127.0).clamp_min(1e-12)
            out[k] = (flat / scale[:, None]).round().clamp(-127, 127).to(torch.int8).reshape(v.shape).contiguous()
            out[k + INT8_SCALE] = scale.contiguous()
        else:
            out[k] = (v.half() if v.is_floating_point() else v).contiguous()
    return out


def dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 tensors back from :func:`quantize_int8`'s int8 + scale pairs; other states pass unchanged."""
    if not any(k.endswith(INT8_SCALE) for k in state):
        return state
    out = {}
    for k, v in state.items():
        if k.endswith(INT8_SCALE):
            continue
        scale = state.get(k + INT8_SCALE)
        if scale is not None:
            v = (v.float().reshape(v.shape[0], -1) * scale.float()[:, None]).reshape(v.shape)
        out[k] = v
    return out


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file or a torch state dict with ``weights_only=True``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    except Exception as exc:  # corrupt file, or one that needs unpickling of arbitrary code
        raise WeightError(f"{path}: cannot be loaded safely ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in dequantize(state).items()}


def _load_local(path: Path) -> LoadedWeights:
    card_path = path / CARD_FILE if path.is_dir() else path.with_suffix(".json")
    if path.is_dir():
        candidates = [path / WEIGHT_FILE, *sorted(path.glob("*.safetensors")), *sorted(path.glob("*.pt*"))]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise WeightError(f"{path}: no {WEIGHT_FILE} (or .pt/.pth) in this folder")
        weight_file = found[0]
    else:
        weight_file = path
    if not card_path.is_file():
        raise WeightError(
            f"{weight_file}: no model card ({card_path.name}) beside it, so its bands are unknown; write one "
            'with {"arch": "resnet18", "bands": ["sentinel2-l1c:B02", ...]} (see docs) next to the file'
        )
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightError(f"{card_path}: unreadable model card ({exc})") from None
    state = load_state_file(weight_file)
    prefix = card.get("backbone_prefix", "backbone." if card.get("kind") == "eotransfer-model" else "")
    raw_bands = card.get("bands")
    if not raw_bands:
        raise WeightError(f"{card_path}: the card lists no 'bands'")
    network = card.get("network") or {}
    if card.get("kind") == "eotransfer-model" and network.get("builder") == "per_date":
        # one backbone shared by every date (eotransfer.models.per_date): its weights, for one date's bands
        prefix = "backbone.encoder."
        raw_bands = [raw_bands[i] for i in network["dates"][-1]]
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    bands = BandSet.from_list(raw_bands) if isinstance(raw_bands[0], dict) else BandSet.from_names(raw_bands)
    return LoadedWeights(
        state, bands, card.get("arch"), card.get("normalization"), {"source": "file", "path": str(path)}
    )


def _sensor_for_torchgeo(member_name: str, n_bands: int) -> str:
    n = member_name.upper()
    if "SENTINEL2" in n:
        return "sentinel2-l1c" if n_bands == 13 else "sentinel2-l2a"
    if "SENTINEL1" in n:
        return "sentinel1"
    if "ETM" in n or "LANDSAT_TM" in n:
        return "landsat7"
    if "LANDSAT" in n:
        return "landsat8"
    if "NAIP" in n and n_bands == 4:
        return "rgbn"
    return "rgb"


def torchgeo_weight(name: str) -> Any:
    """The TorchGeo ``WeightsEnum`` member called ``name`` (e.g. ``ResNet18_Weights.SENTINEL2_ALL_MOCO``)."""
    import torchgeo.models as tgm
    from torchgeo.models import get_weight

    try:
        return get_weight(name)
    except Exception:  # get_weight refuses some members of its own enums (e.g. ResNet50_Weights.SENTINEL1_GRD_DECUR)
        enum_name, _, member = name.partition(".")
        enum = getattr(tgm, enum_name, None)
        if enum is not None and hasattr(enum, "__members__") and member in enum.__members__:
            return enum[member]
        raise WeightError(
            f"--weights: unknown TorchGeo weight '{name}'" + did_you_mean(name, list_torchgeo_weights())
        ) from None


def torchgeo_bands(name: str, weight: Any) -> BandSet:
    meta = weight.meta
    n = int(meta.get("in_chans", len(meta.get("bands", [])) or 3))
    sensor = _sensor_for_torchgeo(name.split(".")[-1], n)
    names = meta.get("bands")
    if not names:
        return BandSet.of_sensor(sensor) if n == len(BandSet.of_sensor(sensor)) else BandSet.of_sensor("rgb")
    try:
        return BandSet.of_sensor(sensor, [str(b) for b in names])
    except BandError as exc:
        raise WeightError(f"--weights {name}: cannot place its bands {names} in the catalogue ({exc})") from None


def torchgeo_normalization(weight: Any) -> dict[str, Any] | None:
    """Mean/std from the weight's own transforms (e.g. ``Normalize(mean=[0], std=[10000])``)."""
    for t in getattr(weight.transforms, "children", lambda: [])():
        if type(t).__name__ == "Normalize":
            mean, std = t.mean, t.std
            return {
                "mean": [float(v) for v in torch.as_tensor(mean).flatten()],
                "std": [float(v) for v in torch.as_tensor(std).flatten()],
            }
    return None


def download_checked(url: str, directory: Path | None = None) -> Path:
    """Fetch ``url`` into the cache, verifying the SHA-256 prefix in its file name; reuse a cached copy."""
    directory = directory or cache_dir()
    fname = url.rsplit("/", 1)[-1].split("?")[0]
    target = directory / fname
    stem = fname.rsplit(".", 1)[0]
    expected = stem.rsplit("-", 1)[-1] if "-" in stem else None
    expected = expected if expected and all(c in "0123456789abcdef" for c in expected) and len(expected) >= 8 else None

    def verify(p: Path) -> None:
        if expected is None:
            return
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if not digest.startswith(expected):
            raise WeightError(
                f"{p}: checksum {digest[:12]} does not match the expected {expected}; delete the file and retry"
            )

    if target.is_file():
        verify(target)
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        verify(Path(tmp))
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise OfflineError(
            f"cannot download {url} ({exc}); without a network, download it elsewhere and place it at "
            f"{target} (checked against its SHA-256 prefix), or pass --weights path/to/file"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load_torchgeo(name: str) -> LoadedWeights:
    weight = torchgeo_weight(name)
    bands = torchgeo_bands(name, weight)
    path = download_checked(weight.url)
    state = load_state_file(path)
    arch = str(weight.meta.get("model", "")) or None
    source = {"source": "torchgeo", "name": name, "url": weight.url, "dataset": weight.meta.get("dataset")}
    return LoadedWeights(state, bands, arch, torchgeo_normalization(weight), source)


def _load_timm(tag: str, arch_name: str | None) -> LoadedWeights:
    import timm

    name = tag.removeprefix("timm:")
    if name == "imagenet":
        if arch_name is None:
            raise WeightError("--weights imagenet needs a --backbone")
        name = arch_name
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:
        raise OfflineError(
            f"--weights {tag}: cannot fetch timm's pretrained weights for '{name}' ({type(exc).__name__}); "
            "without a network, save them elsewhere as safetensors with a card and pass --weights path"
        ) from None
    cfg: dict[str, Any] = dict(model.pretrained_cfg)  # type: ignore[arg-type]
    norm = {"mean": [v * 255 for v in cfg.get("mean", ())], "std": [v * 255 for v in cfg.get("std", ())]}
    source = {"source": "timm", "name": name, "tag": cfg.get("tag")}
    return LoadedWeights(model.state_dict(), BandSet.parse("rgb"), name.split(".")[0], norm, source)


def resolve_weights(spec: str, arch_name: str | None = None) -> LoadedWeights:
    """Resolve ``--weights``: a path, ``Enum.MEMBER`` (TorchGeo), ``timm:<name>`` or ``imagenet``."""
    path = Path(spec).expanduser()
    if path.exists():
        return _load_local(path)
    if spec.startswith("timm:") or spec == "imagenet":
        return _load_timm(spec, arch_name)
    if "_Weights." in spec:
        return _load_torchgeo(spec)
    from eotransfer.models.catalogue import find_local, local_catalogue

    local = find_local(spec)
    if local is not None:
        loaded = _load_local(local)
        loaded.source = {"source": "catalogue", "name": spec, "path": str(local)}
        return loaded
    if spec.startswith("eotransfer:"):
        names = [r["name"] for r in local_catalogue()]
        raise WeightError(
            f"--weights: no '{spec}' in the local catalogue ({', '.join(names) or 'empty'})" + did_you_mean(spec, names)
        )
    raise WeightError(
        f"--weights: '{spec}' is neither an existing file/folder, a TorchGeo weight (e.g. "
        "ResNet18_Weights.SENTINEL2_ALL_MOCO), a local catalogue name (eotransfer:NAME), 'imagenet' nor 'timm:<model>'"
        + did_you_mean(spec, list_torchgeo_weights())
    )


def list_torchgeo_weights() -> list[str]:
    """Every weight in TorchGeo's catalogue, as ``Enum.MEMBER``."""
    try:
        import torchgeo.models as tgm
    except ImportError:
        return []
    names: list[str] = []
    for attr in dir(tgm):
        enum = getattr(tgm, attr)
        if attr.endswith("_Weights") and hasattr(enum, "__members__"):
            names.extend(f"{attr}.{m}" for m in enum.__members__)
    return sorted(names)


def torchgeo_catalogue() -> list[dict[str, Any]]:
    """Rows for ``eotransfer backbones``: name, model, band count, band names, dataset."""
    rows = []
    for name in list_torchgeo_weights():
        w = torchgeo_weight(name)
        rows.append({
            "name": name,
            "model": w.meta.get("model"),
            "in_chans": w.meta.get("in_chans"),
            "bands": ",".join(map(str, w.meta.get("bands", []) or [])),
            "dataset": w.meta.get("dataset"),
        })  # fmt: skip
    return rows
