"""Universal approximation: one hidden layer fits a continuous function, better as it widens.

The slides state the universal approximation theorem: a network with one hidden
layer of enough neurons can approximate any continuous function on a compact set
to any accuracy, in the sup norm. This experiment fits ``sin(x)`` and the kinked
``|x|`` on ``[-pi, pi]`` (``jn.data.load("sine", function=...)``, noiseless) with
one hidden layer of width 1, 2, 4, ... (sigmoid and ReLU), full-batch Adam with a
cosine-decayed learning rate, several seeds per width trained together by
``jaxnets.population.fit_population`` (one compiled program per width). The
sup-error is the largest absolute error on a dense, evenly spaced test grid. For
each width it reports the best (minimum over seeds) and the median sup-error, and
the slope of ``log(best sup-error)`` against ``log(width)`` fitted by least squares.

Commands::

    python -m experiments.universal_approximation            # fast default
    python -m experiments.universal_approximation --full     # widths to 256, more seeds and steps
    python -m experiments.universal_approximation --update-docs

Writes ``results/universal_approximation/results.json`` and ``sup_error.png``
(log-log sup-error against width) and ``fits.png`` (the fitted curves).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

import jaxnets as jn
from jaxnets.population import fit_population

from experiments.common import figure, main_for, markdown_table, save_figure, save_json

FUNCTIONS = ("sine", "kink")
ACTIVATIONS = ("sigmoid", "relu")


def _check_widths(widths: Sequence[int]) -> list[int]:
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w < 1 for w in widths) or sorted(set(widths)) != widths:
        raise ValueError(f"widths: got {widths}; allowed: at least two increasing integers >= 1")
    return widths


def sup_errors(model, params, x, y) -> np.ndarray:
    """Max |f_net(x) - f(x)| over the grid ``x``, one value per stacked member of ``params``."""
    preds = jax.vmap(lambda p: model.apply({"params": p}, x, train=False))(params)
    return np.abs(np.asarray(preds, np.float64)[..., 0] - np.asarray(y, np.float64)[None, :, 0]).max(axis=1)


def loglog_slope(widths: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(width)."""
    return float(np.polyfit(np.log(np.asarray(widths, float)), np.log(np.asarray(errors, float)), 1)[0])


