"""jaxnets.optim against a NumPy float64 re-implementation written here, step by step.

One table of optimizers crossed with two objectives (a convex quadratic in R^5 and
the 2-D Rosenbrock function). Parameters are a dict with a "kernel" leaf and a
"bias" leaf (both decayed by default; only the kernel under
``weight_decay_mask="weights"``): the objective sees their concatenation
x = [kernel, bias]. Further down: jaxnets against optax's own aliases, AdamW against
PyTorch's documented algorithm (and torch itself when installed), the defaults
that ``describe`` lists, and argument checks.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import optim

N_STEPS = 25
RTOL = 1e-6

# ---------------------------------------------------------------- objectives

_rng = np.random.default_rng(0)
_q, _ = np.linalg.qr(_rng.normal(size=(5, 5)))
A = _q @ np.diag(np.linspace(0.5, 5.0, 5)) @ _q.T
B = _rng.normal(size=5)
X0 = {"quadratic": _rng.normal(size=5), "rosenbrock": np.array([-1.2, 1.0])}
N_KERNEL = {"quadratic": 3, "rosenbrock": 1}  # x[:k] is the kernel, x[k:] the bias


def np_grad(objective: str, x: np.ndarray) -> np.ndarray:
    if objective == "quadratic":
        return A @ x - B
    r = x[1] - x[0] ** 2
    return np.array([-2.0 * (1.0 - x[0]) - 400.0 * x[0] * r, 200.0 * r])


def jax_loss(objective: str, params: dict) -> jax.Array:
    x = jnp.concatenate([params["kernel"], params["bias"]])
    if objective == "quadratic":
        return 0.5 * x @ jnp.asarray(A) @ x - jnp.asarray(B) @ x
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def to_params(objective: str, x: np.ndarray) -> dict:
    k = N_KERNEL[objective]
    return {"kernel": jnp.asarray(x[:k]), "bias": jnp.asarray(x[k:])}


def to_vector(params: dict) -> np.ndarray:
    return np.concatenate([np.asarray(params["kernel"]), np.asarray(params["bias"])])


# ---------------------------------------------------------------- NumPy reference

# The documented defaults, written out again here (not read from the module).
REF_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9},
    "rmsprop": {"decay": 0.9, "eps": 1e-8, "eps_in_sqrt": True, "initial_scale": 0.0},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0},
    "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, "weight_decay": 1e-2},
    "adagrad": {"initial_accumulator_value": 0.1, "eps": 1e-7},
}


def np_factor(t: int, schedule: str = "constant", **kw: Any) -> float:
    """The schedule formulas of the docs, in plain Python floats."""
    if schedule == "constant":
        value = 1.0
    elif schedule == "step":
        value = kw["decay_rate"] ** math.floor(t / kw["step_size"])
    elif schedule == "exponential":
        value = kw["decay_rate"] ** (t / kw["step_size"])
    else:
        T, alpha = kw["total_steps"], kw.get("alpha", 0.0)
        value = alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T))
    w = kw.get("warmup_steps", 0)
    return value * min(1.0, (t + 1) / w) if w else value


def reference_run(
    name: str,
    objective: str,
    learning_rate: float,
    steps: int,
    *,
    schedule: str = "constant",
    total_steps: int | None = None,
    decay_rate: float | None = None,
    step_size: int | None = None,
    alpha: float = 0.0,
    warmup_steps: int = 0,
    clip_norm: float | None = None,
    weight_decay: float | None = None,
    weight_decay_mask: str | None = "all",
    changes: dict[int, dict] | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Trajectory (steps, dim) of the textbook update rules, float64."""
    hp = {**REF_DEFAULTS[name], **overrides, "learning_rate": learning_rate}
    if weight_decay is not None:
        hp["weight_decay"] = weight_decay
    hp.setdefault("weight_decay", 0.0)
    x = X0[objective].astype(np.float64).copy()
    mask = np.ones_like(x)
    if weight_decay_mask == "weights":
        mask[N_KERNEL[objective]:] = 0.0
    v = np.zeros_like(x)  # momentum / first moment
    s = np.full_like(x, hp.get("initial_scale", 0.0))  # rmsprop second moment
    G = np.full_like(x, hp.get("initial_accumulator_value", 0.0))  # adagrad sum
    out = []
    for t in range(steps):
        hp.update((changes or {}).get(t, {}))
        g = np_grad(objective, x)
        if clip_norm is not None:
            norm = np.sqrt(np.sum(g**2))
            if norm >= clip_norm:
                g = g * clip_norm / norm
        if name == "sgd":
            d = g
        elif name in ("momentum", "nesterov"):
            v = hp["momentum"] * v + g
            d = v if name == "momentum" else g + hp["momentum"] * v
        elif name == "rmsprop":
            s = hp["decay"] * s + (1 - hp["decay"]) * g**2
            d = g / np.sqrt(s + hp["eps"]) if hp["eps_in_sqrt"] else g / (np.sqrt(s) + hp["eps"])
        elif name in ("adam", "adamw"):
            v = hp["b1"] * v + (1 - hp["b1"]) * g
            s = hp["b2"] * s + (1 - hp["b2"]) * g**2
            m_hat = v / (1 - hp["b1"] ** (t + 1))
            s_hat = s / (1 - hp["b2"] ** (t + 1))
            d = m_hat / (np.sqrt(s_hat + hp["eps_root"]) + hp["eps"])
        elif name == "adagrad":
            G = G + g**2
            d = np.where(G > 0, g / np.sqrt(np.where(G > 0, G, 1.0) + hp["eps"]), 0.0)
        else:
            raise AssertionError(name)
        d = d + hp["weight_decay"] * mask * x
        eta = hp["learning_rate"] * np_factor(
            t, schedule, total_steps=total_steps, decay_rate=decay_rate, step_size=step_size,
            alpha=alpha, warmup_steps=warmup_steps)
        x = x - eta * d
        out.append(x.copy())
    return np.stack(out)


