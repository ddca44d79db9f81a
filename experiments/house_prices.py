r"""House prices: the slides' 2-input, 2-sigmoid-hidden, 1-output net (9 parameters) against OLS.

    python -m experiments.house_prices                  # default: writes results/house_prices/
    python -m experiments.house_prices --full           # more seeds, longer training
    python -m experiments.house_prices --update-docs    # and refreshes docs/experiments/house_prices.md

Slides ("Intro to Deep Learning" deck, "Training the network — Example: House Prices"): two inputs, a hidden
layer of two sigmoid units A_k = σ(w_k1·X₁ + w_k2·X₂ + w_k0), an identity output
ŷ = β₀ + β₁A₁ + β₂A₂ — 9 parameters — trained on the MSE by backpropagation.

What it does: ``jn.data.load("house_prices")`` (area in m², age in years, standardized
on the training split; price in thousands with noise of standard deviation 15; 500
training and 200 test houses). The targets are standardized with the training mean
and standard deviation (the net's output layer starts near 0 with unit-scale weights,
so raw prices in the hundreds would take many steps just to reach the right scale);
predictions are mapped back to thousands before any error is computed. The net
``get_model("mlp", output_dim=1, hidden=(2,), activation="sigmoid", head="identity")`` is
trained from several seeds at once (``fit_population``, Adam, full batch); the member
with the lowest training MSE is reported (the test set plays no part in the choice),
together with the median over seeds. The reference is linear regression fitted in
closed form (``numpy.linalg.lstsq``) on the same split, and the noise-free price
formula marks the best any model can do (its test RMSE is about the noise level).

Writes ``results.json`` and ``house_prices.png`` (test predictions against the truth,
and price against area at two ages: the formula, the net and the linear fit).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets as jn
from experiments.common import figure, main_for, markdown_table, save_figure, save_json
from jaxnets.data.builtin import house_price_formula
from jaxnets.population import fit_population


def _scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    r2 = float(1.0 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))
    return {"rmse": rmse, "r2": r2}


def run(quick: bool, out: Path, seeds: int | None = None, epochs: int | None = None,
        lr: float = 0.05) -> dict[str, Any]:
    """Train the 2-2-1 net from ``seeds`` starts for ``epochs`` full-batch Adam steps; fit OLS."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_seeds = seeds if seeds is not None else (10 if quick else 50)
    epochs = epochs if epochs is not None else (2000 if quick else 10000)
    data = jn.data.load("house_prices")
    raw = jn.data.load("house_prices", standardize=False)
    y_train = np.asarray(data.y_train[:, 0], np.float64)
    y_test = np.asarray(data.y_test[:, 0], np.float64)
    y_mean, y_std = y_train.mean(), y_train.std()
    scaled = jn.data.Dataset(x_train=data.x_train, y_train=((data.y_train - y_mean) / y_std).astype(np.float32),
                             x_val=data.x_train[:0], y_val=data.y_train[:0], x_test=data.x_test,
                             y_test=((data.y_test - y_mean) / y_std).astype(np.float32),
                             task="regression", name="house_prices_scaled_targets")

    model = jn.models.get_model("mlp", output_dim=1, hidden=(2,), activation="sigmoid", head="identity")
    pop = fit_population(model, scaled, jn.optim.create("adam", lr),
                         jn.TrainConfig(epochs=epochs, batch_size=None, eval_every=max(1, epochs // 20)),
                         seeds=list(range(n_seeds)))
    predict = jax.jit(jax.vmap(lambda p, x: model.apply({"params": p}, x)[:, 0], in_axes=(0, None)))

    def net_prices(x: np.ndarray) -> np.ndarray:  # (P, n) in thousands
        return np.asarray(predict(pop.state.params, jnp.asarray(x, jnp.float32)), np.float64) * y_std + y_mean

    train_pred, test_pred = net_prices(data.x_train), net_prices(data.x_test)
    train_mse = np.mean((train_pred - y_train) ** 2, axis=1)
    best = int(np.argmin(train_mse))
    members = [{"seed": i, "train": _scores(train_pred[i], y_train), "test": _scores(test_pred[i], y_test)}
               for i in range(n_seeds)]

    a_train = np.c_[np.ones(len(y_train)), np.asarray(data.x_train, np.float64)]
    a_test = np.c_[np.ones(len(y_test)), np.asarray(data.x_test, np.float64)]
    coef = np.linalg.lstsq(a_train, y_train, rcond=None)[0]
    raw_test = np.asarray(raw.x_test, np.float64)
    oracle_test = house_price_formula(raw_test[:, 0], raw_test[:, 1])
    results: dict[str, Any] = {
        "seeds": n_seeds, "epochs": epochs, "learning_rate": lr, "optimizer": "adam",
        "num_params": pop.num_params, "target_mean": y_mean, "target_std": y_std,
        "net_best": {"seed": best, "train": members[best]["train"], "test": members[best]["test"],
                     "params": jax.tree_util.tree_map(lambda leaf: np.asarray(leaf[best]).tolist(),
                                                      pop.state.params)},
        "net_median": {"train_rmse": float(np.median([m["train"]["rmse"] for m in members])),
                       "test_rmse": float(np.median([m["test"]["rmse"] for m in members])),
                       "test_r2": float(np.median([m["test"]["r2"] for m in members]))},
        "members": members,
        "linear": {"coefficients_standardized_x": coef.tolist(), "train": _scores(a_train @ coef, y_train),
                   "test": _scores(a_test @ coef, y_test)},
        "noise_free_formula": {"test": _scores(oracle_test, y_test)},
        "train_time_s": pop.train_time_s,
    }

    fig, (left, right) = figure(1, 2, figsize=(11, 4.5))
    left.scatter(y_test, test_pred[best], s=8, alpha=0.6,
                 label=f"2-2-1 sigmoid net (RMSE {members[best]['test']['rmse']:.1f})")
    left.scatter(y_test, a_test @ coef, s=8, alpha=0.6,
                 label=f"linear regression (RMSE {results['linear']['test']['rmse']:.1f})")
    lims = [min(y_test.min(), 0), y_test.max() * 1.05]
    left.plot(lims, lims, "k--", lw=1)
    left.set_xlabel("true price (thousands)")
    left.set_ylabel("predicted price (thousands)")
    left.set_title("test houses")
    left.legend(fontsize=8)
    area = np.linspace(40, 250, 200)
    for age, colour in ((10.0, "C0"), (80.0, "C1")):
        raw_x = np.stack([area, np.full_like(area, age)], axis=1)
        x = (raw_x - np.asarray(data.x_mean, np.float64)) / np.asarray(data.x_std, np.float64)
        right.plot(area, house_price_formula(area, np.full_like(area, age)), color=colour, lw=2, alpha=0.4,
                   label=f"formula, age {age:.0f}")
        right.plot(area, net_prices(x)[best], color=colour, ls="-", label=f"net, age {age:.0f}")
        right.plot(area, np.c_[np.ones(len(area)), x] @ coef, color=colour, ls=":", label=f"linear, age {age:.0f}")
    right.set_xlabel("living area (m²)")
    right.set_ylabel("price (thousands)")
    right.set_title("fitted price against area")
    right.legend(fontsize=7)
    save_figure(fig, out / "house_prices.png")
    save_json(out, results)
    return results


def summary(results: dict[str, Any]) -> str:
    best, lin, med = results["net_best"], results["linear"], results["net_median"]
    rows = [
        [f"2-2-1 sigmoid net ({results['num_params']} parameters), lowest training MSE of {results['seeds']} seeds",
         best["train"]["rmse"], best["test"]["rmse"], best["test"]["r2"]],
        [f"2-2-1 sigmoid net, median over {results['seeds']} seeds",
         med["train_rmse"], med["test_rmse"], med["test_r2"]],
        ["linear regression (lstsq, 3 parameters)", lin["train"]["rmse"], lin["test"]["rmse"], lin["test"]["r2"]],
        ["noise-free price formula (the floor)", "", results["noise_free_formula"]["test"]["rmse"],
         results["noise_free_formula"]["test"]["r2"]],
    ]
    return (f"Adam, learning rate {results['learning_rate']}, {results['epochs']} full-batch steps; "
            "RMSE in thousands:\n\n" + markdown_table(["model", "train RMSE", "test RMSE", "test R²"], rows))


if __name__ == "__main__":
    sys.exit(main_for(run, "house_prices", __doc__, summary))
