r"""Regressions are one-layer nets: gradient descent in jaxnets recovers OLS and the logit MLE.

    python -m experiments.regressions                 # default: writes results/regressions/
    python -m experiments.regressions --update-docs   # and refreshes docs/experiments/regressions.md

Slides ("Artificial Neural Network" deck: "This is a Linear Regression", "This is a
Logistic Regression" — a net with no hidden layer and an identity, or sigmoid, output): the network
ŷ = head(xW + b) trained on the MSE (identity head) or the cross-entropy (sigmoid head)
has the same minimizer as ordinary least squares and the binary logit maximum likelihood.

The data are the economics tables statsmodels ships (no download):

* **OLS**, two textbook regressions:
  ``macrodata`` (US quarterly national accounts, 1959Q1–2009Q3, 203 rows): a consumption
  function, log real consumption on log real disposable income and the real interest rate;
  ``grunfeld`` (Grunfeld's investment data, 11 US firms × 20 years): gross investment on the
  firm's market value and capital stock.
* **Logit**, two binary-choice classics:
  ``spector`` (Spector & Mazzeo 1980, 32 students): did the grade improve, on GPA, the TUCE
  score and whether the student was taught with the PSI method;
  ``fair`` (Fair 1978, 6,366 women): did she report any extramarital affair, on eight
  survey covariates.

Method: the features are standardized (and the OLS target too) so the Hessian is well scaled;
jaxnets' ``"linear"`` / ``"logistic"`` model is trained by full-batch gradient descent on the
MSE / binary cross-entropy with step 1/L (L a bound on the largest Hessian eigenvalue), in
float32, and the coefficients are mapped back to the original units in float64. OLS runs
plain GD (``"sgd"``) and Nesterov GD (``"nesterov"``, same step); the logit runs Nesterov GD.

References (independent of jaxnets, float64): ``numpy.linalg.lstsq`` and statsmodels ``OLS``
for OLS; a Newton-Raphson (IRLS) written here in NumPy, statsmodels ``Logit`` (Newton) and
scikit-learn ``LogisticRegression(C=inf)`` (no penalty, L-BFGS) for the logit.

Writes ``results.json`` (every coefficient of every fit) and ``coefficients.png``
(jaxnets against the reference, per coefficient, on a symmetric log scale).
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import jaxnets as jn
from experiments.common import figure, main_for, markdown_table, save_figure, save_json

#: Max |jaxnets − reference| over the original-scale coefficients (intercept included).
OLS_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Case:
    """One regression: a statsmodels table, the response, the regressors and what they mean."""
    name: str
    title: str
    source: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    names: tuple[str, ...]  # regressor names, without the intercept


def _macrodata() -> tuple[np.ndarray, np.ndarray]:
    from statsmodels.datasets import macrodata

    d = macrodata.load_pandas().data
    return np.c_[np.log(d["realdpi"]), d["realint"]].astype(np.float64), np.log(d["realcons"]).to_numpy(np.float64)


def _grunfeld() -> tuple[np.ndarray, np.ndarray]:
    from statsmodels.datasets import grunfeld

    d = grunfeld.load_pandas().data
    return d[["value", "capital"]].to_numpy(np.float64), d["invest"].to_numpy(np.float64)


def _spector() -> tuple[np.ndarray, np.ndarray]:
    from statsmodels.datasets import spector

    d = spector.load_pandas().data
    return d[["GPA", "TUCE", "PSI"]].to_numpy(np.float64), d["GRADE"].to_numpy(np.float64)


FAIR_COLUMNS = ("rate_marriage", "age", "yrs_married", "children", "religious", "educ", "occupation",
                "occupation_husb")


def _fair() -> tuple[np.ndarray, np.ndarray]:
    from statsmodels.datasets import fair

    d = fair.load_pandas().data
    return d[list(FAIR_COLUMNS)].to_numpy(np.float64), (d["affairs"] > 0).to_numpy(np.float64)


OLS_CASES = (
    Case("consumption", "consumption function (macrodata)",
         "statsmodels macrodata, US quarterly 1959Q1-2009Q3 (203 rows): log realcons on log realdpi and realint",
         _macrodata, ("log real disposable income", "real interest rate")),
    Case("investment", "investment equation (grunfeld)",
         "statsmodels grunfeld, 11 firms x 20 years (220 rows): invest on value and capital",
         _grunfeld, ("value", "capital")),
)
LOGIT_CASES = (
    Case("spector", "grade improved (spector)",
         "statsmodels spector (Spector & Mazzeo 1980), 32 students: GRADE on GPA, TUCE and PSI",
         _spector, ("GPA", "TUCE", "PSI")),
    Case("fair", "any affair (fair)",
         "statsmodels fair (Fair 1978), 6,366 women: affairs > 0 on eight survey covariates",
         _fair, FAIR_COLUMNS),
)


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


def _diff(coef: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {"max_abs_diff": float(np.max(np.abs(coef - reference))),
            "max_rel_diff": float(np.max(np.abs(coef - reference) / np.abs(reference)))}


def ols(case: Case, steps: int = 10000, gd_steps: int = 20000, momentum: float = 0.95) -> dict[str, Any]:
    """One OLS case: lstsq and statsmodels OLS vs jaxnets GD (plain and Nesterov)."""
    from statsmodels.regression.linear_model import OLS

    x, y = case.load()
    a = np.c_[np.ones(len(x)), x]
    reference = np.linalg.lstsq(a, y, rcond=None)[0]
    statsmodels_fit = np.asarray(OLS(y, a).fit().params, np.float64)
    mu, sd, ym, ys = x.mean(0), x.std(0), y.mean(), y.std()
    z, t = (x - mu) / sd, (y - ym) / ys
    # MSE = mean (ŷ − t)²: Hessian 2·[[C, 0], [0, 1]] for centred z, C = zᵀz/n.
    eig = np.linalg.eigvalsh(z.T @ z / len(z))
    lipschitz = 2.0 * max(float(eig.max()), 1.0)
    fits = {}
    for label, optimizer, n in (("gd", "sgd", gd_steps), ("nesterov_gd", "nesterov", steps)):
        w, b = _train("linear", z, t[:, None].astype(np.float32), "regression", optimizer, 1.0 / lipschitz, n,
                      momentum)
        beta = w * ys / sd
        coef = np.r_[ym + ys * b - beta @ mu, beta]
        fits[label] = {"optimizer": optimizer, "steps": n, "coefficients": coef.tolist(), **_diff(coef, reference)}
    return {"case": case.name, "title": case.title, "dataset": case.source, "rows": len(x),
            "names": ["intercept", *case.names], "lstsq": reference.tolist(),
            "statsmodels": statsmodels_fit.tolist(),
            "statsmodels_vs_lstsq": _diff(statsmodels_fit, reference)["max_abs_diff"],
            "learning_rate": 1.0 / lipschitz, "momentum": momentum,
            "hessian_condition_number": float(eig.max() / eig.min()), "fits": fits, "tolerance": OLS_TOLERANCE}


def logit(case: Case, steps: int = 10000, momentum: float = 0.95) -> dict[str, Any]:
    """One logit case: IRLS, statsmodels Logit and scikit-learn vs jaxnets Nesterov GD."""
    from sklearn.linear_model import LogisticRegression
    from statsmodels.discrete.discrete_model import Logit

    x, y = case.load()
    a = np.c_[np.ones(len(x)), x]
    irls = _irls(a, y)
    statsmodels_fit = np.asarray(Logit(y, a).fit(disp=0, method="newton", tol=1e-12, maxiter=100).params)
    mu, sd = x.mean(0), x.std(0)
    z = (x - mu) / sd
    with warnings.catch_warnings():  # C=inf is the documented way to switch the penalty off
        warnings.simplefilter("ignore")
        sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100000).fit(z, y.astype(np.int32))
    sk_coef = np.r_[sk.intercept_[0] - (sk.coef_[0] / sd) @ mu, sk.coef_[0] / sd]
    # Mean cross-entropy: Hessian ≤ ¼·[1 z]ᵀ[1 z]/n.
    az = np.c_[np.ones(len(z)), z]
    lipschitz = 0.25 * float(np.linalg.eigvalsh(az.T @ az / len(z)).max())
    w, b = _train("logistic", z, y.astype(np.int32), "binary", "nesterov", 1.0 / lipschitz, steps, momentum)
    beta = w / sd
    coef = np.r_[b - beta @ mu, beta]
    return {"case": case.name, "title": case.title, "dataset": case.source, "rows": len(x),
            "names": ["intercept", *case.names], "irls": irls.tolist(), "statsmodels": statsmodels_fit.tolist(),
            "sklearn": sk_coef.tolist(), "jaxnets": coef.tolist(), "steps": steps,
            "learning_rate": 1.0 / lipschitz, "momentum": momentum,
            "loglik": {"irls": _loglik(a, y, irls), "statsmodels": _loglik(a, y, statsmodels_fit),
                       "sklearn": _loglik(a, y, sk_coef), "jaxnets": _loglik(a, y, coef)},
            "max_abs_diff_vs_irls": float(np.max(np.abs(coef - irls))),
            "max_abs_diff_statsmodels_vs_irls": float(np.max(np.abs(statsmodels_fit - irls))),
            "max_abs_diff_sklearn_vs_irls": float(np.max(np.abs(sk_coef - irls))),
            "tolerance": LOGIT_TOLERANCE}


def run(quick: bool, out: Path, steps: int | None = None) -> dict[str, Any]:
    """Every case; ``steps`` overrides the Nesterov step count (tests)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = steps if steps is not None else (10000 if quick else 40000)
    results = {"ols": [ols(case, steps=n, gd_steps=2 * n) for case in OLS_CASES],
               "logit": [logit(case, steps=n) for case in LOGIT_CASES]}
    panels = [(o["title"], o["names"], o["lstsq"], o["fits"]["nesterov_gd"]["coefficients"]) for o in results["ols"]]
    panels += [(g["title"], g["names"], g["irls"], g["jaxnets"]) for g in results["logit"]]
    fig, axes = figure(1, len(panels), figsize=(4.2 * len(panels), 4))
    for ax, (title, names, ref, fit) in zip(axes, panels):
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, ref, 0.4, label="closed form / MLE (float64)")
        ax.bar(pos + 0.2, fit, 0.4, label="jaxnets GD (float32)")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    save_figure(fig, out / "coefficients.png")
    save_json(out, results)
    return results