# ---------------------------------------------------------------- jaxnets runs


def jaxnets_run(tx: Any, objective: str, steps: int, changes: dict[int, dict] | None = None):
    """Trajectory of jaxnets' optimizer under one jitted step, and its trace count."""
    traces = []

    def step(params, opt_state):
        traces.append(1)  # runs only while tracing
        grads = jax.grad(lambda p: jax_loss(objective, p))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), opt_state

    step = jax.jit(step)
    params = to_params(objective, X0[objective])
    opt_state = tx.init(params)
    out = []
    for t in range(steps):
        for key, value in (changes or {}).get(t, {}).items():
            opt_state = optim.set_hyperparam(opt_state, key, value)
        params, opt_state = step(params, opt_state)
        out.append(to_vector(params))
    return np.stack(out), len(traces)


def assert_close_every_step(got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    assert np.all(np.isfinite(want)), "reference diverged: pick a smaller learning rate"
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-8)
    worst = rel.max(axis=1)
    bad = np.flatnonzero(worst >= rtol)
    assert bad.size == 0, f"step {bad[0]}: max relative deviation {worst[bad[0]]:.3g}"


# (id, optimizer, {objective: learning rate}, create/reference keyword arguments)
CASES = [
    ("sgd", "sgd", {"quadratic": 0.1, "rosenbrock": 5e-4}, {}),
    ("momentum", "momentum", {"quadratic": 0.05, "rosenbrock": 2e-4}, {}),
    ("nesterov", "nesterov", {"quadratic": 0.05, "rosenbrock": 2e-4}, {"momentum": 0.8}),
    ("rmsprop", "rmsprop", {"quadratic": 0.01, "rosenbrock": 5e-3}, {}),
    ("rmsprop-eps-outside", "rmsprop", {"quadratic": 0.01, "rosenbrock": 5e-3},
     {"eps_in_sqrt": False, "decay": 0.99, "eps": 1e-3, "initial_scale": 0.1}),
    ("adam", "adam", {"quadratic": 0.05, "rosenbrock": 0.02}, {}),
    ("adam-eps-root", "adam", {"quadratic": 0.05, "rosenbrock": 0.02},
     {"eps": 0.0, "eps_root": 1e-2, "b1": 0.8}),
    ("adamw", "adamw", {"quadratic": 0.05, "rosenbrock": 0.02}, {}),
    ("adagrad", "adagrad", {"quadratic": 0.3, "rosenbrock": 0.1}, {}),
    ("adagrad-torch-init", "adagrad", {"quadratic": 0.3, "rosenbrock": 0.1},
     {"initial_accumulator_value": 0.0, "eps": 1e-10}),
    ("momentum-clip", "momentum", {"quadratic": 0.05, "rosenbrock": 0.01}, {"clip_norm": 1.0}),
    ("momentum-decay-weights", "momentum", {"quadratic": 0.05, "rosenbrock": 2e-4},
     {"weight_decay": 0.3, "weight_decay_mask": "weights"}),
    ("momentum-decay-default-all", "momentum", {"quadratic": 0.05, "rosenbrock": 2e-4},
     {"weight_decay": 0.3}),
    ("adam-decay-all", "adam", {"quadratic": 0.05, "rosenbrock": 0.02},
     {"weight_decay": 0.2, "weight_decay_mask": None}),
    ("momentum-cosine-warmup", "momentum", {"quadratic": 0.1, "rosenbrock": 4e-4},
     {"schedule": "cosine", "total_steps": 20, "alpha": 0.1, "warmup_steps": 5}),
    ("rmsprop-step", "rmsprop", {"quadratic": 0.02, "rosenbrock": 5e-3},
     {"schedule": "step", "step_size": 7, "decay_rate": 0.5}),
    ("adagrad-exponential", "adagrad", {"quadratic": 0.3, "rosenbrock": 0.1},
     {"schedule": "exponential", "step_size": 10, "decay_rate": 0.3}),
]


