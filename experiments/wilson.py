r"""Wilson et al. (2017), section 3.3: a separable problem where adaptive methods generalize at chance.

    python -m experiments.wilson            # the sweep; writes results/wilson/{results.json,report.md}

The construction (points indexed i = 1..n over training and test alike):

* label y_i = +1 with probability p > 1/2, else −1;
* feature 1 is the label, features 2 and 3 are always 1;
* point i owns private features j = 4 + 5(i−1), ..., 4 + 5(i−1) + 2(1 − y_i): one
  if y_i = +1, five if y_i = −1; everything else is 0, so d = 3 + 5·(n_train + n_test).

Least squares f(w) = ‖Xw − y‖² / (2n) on the training points, w_0 = 0, full batch.
GD and heavy ball stay in the row space of X and tend to the minimum-norm
interpolant, which labels every test point correctly once n_train is not tiny (its
weight on feature 1 beats features 2+3; with ten or fewer training points some
draws fail). AdaGrad, RMSProp and Adam started at 0 keep
w_k = λ_k · sign(Xᵀy): the gradient at such a point is (4λ − 1)·Xᵀy/n because
X·sign(Xᵀy) = 4y when Σ y_i > 0, and a per-coordinate normalization of a multiple
of Xᵀy is a multiple of its sign. On a new point that prediction is
λ·(y + 2) > 0: every test point is labelled +1, test error = fraction of −1 labels ≈ 1 − p.

The identity needs more positive than negative training labels (otherwise
sign(Σ y) flips features 2-3); draws with Σ y_train <= 0 are redrawn and counted.
A second table reports the same cells drawn without that condition, on the draws
with Σ y_train <= 0: what each optimizer actually does outside the lemma's assumption.

Every optimizer is a ``jaxnets.optim.create`` transformation, run for ``steps``
iterations inside one jitted ``lax.scan``, vmapped over the draws of a cell, in
float64. The adaptive methods use ε = 0 where the optimizer allows it and 1e-30
otherwise, and AdaGrad's initial accumulator 0, so that the direction identity is
exact (the shipped defaults ε = 1e-8 and G₀ = 0.1 only perturb it slightly;
``adam_default`` shows that).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import optim, stats
from jaxnets.host_memory import retain_freed_memory
from jaxnets.io import atomic_write_json, atomic_write_text

OUT = Path("results/wilson")
N_TRAIN = (50, 100, 200)
PROBABILITIES = (0.55, 0.6, 0.75)
N_TEST = 200
DRAWS = 5
STEPS = 2000

#: name -> (jaxnets optimizer, learning rate or "1/L" = 1/λ_max of the Hessian XᵀX/n, hyperparameters).
OPTIMIZERS: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "gd": ("sgd", "1/L", {}),
    "heavy_ball": ("momentum", "1/L", {"momentum": 0.9}),
    "adagrad": ("adagrad", 0.1, {"initial_accumulator_value": 0.0, "eps": 0.0}),
    "rmsprop": ("rmsprop", 1e-3, {"eps": 1e-30}),
    "adam": ("adam", 1e-3, {"eps": 1e-30}),
    "adam_default": ("adam", 1e-3, {}),
}
ADAPTIVE = ("adagrad", "rmsprop", "adam", "adam_default")


def make_problem(n_train: int, n_test: int, p: float, seed: int, *, condition: bool = True) -> dict[str, Any]:
    """One draw of the construction (module docstring), as float64 NumPy arrays.

    Args:
      n_train, n_test: numbers of points (>= 1).
      p: probability of the label +1, 1/2 < p < 1.
      seed: seed of ``np.random.default_rng``; labels are redrawn until Σ y_train > 0.
      condition: False keeps the first draw whatever Σ y_train is (outside the lemma's assumption).

    Returns:
      ``{"x_train" (n_train, d), "y_train", "x_test" (n_test, d), "y_test", "redraws"}``.

    >>> problem = make_problem(3, 2, 0.75, seed=1)
    >>> problem["x_train"].shape, problem["x_test"].shape, problem["y_train"].tolist()
    ((3, 28), (2, 28), [1.0, -1.0, 1.0])
    >>> [int(v) for v in problem["x_train"][1][:14]]   # label, 1, 1, point 1's block empty, its own five
    [-1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    """
    if not 0.5 < p < 1.0:
        raise ValueError(f"p: got {p!r}; allowed: 1/2 < p < 1")
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: got {value!r}; allowed: an integer >= 1")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    redraws = 0
    while True:
        y = np.where(rng.random(n) < p, 1.0, -1.0)
        if not condition or y[:n_train].sum() > 0:
            break
        redraws += 1
    x = np.zeros((n, 3 + 5 * n))
    x[:, 0] = y
    x[:, 1:3] = 1.0
    for i in range(n):
        start = 3 + 5 * i
        x[i, start:start + 1 + int(2 * (1 - y[i]))] = 1.0
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:],
            "redraws": redraws}


def largest_curvature(x: np.ndarray) -> float:
    """L = λ_max(XᵀX / n), the Lipschitz constant of the least-squares gradient.

    >>> round(largest_curvature(np.eye(2) * 2.0), 6)
    2.0
    """
    n = x.shape[0]
    return float(np.linalg.eigvalsh(x @ x.T / n)[-1])


def train(name: str, x: jax.Array, y: jax.Array, steps: int, learning_rate: float) -> tuple[jax.Array, jax.Array]:
    """Run optimizer ``name`` of :data:`OPTIMIZERS` from w = 0 on f(w) = ‖Xw − y‖²/(2n), full batch.

    Args:
      name: a key of :data:`OPTIMIZERS`.
      x, y: training points (n, d) and labels (n,) (vmappable: no Python control flow on values).
      steps: number of updates (the scan length).
      learning_rate: η (already resolved from "1/L").

    Returns:
      ``(w, losses)``: the final weights (d,) and f(w_k) before each update (steps,).
    
    >>> x, y = jnp.eye(2), jnp.array([1.0, -1.0])     # f(w) = ‖w − y‖²/4, L = 1/2
    >>> w, losses = train("gd", x, y, 200, 2.0)
    >>> [round(float(v), 4) for v in w], round(float(losses[0]), 4)
    ([1.0, -1.0], 0.5)
    """
    optimizer, _, hyperparams = OPTIMIZERS[name]
    tx = optim.create(optimizer, 1.0, **hyperparams)
    w0 = jnp.zeros(x.shape[1], x.dtype)
    state = tx.init(w0)
    state = optim.set_hyperparam(state, "learning_rate", learning_rate)
    n = x.shape[0]

    def loss(w):
        residual = x @ w - y
        return residual @ residual / (2 * n)

    def step(carry, _):
        w, opt_state = carry
        value, grad = jax.value_and_grad(loss)(w)
        updates, opt_state = tx.update(grad, opt_state, w)
        return (w + updates, opt_state), value

    (w, _), losses = jax.lax.scan(step, (w0, state), None, length=steps)
    return w, losses


def evaluate_cell(n_train: int, p: float, *, n_test: int = N_TEST, draws: int = DRAWS, steps: int = STEPS,
                  optimizers: Sequence[str] = tuple(OPTIMIZERS), seed: int = 0,
                  condition: bool = True) -> dict[str, Any]:
    """All optimizers on ``draws`` independent draws of one (n_train, p) cell.

    Returns:
      A JSON-ready dict: per optimizer the per-draw test error, final training loss,
      cosine between w and sign(Xᵀy), relative distance to the minimum-norm
      interpolant X⁺y, and their means with 95% intervals; per draw the fraction
      of −1 test labels (the predicted adaptive error) and the identity residual
      max |X·sign(Xᵀy) − 4y|. ``condition=False`` keeps draws with Σ y_train <= 0
      (``sum_y_train`` records it per draw; ``labelled_positive`` is each optimizer's share of
      test points labelled +1).
    
    >>> with jax.enable_x64(True):
    ...     cell = evaluate_cell(20, 0.75, n_test=8, draws=2, steps=500, optimizers=("gd", "adam"))
    >>> adam_error = cell["optimizers"]["adam"]["test_error"]
    >>> cell["optimizers"]["gd"]["test_error"], adam_error == cell["negative_test_fraction"]
    ([0.0, 0.0], True)
    """
    problems = [make_problem(n_train, n_test, p, seed=seed + 1000 * draw, condition=condition) for draw in range(draws)]
    x_train = np.stack([pr["x_train"] for pr in problems])
    y_train = np.stack([pr["y_train"] for pr in problems])
    x_test = np.stack([pr["x_test"] for pr in problems])
    y_test = np.stack([pr["y_test"] for pr in problems])
    signs = np.sign(np.einsum("bnd,bn->bd", x_train, y_train))
    identity = np.abs(np.einsum("bnd,bd->bn", x_train, signs) - 4 * y_train).max(axis=1)
    min_norm = np.stack([np.linalg.pinv(x) @ y for x, y in zip(x_train, y_train)])
    curvature = np.array([largest_curvature(x) for x in x_train])
    cell: dict[str, Any] = {"n_train": n_train, "p": p, "n_test": n_test, "draws": draws, "steps": steps,
                            "dimension": int(x_train.shape[2]),
                            "redraws": [pr["redraws"] for pr in problems], "condition": condition,
                            "sum_y_train": [float(pr["y_train"].sum()) for pr in problems],
                            "negative_test_fraction": (y_test < 0).mean(axis=1).tolist(),
                            "identity_residual": identity.tolist(), "curvature": curvature.tolist(),
                            "optimizers": {}}
    for name in optimizers:
        _, rate, _ = OPTIMIZERS[name]
        rates = 1.0 / curvature if rate == "1/L" else np.full(draws, float(rate))
        run = jax.jit(jax.vmap(lambda x, y, lr: train(name, x, y, steps, lr)))
        w, losses = run(jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(rates))
        w = np.asarray(w)
        final_loss = np.asarray(losses)[:, -1]
        predictions = np.where(np.einsum("bnd,bd->bn", x_test, w) > 0, 1.0, -1.0)
        error = (predictions != y_test).mean(axis=1)
        cosine = np.einsum("bd,bd->b", w, signs) / (np.linalg.norm(w, axis=1) * np.linalg.norm(signs, axis=1))
        distance = np.linalg.norm(w - min_norm, axis=1) / np.linalg.norm(min_norm, axis=1)
        cell["optimizers"][name] = {
            "learning_rate": rates.tolist(), "hyperparams": OPTIMIZERS[name][2],
            "test_error": error.tolist(), "final_train_loss": final_loss.tolist(),
            "labelled_positive": (predictions > 0).mean(axis=1).tolist(),
            "cosine_to_sign": cosine.tolist(), "distance_to_min_norm": distance.tolist(),
            "summary": {key: stats.mean_ci(values).as_dict() for key, values in
                        (("test_error", error), ("final_train_loss", final_loss), ("cosine_to_sign", cosine),
                         ("distance_to_min_norm", distance))},
        }
    return cell


def render(results: dict[str, Any]) -> str:
    """report.md from the results dict: one row per cell, test error per optimizer (mean ± 95% CI)."""
    names = results["optimizers"]
    lines = ["# Wilson et al. (2017) construction: test error of each optimizer", "",
             "Generated from `results.json`. Least squares, w0 = 0, full batch, "
             f"{results['steps']} steps, {results['draws']} draws per cell, {results['n_test']} test points per draw; "
             "mean ± half-width of the 95% t-interval over draws.", "",
             "| n_train | p | 1 − p | −1 fraction of test labels | " + " | ".join(names) + " |",
             "|" + "---|" * (4 + len(names))]
    for cell in results["cells"]:
        row = [str(cell["n_train"]), f"{cell['p']:.2f}", f"{1 - cell['p']:.2f}",
               f"{np.mean(cell['negative_test_fraction']):.3f}"]
        for name in names:
            s = cell["optimizers"][name]["summary"]["test_error"]
            half = s["half_width"]
            row.append(f"{s['mean']:.3f}" + (f" ± {half:.3f}" if half is not None and math.isfinite(half) else ""))
        lines.append("| " + " | ".join(row) + " |")
    worst_identity = max(max(cell["identity_residual"]) for cell in results["cells"])
    lines += ["", f"- identity max |X·sign(Xᵀy) − 4y| over every draw: {worst_identity:.1e}"]
    for name in names:
        cos = min(min(cell["optimizers"][name]["cosine_to_sign"]) for cell in results["cells"])
        dist = max(max(cell["optimizers"][name]["distance_to_min_norm"]) for cell in results["cells"])
        loss = max(max(cell["optimizers"][name]["final_train_loss"]) for cell in results["cells"])
        lines.append(f"- `{name}`: smallest cos(w, sign(Xᵀy)) {cos:.6f}; "
                     f"largest ‖w − X⁺y‖/‖X⁺y‖ {dist:.3g}; "
                     f"largest final training loss {loss:.2e}")
    lines += ["", *unconditioned_table(results)]
    lines += ["", "Expected (Wilson et al. 2017, section 3.3): GD and heavy ball 0 test error (they approach the "
              "minimum-norm interpolant X⁺y); AdaGrad, RMSProp and Adam error = fraction of −1 test labels "
              "≈ 1 − p (w ∝ sign(Xᵀy), every new point labelled +1).",
              f"Draws with Σ y_train <= 0 were redrawn ({sum(sum(c['redraws']) for c in results['cells'])} "
              "redraws in all) because the identity needs more positive training labels.",
              f"Wall time: {results['wall_time_s']:.1f} s."]
    return "\n".join(lines) + "\n"


def unconditioned_table(results: dict[str, Any]) -> list[str]:
    """Lines of the second table: the draws with Σ y_train <= 0 among the unconditioned ones.

    Per cell, how many of its unconditioned draws fall outside the lemma's assumption, the
    share of −1 test labels there (the lemma's error formula), and per optimizer the mean
    test error and the mean share of test points it labels +1 on those draws.

    >>> print(unconditioned_table({"optimizers": ["gd"], "unconditioned": []})[0])
    ## Outside the lemma's assumption Σy_train > 0 (unconditioned draws)
    """
    names = results["optimizers"]
    lines = ["## Outside the lemma's assumption Σy_train > 0 (unconditioned draws)", "",
             "The same cells drawn without redrawing, restricted to the draws with Σ y_train <= 0: the identity "
             "X·sign(Xᵀy) = 4y does not hold there, so the lemma says nothing. Cells: test error / share of test "
             "points labelled +1, means over those draws.", "",
             "| n_train | p | draws with Σy_train <= 0 | −1 fraction of test labels | " + " | ".join(names) + " |",
             "|" + "---|" * (4 + len(names))]
    for cell in results.get("unconditioned") or []:
        outside = [i for i, total in enumerate(cell["sum_y_train"]) if total <= 0]
        row = [str(cell["n_train"]), f"{cell['p']:.2f}", f"{len(outside)} of {cell['draws']}"]
        if not outside:
            lines.append("| " + " | ".join(row + ["—"] * (1 + len(names))) + " |")
            continue
        row.append(f"{np.mean([cell['negative_test_fraction'][i] for i in outside]):.3f}")
        for name in names:
            record = cell["optimizers"][name]
            row.append(f"{np.mean([record['test_error'][i] for i in outside]):.3f} / "
                       f"{np.mean([record['labelled_positive'][i] for i in outside]):.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def sweep(out: Path = OUT, *, n_train: Sequence[int] = N_TRAIN, probabilities: Sequence[float] = PROBABILITIES,
          draws: int = DRAWS, steps: int = STEPS, n_test: int = N_TEST) -> dict[str, Any]:
    """The full sweep; writes ``out/results.json`` and ``out/report.md`` (atomically)."""
    import jaxnets
    started = time.perf_counter()
    with jax.enable_x64(True):
        cells = [evaluate_cell(n, p, n_test=n_test, draws=draws, steps=steps) for n in n_train for p in probabilities]
        unconditioned = [evaluate_cell(n, p, n_test=n_test, draws=draws, steps=steps, condition=False)
                         for n in n_train for p in probabilities]
    results = {"experiment": "wilson", "optimizers": list(OPTIMIZERS), "steps": steps, "draws": draws,
               "n_test": n_test, "cells": cells, "unconditioned": unconditioned,
               "versions": {"jaxnets": jaxnets.__version__, "jax": jax.__version__, "numpy": np.__version__},
               "wall_time_s": time.perf_counter() - started}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render(results))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.wilson", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    retain_freed_memory()  # an experiment owns its process (jaxnets.host_memory)
    results = sweep(args.out, draws=args.draws, steps=args.steps)
    print(render(results))
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
