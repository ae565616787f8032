"""Plots of training runs (files, never windows: the Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Training loss per epoch, and every ``*accuracy`` column (validation or monitor) on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(x, [row.get("train_loss", np.nan) for row in history], color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    acc_keys = sorted({k for row in history for k in row if k.endswith("accuracy")})
    if acc_keys:
        ax2 = ax.twinx()
        for k, color in zip(acc_keys, ("tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False):
            xs = [i + 1 for i, row in enumerate(history) if k in row]
            ax2.plot(xs, [history[i - 1][k] for i in xs], "o-", ms=3, color=color, label=k.replace("_", " "))
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
