"""Vanishing and exploding gradients: per-layer gradient norms by depth, activation and init.

Slide (ECON 4810, "Back Propagation"): the chain rule multiplies one factor per layer,
so "small times small means very small" (vanishing gradient) and "big times big means
very big" (exploding gradient); "different activation functions, different
randomization distributions" are the cure. This experiment measures it.

For MLPs of width 64 and depth L (number of hidden layers) on a batch of scikit-learn
``digits``, it computes ‖∂L/∂W_l‖ (Frobenius norm of the gradient of the mean
cross-entropy with respect to each kernel, by ``jax.grad`` over the parameters made by
``jn.create_state``, drawn with the same keys) for

* activations sigmoid, tanh and ReLU;
* initializations: naive N(0, 0.01²) ("normal-0.01"), naive N(0, 1) ("normal-1"), and
  the matched fan-based rule (Glorot for sigmoid/tanh, He for ReLU);

at initialization and again after a short training run (minibatch SGD from
``jn.optim.create``, one compiled ``lax.scan`` per depth and activation). The headline
number is the ratio ‖∂L/∂W_1‖ / ‖∂L/∂W_out‖ (first hidden layer over output layer):
≪ 1 means the gradient vanishes on its way to the input, ≫ 1 that it explodes, and a
non-finite value that the norms overflowed or both underflowed to 0. The ratio alone can
hide a uniform blow-up (a ReLU net with N(0, 1) weights scales every layer's gradient
alike), so the table also gives the first-layer and output-layer norms themselves.

Commands::

    .venv/bin/python -m experiments.vanishing_gradients                 # fast default
    .venv/bin/python -m experiments.vanishing_gradients --full          # more depths, longer training
    .venv/bin/python -m experiments.vanishing_gradients --update-docs   # refresh docs/experiments/vanishing_gradients.md

Writes ``results/vanishing_gradients/results.json``, ``grad_norms_init.png`` (gradient
norm by layer, log scale, one panel per activation) and ``grad_norms_trained.png``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnets as jn
from jaxnets.state import run_keys

if __package__ in (None, ""):  # run as a file: make ``experiments`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.common import figure, main_for, markdown_table, save_figure, save_json

ACTIVATIONS = ("sigmoid", "tanh", "relu")
#: init label -> (kernel_init, init_scale); "matched" is resolved per activation.
INITS = ("normal-0.01", "normal-1", "matched")
MATCHED = {"sigmoid": "glorot", "tanh": "glorot", "relu": "he"}


def kernel_init_for(init: str, activation: str) -> tuple[str, float | None]:
    """``(kernel_init, init_scale)`` of an init label for an activation."""
    if init == "normal-0.01":
        return "normal", 0.01
    if init == "normal-1":
        return "normal", 1.0
    if init == "matched":
        return MATCHED[activation], None
    raise ValueError(f"init: got {init!r}; allowed: {', '.join(INITS)}")


def layer_names(depth: int) -> list[str]:
    """Kernel names from the input side to the output: hidden_0 .. hidden_{L-1}, output."""
    return [f"hidden_{i}" for i in range(depth)] + ["output"]


def make_grad_fn(model):
    """A jitted ``(params, x, y) -> grads`` of the mean softmax cross-entropy.

    The kernel initializer plays no part in ``apply``, so one compiled function serves
    every initialization of a given depth and activation.
    """
    def loss(params, x, y):
        logits = model.apply({"params": params}, x)
        return jnp.mean(jn.losses.softmax_cross_entropy(logits, y))

    return jax.jit(jax.grad(loss))


def initial_params(model, sample_x, seed: int):
    """The parameters ``jn.create_state(model, tx, sample_x, seed)`` starts from.

    Same keys as ``create_state`` (``run_keys(seed).init`` split into params and dropout
    keys), drawn eagerly: compiling the initializer of a 50-layer net once per
    initialization would cost more than the whole experiment.
    """
    params_key, dropout_key = jax.random.split(run_keys(seed).init)
    variables = model.init({"params": params_key, "dropout": dropout_key},
                           jnp.asarray(sample_x[:1]), train=False)
    return variables["params"]


def make_sgd_run(model, tx, steps: int, batch: int):
    """A jitted ``(params, x, y, key) -> params``: ``steps`` minibatch steps of ``tx``.

    Non-finite updates are applied as they come: a run that overflows stays non-finite,
    which is what the table reports.
    """
    def loss(params, xb, yb):
        return jnp.mean(jn.losses.softmax_cross_entropy(model.apply({"params": params}, xb), yb))

    @jax.jit
    def train(params, x, y, key):
        def step(carry, k):
            params, opt_state = carry
            idx = jax.random.randint(k, (batch,), 0, x.shape[0])
            grads = jax.grad(loss)(params, x[idx], y[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
        return params

    return train


def kernel_grad_norms(grads: Any, depth: int) -> list[float]:
    """‖∂L/∂W_l‖ (Frobenius) for each kernel, input side first."""
    return [float(jnp.linalg.norm(grads[name]["kernel"])) for name in layer_names(depth)]


def _ratio(norms: Sequence[float]) -> float:
    first, last = norms[0], norms[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or last == 0.0:
        return float("nan")
    return first / last


def run(quick: bool = True, out: Path = Path("results/vanishing_gradients"), *,
        depths: Sequence[int] | None = None, width: int = 64, batch: int = 256,
        train_depths: Sequence[int] | None = None, train_steps: int | None = None,
        train_lr: float = 0.1, train_batch: int = 64,
        activations: Sequence[str] = ACTIVATIONS, inits: Sequence[str] = INITS,
        seed: int = 0) -> dict:
    """Measure per-layer gradient norms; write results.json and the figures into ``out``.

    Args:
      quick: the fast default (depths 2, 5, 10, 20, 50; training at depths 5 and 20).
      out: output directory.
      depths: numbers of hidden layers (overrides the setting's list).
      width: width of every hidden layer.
      batch: examples of the digits training split used for the gradients.
      train_depths: depths also trained for a short run (must be in ``depths``); () for none.
      train_steps, train_lr, train_batch: length, learning rate and minibatch size of
        that run (plain SGD from ``jn.optim.create``, minibatches drawn with replacement).
      activations, inits: subsets of ``ACTIVATIONS`` and ``INITS``.
      seed: initialization seed.

    Returns:
      The results dictionary (also written to ``out/results.json``).
    """
    depths = tuple(depths) if depths is not None else ((2, 5, 10, 20, 50) if quick else (2, 5, 10, 20, 30, 50))
    train_depths = tuple(train_depths) if train_depths is not None else ((5, 20) if quick else depths)
    train_steps = train_steps if train_steps is not None else (200 if quick else 1000)
    for d in (*depths, *train_depths):
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"depths: got {d!r}; allowed: ints >= 1")
    if not set(train_depths) <= set(depths):
        raise ValueError(f"train_depths: got {train_depths!r}; allowed: a subset of depths {depths!r}")
    for a in activations:
        if a not in ACTIVATIONS:
            raise ValueError(f"activation: got {a!r}; allowed: {', '.join(ACTIVATIONS)}")
    for i in inits:
        kernel_init_for(i, "relu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    data = jn.data.load("digits", seed=seed)
    x = jnp.asarray(data.x_train[:batch], jnp.float32)
    y = jnp.asarray(data.y_train[:batch])
    tx = jn.optim.create("sgd", train_lr)
    params_cache: dict[tuple, Any] = {}

    records: list[dict] = []
    for activation in activations:
        for depth in depths:
            grad_fn = train_fn = None
            for init in inits:
                kernel_init, scale = kernel_init_for(init, activation)
                model = jn.models.get_model("mlp", output_dim=data.num_classes, hidden=(width,) * depth,
                                            activation=activation, kernel_init=kernel_init,
                                            init_scale=scale)
                if grad_fn is None:
                    grad_fn = make_grad_fn(model)
                # The activation plays no part in the initial draw: share it across activations.
                key = (depth, kernel_init, scale)
                if key not in params_cache:
                    params_cache[key] = initial_params(model, x, seed)
                params = params_cache[key]
                norms = kernel_grad_norms(grad_fn(params, x, y), depth)
                record = {"activation": activation, "depth": depth, "init": init,
                          "kernel_init": kernel_init, "init_scale": scale,
                          "norms_init": norms, "ratio_init": _ratio(norms)}
                if depth in train_depths:
                    if train_fn is None:
                        train_fn = make_sgd_run(model, tx, train_steps, train_batch)
                    trained_params = train_fn(params, jnp.asarray(data.x_train, jnp.float32),
                                              jnp.asarray(data.y_train), jax.random.key(seed))
                    trained = kernel_grad_norms(grad_fn(trained_params, x, y), depth)
                    logits = model.apply({"params": trained_params}, jnp.asarray(data.x_test, jnp.float32))
                    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(data.y_test)))
                    record.update(norms_trained=trained, ratio_trained=_ratio(trained),
                                  test_accuracy_trained=accuracy)
                records.append(record)

    results = {"dataset": "digits", "batch": int(x.shape[0]), "width": width, "depths": list(depths),
               "activations": list(activations), "inits": list(inits), "matched": MATCHED,
               "train_depths": list(train_depths), "train_steps": train_steps,
               "optimizer": f"SGD lr {train_lr:g}, batch {train_batch}", "seed": seed, "records": records}
    save_json(out, results)
    _plot(results, "norms_init", out / "grad_norms_init.png", "at initialization")
    if train_depths:
        _plot(results, "norms_trained", out / "grad_norms_trained.png",
              f"after {train_steps} SGD steps")
    return results


def _plot(results: dict, key: str, path: Path, when: str) -> None:
    acts = results["activations"]
    fig, axes = figure(1, len(acts), figsize=(5 * len(acts), 4.2), squeeze=False)
    styles = {"normal-0.01": ":", "normal-1": "--", "matched": "-"}
    depths = sorted({r["depth"] for r in results["records"] if key in r})
    colors = {d: f"C{i}" for i, d in enumerate(depths)}
    for ax, activation in zip(axes[0], acts):
        for r in results["records"]:
            if r["activation"] != activation or key not in r:
                continue
            norms = np.array([v if v is not None else np.nan for v in r[key]], dtype=float)
            norms[~np.isfinite(norms) | (norms <= 0)] = np.nan
            ax.semilogy(np.arange(1, len(norms) + 1), norms, styles.get(r["init"], "-"),
                        color=colors[r["depth"]], marker=".", ms=3,
                        label=f"L={r['depth']}, {r['init']}")
        ax.set_title(f"{activation} ({when})")
        ax.set_xlabel("layer (1 = input side, last = output)")
        ax.set_ylabel("‖∂L/∂W_l‖")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=2, loc="best")
    fig.suptitle("Per-layer gradient norm; dotted N(0,0.01²), dashed N(0,1), solid Glorot/He; "
                 "missing points are non-finite or zero")
    save_figure(fig, path)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "non-finite"
    return f"{value:.3g}"


def summary(results: dict) -> str:
    """Markdown table: first-layer / output-layer gradient norm per (depth, activation, init)."""
    header = ["activation", "depth", "init", "‖∂L/∂W_1‖ init", "‖∂L/∂W_out‖ init", "ratio init",
              "ratio trained", "test acc trained"]
    rows = []
    for r in results["records"]:
        rows.append([r["activation"], r["depth"],
                     f"{r['init']} ({r['kernel_init']})" if r["init"] == "matched" else r["init"],
                     _fmt(r["norms_init"][0]), _fmt(r["norms_init"][-1]), _fmt(r["ratio_init"]),
                     _fmt(r["ratio_trained"]) if "ratio_trained" in r else "",
                     _fmt(r["test_accuracy_trained"]) if "test_accuracy_trained" in r else ""])
    return ("Ratio = ‖∂L/∂W_1‖ / ‖∂L/∂W_out‖ (first hidden kernel over output kernel), width "
            f"{results['width']}, batch of {results['batch']} digits; trained = after "
            f"{results['train_steps']} steps of {results['optimizer']}.\n\n"
            + markdown_table(header, rows))


if __name__ == "__main__":
    sys.exit(main_for(run, "vanishing_gradients", __doc__, summary))