def summary(results: dict[str, Any]) -> str:
    parts = []
    for o in results["ols"]:
        gd, nes = o["fits"]["gd"], o["fits"]["nesterov_gd"]
        rows = [[name, f"{r:.8g}", f"{s:.8g}", f"{a:.8g}", f"{b:.8g}"]
                for name, r, s, a, b in zip(o["names"], o["lstsq"], o["statsmodels"], nes["coefficients"],
                                            gd["coefficients"])]
        rows.append(["max abs diff vs lstsq", "", o["statsmodels_vs_lstsq"], nes["max_abs_diff"], gd["max_abs_diff"]])
        parts.append(f"OLS, {o['title']}: {o['dataset']}. Original units; step 1/L, {nes['steps']} Nesterov "
                     f"steps, {gd['steps']} plain GD steps; condition number of the standardized Hessian "
                     f"{o['hessian_condition_number']:.4g}.\n\n"
                     + markdown_table(["coefficient", "lstsq (float64)", "statsmodels OLS", "jaxnets Nesterov GD",
                                       "jaxnets plain GD"], rows))
    for g in results["logit"]:
        rows = [[name, f"{r:.8g}", f"{m:.8g}", f"{s:.8g}", f"{j:.8g}"]
                for name, r, m, s, j in zip(g["names"], g["irls"], g["statsmodels"], g["sklearn"], g["jaxnets"])]
        rows.append(["log-likelihood", *(f"{g['loglik'][k]:.10g}" for k in ("irls", "statsmodels", "sklearn",
                                                                             "jaxnets"))])
        rows.append(["max abs diff vs IRLS", "", g["max_abs_diff_statsmodels_vs_irls"],
                     g["max_abs_diff_sklearn_vs_irls"], g["max_abs_diff_vs_irls"]])
        parts.append(f"Logit, {g['title']}: {g['dataset']}. Original units; {g['steps']} Nesterov steps.\n\n"
                     + markdown_table(["coefficient", "IRLS (float64)", "statsmodels Logit", "scikit-learn C=inf",
                                       "jaxnets Nesterov GD"], rows))
    return "\n\n".join(parts)


if __name__ == "__main__":
    sys.exit(main_for(run, "regressions", __doc__, summary))
