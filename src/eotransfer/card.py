"""The saved model: a directory with ``weights.safetensors`` and a model card (JSON + Markdown).

The card holds everything a saved model knows about itself (Mitchell et al. 2019, "Model Cards
for Model Reporting"): architecture, bands and their mapping from the pre-trained weights,
normalisation, classes, strategy and hyperparameters, data provenance and evaluation metrics.
Directories are written to a temporary sibling and renamed into place, so a crash never leaves a
half-written model.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from eotransfer import __version__
from eotransfer.bands import BandSet
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import ConfigError, DataError, WeightError
from eotransfer.models.weights import CARD_FILE, WEIGHT_FILE

CARD_MD = "card.md"


def atomic_write_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` onto ``target`` (replacing an older one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkdtemp: its folder is private (0700) and the model folder would stay so after the rename
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, then rename it onto ``path`` (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp, whose file is private (0600): this one gets the umask's permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary sibling, then rename it onto ``path`` (never half a file)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(card: dict[str, Any]) -> str:
    """A readable rendering of the card."""
    lines = [f"# Model card: {card.get('name', 'eotransfer model')}", ""]
    lines += [
        f"- **architecture**: {card['arch']} ({card.get('num_features')} features), input {card.get('img_size')} px"
    ]
    dates = (card.get("network") or {}).get("dates")
    if dates:  # eotransfer.models.per_date: one backbone shared by the dates of a stack
        keys = BandSet.from_list(card["bands"]).keys
        lines += [f"- **per date**: one {card['arch']} run on each of {len(dates)} dates ("
                  + "; ".join(", ".join(keys[i] for i in d) for d in dates)
                  + "); the head sees the last date's features and their change"]  # fmt: skip
    lines += [
        f"- **strategy**: {card['strategy']['name']} — "
        + ", ".join(f"{k}={_fmt(v)}" for k, v in card["strategy"]["params"].items())
    ]
    lines += [
        f"- **weights**: {json.dumps(card.get('weights', {}).get('source', 'none'))} {card.get('weights', {}).get('name', '') or card.get('weights', {}).get('path', '')}"
    ]
    lines += [
        f"- **classes**: {', '.join(card['classes'])}",
        f"- **created**: {card.get('created')} with eotransfer {card.get('eotransfer_version')}",
        "",
    ]
    lines += [
        "## Bands (input order) and normalisation",
        "",
        "| # | band | λ nm | centre | scale |",
        "|---|---|---|---|---|",
    ]
    center, scale = Normalizer.from_dict(card["normalization"]).center_scale()  # what the model applies
    for i, b in enumerate(card["bands"]):
        lines.append(
            f"| {i} | {b['sensor']}:{b['name']} ({b['common_name']}) | {b['wavelength_nm']:.0f} | {center[i]:.4g} | {scale[i]:.4g} |"
        )
    if card.get("band_mapping"):
        lines += [
            "",
            "## Band mapping from the pre-trained weights",
            "",
            "| data band | weight band | how |",
            "|---|---|---|",
        ]
        for m in card["band_mapping"]["matches"]:
            lines.append(f"| {m['target']} | {m['source'] or '—'} | {m['method']} |")
    data = card.get("data", {})
    lines += ["", "## Data", "", "```json", json.dumps(data, indent=1, default=str)[:3000], "```"]
    metrics = card.get("metrics", {})
    if metrics:
        lines += ["", "## Evaluation", ""]
        for split_name, m in metrics.items():
            if isinstance(m, dict) and "overall_accuracy" in m:
                lines.append(
                    f"- **{split_name}**: overall accuracy {m['overall_accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} (n={m['n']})"
                )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NetworkBuilder:
    """Rebuilds a network that is more than one backbone under one head, named by the card's ``network.builder``.

    A module of the network that defines ``card_entries()`` (e.g. a progressive backbone) writes
    ``{"network": {"builder": NAME, ...}}`` into the card; :func:`load_model` then calls
    :func:`network_builder` (NAME)'s ``build(card)`` instead of building one backbone, and ``for_task(network, card, task)`` (when
    given) returns the network and card of one task of a multi-task network.
    """

    build: Callable[[dict[str, Any]], torch.nn.Module]
    for_task: Callable[[torch.nn.Module, dict[str, Any], str], tuple[torch.nn.Module, dict[str, Any]]] | None = None


def network_builder(name: str) -> NetworkBuilder | None:
    """The builder a card names: the module ``eotransfer.models.<name>``'s ``build_from_card`` and ``task_view``.

    Only modules of :mod:`eotransfer.models` are looked at, so a card cannot make eotransfer import anything else.
    """
    import importlib
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return None
    try:
        module = importlib.import_module(f"eotransfer.models.{name}")
    except ModuleNotFoundError:
        return None
    build = getattr(module, "build_from_card", None)
    return NetworkBuilder(build, getattr(module, "task_view", None)) if callable(build) else None


def network_card_entries(model: torch.nn.Module) -> dict[str, Any]:
    """The card entries the network's modules declare about themselves (``card_entries()``)."""
    entries: dict[str, Any] = {}
    for module in model.modules():
        describe = getattr(module, "card_entries", None)
        if callable(describe):
            entries.update(describe())
    return entries


