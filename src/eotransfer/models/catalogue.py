"""The local weight catalogue: backbones pre-trained with ``eotransfer pretrain``, found by name.

Two places are searched, in order: the weights shipped inside the package (``eotransfer/weights``;
only weights trained on redistributable data) and the user's catalogue
(``$EOTRANSFER_CACHE/catalogue``, default ``~/.cache/eotransfer/catalogue``) where ``pretrain
--register NAME`` puts a run.  Each entry is a folder with ``weights.safetensors`` and ``card.json``,
so an entry is loaded exactly as ``--weights path/to/folder`` would be.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from eotransfer.errors import ConfigError, WeightError

PREFIX = "eotransfer:"


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "weights"


def user_dir() -> Path:
    return Path(os.environ.get("EOTRANSFER_CACHE", Path.home() / ".cache" / "eotransfer")) / "catalogue"


def _entries() -> list[tuple[str, Path, str]]:
    out = []
    for where, root in (("package", package_dir()), ("user", user_dir())):
        if root.is_dir():
            out += [(d.name, d, where) for d in sorted(root.iterdir()) if (d / "card.json").is_file()]
    return out


def find_local(name: str) -> Path | None:
    """The folder of catalogue entry ``name`` (``eotransfer:`` prefix optional), or None."""
    name = name.removeprefix(PREFIX)
    if not name or "/" in name or name.startswith("."):
        return None
    for entry, path, _ in _entries():
        if entry == name:
            return path
    return None


def local_catalogue() -> list[dict[str, Any]]:
    """Rows for ``eotransfer backbones``: name, architecture, bands, method, data and monitor score."""
    rows = []
    for name, path, where in _entries():
        try:
            card = json.loads((path / "card.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        pre = card.get("pretraining", {})
        rows.append({
            "name": PREFIX + name, "where": where, "arch": card.get("arch"), "n_bands": len(card.get("bands", [])),
            "bands": ",".join(b["name"] if isinstance(b, dict) else str(b) for b in card.get("bands", [])),
            "method": pre.get("method"), "data": ",".join(s.get("name", "") for s in pre.get("data", [])),
            "monitor": pre.get("monitor", {}), "path": str(path),
        })  # fmt: skip
    return rows


def register(model_dir: Path, name: str) -> Path:
    """Copy a pre-trained backbone folder into the user catalogue as ``name`` (atomically)."""
    from eotransfer.card import atomic_write_dir

    if not name or "/" in name or name.startswith(".") or name.startswith(PREFIX):
        raise ConfigError(f"--register: '{name}' is not a valid catalogue name (letters, digits, '-', '_')")
    if not (model_dir / "card.json").is_file():
        raise WeightError(f"{model_dir}: not a pre-trained backbone folder (no card.json)")

    def write(tmp: Path) -> None:
        for f in model_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)

    return atomic_write_dir(user_dir() / name, write)
