"""jaxnets.optim against a NumPy float64 re-implementation written here, step by step.

One table of optimizers crossed with two objectives (a convex quadratic in R^5 and
the 2-D Rosenbrock function). Parameters are a dict with a "kernel" leaf (decayed
under the default mask) and a "bias" leaf (not decayed): the objective sees their
concatenation x = [kernel, bias].
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
    weight_decay_mask: str | None = "weights",
    changes: dict[int, dict] | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Trajectory (steps, dim) of the textbook update rules, float64."""
    hp = {**REF_DEFAULTS[name], **overrides, "learning_rate": learning_rate}
    if weight_decay is not None:
        hp["weight_decay"] = weight_decay
    hp.setdefault("weight_decay", 0.0)
    x = X0[objective].astype(np.float64).copy()
    mask = np.zeros_like(x)
    mask[: N_KERNEL[objective]] = 1.0
    if weight_decay_mask is None:
        mask[:] = 1.0
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
    (lambda: optim.create("rmsprop", 0.1, eps_in_sqrt=1), "eps_in_sqrt: got 1; allowed: True, False"),
    (lambda: optim.create("adam", 0.1, b2=1.5), "b2: got 1.5"),
    (lambda: optim.create("adam", 0.1, eps=-1e-8), "eps: got -1e-08; allowed: >= 0"),
    (lambda: optim.create("adagrad", 0.1, initial_accumulator_value=-1.0), "initial_accumulator_value: got -1.0"),
    (lambda: optim.create("adamw", 0.1, weight_decay=-0.01), "weight_decay: got -0.01; allowed: >= 0"),
    (lambda: optim.create("sgd", 0.1, clip_norm=0.0), "clip_norm: got 0.0; allowed: > 0 or None"),
    (lambda: optim.create("sgd", 0.1, weight_decay_mask="all"), "weight_decay_mask: got 'all'"),
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
