r"""Regressions are one-layer nets: gradient descent in jaxnets recovers OLS and the logit MLE.

    python -m experiments.regressions                 # default: writes results/regressions/
    python -m experiments.regressions --update-docs   # and refreshes docs/experiments/regressions.md

Slides ("Artificial Neural Network" deck: "This is a Linear Regression", "This is a
Logistic Regression" — a net with no hidden layer and an identity, or sigmoid, output): the network
ŷ = head(xW + b) trained on the MSE (identity head) or the cross-entropy (sigmoid head)
has the same minimizer as ordinary least squares and the binary logit maximum likelihood.

What it does:

* **OLS.** scikit-learn's diabetes table (442 patients, 10 raw features, the target a
  disease-progression score). The features and the target are standardized (so the
  Hessian is well scaled and full-batch gradient descent converges fast), jaxnets'
  ``"linear"`` model is trained by full-batch gradient descent on the MSE with step
  1/L (L = the largest Hessian eigenvalue), and its coefficients are mapped back to
  the original units. Reference: ``numpy.linalg.lstsq`` in float64. Two runs: plain
  GD (``"sgd"``) and Nesterov-accelerated GD (``"nesterov"``, same step). Plain GD
  stalls in float32 above the 1e-4 target on the least-curved direction (its update
  there falls below half a float32 ulp of the weights); the momentum run reaches it.
* **Logit.** scikit-learn's breast-cancer table, four features (mean radius, mean
  texture, mean smoothness, mean symmetry; not separable, so the MLE exists), label
  1 = malignant. jaxnets' ``"logistic"`` model trained by full-batch Nesterov GD on
  the binary cross-entropy, coefficients mapped back to the original units.
  References: scikit-learn ``LogisticRegression(C=inf)`` (no penalty; ``penalty=None`` is deprecated
  in scikit-learn 1.8; L-BFGS) and a
  float64 Newton-Raphson (IRLS) written here in NumPy.

statsmodels (which ships economics sets such as ``macrodata`` or ``fair``/``spector``
for binary choice) is not a dependency of jaxnets, so the bundled scikit-learn
tables are used instead.

Writes ``results.json`` (every coefficient of every fit) and ``coefficients.png``
(jaxnets against the reference, per coefficient, on a symmetric log scale).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import jaxnets as jn
from experiments.common import figure, main_for, markdown_table, save_figure, save_json

LOGIT_FEATURES = ("mean radius", "mean texture", "mean smoothness", "mean symmetry")
OLS_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 1e-3  # max |diff| of the original-scale logit coefficients (incl. intercept)


def _dataset(x: np.ndarray, y: np.ndarray, task: str, name: str) -> jn.data.Dataset:
    """The whole table as the training split (there is nothing held out in this check)."""
    x = x.astype(np.float32)
    extra: dict[str, Any] = {"num_classes": 2} if task == "binary" else {}
    return jn.data.Dataset(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], x_test=x[:4], y_test=y[:4],
                           task=task, name=name, **extra)


def _train(model_name: str, z: np.ndarray, y: np.ndarray, task: str, optimizer: str, lr: float,
           steps: int, momentum: float) -> tuple[np.ndarray, float]:
    """Full-batch GD on standardized inputs: returns (weights, bias) in float64."""
    model = jn.models.get_model(model_name, output_dim=1)
    hp = {"momentum": momentum} if optimizer == "nesterov" else {}
    result = jn.fit(model, _dataset(z, y, task, model_name), jn.optim.create(optimizer, lr, **hp),
                    jn.TrainConfig(epochs=steps, batch_size=None, shuffle=False, eval_every=steps,
                                   eval_train=False, seed=0))
    params = result.state.params["output"]
    return np.asarray(params["kernel"], np.float64)[:, 0], float(np.asarray(params["bias"])[0])


def _irls(a: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Newton-Raphson for the binary logit log-likelihood, float64 (a has the constant column)."""
    beta = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-a @ beta))
        step = np.linalg.solve(a.T @ (a * (p * (1 - p))[:, None]), a.T @ (y - p))
        beta += step
        if np.max(np.abs(step)) < 1e-13:
            break
    return beta