@pytest.mark.parametrize("objective", ["quadratic", "rosenbrock"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_numpy_reference_every_step(case, objective):
    _, name, rates, kwargs = case
    with jax.enable_x64(True):
        tx = optim.create(name, rates[objective], **kwargs)
        got, n_traces = jaxnets_run(tx, objective, N_STEPS)
    want = reference_run(name, objective, rates[objective], N_STEPS, **kwargs)
    assert n_traces == 1
    assert not np.allclose(want[-1], X0[objective])  # the run did move
    assert_close_every_step(got, want)


def test_set_hyperparam_changes_update_without_retracing():
    changes = {8: {"learning_rate": 0.1, "momentum": 0.5}, 16: {"learning_rate": 0.02}}
    with jax.enable_x64(True):
        tx = optim.create("momentum", 0.05)
        got, n_traces = jaxnets_run(tx, "quadratic", N_STEPS, changes)
        unchanged, _ = jaxnets_run(tx, "quadratic", N_STEPS)
    want = reference_run("momentum", "quadratic", 0.05, N_STEPS, changes=changes)
    assert n_traces == 1
    assert_close_every_step(got, want)
    assert not np.allclose(got[-1], unchanged[-1])


def test_vmap_over_learning_rates_matches_separate_runs():
    rates = [0.01, 0.05, 0.2]
    with jax.enable_x64(True):
        tx = optim.create("adam", 0.05, clip_norm=2.0, weight_decay=0.1)

        def step(params, opt_state):
            grads = jax.grad(lambda p: jax_loss("quadratic", p))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return jax.tree.map(lambda p, u: p + u, params, updates), opt_state

        params = to_params("quadratic", X0["quadratic"])
        stack = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * len(rates)), tree)
        batch_params, batch_state = stack(params), stack(tx.init(params))
        batch_state = optim.set_hyperparam(batch_state, "learning_rate", jnp.array(rates))
        batch_step = jax.jit(jax.vmap(step))
        trajectory = []
        for _ in range(N_STEPS):
            batch_params, batch_state = batch_step(batch_params, batch_state)
            trajectory.append(np.concatenate(
                [np.asarray(batch_params["kernel"]), np.asarray(batch_params["bias"])], axis=1))
        trajectory = np.stack(trajectory, axis=1)  # (member, step, dim)
        np.testing.assert_allclose(
            np.asarray(optim.get_hyperparam(batch_state, "learning_rate")), rates)
        for i, rate in enumerate(rates):
            alone, _ = jaxnets_run(
                optim.create("adam", rate, clip_norm=2.0, weight_decay=0.1), "quadratic", N_STEPS)
            assert_close_every_step(trajectory[i], alone, rtol=1e-10)
            want = reference_run("adam", "quadratic", rate, N_STEPS, clip_norm=2.0, weight_decay=0.1)
            assert_close_every_step(trajectory[i], want)


EXPECTED_HYPERPARAMS = {
    "sgd": {"learning_rate", "weight_decay"},
    "momentum": {"learning_rate", "weight_decay", "momentum"},
    "nesterov": {"learning_rate", "weight_decay", "momentum"},
    "rmsprop": {"learning_rate", "weight_decay", "decay", "eps"},
    "adam": {"learning_rate", "weight_decay", "b1", "b2", "eps", "eps_root"},
    "adamw": {"learning_rate", "weight_decay", "b1", "b2", "eps", "eps_root"},
    "adagrad": {"learning_rate", "weight_decay", "eps"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_HYPERPARAMS))
def test_defaults_and_traced_hyperparams(name):
    assert optim.default_hyperparams(name) == REF_DEFAULTS[name]
    state = optim.create(name, 0.1).init({"kernel": jnp.ones(3, jnp.float32)})
    assert set(state.hyperparams) == EXPECTED_HYPERPARAMS[name]
    for key, value in state.hyperparams.items():
        assert value.dtype == jnp.float32 and value.shape == (), key
    clipped = optim.create(name, 0.1, clip_norm=1.0).init({"kernel": jnp.ones(3)})
    assert float(optim.get_hyperparam(clipped, "clip_norm")) == 1.0
    line = optim.describe(name)
    assert line and "\n" not in line


