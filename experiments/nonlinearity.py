r"""Why the activation must be non-linear: deep identity nets are linear maps; one ReLU layer fits XOR.

    python -m experiments.nonlinearity                  # default: writes results/nonlinearity/
    python -m experiments.nonlinearity --full           # more seeds, longer training
    python -m experiments.nonlinearity --update-docs    # and refreshes docs/experiments/nonlinearity.md

Slides ("Intro to Deep Learning" deck, "Worked example: the Exclusive OR (XOR) function"): the linear model
fitted to XOR predicts 1/2 at every point; a single hidden layer of two ReLU units with
W = [[1, 1], [1, 1]], W₀ = (0, −1), β = (1, −2), β₀ = 0 fits it with MSE 0.

What it does, on the four XOR points with the MSE (``jn.data.load("xor", task="regression")``):

1. **Collapse.** A deep MLP with identity activations (hidden widths ``DEEP_LINEAR``) is
   built with ``get_model("mlp", activation="identity")``. Its end-to-end map equals
   x·(W₁W₂⋯W_L) + b_eff with b_eff = (…(b₁W₂ + b₂)W₃ + …) (checked at initialization on
   random inputs), so it can only ever be a linear model.
2. **It cannot fit XOR.** The same net trained on XOR from many seeds (one
   ``fit_population`` program): its final training MSE never goes below 0.25, the MSE
   of the best linear fit (``numpy.linalg.lstsq``: ŷ = 1/2 everywhere), and the product
   of its trained weights is that least-squares fit.
3. **ReLU fits it exactly.** The slides' weights put into ``get_model("mlp", hidden=(2,),
   activation="relu")`` give predictions (0, 1, 1, 0), MSE 0.
4. **ReLU learns it.** One-hidden-layer ReLU nets of several widths trained from many
   random starts (Adam, full batch); success = final training MSE < ``SUCCESS_MSE``
   (every point then within 0.1 of its target, so all four are classified right);
   the success rate per width, and the rate of "all four on the right side of 1/2"
   (for the identity net that count is rounding noise: its predictions all sit next to
   1/2; the table gives the largest deviation).

Writes ``results.json`` and ``xor.png`` (final MSE of every run, by model, and the
success rate by width).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets as jn
from experiments.common import figure, main_for, markdown_table, save_figure, save_json
from jaxnets.population import fit_population

DEEP_LINEAR = (8, 8, 8)
SUCCESS_MSE = 0.01
SLIDE_WEIGHTS = {"hidden_0": {"kernel": [[1.0, 1.0], [1.0, 1.0]], "bias": [0.0, -1.0]},
                 "output": {"kernel": [[1.0], [-2.0]], "bias": [0.0]}}


def end_to_end_linear(params: dict, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(W_eff, b_eff) of an identity-activation MLP with ``depth`` hidden layers, in float64."""
    layers = [f"hidden_{i}" for i in range(depth)] + ["output"]
    w = np.eye(np.asarray(params[layers[0]]["kernel"]).shape[0])
    b = np.zeros(w.shape[1])
    for name in layers:
        kernel = np.asarray(params[name]["kernel"], np.float64)
        w, b = w @ kernel, b @ kernel + np.asarray(params[name]["bias"], np.float64)
    return w, b


def _predict(model, stacked_params, x) -> np.ndarray:
    """Predictions (P, n) of every member of a population."""
    apply = jax.jit(jax.vmap(lambda p: model.apply({"params": p}, jnp.asarray(x))[:, 0]))
    return np.asarray(apply(stacked_params), np.float64)


def _population(model, data, seeds: Sequence[int], epochs: int, lr: float) -> dict[str, Any]:
    result = fit_population(model, data, jn.optim.create("adam", lr),
                            jn.TrainConfig(epochs=epochs, batch_size=None, eval_every=epochs),
                            seeds=list(seeds))
    preds = _predict(model, result.state.params, data.x_train)
    mse = np.mean((preds - data.y_train[:, 0]) ** 2, axis=1)
    right = np.all((preds > 0.5) == (data.y_train[:, 0] > 0.5), axis=1)
    return {"result": result, "preds": preds, "mse": mse, "all_right": right,
            "train_time_s": result.train_time_s}


