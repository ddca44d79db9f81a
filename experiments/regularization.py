"""Regularization and architecture choices: validation curves and selection by validation.

Slides: "Regularization" / "Choosing the architecture" (under- and over-fitting,
dropout, L1 and L2 penalties, picking hyperparameters on a validation set).

    python -m experiments.regularization                  # fast default (~1.5 min on 2 cores)
    python -m experiments.regularization --full           # more values, more epochs
    python -m experiments.regularization --update-docs    # also refresh docs/experiments/regularization.md

An MLP (Adam, lr 1e-3, batch 64) is trained on ``digits`` loaded with
``jn.data.load("digits", validation=0.2)``; the training split is cut to ``n_train``
rows (default 300) so that a large network can over-fit within a few epochs. Five
one-dimensional sweeps, each from the same base network:

* width of one hidden layer (under-fitting when narrow);
* depth (number of hidden layers of ``depth_width`` units);
* dropout rate (``get_model("mlp", dropout_rate=...)``) at width ``base_width``;
* L2 strength (``TrainConfig(l2=...)``, penalty l2·½Σw²) and
* L1 strength (``TrainConfig(l1=...)``, penalty l1·Σ|w|), both at width ``base_width``.

For every value the experiment records the final train, validation and test
accuracy. The chosen value of each sweep is the one with the highest validation
accuracy (ties go to the first value listed); its test accuracy is reported, and the
test set plays no part in the choice (``choose`` only reads ``val_accuracy``).
Writes ``results.json`` and ``validation_curves.png`` (train vs validation accuracy
against each hyperparameter, chosen value marked) to ``--out``
(default ``results/regularization``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import jaxnets as jn
from experiments.common import figure, main_for, markdown_table, save_figure, save_json

QUICK = {"widths": (2, 8, 32, 128), "depths": (1, 2, 4), "dropouts": (0.0, 0.3, 0.6, 0.9),
         "l2s": (0.0, 1e-3, 1e-2, 1e-1, 1.0), "l1s": (0.0, 1e-4, 1e-3, 1e-2, 1e-1), "epochs": 30}
FULL = {"widths": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512), "depths": (1, 2, 3, 4, 6, 8),
        "dropouts": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        "l2s": (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
        "l1s": (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "epochs": 100}
SWEEPS = ("width", "depth", "dropout", "l2", "l1")
LOG_AXIS = {"width": True, "depth": False, "dropout": False, "l2": True, "l1": True}


def subsample(data: jn.data.Dataset, n_train: int | None, seed: int) -> jn.data.Dataset:
    """``data`` with its training split cut to ``n_train`` random rows (None keeps all)."""
    if n_train is None or n_train >= data.num_train:
        return data
    if n_train < data.num_classes:
        raise ValueError(f"n_train: got {n_train}; allowed: at least {data.num_classes} (the number of classes)")
    rows = np.sort(np.random.default_rng(seed).permutation(data.num_train)[:n_train])
    return jn.data.Dataset(x_train=np.asarray(data.x_train)[rows], y_train=np.asarray(data.y_train)[rows],
                           x_val=data.x_val, y_val=data.y_val, x_test=data.x_test, y_test=data.y_test,
                           task=data.task, num_classes=data.num_classes, name=f"{data.name}[:{n_train}]")


def choose(rows: Sequence[dict[str, Any]]) -> int:
    """Index of the row with the highest ``val_accuracy`` (first one on ties); reads nothing else.

    >>> choose([{"val_accuracy": 0.5, "test_accuracy": 0.9}, {"val_accuracy": 0.7, "test_accuracy": 0.1}])
    1
    """
    if not rows:
        raise ValueError("rows: got none; allowed: at least one sweep value")
    return int(np.argmax([row["val_accuracy"] for row in rows]))


def train_one(data: jn.data.Dataset, *, hidden: tuple[int, ...], dropout: float, l1: float, l2: float,
              epochs: int, seed: int) -> dict[str, float]:
    """Final train/validation/test accuracy of one MLP."""
    model = jn.models.get_model("mlp", output_dim=data.output_dim, hidden=hidden, dropout_rate=dropout)
    config = jn.TrainConfig(epochs=epochs, batch_size=64, l1=l1, l2=l2, seed=seed, eval_every=epochs)
    final = jn.fit(model, data, jn.optim.create("adam", 1e-3), config).history[-1]
    return {key: float(final[key]) for key in ("train_accuracy", "val_accuracy", "test_accuracy",
                                                "train_loss", "val_loss")}


def run(quick: bool = True, out: Path = Path("results/regularization"), *, dataset: str = "digits",
        n_train: int | None = 300, base_width: int = 128, depth_width: int = 32, seed: int = 0,
        widths: Sequence[int] | None = None, depths: Sequence[int] | None = None,
        dropouts: Sequence[float] | None = None, l2s: Sequence[float] | None = None,
        l1s: Sequence[float] | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Run the five sweeps; write ``out/results.json`` and ``out/validation_curves.png``."""
    setting = dict(QUICK if quick else FULL)
    if not any(v is None or len(v) for v in (widths, depths, dropouts, l2s, l1s)):
        raise ValueError("sweeps: got every sweep empty; allowed: at least one value in one sweep")
    for key, value in {"widths": widths, "depths": depths, "dropouts": dropouts, "l2s": l2s,
                       "l1s": l1s, "epochs": epochs}.items():
        if value is not None:
            setting[key] = value
    data = subsample(jn.data.load(dataset, seed=seed, validation=0.2), n_train, seed)
    base = {"hidden": (base_width,), "dropout": 0.0, "l1": 0.0, "l2": 0.0}
    grids = {
        "width": [(w, {**base, "hidden": (int(w),)}) for w in setting["widths"]],
        "depth": [(d, {**base, "hidden": (depth_width,) * int(d)}) for d in setting["depths"]],
        "dropout": [(p, {**base, "dropout": float(p)}) for p in setting["dropouts"]],
        "l2": [(v, {**base, "l2": float(v)}) for v in setting["l2s"]],
        "l1": [(v, {**base, "l1": float(v)}) for v in setting["l1s"]],
    }
    sweeps: dict[str, Any] = {}
    for name, grid in grids.items():
        if not grid:  # an empty sweep is skipped (the tests run only the ones they check)
            continue
        rows = [{"value": value, **train_one(data, epochs=int(setting["epochs"]), seed=seed, **options)}
                for value, options in grid]
        best = choose(rows)
        sweeps[name] = {"rows": rows, "chosen_index": best, "chosen_value": rows[best]["value"],
                        "chosen_val_accuracy": rows[best]["val_accuracy"],
                        "chosen_test_accuracy": rows[best]["test_accuracy"]}
    results = {"dataset": dataset, "n_train": data.num_train, "n_val": data.num_val, "n_test": data.num_test,
               "epochs": int(setting["epochs"]), "base_width": base_width, "depth_width": depth_width,
               "seed": seed, "quick": quick, "optimizer": "adam lr 1e-3, batch 64", "sweeps": sweeps}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out, results)
    plot(results, out / "validation_curves.png")
    return results