def _loglik(a: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    z = a @ beta
    return float(np.sum(y * z - np.logaddexp(0.0, z)))


def ols(steps: int = 10000, gd_steps: int = 20000, momentum: float = 0.95) -> dict[str, Any]:
    """OLS on diabetes: lstsq vs jaxnets GD (plain and Nesterov)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    x, y = np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.float64)
    names = ["intercept", *bunch.feature_names]
    mu, sd, ym, ys = x.mean(0), x.std(0), y.mean(), y.std()
    z, t = (x - mu) / sd, (y - ym) / ys
    # MSE = mean (ŷ − t)²: Hessian 2·[[C, 0], [0, 1]] for centred z, C = zᵀz/n.
    eig = np.linalg.eigvalsh(z.T @ z / len(z))
    lipschitz = 2.0 * max(float(eig.max()), 1.0)
    reference = np.linalg.lstsq(np.c_[np.ones(len(x)), x], y, rcond=None)[0]
    fits = {}
    for label, optimizer, n in (("gd", "sgd", gd_steps), ("nesterov_gd", "nesterov", steps)):
        w, b = _train("linear", z, t[:, None].astype(np.float32), "regression", optimizer, 1.0 / lipschitz, n, momentum)
        beta = w * ys / sd
        coef = np.r_[ym + ys * b - beta @ mu, beta]
        fits[label] = {"optimizer": optimizer, "steps": n, "coefficients": coef.tolist(),
                       "max_abs_diff": float(np.max(np.abs(coef - reference))),
                       "max_rel_diff": float(np.max(np.abs(coef - reference) / np.abs(reference)))}
    return {"dataset": "scikit-learn diabetes (scaled=False), all 442 rows", "names": names,
            "lstsq": reference.tolist(), "learning_rate": 1.0 / lipschitz, "momentum": momentum,
            "hessian_condition_number": float(eig.max() / eig.min()), "fits": fits,
            "tolerance": OLS_TOLERANCE}


def logit(steps: int = 10000, momentum: float = 0.95) -> dict[str, Any]:
    """Binary logit on four breast-cancer features: IRLS and scikit-learn vs jaxnets GD."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    bunch = load_breast_cancer()
    columns = [list(bunch.feature_names).index(name) for name in LOGIT_FEATURES]
    x = np.asarray(bunch.data, np.float64)[:, columns]
    y = (np.asarray(bunch.target) == 0).astype(np.int32)  # 1 = malignant
    mu, sd = x.mean(0), x.std(0)
    z = (x - mu) / sd
    a = np.c_[np.ones(len(x)), x]
    irls = _irls(a, y.astype(np.float64))
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100000).fit(z, y)
    sk_coef = np.r_[sk.intercept_[0] - (sk.coef_[0] / sd) @ mu, sk.coef_[0] / sd]
    # Mean cross-entropy: Hessian ≤ ¼·[z 1]ᵀ[z 1]/n.
    lipschitz = 0.25 * float(np.linalg.eigvalsh(np.c_[np.ones(len(z)), z].T @ np.c_[np.ones(len(z)), z] / len(z)).max())
    w, b = _train("logistic", z, y, "binary", "nesterov", 1.0 / lipschitz, steps, momentum)
    beta = w / sd
    coef = np.r_[b - beta @ mu, beta]
    return {"dataset": "scikit-learn breast_cancer, all 569 rows, label 1 = malignant",
            "names": ["intercept", *LOGIT_FEATURES], "irls": irls.tolist(), "sklearn": sk_coef.tolist(),
            "jaxnets": coef.tolist(), "steps": steps, "learning_rate": 1.0 / lipschitz, "momentum": momentum,
            "loglik": {"irls": _loglik(a, y, irls), "sklearn": _loglik(a, y, sk_coef), "jaxnets": _loglik(a, y, coef)},
            "max_abs_diff_vs_irls": float(np.max(np.abs(coef - irls))),
            "max_abs_diff_sklearn_vs_irls": float(np.max(np.abs(sk_coef - irls))),
            "tolerance": LOGIT_TOLERANCE}


def run(quick: bool, out: Path, steps: int | None = None) -> dict[str, Any]:
    """Both checks; ``steps`` overrides the Nesterov step count (tests)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = steps if steps is not None else (10000 if quick else 40000)
    results = {"ols": ols(steps=n, gd_steps=2 * n), "logit": logit(steps=n)}
    fig, axes = figure(1, 2, figsize=(11, 4))
    o, g = results["ols"], results["logit"]
    for ax, names, ref, fit, title in (
            (axes[0], o["names"], o["lstsq"], o["fits"]["nesterov_gd"]["coefficients"], "OLS (diabetes)"),
            (axes[1], g["names"], g["irls"], g["jaxnets"], "logit (breast cancer)")):
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, ref, 0.4, label="closed form / MLE (float64)")
        ax.bar(pos + 0.2, fit, 0.4, label="jaxnets GD")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    save_figure(fig, out / "coefficients.png")
    save_json(out, results)
    return results


def summary(results: dict[str, Any]) -> str:
    o, g = results["ols"], results["logit"]
    gd, nes = o["fits"]["gd"]["coefficients"], o["fits"]["nesterov_gd"]["coefficients"]
    ols_rows = [[name, f"{r:.8g}", f"{a:.8g}", f"{b:.8g}"] for name, r, a, b in zip(o["names"], o["lstsq"], nes, gd)]
    ols_rows.append(["max abs diff", "", o["fits"]["nesterov_gd"]["max_abs_diff"], o["fits"]["gd"]["max_abs_diff"]])
    logit_rows = [[name, f"{r:.8g}", f"{s:.8g}", f"{j:.8g}"]
                  for name, r, s, j in zip(g["names"], g["irls"], g["sklearn"], g["jaxnets"])]
    logit_rows.append(["log-likelihood", *(f"{g['loglik'][k]:.10g}" for k in ("irls", "sklearn", "jaxnets"))])
    logit_rows.append(["max abs diff vs IRLS", "", g["max_abs_diff_sklearn_vs_irls"], g["max_abs_diff_vs_irls"]])
    return (f"OLS on diabetes (original units; step 1/L, {o['fits']['nesterov_gd']['steps']} Nesterov steps, "
            f"{o['fits']['gd']['steps']} plain GD steps; "
            f"Hessian condition number {o['hessian_condition_number']:.4g}):\n\n"
            + markdown_table(["coefficient", "lstsq (float64)", "jaxnets Nesterov GD", "jaxnets plain GD"], ols_rows)
            + f"\n\nLogit on breast cancer ({g['steps']} Nesterov steps):\n\n"
            + markdown_table(["coefficient", "IRLS (float64)", "scikit-learn C=inf", "jaxnets Nesterov GD"],
                             logit_rows))


if __name__ == "__main__":
    sys.exit(main_for(run, "regressions", __doc__, summary))