def run(quick: bool, out: Path, seeds: int | None = None, epochs: int | None = None,
        widths: Sequence[int] | None = None, lr: float = 0.01) -> dict[str, Any]:
    """All four parts; ``seeds``, ``epochs`` and ``widths`` shrink it for the tests."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_seeds = seeds if seeds is not None else (100 if quick else 500)
    epochs = epochs if epochs is not None else (2000 if quick else 5000)
    widths = tuple(widths) if widths is not None else ((2, 3, 4, 8, 16) if quick else (2, 3, 4, 8, 16, 32))
    data = jn.data.load("xor", task="regression")
    x, y = np.asarray(data.x_train, np.float64), np.asarray(data.y_train[:, 0], np.float64)
    seed_list = list(range(n_seeds))
    results: dict[str, Any] = {"seeds": n_seeds, "epochs": epochs, "learning_rate": lr, "optimizer": "adam",
                               "success_mse": SUCCESS_MSE, "deep_linear_hidden": list(DEEP_LINEAR)}

    # 1. Best linear fit and the collapse of an identity-activation net.
    a = np.c_[np.ones(4), x]
    lstsq = np.linalg.lstsq(a, y, rcond=None)[0]
    results["lstsq"] = {"coefficients": lstsq.tolist(), "mse": float(np.mean((a @ lstsq - y) ** 2))}
    linear_net = jn.models.get_model("mlp", output_dim=1, hidden=DEEP_LINEAR, activation="identity", head="identity")
    params = linear_net.init({"params": jax.random.key(0)}, data.x_train)["params"]
    probe = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    w_eff, b_eff = end_to_end_linear(params, len(DEEP_LINEAR))
    direct = np.asarray(linear_net.apply({"params": params}, probe), np.float64)
    results["collapse_max_abs_diff_at_init"] = float(np.max(np.abs(direct - (probe @ w_eff + b_eff))))

    # 2. Trained on XOR it is still the least-squares line.
    deep = _population(linear_net, data, seed_list, epochs, lr)
    effective = [end_to_end_linear(jax.tree_util.tree_map(lambda leaf: leaf[i], deep["result"].state.params),
                                   len(DEEP_LINEAR)) for i in range(n_seeds)]
    coef = np.array([np.r_[b[0], w[:, 0]] for w, b in effective])
    results["deep_linear"] = {"min_mse": float(deep["mse"].min()), "median_mse": float(np.median(deep["mse"])),
                              "success": int(np.sum(deep["mse"] < SUCCESS_MSE)),
                              "max_abs_pred_minus_half": float(np.max(np.abs(deep["preds"] - 0.5))),
                              "all_right": int(deep["all_right"].sum()),
                              "max_abs_coef_diff_vs_lstsq": float(np.max(np.abs(coef - lstsq))),
                              "median_coefficients": np.median(coef, axis=0).tolist(),
                              "mse": deep["mse"].tolist(), "train_time_s": deep["train_time_s"]}

    # 3. The slides' ReLU weights.
    relu2 = jn.models.get_model("mlp", output_dim=1, hidden=(2,), activation="relu", head="identity")
    slide_params = {layer: {k: jnp.asarray(v, jnp.float32) for k, v in leaves.items()}
                    for layer, leaves in SLIDE_WEIGHTS.items()}
    slide_pred = np.asarray(relu2.apply({"params": slide_params}, data.x_train), np.float64)[:, 0]
    results["slide_relu"] = {"predictions": slide_pred.tolist(), "mse": float(np.mean((slide_pred - y) ** 2))}

    # 4. ReLU nets learn it from random starts.
    results["relu"] = {}
    for width in widths:
        model = jn.models.get_model("mlp", output_dim=1, hidden=(width,), activation="relu", head="identity")
        pop = _population(model, data, seed_list, epochs, lr)
        results["relu"][str(width)] = {"success": int(np.sum(pop["mse"] < SUCCESS_MSE)),
                                       "all_right": int(pop["all_right"].sum()),
                                       "median_mse": float(np.median(pop["mse"])),
                                       "mse": pop["mse"].tolist(), "train_time_s": pop["train_time_s"]}

    fig, (left, right) = figure(1, 2, figsize=(11, 4))
    labels = [f"identity {'-'.join(map(str, DEEP_LINEAR))}"] + [f"ReLU {w}" for w in widths]
    runs = [results["deep_linear"]["mse"]] + [results["relu"][str(w)]["mse"] for w in widths]
    for i, values in enumerate(runs):
        jitter = np.random.default_rng(i).uniform(-0.25, 0.25, len(values))
        left.scatter(i + jitter, np.maximum(values, 1e-12), s=6, alpha=0.5)
    left.axhline(0.25, color="k", ls="--", lw=1, label="best linear fit (0.25)")
    left.axhline(SUCCESS_MSE, color="g", ls=":", lw=1, label=f"success threshold ({SUCCESS_MSE})")
    left.set_yscale("log")
    left.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("final training MSE on XOR (below 1e-12 drawn at 1e-12)")
    left.set_title(f"{n_seeds} random starts each, Adam lr {lr}, {epochs} full-batch steps")
    left.legend(fontsize=8)
    right.plot(widths, [results["relu"][str(w)]["success"] / n_seeds for w in widths], "o-", label="MSE < 0.01")
    right.plot(widths, [results["relu"][str(w)]["all_right"] / n_seeds for w in widths], "s--",
               label="all 4 classified right")
    right.set_xscale("log", base=2)
    right.set_xlabel("hidden ReLU units")
    right.set_ylabel("fraction of seeds")
    right.set_ylim(0, 1.05)
    right.legend(fontsize=8)
    right.set_title("one hidden ReLU layer learns XOR")
    save_figure(fig, out / "xor.png")
    save_json(out, results)
    return results


def summary(results: dict[str, Any]) -> str:
    n = results["seeds"]
    d = results["deep_linear"]
    lines = [markdown_table(["check", "value"], [
        ["best linear fit (lstsq) MSE", f"{results['lstsq']['mse']:.8g}"],
        [f"identity MLP {tuple(results['deep_linear_hidden'])}: max abs diff of net(x) and x·ΠW + b_eff at init",
         results["collapse_max_abs_diff_at_init"]],
        ["identity MLP trained on XOR: lowest final MSE over seeds", f"{d['min_mse']:.8g}"],
        ["identity MLP trained: max abs diff of (b_eff, ΠW) and the lstsq coefficients",
         d["max_abs_coef_diff_vs_lstsq"]],
        ["identity MLP trained: max abs diff of a prediction and 1/2 (seeds × points)", d["max_abs_pred_minus_half"]],
        ["slides' ReLU weights: predictions", str([round(p, 6) for p in results["slide_relu"]["predictions"]])],
        ["slides' ReLU weights: MSE", results["slide_relu"]["mse"]],
    ])]
    rows = [[f"identity {'-'.join(map(str, results['deep_linear_hidden']))}", f"{d['success']}/{n}",
             f"{d['all_right']}/{n}", d["median_mse"]]]
    rows += [[f"ReLU {w}", f"{r['success']}/{n}", f"{r['all_right']}/{n}", r["median_mse"]]
             for w, r in results["relu"].items()]
    lines.append(f"Learning XOR from {n} random starts (Adam, lr {results['learning_rate']}, "
                 f"{results['epochs']} full-batch steps):")
    lines.append(markdown_table(["hidden layers", f"MSE < {results['success_mse']}", "all 4 classified right",
                                 "median final MSE"], rows))
    return "\n\n".join(lines)


if __name__ == "__main__":
    sys.exit(main_for(run, "nonlinearity", __doc__, summary))