def run(quick: bool = True, out: Path = Path("results/universal_approximation"), *,
        widths: Sequence[int] | None = None, seeds: int | None = None, epochs: int | None = None,
        n_train: int = 256, n_grid: int = 2001, learning_rate: float = 0.03,
        functions: Sequence[str] = FUNCTIONS, activations: Sequence[str] = ACTIVATIONS) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    widths = _check_widths(widths or ([1, 2, 4, 8, 16, 32, 64] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]))
    seeds = seeds or (4 if quick else 8)
    epochs = epochs or (1500 if quick else 6000)
    for name in functions:
        if name not in FUNCTIONS:
            raise ValueError(f"functions: got {name!r}; allowed: {', '.join(FUNCTIONS)}")
    for name in activations:
        if name not in ACTIVATIONS:
            raise ValueError(f"activations: got {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    config = jn.TrainConfig(epochs=epochs, batch_size=None, eval_every=epochs, eval_train=False)
    results: dict = {"widths": widths, "seeds": list(range(seeds)), "epochs": epochs, "n_train": n_train,
                     "n_grid": n_grid, "optimizer": "adam", "learning_rate": learning_rate,
                     "schedule": "cosine", "runs": {}}
    curves: dict = {}
    for function in functions:
        data = jn.data.load("sine", function=function, n_train=n_train, n_test=n_grid)
        for activation in activations:
            rows = []
            for width in widths:
                model = jn.models.get_model("mlp", output_dim=1, hidden=(width,), activation=activation)
                tx = jn.optim.create("adam", learning_rate, schedule="cosine", total_steps=epochs)
                fitted = fit_population(model, data, tx, config, seeds=list(range(seeds)))
                errors = sup_errors(model, fitted.state.params, data.x_test, data.y_test)
                errors = np.where(np.isfinite(errors), errors, np.inf)
                best = int(np.argmin(errors))
                rows.append({"width": width, "num_params": fitted.num_params, "sup_error": errors.tolist(),
                             "best": float(errors[best]), "median": float(np.median(errors)),
                             "test_mse": [float(v) for v in fitted.history[-1]["test_loss"]],
                             "train_time_s": fitted.train_time_s})
                if width in (widths[0], widths[len(widths) // 2], widths[-1]):
                    member = jax.tree_util.tree_map(lambda leaf: leaf[best], fitted.state.params)
                    curves[(function, activation, width)] = np.asarray(
                        model.apply({"params": member}, data.x_test, train=False))[:, 0]
            key = f"{function}/{activation}"
            results["runs"][key] = {
                "rows": rows,
                "slope_best": loglog_slope(widths, [r["best"] for r in rows]),
                "slope_median": loglog_slope(widths, [r["median"] for r in rows]),
                "ratio_best_last_first": rows[-1]["best"] / rows[0]["best"],
            }
        curves[(function, "target")] = (np.asarray(data.x_test)[:, 0], np.asarray(data.y_test)[:, 0])
    save_json(out, results)
    _plot(results, curves, out)
    return results


def _plot(results: dict, curves: dict, out: Path) -> None:
    runs = results["runs"]
    fig, axes = figure(1, len({k.split("/")[0] for k in runs}), figsize=(11, 4.2), squeeze=False)
    functions = sorted({k.split("/")[0] for k in runs}, key=FUNCTIONS.index)
    for ax, function in zip(axes[0], functions):
        for key, run in runs.items():
            if not key.startswith(function + "/"):
                continue
            activation = key.split("/")[1]
            widths = [r["width"] for r in run["rows"]]
            line, = ax.loglog(widths, [r["best"] for r in run["rows"]], "o-",
                              label=f"{activation}: best (slope {run['slope_best']:.2f})")
            ax.loglog(widths, [r["median"] for r in run["rows"]], "s--", color=line.get_color(), alpha=0.6,
                      label=f"{activation}: median")
        ax.set(title=f"f(x) = {'sin(x)' if function == 'sine' else '|x|'} on [-pi, pi]", xlabel="hidden width",
               ylabel="sup-error  max |net(x) - f(x)|")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out / "sup_error.png")

    fig, axes = figure(len(ACTIVATIONS), len(functions), figsize=(11, 6.5), squeeze=False)
    for j, function in enumerate(functions):
        x, y = curves[(function, "target")]
        for i, activation in enumerate(ACTIVATIONS):
            ax = axes[i][j]
            ax.plot(x, y, "k", lw=2, label="target")
            for (f, a, *rest), pred in curves.items():
                if f == function and a == activation:
                    ax.plot(x, pred, lw=1, label=f"width {rest[0]}")
            ax.set(title=f"{function}, {activation} (best seed)", xlabel="x")
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "fits.png")


def summary(results: dict) -> str:
    rows = []
    for key, run in results["runs"].items():
        for r in run["rows"]:
            rows.append([key, r["width"], r["best"], r["median"]])
    table = markdown_table(["function/activation", "width", "best sup-error", "median sup-error"], rows)
    slopes = markdown_table(
        ["function/activation", "log-log slope (best)", "log-log slope (median)", "best(widest) / best(width 1)"],
        [[key, run["slope_best"], run["slope_median"], run["ratio_best_last_first"]]
         for key, run in results["runs"].items()])
    return (f"{len(results['seeds'])} seeds per width, {results['epochs']} full-batch Adam steps (cosine-decayed lr "
            f"{results['learning_rate']}), "
            f"sup-error on {results['n_grid']} grid points.\n\n{table}\n\n{slopes}")


if __name__ == "__main__":
    sys.exit(main_for(run, "universal_approximation", __doc__, summary))
