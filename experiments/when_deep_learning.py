"""When to use deep learning? MLP vs linear models vs gradient-boosted trees on tabular data, CNN on signals.

Slide: "When to use deep learning?" (deep nets pay off on data with spatial or
sequential structure and many examples; on small tabular data simpler models and
tree ensembles are hard to beat).

    python -m experiments.when_deep_learning                  # fast default (~1.5 min on 2 cores)
    python -m experiments.when_deep_learning --full           # 10 seeds, longer training
    python -m experiments.when_deep_learning --update-docs    # also refresh docs/experiments/when_deep_learning.md

Every dataset is loaded with ``jn.data.load(name, seed=s, validation=0.2)`` for each
seed s, and every model of that seed sees the same train/validation/test split (the
test split is the dataset's fixed one; s picks the validation rows, the
initialization and the batch order):

* tabular, bundled with scikit-learn: ``diabetes`` (regression, metric test R²),
  ``breast_cancer`` and ``wine`` (classification, metric test accuracy); and with
  statsmodels: ``fair`` (Fair's affairs survey, 6,366 rows, binary, test accuracy);
* ``mnist1d`` (1-D signals with spatial structure, 10 classes, test accuracy).

Models:

* ``linear`` / ``logistic`` (jaxnets): full-batch Adam (lr 1e-2) for a fixed number of
  epochs, no penalty; on diabetes its R² is checked against closed-form least squares
  (``ols_closed_form`` in the results);
* ``mlp`` (jaxnets): hidden (64, 64) on tabular data, (256, 256) on mnist1d, ReLU,
  Adam (lr 1e-3 on tabular data, 1e-2 on mnist1d), minibatches, early stopping on
  validation loss (best epoch restored);
* ``cnn`` (jaxnets ``cnn1d``, mnist1d only): same protocol as the MLP;
* ``hgb``: scikit-learn ``HistGradientBoostingRegressor``/``Classifier`` with default
  settings, trained on the training split.

Regression targets are standardized with the training mean and deviation before
training (R² does not change). The table gives mean ± standard deviation over the
seeds and the paired difference between the best deep model and the best other model
(``verdict``). Writes ``results.json`` (every score of every seed) and ``scores.png`` to
``--out`` (default ``results/when_deep_learning``).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import jaxnets as jn
from experiments.common import figure, main_for, markdown_table, save_figure, save_json

TABULAR = ("diabetes", "breast_cancer", "wine", "fair")
SPATIAL = ("mnist1d",)
TABULAR_MODELS = ("linear", "mlp", "hgb")
SPATIAL_MODELS = ("linear", "mlp", "cnn", "hgb")
DEEP = ("mlp", "cnn")
QUICK = {"seeds": (0, 1, 2), "tabular_epochs": 150, "spatial_epochs": 40, "linear_epochs": 300}
FULL = {"seeds": tuple(range(10)), "tabular_epochs": 400, "spatial_epochs": 150, "linear_epochs": 1000}


def standardize_targets(data: jn.data.Dataset) -> jn.data.Dataset:
    """A regression dataset whose targets are standardized with the training mean and deviation."""
    mean, std = np.mean(data.y_train, axis=0), np.std(data.y_train, axis=0) + 1e-12
    scale = lambda y: ((np.asarray(y) - mean) / std).astype(np.float32)  # noqa: E731
    return jn.data.Dataset(x_train=data.x_train, y_train=scale(data.y_train), x_val=data.x_val,
                           y_val=scale(data.y_val), x_test=data.x_test, y_test=scale(data.y_test),
                           task="regression", name=data.name)


def subsample(data: jn.data.Dataset, n_train: int | None, seed: int) -> jn.data.Dataset:
    """``data`` with its training split cut to ``n_train`` random rows (None keeps all)."""
    if n_train is None or n_train >= data.num_train:
        return data
    rows = np.sort(np.random.default_rng(seed).permutation(data.num_train)[:n_train])
    return jn.data.Dataset(x_train=np.asarray(data.x_train)[rows], y_train=np.asarray(data.y_train)[rows],
                           x_val=data.x_val, y_val=data.y_val, x_test=data.x_test, y_test=data.y_test,
                           task=data.task, num_classes=data.num_classes, name=data.name)


def r2(y, prediction) -> float:
    """Coefficient of determination 1 − SS_res / SS_tot (one target)."""
    y, prediction = np.ravel(y), np.ravel(prediction)
    return float(1.0 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2))


def score_jaxnets(model_name: str, data: jn.data.Dataset, *, hidden: tuple[int, ...], epochs: int,
                  linear_epochs: int, eval_every: int, seed: int, learning_rate: float = 1e-3) -> float:
    """Test R² (regression) or test accuracy of one jaxnets model."""
    if model_name == "linear":
        model = jn.models.get_model("linear" if data.task == "regression" else "logistic", output_dim=data.output_dim)
        tx, config = jn.optim.create("adam", 1e-2), jn.TrainConfig(
            epochs=linear_epochs, batch_size=None, seed=seed, eval_every=linear_epochs, eval_train=False)
    else:
        if model_name == "mlp":
            model = jn.models.get_model("mlp", output_dim=data.output_dim, hidden=hidden)
        else:
            model = jn.models.get_model("cnn1d", output_dim=data.output_dim)
        tx, config = jn.optim.create("adam", learning_rate), jn.TrainConfig(
            epochs=epochs, batch_size=32 if data.num_train < 1000 else 128, seed=seed, eval_every=eval_every,
            eval_train=False, early_stopping_patience=max(1, 20 // eval_every), restore_best=True)
    result = jn.fit(model, data, tx, config)
    if data.task == "regression":
        state = result.state
        prediction = state.apply_fn({"params": state.params, **state.model_state}, np.asarray(data.x_test),
                                    train=False)
        return r2(data.y_test, np.asarray(prediction))
    return float(result.final["test_accuracy"])


def score_hgb(data: jn.data.Dataset, *, seed: int, max_iter: int) -> float:
    """Test R² or accuracy of scikit-learn's histogram gradient boosting (default settings)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    x_train, x_test = np.asarray(data.x_train), np.asarray(data.x_test)
    # One OpenMP thread: on a shared 2-core machine more threads spin against each other.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data.task == "regression":
            model = HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed)
            model.fit(x_train, np.ravel(data.y_train))
            return r2(data.y_test, model.predict(x_test))
        model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
        model.fit(x_train, np.asarray(data.y_train))
        return float(np.mean(model.predict(x_test) == np.asarray(data.y_test)))