def test_optimizer_and_schedule_names():
    assert optim.OPTIMIZERS == ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad")
    assert optim.SCHEDULES == ("constant", "step", "exponential", "cosine")


SCHEDULE_CASES = [
    ("constant", {}),
    ("constant", {"warmup_steps": 4}),
    ("step", {"step_size": 10, "decay_rate": 0.5}),
    ("exponential", {"step_size": 7, "decay_rate": 0.3}),
    ("exponential", {"step_size": 1, "decay_rate": 0.97, "warmup_steps": 10}),
    ("cosine", {"total_steps": 40}),
    ("cosine", {"total_steps": 40, "alpha": 0.2, "warmup_steps": 8}),
]


@pytest.mark.parametrize("schedule,kwargs", SCHEDULE_CASES)
def test_schedule_matches_formula(schedule, kwargs):
    steps = np.arange(60)
    want = np.array([np_factor(int(t), schedule, **kwargs) for t in steps])
    with jax.enable_x64(True):
        factor = optim.make_schedule(schedule, **kwargs)
        eager = np.array([float(factor(int(t))) for t in steps])
        jitted = np.asarray(jax.jit(jax.vmap(factor))(jnp.asarray(steps, jnp.int32)))
    np.testing.assert_allclose(eager, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jitted, want, rtol=1e-12, atol=1e-15)


def test_callable_schedule_is_a_multiplier_with_warmup():
    with jax.enable_x64(True):
        tx = optim.create("sgd", 0.1, schedule=lambda t: 1.0 / (1.0 + t), warmup_steps=3)
        got, _ = jaxnets_run(tx, "quadratic", 6)
    x, want = X0["quadratic"].copy(), []
    for t in range(6):
        x = x - 0.1 / (1.0 + t) * min(1.0, (t + 1) / 3) * np_grad("quadratic", x)
        want.append(x.copy())
    assert_close_every_step(got, np.stack(want))


def test_schedule_arguments_unused_by_a_schedule_are_ignored():
    # The command line always passes total_steps, whatever the schedule.
    with jax.enable_x64(True):
        tx = optim.create("adam", 0.05, schedule="step", step_size=5, total_steps=1000, alpha=0.5)
        got, _ = jaxnets_run(tx, "quadratic", 12)
    want = reference_run("adam", "quadratic", 0.05, 12, schedule="step", step_size=5, decay_rate=0.1)
    assert_close_every_step(got, want)


def _state():
    return optim.create("adam", 1e-3).init(jnp.zeros(3))


def _select_nothing(params):
    return jax.tree.map(lambda _: False, params)