def plot(results: dict[str, Any], path: Path) -> Path:
    """Train and validation accuracy against each hyperparameter, the chosen value marked."""
    names = [name for name in SWEEPS if name in results["sweeps"]]
    fig, axes = figure(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, names):
        sweep = results["sweeps"][name]
        values = np.array([row["value"] for row in sweep["rows"]], dtype=float)
        # Penalties include 0, which a log axis cannot show: plot it one decade below the smallest positive value.
        if LOG_AXIS[name] and (values > 0).any():
            floor = values[values > 0].min() / 10
            values = np.where(values > 0, values, floor)
            ax.set_xscale("log")
        for key, style in (("train_accuracy", "o-"), ("val_accuracy", "s-")):
            ax.plot(values, [row[key] for row in sweep["rows"]], style, label=key.split("_")[0])
        ax.axvline(values[sweep["chosen_index"]], color="gray", ls="--", label="chosen (val)")
        ax.set_xlabel(name + (" (0 drawn at left end)" if name in ("l1", "l2") else ""))
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"{results['dataset']}, {results['n_train']} training rows, {results['epochs']} epochs")
    return save_figure(fig, path)


def summary(results: dict[str, Any]) -> str:
    """Markdown: each sweep's values with train/val accuracy, and the chosen value with its test accuracy."""
    rows = []
    for name in (name for name in SWEEPS if name in results["sweeps"]):
        sweep = results["sweeps"][name]
        curve = ", ".join(f"{row['value']:g}: {row['train_accuracy']:.2f}/{row['val_accuracy']:.2f}"
                          for row in sweep["rows"])
        rows.append([name, curve, f"{sweep['chosen_value']:g}", sweep["chosen_val_accuracy"],
                     sweep["chosen_test_accuracy"]])
    header = (f"MLP on `{results['dataset']}` ({results['n_train']} train / {results['n_val']} validation / "
              f"{results['n_test']} test rows, {results['epochs']} epochs, seed {results['seed']}).\n\n")
    return header + markdown_table(["hyperparameter", "value: train/val accuracy", "chosen by val",
                                    "val accuracy", "test accuracy"], rows)


if __name__ == "__main__":
    sys.exit(main_for(run, "regularization", __doc__, summary))