def ols_r2(data: jn.data.Dataset) -> float:
    """Test R² of closed-form least squares (with intercept) fitted on the training split."""
    design = lambda x: np.column_stack([np.ones(len(x)), np.asarray(x, np.float64)])  # noqa: E731
    coef, *_ = np.linalg.lstsq(design(data.x_train), np.asarray(data.y_train, np.float64), rcond=None)
    return r2(data.y_test, design(data.x_test) @ coef)


def verdict(scores: dict[str, list[float]]) -> dict[str, Any]:
    """Best deep model minus best other model (each picked by mean), paired over seeds.

    ``deep_learning_wins`` is "yes" when the mean paired difference exceeds twice its
    standard error, "no" when it is below minus twice that, and "tie" otherwise (always
    "tie" with a single seed, which gives no standard error).

    >>> verdict({"linear": [0.5, 0.6, 0.7], "mlp": [0.9, 0.8, 0.9]})["deep_learning_wins"]
    'yes'
    """
    deep = max((m for m in scores if m in DEEP), key=lambda m: np.mean(scores[m]))
    other = max((m for m in scores if m not in DEEP), key=lambda m: np.mean(scores[m]))
    diff = np.asarray(scores[deep]) - np.asarray(scores[other])
    se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    mean = float(np.mean(diff))
    wins = "yes" if mean - 2 * se > 0 else "no" if mean + 2 * se < 0 else "tie"
    return {"best_deep": deep, "best_other": other, "deep_minus_other": mean, "deep_minus_other_se": se,
            "deep_learning_wins": wins}