def save_model(
    target: Path, model: torch.nn.Module, card: dict[str, Any], extra: dict[str, str | bytes] | None = None
) -> Path:
    """Write the model directory atomically: weights, card.json, card.md and any extra text files."""
    card = {
        "kind": "eotransfer-model",
        "eotransfer_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **card,
        **network_card_entries(model),
    }

    def write(tmp: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHT_FILE))
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=str))
        (tmp / CARD_MD).write_text(render_markdown(card))
        for name, text in (extra or {}).items():
            if isinstance(text, bytes):
                (tmp / name).write_bytes(text)
            else:
                (tmp / name).write_text(text)

    return atomic_write_dir(Path(target), write)


ACCELERATORS = ("auto", "cpu", "cuda", "gpu")


def resolve_device(accelerator: str = "auto") -> torch.device:
    """The torch device an ``--accelerator`` value names: ``auto`` takes CUDA when torch sees one, else the CPU.

    ``cuda`` (or ``gpu``) without a visible CUDA device is an error rather than a silent fall-back to the CPU.
    """
    name = str(accelerator).lower()
    if name not in ACCELERATORS:
        raise ConfigError(f"--accelerator {accelerator!r} is unknown; use one of {', '.join(ACCELERATORS)}")
    if name in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ConfigError(
            f"--accelerator {accelerator}: torch sees no CUDA device on this machine; use --accelerator cpu (or auto)"
        )
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass
class SavedModel:
    """A loaded model directory: the network and its card."""

    network: torch.nn.Module
    card: dict[str, Any]
    path: Path
    #: a scikit-learn classifier on the backbone's features (``classifier.skops``), replacing the linear head
    classifier: Any = None
    #: where the network runs (:meth:`to`); batches are moved there and the probabilities come back as NumPy
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def to(self, accelerator: str | torch.device = "auto") -> SavedModel:
        """Move the network to ``accelerator`` (``auto``, ``cpu``, ``cuda`` or a torch device); returns ``self``."""
        self.device = accelerator if isinstance(accelerator, torch.device) else resolve_device(accelerator)
        self.network.to(self.device)
        return self

    @property
    def bands(self) -> BandSet:
        return BandSet.from_list(self.card["bands"])

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Class probabilities for raw images N×C×H×W in the card's band order (NaN = masked)."""
        if images.ndim != 4 or images.shape[1] != len(self.card["bands"]):
            raise DataError(
                f"input has shape {images.shape}; the model expects N×{len(self.card['bands'])}×H×W in band order "
                f"{', '.join(b['name'] for b in self.card['bands'])}"
            )
        self.network.eval()
        out = []
        embed = None
        if self.classifier is not None:
            from eotransfer.evaluation.classical import embedding_fn

            embed = embedding_fn(self.network, str((self.card.get("classifier") or {}).get("stage", "pooled")))
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size], dtype=np.float32))
            x = x.to(self.device)  # the result is needed at once: pinning a fresh batch would only add a copy
            if self.classifier is not None:
                from eotransfer.evaluation.classical import classifier_proba

                assert embed is not None
                feats = embed(x).float().cpu().numpy()
                out.append(classifier_proba(self.classifier, feats, len(self.classes)))
            else:
                out.append(torch.softmax(self.network(x).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)


def load_model(path: str | Path, task: str | None = None) -> SavedModel:
    """Load a model directory written by :func:`save_model` (safetensors only: nothing is unpickled).

    ``task`` picks one task of a multi-task network (a progressive one); default: its newest.
    """
    from eotransfer.models.backbones import build_network, get_architecture
    from eotransfer.models.model import EOClassifier

    p = Path(path)
    card_path = p / CARD_FILE
    if not card_path.is_file() or not (p / WEIGHT_FILE).is_file():
        raise WeightError(f"{p}: not an eotransfer model directory (needs {WEIGHT_FILE} and {CARD_FILE})")
    card = json.loads(card_path.read_text())
    builder = None
    if "network" in card:
        name = str(card["network"].get("builder"))
        builder = network_builder(name)
        if builder is None:
            raise WeightError(f"{p}: unknown network builder '{name}' in {CARD_FILE}; is it from a newer eotransfer?")
        net = builder.build(card)
    else:
        arch = get_architecture(card["arch"])
        n_bands = len(card["bands"])
        net = EOClassifier(
            build_network(arch, n_bands, card.get("img_size")), int(card["num_features"]), len(card["classes"]), n_bands
        )
    state = load_file(str(p / WEIGHT_FILE))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightError(
            f"{p}: weights do not match the card's architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    net.eval()
    classifier = None
    if (p / "classifier.skops").is_file():
        from eotransfer.evaluation.classical import load_classifier

        classifier = load_classifier(p / "classifier.skops")
    if task is not None:
        if builder is None or builder.for_task is None:
            raise ConfigError(f"--task: {p} holds one task; leave --task out")
        net, card = builder.for_task(net, card, task)
    return SavedModel(net, card, p, classifier)
