"""Atomic, resumable checkpoints, loaded only with ``weights_only=True``."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from eotransfer.errors import CheckpointError


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of the settings that must match for a run to be resumed."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path, expected_hash: str, kind: str = "") -> dict[str, Any]:
    """Load a checkpoint and check it belongs to this kind of run (``fit:finetune``, ``pretrain:moco``) and configuration."""
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}; run without --resume to start afresh")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}); delete it and start afresh"
        ) from None
    if kind and state.get("kind", kind) != kind:
        raise CheckpointError(
            f"--resume: {path} holds a '{state.get('kind')}' run, not '{kind}'; resume with the same method and "
            "strategy, or use a new --out folder"
        )
    if state.get("config_hash") != expected_hash:
        raise CheckpointError(
            f"--resume: {path} was written by a different configuration (hash {state.get('config_hash')} vs "
            f"{expected_hash}); use the same settings, or a new --out folder"
        )
    return dict(state)