BAD_INPUTS = [
    (lambda: optim.create("adamax", 0.1), "name: got 'adamax'; allowed: sgd, momentum"),
    (lambda: optim.create("sgd", 0.0), "learning_rate: got 0.0; allowed: > 0"),
    (lambda: optim.create("sgd", -1e-3), "learning_rate: got -0.001"),
    (lambda: optim.create("sgd", float("nan")), "learning_rate: got nan"),
    (lambda: optim.create("sgd", "0.1"), "learning_rate: got '0.1'; allowed: a real number"),
    (lambda: optim.create("sgd", 0.1, momentum=0.9), "hyperparameter: got 'momentum'; allowed: none"),
    (lambda: optim.create("adam", 0.1, beta1=0.9), "hyperparameter: got 'beta1'; allowed: b1, b2"),
    (lambda: optim.create("momentum", 0.1, momentum=1.0), "momentum: got 1.0; allowed: 0 <= value < 1"),
    (lambda: optim.create("rmsprop", 0.1, decay=-0.1), "decay: got -0.1; allowed: 0 <= value < 1"),
    (lambda: optim.create("rmsprop", 0.1, eps_in_sqrt=2), "eps_in_sqrt: got 2; allowed: True, False (or 1, 0)"),
    (lambda: optim.create("rmsprop", 0.1, eps_in_sqrt=0.5), "eps_in_sqrt: got 0.5; allowed: True, False"),
    (lambda: optim.create("rmsprop", 0.1, eps_in_sqrt="yes"), "eps_in_sqrt: got 'yes'; allowed: True"),
    (lambda: optim.create("adam", 0.1, b2=1.5), "b2: got 1.5"),
    (lambda: optim.create("adam", 0.1, eps=-1e-8), "eps: got -1e-08; allowed: >= 0"),
    (lambda: optim.create("adagrad", 0.1, initial_accumulator_value=-1.0), "initial_accumulator_value: got -1.0"),
    (lambda: optim.create("adamw", 0.1, weight_decay=-0.01), "weight_decay: got -0.01; allowed: >= 0"),
    (lambda: optim.create("sgd", 0.1, clip_norm=0.0), "clip_norm: got 0.0; allowed: > 0 or None"),
    (lambda: optim.create("sgd", 0.1, weight_decay_mask="kernels"),
     "weight_decay_mask: got 'kernels'; allowed: 'all', 'weights', None, or a callable"),
    (lambda: optim.create("adamw", 0.1, weight_decay_mask="weights").init(jnp.ones(3)),
     "weight_decay_mask: got 'weights', which selects no leaf of the params; allowed:"),
    (lambda: optim.create("adamw", 0.1, weight_decay_mask=_select_nothing).init({"w": jnp.ones(3)}),
     "weight_decay_mask: got '_select_nothing', which selects no leaf"),
    (lambda: optim.create("sgd", 0.1, schedule="exponential"),
     "step_size: got None; allowed: an int >= 1 (required by schedule 'exponential')"),
    (lambda: optim.create("sgd", 0.1, schedule="step", step_size=2.5), "step_size: got 2.5; allowed: an int >= 1"),
    (lambda: optim.create("sgd", 0.1, schedule="step", step_size=True), "step_size: got True"),
    (lambda: optim.create("sgd", 0.1, schedule="step", step_size=float("inf")), "step_size: got inf"),
    (lambda: optim.create("sgd", 0.1, schedule="cosine", total_steps=99.5), "total_steps: got 99.5"),
    (lambda: optim.create("sgd", 0.1, warmup_steps=1.5), "warmup_steps: got 1.5; allowed: an int >= 0"),
    (lambda: optim.create("sgd", 0.1, schedule="linear"), "schedule: got 'linear'; allowed: constant, step"),
    (lambda: optim.create("sgd", 0.1, schedule="cosine"), "total_steps: got None; allowed: an int >= 1"),
    (lambda: optim.create("sgd", 0.1, schedule="step"), "step_size: got None; allowed: an int >= 1"),
    (lambda: optim.create("sgd", 0.1, schedule=lambda t: 1.0, warmup_steps=-2), "warmup_steps: got -2"),
    (lambda: optim.make_schedule("step"), "step_size: got None; allowed: an int >= 1"),
    (lambda: optim.make_schedule("step", step_size=2.5), "step_size: got 2.5; allowed: an int >= 1"),
    (lambda: optim.make_schedule("exponential", step_size=10, decay_rate=1.5), "decay_rate: got 1.5; allowed: 0 < decay_rate <= 1"),
    (lambda: optim.make_schedule("exponential", step_size=10, decay_rate=0.0), "decay_rate: got 0.0"),
    (lambda: optim.make_schedule("cosine", total_steps=0), "total_steps: got 0; allowed: an int >= 1"),
    (lambda: optim.make_schedule("cosine", total_steps=10, alpha=2.0), "alpha: got 2.0; allowed: 0 <= alpha <= 1"),
    (lambda: optim.make_schedule(warmup_steps=-1), "warmup_steps: got -1; allowed: an int >= 0"),
    (lambda: optim.default_hyperparams("lbfgs"), "name: got 'lbfgs'"),
    (lambda: optim.describe("Adam"), "name: got 'Adam'"),
    (lambda: optim.get_hyperparam(_state(), "lr"), "hyperparameter: got 'lr'; allowed: b1, b2, eps"),
    (lambda: optim.get_hyperparam({"lr": 1}, "lr"), "opt_state: got 'dict'; allowed: a state from"),
    (lambda: optim.set_hyperparam(_state(), "learning_rate", jnp.ones(3)),
     "learning_rate shape: got (3,); allowed: () (the stored shape)"),
    (lambda: optim.set_hyperparam(_state(), "learning_rate", -0.1), "learning_rate: got -0.1; allowed: > 0"),
]


