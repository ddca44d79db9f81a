"""Figures: matplotlib without a display, PNGs written atomically, and a run's learning curves."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from jaxnets.io import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Render to PNG in memory, then write atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_run_curves(history: Sequence[dict], path, *, title: str = "") -> Path:
    """``curves.png`` of one run: loss (left) and the task's metric (right) against the epoch,
    for the training, validation and test splits present in ``history``.

    >>> import tempfile
    >>> history = [{"epoch": e, "train_loss": 1 / (e + 1), "test_loss": 1.2 / (e + 1), "train_accuracy": 0.5,
    ...             "test_accuracy": 0.4} for e in range(3)]
    >>> with tempfile.TemporaryDirectory() as out:
    ...     plot_run_curves(history, Path(out) / "curves.png").name
    'curves.png'
    """
    plt = pyplot()
    epochs = [entry["epoch"] for entry in history]
    metric = next((m for m in ("accuracy", "rmse") if any(f"{s}_{m}" in e for e in history for s in
                                                            ("train", "val", "test"))), None)
    fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(10 if metric else 5.5, 3.8), squeeze=False)
    for column, name in enumerate(["loss", *([metric] if metric else [])]):
        ax = axes[0][column]
        for split in ("train", "val", "test"):
            key = f"{split}_{name}"
            points = [(e["epoch"], e[key]) for e in history if key in e]
            if points:
                ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if name == "loss" and all(e.get(f"{s}_loss", 1) > 0 for e in history for s in ("train", "val", "test")):
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    if len(epochs) == 1:
        for ax in axes[0]:
            ax.set_xticks(epochs)
    return save_figure(fig, path)


__all__ = ["pyplot", "save_figure", "plot_run_curves"]