def run(quick: bool = True, out: Path = Path("results/when_deep_learning"), *,
        tabular: Sequence[str] = TABULAR, spatial: Sequence[str] = SPATIAL, seeds: Sequence[int] | None = None,
        tabular_epochs: int | None = None, spatial_epochs: int | None = None, linear_epochs: int | None = None,
        spatial_n_train: int | None = None, hgb_max_iter: int = 100) -> dict[str, Any]:
    """Score every model on every dataset for every seed; write ``out/results.json`` and ``out/scores.png``."""
    setting = dict(QUICK if quick else FULL)
    for key, value in {"seeds": seeds, "tabular_epochs": tabular_epochs, "spatial_epochs": spatial_epochs,
                       "linear_epochs": linear_epochs}.items():
        if value is not None:
            setting[key] = value
    if not setting["seeds"]:
        raise ValueError("seeds: got none; allowed: at least one seed")
    if not list(tabular) + list(spatial):
        raise ValueError("datasets: got none; allowed: at least one tabular or spatial dataset")
    datasets: dict[str, Any] = {}
    for kind, names in (("tabular", tabular), ("spatial", spatial)):
        for name in names:
            models = TABULAR_MODELS if kind == "tabular" else SPATIAL_MODELS
            scores: dict[str, list[float]] = {model: [] for model in models}
            ols: list[float] = []
            task = None
            for seed in setting["seeds"]:
                data = jn.data.load(name, seed=int(seed), validation=0.2)
                if kind == "spatial":
                    data = subsample(data, spatial_n_train, int(seed))
                if data.task == "regression":
                    data = standardize_targets(data)
                    ols.append(ols_r2(data))
                task = data.task
                options = {"hidden": (64, 64) if kind == "tabular" else (256, 256),
                           "epochs": int(setting[f"{kind}_epochs"]), "linear_epochs": int(setting["linear_epochs"]),
                           "eval_every": 1 if kind == "tabular" else 5, "seed": int(seed),
                           "learning_rate": 1e-3 if kind == "tabular" else 1e-2}
                for model in models:
                    scores[model].append(score_hgb(data, seed=int(seed), max_iter=hgb_max_iter) if model == "hgb"
                                         else score_jaxnets(model, data, **options))
            summary_ = {model: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                        for model, v in scores.items()}
            best = max(summary_, key=lambda model: summary_[model]["mean"])
            datasets[name] = {"kind": kind, "task": task, "metric": "test R²" if task == "regression" else
                              "test accuracy", "scores": scores, "summary": summary_, "best": best,
                              **verdict(scores), **({"ols_closed_form": ols} if ols else {})}
    results = {"seeds": [int(s) for s in setting["seeds"]], "quick": quick,
               "settings": {k: v for k, v in setting.items() if k != "seeds"} | {"hgb_max_iter": hgb_max_iter,
                                                                                  "spatial_n_train": spatial_n_train},
               "datasets": datasets}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out, results)
    plot(results, out / "scores.png")
    return results


def plot(results: dict[str, Any], path: Path) -> Path:
    """One panel per dataset: each model's score per seed (dots) and mean (bar)."""
    names = list(results["datasets"])
    fig, axes = figure(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        entry = results["datasets"][name]
        models = list(entry["scores"])
        for i, model in enumerate(models):
            values = entry["scores"][model]
            ax.bar(i, np.mean(values), color="C1" if model in DEEP else "C0", alpha=0.6)
            ax.plot([i] * len(values), values, "k.", ms=4)
        ax.set_xticks(range(len(models)), models)
        low = min(min(v) for v in entry["scores"].values())
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_title(f"{name} ({entry['metric']})")
    return save_figure(fig, path)


def summary(results: dict[str, Any]) -> str:
    """Markdown: mean ± std of every model on every dataset, the best model, and whether it is a deep one."""
    models = list(dict.fromkeys(m for entry in results["datasets"].values() for m in entry["scores"]))
    rows = []
    for name, entry in results["datasets"].items():
        cells = [f"{entry['summary'][m]['mean']:.3f} ± {entry['summary'][m]['std']:.3f}"
                 if m in entry["summary"] else "—" for m in models]
        rows.append([name, entry["metric"], *cells, entry["best"],
                     f"{entry['best_deep']} − {entry['best_other']}: {entry['deep_minus_other']:+.3f}"
                     + (f" ± {se:.3f}" if np.isfinite(se := entry["deep_minus_other_se"] or np.inf) else ""),
                     entry["deep_learning_wins"]])
    text = (f"Mean ± standard deviation over seeds {results['seeds']} (same split for every model of a seed; "
            "`linear` is linear regression for diabetes and logistic regression elsewhere). A seed changes the "
            "validation rows, the initialization and the batch order; the test split is fixed. \"Deep learning "
            "wins\" is yes/no when the paired difference is beyond twice its standard error, tie otherwise.\n\n")
    text += markdown_table(["dataset", "metric", *models, "best", "best deep − best other (± s.e., paired)",
                            "deep learning wins"], rows)
    for name, entry in results["datasets"].items():
        if "ols_closed_form" in entry:
            text += (f"\n\nCheck on {name}: closed-form least squares test R² "
                     f"{np.mean(entry['ols_closed_form']):.3f} vs jaxnets `linear` "
                     f"{entry['summary']['linear']['mean']:.3f} (mean over seeds).")
    return text


if __name__ == "__main__":
    sys.exit(main_for(run, "when_deep_learning", __doc__, summary))