@pytest.mark.parametrize("make,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_one_line_error(make, message):
    with pytest.raises(ValueError) as info:
        make()
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


# ---------------------------------------------------------------- against optax and PyTorch

import inspect  # noqa: E402
import re  # noqa: E402

import flax.linen as nn  # noqa: E402
import optax  # noqa: E402

from tests.helpers.torch_reference import max_relative_deviation, torch_adamw_trajectory  # noqa: E402


class _TinyNet(nn.Module):
    """Two Dense layers and a custom parameter "w" (neither a kernel nor a bias)."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(1.0), (x.shape[-1],), jnp.float64)
        h = jnp.tanh(nn.Dense(4, param_dtype=jnp.float64)(x * w))
        return nn.Dense(1, param_dtype=jnp.float64)(h)[:, 0]


def _problem(kind: str):
    """(params, loss) in float64: a bare array on the quadratic, or _TinyNet's params."""
    if kind == "bare-array":
        a, b = jnp.asarray(A), jnp.asarray(B)
        return jnp.asarray(X0["quadratic"]), lambda p: 0.5 * p @ a @ p - b @ p
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 3)))
    y = jnp.sin(x.sum(axis=1))
    params = _TinyNet().init(jax.random.key(0), x)["params"]
    return params, lambda p: jnp.mean((_TinyNet().apply({"params": p}, x) - y) ** 2)


def _trajectory(tx, params, loss, steps: int) -> list[list[np.ndarray]]:
    """The leaves of the params after each of ``steps`` jitted updates."""
    grad = jax.grad(loss)

    @jax.jit
    def step(p, s):
        updates, s = tx.update(grad(p), s, p)
        return optax.apply_updates(p, updates), s

    state, out = tx.init(params), []
    for _ in range(steps):
        params, state = step(params, state)
        out.append([np.asarray(leaf) for leaf in jax.tree.leaves(params)])
    return out


def _torch_reference(params, loss, lr: float, steps: int, **kwargs):
    """torch.optim.AdamW's algorithm (NumPy) on the same loss; jax only for the gradient."""
    leaves, treedef = jax.tree.flatten(params)
    grad = jax.jit(jax.grad(loss))

    def grads(theta):
        return jax.tree.leaves(grad(jax.tree.unflatten(treedef, [jnp.asarray(t) for t in theta])))

    return torch_adamw_trajectory([np.asarray(x) for x in leaves], grads, lr, steps, **kwargs)


@pytest.mark.parametrize("kind", ["bare-array", "flax-model"])
def test_adamw_default_equals_optax_adamw_and_torch_algorithm(kind):
    lr, steps = 0.05, 50
    with jax.enable_x64(True):
        params, loss = _problem(kind)
        ours = _trajectory(optim.create("adamw", lr), params, loss, steps)
        theirs = _trajectory(optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2),
                             params, loss, steps)
        torch_like = _torch_reference(params, loss, lr, steps)
        no_decay = _trajectory(optim.create("adamw", lr, weight_decay=0.0), params, loss, steps)
    assert ours[0][0].dtype == np.float64
    assert max_relative_deviation(ours, theirs) < 1e-6
    assert max_relative_deviation(ours, torch_like) < 1e-6
    # Every leaf (the bare array; "w", kernels and biases) was decayed.
    for got, undecayed in zip(ours[-1], no_decay[-1], strict=True):
        assert np.all(np.abs(got - undecayed) > 1e-6)


def test_weights_mask_decays_only_kernels_like_optax_with_that_mask():
    with jax.enable_x64(True):
        params, loss = _problem("flax-model")
        kernel_only = lambda p: jax.tree_util.tree_map_with_path(  # noqa: E731
            lambda path, _: path[-1].key == "kernel", p)
        ours = _trajectory(optim.create("adamw", 0.05, weight_decay=0.3, weight_decay_mask="weights"),
                           params, loss, 20)
        theirs = _trajectory(optax.adamw(0.05, weight_decay=0.3, mask=kernel_only), params, loss, 20)
        everything = _trajectory(optim.create("adamw", 0.05, weight_decay=0.3), params, loss, 20)
    assert max_relative_deviation(ours, theirs) < 1e-12
    assert max_relative_deviation(ours, everything) > 1e-6


def test_mask_check_runs_under_jit_and_vmap():
    params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    tx = optim.create("adamw", 0.1, weight_decay_mask="weights")
    jax.jit(tx.init)(params)
    jax.vmap(tx.init)(jax.tree.map(lambda x: jnp.stack([x, x]), params))
    with pytest.raises(ValueError, match="weight_decay_mask: got 'weights', which selects no leaf"):
        jax.jit(tx.init)({"w": jnp.ones(3)})


def _torch_trajectory(torch, make_optimizer, steps: int) -> list:
    """Parameters after each of ``steps`` torch updates on the quadratic ½θᵀAθ − bᵀθ (float64)."""
    theta = torch.tensor(X0["quadratic"], dtype=torch.float64, requires_grad=True)
    a, b = torch.tensor(A), torch.tensor(B)
    opt = make_optimizer(theta)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()
        opt.step()
        trajectory.append([theta.detach().numpy().copy()])
    return trajectory


