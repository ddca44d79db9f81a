"""Double descent: test error against model size around the interpolation threshold.

Slide (ECON 4810 lecture 3, "brief intro to double descent"): past the point where a
model has just enough parameters to fit the training set exactly, the test error can
fall again as the model keeps growing, instead of rising for ever as the classical
U-shaped bias-variance picture says.

Two curves on a subset of MNIST-1D (40 features, 10 classes) whose *training* labels have
a share of label noise injected with a fixed seed (each noisy label replaced by a
different class drawn uniformly); the test labels stay clean:

1. **Random ReLU features + min-norm least squares** (NumPy, closed form): features
   φ(x) = max(0, x·W), W ~ N(0, 1/d) of width p, fitted to the one-hot labels by the
   minimum-norm least-squares solution (``np.linalg.lstsq``). Each output has p
   coefficients for n_train equations, so the interpolation threshold is p = n_train.
2. **A one-hidden-layer jaxnets MLP** of width h trained by full-batch Adam
   (``jn.fit``) on the same noisy data. Its threshold is fuzzier; it is taken as the
   smallest width that reaches zero training error, and the figure also marks
   params = n_train and params = n_train × classes (the number of fitted outputs).

Reported: test MSE and test classification error against width, averaged over feature
seeds, the training error (0 past the threshold means interpolation), and whether a peak
appears (the test error at the threshold above the best of the smaller models and above the
largest model, by more than two binomial standard errors for classification errors).

Commands::

    .venv/bin/python -m experiments.double_descent                 # fast default
    .venv/bin/python -m experiments.double_descent --full          # more widths, seeds, epochs
    .venv/bin/python -m experiments.double_descent --update-docs   # refresh docs/experiments/double_descent.md

Writes ``results/double_descent/results.json`` and ``double_descent.png``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import jaxnets as jn

if __package__ in (None, ""):  # run as a file: make ``experiments`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.common import figure, main_for, markdown_table, save_figure, save_json


def inject_label_noise(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """A copy of ``labels`` where a share ``rate`` (exactly round(rate·n)) gets another class."""
    if not 0 <= rate < 1:
        raise ValueError(f"label_noise: got {rate!r}; allowed: 0 <= rate < 1")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).copy()
    flip = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    labels[flip] = (labels[flip] + rng.integers(1, num_classes, size=len(flip))) % num_classes
    return labels


def random_features_fit(x_train, y_train, x_test, y_test, num_features: int, num_classes: int,
                        seed: int) -> dict:
    """Min-norm least squares on p = ``num_features`` random ReLU features (NumPy).

    Returns train/test MSE on the one-hot targets and train/test classification error.
    """
    rng = np.random.default_rng(seed)
    d = x_train.shape[1]
    w = rng.normal(0.0, 1.0 / np.sqrt(d), size=(d, num_features))
    phi_train, phi_test = np.maximum(x_train @ w, 0.0), np.maximum(x_test @ w, 0.0)
    targets = np.eye(num_classes)[y_train]
    # lstsq returns the minimum-norm solution when the system is underdetermined (p > n).
    beta = np.linalg.lstsq(phi_train, targets, rcond=None)[0]
    pred_train, pred_test = phi_train @ beta, phi_test @ beta
    return {"train_mse": float(np.mean((pred_train - targets) ** 2)),
            "test_mse": float(np.mean((pred_test - np.eye(num_classes)[y_test]) ** 2)),
            "train_error": float(np.mean(pred_train.argmax(1) != y_train)),
            "test_error": float(np.mean(pred_test.argmax(1) != y_test)),
            "coef_norm": float(np.linalg.norm(beta))}


def random_features_curve(x_train, y_train, x_test, y_test, widths: Sequence[int], num_classes: int,
                          seeds: Sequence[int]) -> list[dict]:
    """``random_features_fit`` for each width, averaged over ``seeds``."""
    rows = []
    for p in widths:
        fits = [random_features_fit(x_train, y_train, x_test, y_test, p, num_classes, s) for s in seeds]
        row = {"width": int(p), "params_per_output": int(p)}
        for key in fits[0]:
            row[key] = float(np.mean([f[key] for f in fits]))
        rows.append(row)
    return rows


def peak_report(rows: list[dict], key: str, threshold: float, size_key: str, margin: float = 0.0) -> dict:
    """Is the error at the model nearest the threshold above the best smaller model and the largest?

    "Above" means by more than ``margin`` (e.g. two binomial standard errors of a test
    error, so that noise of the test sample alone does not count as a peak).
    """
    sizes = np.array([r[size_key] for r in rows], dtype=float)
    values = np.array([r[key] for r in rows], dtype=float)
    at = int(np.argmin(np.abs(np.log(sizes) - np.log(threshold))))
    below = values[:at]
    return {"metric": key, "threshold": threshold, "size_at_threshold": float(sizes[at]),
            "value_at_threshold": float(values[at]),
            "min_below": float(below.min()) if below.size else None,
            "value_largest": float(values[-1]),
            "margin": margin,
            "peak": bool(below.size and values[at] > below.min() + margin and values[at] > values[-1] + margin),
            "argmax_size": float(sizes[int(np.argmax(values))])}


def _two_se(rows: list[dict], n_test: int) -> float:
    """Two binomial standard errors of a test error, at the mean error of ``rows``."""
    if not rows:
        return 0.0
    p = float(np.mean([r["test_error"] for r in rows]))
    return 2.0 * float(np.sqrt(p * (1.0 - p) / n_test))


def run(quick: bool = True, out: Path = Path("results/double_descent"), *,
        n_train: int | None = None, n_test: int = 1000, label_noise: float = 0.15,
        rf_widths: Sequence[int] | None = None, rf_seeds: Sequence[int] | None = None,
        nn_widths: Sequence[int] | None = None, nn_epochs: int | None = None,
        nn_lr: float = 1e-2, seed: int = 0) -> dict:
    """Both curves; writes results.json and double_descent.png into ``out``.

    Args:
      quick: the fast default (n_train 400, 3 feature seeds, 8 MLP widths, 1000 epochs).
      out: output directory.
      n_train: training examples (a subset of MNIST-1D's training split).
      n_test: clean test examples.
      label_noise: share of training labels replaced by another class.
      rf_widths: random-feature counts p; rf_seeds: feature seeds averaged over.
      nn_widths: hidden widths of the MLP (empty: skip the MLP curve); nn_epochs and
        nn_lr: full-batch Adam epochs and learning rate.
      seed: seed of the subset, the label noise and the MLP initialization.

    Returns:
      The results dictionary (also written to ``out/results.json``).
    """
    n_train = n_train if n_train is not None else (400 if quick else 1000)
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 10:
        raise ValueError(f"n_train: got {n_train!r}; allowed: an int >= 10")
    if rf_widths is None:
        rf_widths = sorted({max(1, int(round(n_train * f))) for f in
                            (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2, 4, 10)
                            + (() if quick else (25,))})
    rf_seeds = tuple(rf_seeds) if rf_seeds is not None else ((0, 1, 2) if quick else tuple(range(10)))
    nn_widths = tuple(nn_widths) if nn_widths is not None else (
        (2, 4, 8, 16, 32, 64, 256) if quick else (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024))
    nn_epochs = nn_epochs if nn_epochs is not None else (1000 if quick else 4000)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    data = jn.data.load("mnist1d", num_samples=max(2000, int(n_train / 0.8) + 2, int(n_test / 0.2) + 2))
    if data.x_train.shape[0] < n_train or data.x_test.shape[0] < n_test:
        raise ValueError(f"n_train/n_test: got {n_train}/{n_test}; more than MNIST-1D generated")
    k = data.num_classes
    rng = np.random.default_rng(seed)
    idx = rng.choice(data.x_train.shape[0], size=n_train, replace=False)
    x_train = np.asarray(data.x_train[idx], np.float64)
    clean_train = np.asarray(data.y_train[idx])
    y_train = inject_label_noise(clean_train, label_noise, k, seed)
    x_test = np.asarray(data.x_test[:n_test], np.float64)
    y_test = np.asarray(data.y_test[:n_test])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    started = time.perf_counter()
    rf_rows = random_features_curve(x_train, y_train, x_test, y_test, rf_widths, k, rf_seeds)

    rf_seconds = time.perf_counter() - started
    print(f"random features: {rf_seconds:.1f} s", flush=True)
    nn_rows = []
    subset = jn.data.Dataset(x_train=x_train.astype(np.float32), y_train=y_train.astype(np.int32),
                             x_val=np.zeros((0, x_train.shape[1]), np.float32), y_val=np.zeros((0,), np.int32),
                             x_test=x_test.astype(np.float32), y_test=y_test.astype(np.int32),
                             task="multiclass", num_classes=k, name="mnist1d-noisy-subset")
    for h in nn_widths:
        model = jn.models.get_model("mlp", output_dim=k, hidden=(int(h),), activation="relu", kernel_init="he")
        fitted = jn.fit(model, subset, jn.optim.create("adam", nn_lr),
                        jn.TrainConfig(epochs=nn_epochs, batch_size=None, seed=seed,
                                       eval_every=nn_epochs))
        final = fitted.final
        nn_rows.append({"width": int(h), "params": int(fitted.num_params),
                        "train_error": 1.0 - float(final["train_accuracy"]),
                        "test_error": 1.0 - float(final["test_accuracy"]),
                        "train_loss": float(final["train_loss"]), "test_loss": float(final["test_loss"])})

    # The MLP's threshold, measured: the smallest model that fits every (noisy) training label.
    fitted_all = [r["params"] for r in nn_rows if r["train_error"] == 0.0]
    interpolation = int(min(fitted_all)) if fitted_all else None
    rf_margin = _two_se(rf_rows, n_test)
    results = {"dataset": "mnist1d", "n_train": n_train, "n_test": n_test, "label_noise": label_noise,
               "noisy_labels": int(np.sum(y_train != clean_train)), "num_classes": k,
               "features_standardized": True, "seed": seed,
               "random_features": {"widths": list(map(int, rf_widths)), "seeds": list(rf_seeds),
                                   "threshold_p": n_train, "rows": rf_rows,
                                   "peak_test_mse": peak_report(rf_rows, "test_mse", n_train, "width"),
                                   "peak_test_error": peak_report(rf_rows, "test_error", n_train, "width", rf_margin)},
               "mlp": {"widths": list(map(int, nn_widths)), "epochs": nn_epochs,
                       "optimizer": f"adam lr {nn_lr:g}, full batch",
                       "threshold_params": [n_train, n_train * k], "rows": nn_rows,
                       "interpolation_params": interpolation,
                       "peak_test_error": peak_report(nn_rows, "test_error", interpolation, "params",
                                                      _two_se(nn_rows, n_test)) if interpolation else None,
                       "peak_test_loss": peak_report(nn_rows, "test_loss", interpolation, "params")
                       if interpolation else None}}
    save_json(out, results)
    _plot(results, out / "double_descent.png")
    return results


def _plot(results: dict, path: Path) -> None:
    rf, mlp = results["random_features"], results["mlp"]
    fig, axes = figure(1, 3 if mlp["rows"] else 2, figsize=(15 if mlp["rows"] else 10, 4))
    p = [r["width"] for r in rf["rows"]]
    axes[0].loglog(p, [r["test_mse"] for r in rf["rows"]], "o-", label="test MSE")
    axes[0].loglog(p, [max(r["train_mse"], 1e-12) for r in rf["rows"]], "s--", label="train MSE (floored at 1e-12)")
    axes[1].semilogx(p, [r["test_error"] for r in rf["rows"]], "o-", label="test error")
    axes[1].semilogx(p, [r["train_error"] for r in rf["rows"]], "s--", label="train error")
    for ax in axes[:2]:
        ax.axvline(rf["threshold_p"], color="k", ls=":", label="p = n_train")
        ax.set_xlabel("random ReLU features p")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("Random features: MSE")
    axes[1].set_title("Random features: classification error")
    if mlp["rows"]:
        params = [r["params"] for r in mlp["rows"]]
        axes[2].semilogx(params, [r["test_error"] for r in mlp["rows"]], "o-", label="test error")
        axes[2].semilogx(params, [r["train_error"] for r in mlp["rows"]], "s--", label="train error")
        n, nk = mlp["threshold_params"]
        axes[2].axvline(n, color="k", ls=":", label="params = n_train")
        axes[2].axvline(nk, color="gray", ls="-.", label="params = n_train × classes")
        if mlp["interpolation_params"]:
            axes[2].axvline(mlp["interpolation_params"], color="r", ls="--", lw=0.8,
                            label="first MLP with zero train error")
        loss_ax = axes[2].twinx()
        loss_ax.semilogx(params, [r["test_loss"] for r in mlp["rows"]], "^:", color="C3", label="test loss")
        loss_ax.set_ylabel("test cross-entropy", color="C3")
        axes[2].set_xlabel("MLP parameters (one hidden layer)")
        axes[2].set_title(f"jaxnets MLP, {mlp['epochs']} epochs of full-batch Adam")
        axes[2].legend(fontsize=8)
        axes[2].grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Random ReLU features + min-norm least squares, and an MLP; MNIST-1D, n_train = {results['n_train']}, {results['label_noise']:.0%} label noise "
                 f"in training labels, clean test set")
    save_figure(fig, path)


def _peak_line(name: str, report: dict | None) -> str:
    if report is None:
        return f"- {name}: not run."
    below = "n/a" if report["min_below"] is None else f"{report['min_below']:.4g}"
    verdict = ("a peak appears" if report["peak"] else "NO peak at the threshold")
    if report["margin"]:
        verdict += f" (margin required {report['margin']:.3g}, two binomial standard errors)"
    return (f"- {name}: {verdict}: {report['metric']} {report['value_at_threshold']:.4g} at size "
            f"{report['size_at_threshold']:.0f} (threshold {report['threshold']:.0f}) vs best smaller model "
            f"{below} and largest model {report['value_largest']:.4g}; the curve's maximum is at size "
            f"{report['argmax_size']:.0f}.")


def summary(results: dict) -> str:
    """Markdown tables of both curves and a plain statement of whether each peaks."""
    rf, mlp = results["random_features"], results["mlp"]
    text = [f"MNIST-1D subset: n_train = {results['n_train']} ({results['noisy_labels']} noisy labels, "
            f"{results['label_noise']:.0%}), clean test n = {results['n_test']}.", "",
            _peak_line("Random features, test MSE", rf["peak_test_mse"]),
            _peak_line("Random features, test error", rf["peak_test_error"]),
            _peak_line("MLP, test error (threshold = smallest MLP with zero training error)", mlp["peak_test_error"]),
            _peak_line("MLP, test cross-entropy (same threshold)", mlp["peak_test_loss"]),
            "", f"Random ReLU features + min-norm least squares (mean of {len(rf['seeds'])} feature seeds):", "",
            markdown_table(["p", "p / n_train", "train MSE", "test MSE", "train error", "test error", "‖β‖"],
                           [[r["width"], r["width"] / results["n_train"], r["train_mse"], r["test_mse"],
                             r["train_error"], r["test_error"], r["coef_norm"]] for r in rf["rows"]])]
    if mlp["rows"]:
        text += ["", f"One-hidden-layer MLP ({mlp['optimizer']}, {mlp['epochs']} epochs):", "",
                 markdown_table(["width", "params", "params / n_train", "train error", "test error", "test loss"],
                                [[r["width"], r["params"], r["params"] / results["n_train"], r["train_error"],
                                  r["test_error"], r["test_loss"]] for r in mlp["rows"]])]
    return "\n".join(text)


if __name__ == "__main__":
    sys.exit(main_for(run, "double_descent", __doc__, summary))