def test_adamw_matches_real_torch():
    torch = pytest.importorskip("torch")
    lr, steps = 0.05, 50
    got_torch = _torch_trajectory(torch, lambda theta: torch.optim.AdamW([theta], lr=lr), steps)
    with jax.enable_x64(True):
        params, loss = _problem("bare-array")
        ours = _trajectory(optim.create("adamw", lr), params, loss, steps)
        numpy_reference = _torch_reference(params, loss, lr, steps)
    assert max_relative_deviation(got_torch, numpy_reference) < 1e-6
    assert max_relative_deviation(ours, got_torch) < 1e-6


# optax's own alias for each optimizer, with jaxnets' defaults passed only where optax
# has none (momentum) or a different one (adamw's weight decay).
OPTAX_ALIASES = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=1e-2),
    "adagrad": lambda lr: optax.adagrad(lr),
}


@pytest.mark.parametrize("kind", ["bare-array", "flax-model"])
@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_default_optimizer_equals_optax_alias(name, kind):
    lr = 0.02
    with jax.enable_x64(True):
        params, loss = _problem(kind)
        ours = _trajectory(optim.create(name, lr), params, loss, 8)
        theirs = _trajectory(OPTAX_ALIASES[name](lr), params, loss, 8)
    assert not np.allclose(ours[-1][0], np.asarray(jax.tree.leaves(params)[0]))
    assert max_relative_deviation(ours, theirs) < 1e-12


# Where each reference default lives: optax alias and parameter, torch class and parameter.
OPTAX_PLACES = {
    "sgd": "sgd", "momentum": "sgd", "nesterov": "sgd", "rmsprop": "rmsprop", "adam": "adam",
    "adamw": "adamw", "adagrad": "adagrad",
}
TORCH_PLACES = {
    "sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "rmsprop": "RMSprop", "adam": "Adam",
    "adamw": "AdamW", "adagrad": "Adagrad",
}
TORCH_NAMES = {"decay": "alpha", "b1": ("betas", 0), "b2": ("betas", 1)}
# Documented by torch, not arguments: ε outside the root (rmsprop), zero state, no eps_root.
TORCH_FIXED = {"eps_in_sqrt": False, "initial_scale": 0.0, "eps_root": 0.0}


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_reference_defaults_match_optax_signatures(name):
    table = optim.reference_defaults(name)
    assert list(table) == [*optim.default_hyperparams(name), *(
        [] if name == "adamw" else ["weight_decay"])]
    signature = inspect.signature(getattr(optax, OPTAX_PLACES[name])).parameters
    for key, (ours, optax_value, _) in table.items():
        if key in signature:
            assert signature[key].default == optax_value, key
        else:  # optax's alias has no decay term
            assert key == "weight_decay" and optax_value == 0.0
        if name != "adamw" and key == "weight_decay":
            assert ours == 0.0


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_reference_defaults_match_torch_signatures(name):
    torch = pytest.importorskip("torch")
    signature = inspect.signature(getattr(torch.optim, TORCH_PLACES[name])).parameters
    for key, (_, _, torch_value) in optim.reference_defaults(name).items():
        if key in TORCH_FIXED:
            assert torch_value == TORCH_FIXED[key], key
            continue
        place = TORCH_NAMES.get(key, key)
        default = (signature[place[0]].default[place[1]] if isinstance(place, tuple)
                   else signature[place].default)
        assert default == torch_value, key


_DEFAULT_ITEM = re.compile(r"(\w+) (\S+?)(?: \(optax (\S+), torch (\S+)\))?(?:, |$)")


def _parse_value(text: str) -> Any:
    words = {"True": True, "False": False, "None": None}
    return words[text] if text in words else float(text)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_describe_lists_the_defaults_create_uses(name):
    line = optim.describe(name)
    assert "\n" not in line
    listed = {m[0]: _parse_value(m[1]) for m in _DEFAULT_ITEM.findall(line.split("; defaults: ")[1])}
    assert set(listed) == {*optim.default_hyperparams(name), "weight_decay"}
    with jax.enable_x64(True):
        tx = optim.create(name, 0.05)
        traced = tx.init(to_params("quadratic", X0["quadratic"])).hyperparams
        default_run, _ = jaxnets_run(tx, "quadratic", 4)
        for key, value in listed.items():
            if key in traced:
                assert float(traced[key]) == value, key
            # Passing the listed value explicitly changes nothing (static ones too).
            given = {"weight_decay": value} if key == "weight_decay" else {key: value}
            explicit, _ = jaxnets_run(optim.create(name, 0.05, **given), "quadratic", 4)
            np.testing.assert_array_equal(explicit, default_run, err_msg=key)


def test_describe_shows_reference_values_only_where_they_differ():
    assert optim.describe("adagrad").endswith(
        "initial_accumulator_value 0.1 (optax 0.1, torch 0), eps 1e-7 (optax 1e-7, torch 1e-10), "
        "weight_decay 0")
    assert "decay 0.9 (optax 0.9, torch 0.99)" in optim.describe("rmsprop")
    assert "eps_in_sqrt True (optax True, torch False)" in optim.describe("rmsprop")
    assert "b1 0.9, b2 0.999, eps 1e-8, eps_root 0, weight_decay 0" in optim.describe("adam")
    assert "momentum 0.9 (optax None, torch 0)" in optim.describe("nesterov")


# ---------------------------------------------------------------- schedules and arguments from a CLI


@pytest.mark.parametrize("schedule,kwargs,as_floats", [
    ("step", {"step_size": 7, "decay_rate": 0.5}, {"step_size": 7.0}),
    ("exponential", {"step_size": 10, "decay_rate": 0.3}, {"step_size": 10.0}),
    ("cosine", {"total_steps": 20, "warmup_steps": 5}, {"total_steps": 20.0, "warmup_steps": 5.0}),
])
def test_integral_floats_are_accepted_as_ints(schedule, kwargs, as_floats):
    with jax.enable_x64(True):
        ints, _ = jaxnets_run(optim.create("adam", 0.05, schedule=schedule, **kwargs), "quadratic", 12)
        floats, _ = jaxnets_run(optim.create("adam", 0.05, schedule=schedule, **{**kwargs, **as_floats}),
                                "quadratic", 12)
    np.testing.assert_array_equal(floats, ints)


@pytest.mark.parametrize("flag,number", [(True, 1.0), (False, 0.0), (True, 1), (False, 0)])
def test_boolean_hyperparameter_takes_one_and_zero(flag, number):
    with jax.enable_x64(True):
        want, _ = jaxnets_run(optim.create("rmsprop", 0.01, eps_in_sqrt=flag, eps=1e-3), "quadratic", 5)
        got, _ = jaxnets_run(optim.create("rmsprop", 0.01, eps_in_sqrt=number, eps=1e-3), "quadratic", 5)
    np.testing.assert_array_equal(got, want)


# Our schedule factors written as optax schedules with a peak value of 1.
OPTAX_SCHEDULES = [
    ("constant", {}, optax.constant_schedule(1.0)),
    ("step", {"step_size": 7, "decay_rate": 0.5},
     optax.exponential_decay(1.0, transition_steps=7, decay_rate=0.5, staircase=True)),
    ("exponential", {"step_size": 7, "decay_rate": 0.3},
     optax.exponential_decay(1.0, transition_steps=7, decay_rate=0.3)),
    ("cosine", {"total_steps": 40, "alpha": 0.2}, optax.cosine_decay_schedule(1.0, 40, alpha=0.2)),
    # Warm-up over W updates is optax's linear ramp from 1/W to 1 over W − 1 updates.
    ("constant", {"warmup_steps": 8}, optax.linear_schedule(1.0 / 8, 1.0, 7)),
]


@pytest.mark.parametrize("schedule,kwargs,theirs", OPTAX_SCHEDULES,
                         ids=[f"{s}-{'-'.join(k)}" for s, k, _ in OPTAX_SCHEDULES])
def test_schedule_equals_optax_schedule(schedule, kwargs, theirs):
    with jax.enable_x64(True):
        ours = optim.make_schedule(schedule, **kwargs)
        steps = jnp.arange(60)
        np.testing.assert_allclose(np.asarray(jax.vmap(ours)(steps)), np.asarray(jax.vmap(theirs)(steps)),
                                   rtol=1e-12, atol=1e-15)


def test_rmsprop_with_torch_settings_matches_real_torch():
    # docs/defaults.md: create("rmsprop", lr, decay=0.99, eps_in_sqrt=False) is RMSprop(lr).
    torch = pytest.importorskip("torch")
    lr, steps = 0.01, 50
    got_torch = _torch_trajectory(torch, lambda theta: torch.optim.RMSprop([theta], lr=lr), steps)
    with jax.enable_x64(True):
        params, loss = _problem("bare-array")
        ours = _trajectory(optim.create("rmsprop", lr, decay=0.99, eps_in_sqrt=False), params, loss, steps)
    assert max_relative_deviation(ours, got_torch) < 1e-6
