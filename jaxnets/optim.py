r"""Optimizers by name, as Optax chains whose hyperparameters live in the state.

Every optimizer is one chain, built inside one factory wrapped by
``optax.inject_hyperparams``::

    clip_by_global_norm(clip_norm)          # only when clip_norm is given
    -> direction d_t (the table below)      # sgd, momentum, ..., adagrad
    -> add_decayed_weights(λ, mask)         # d_t + λ·θ_t (every leaf by default)
    -> scale by -η·s(t)                     # η base rate, s(t) the schedule factor

so each step is  θ_{t+1} = θ_t − η·s(t)·(d_t + λ·m ⊙ θ_t)  with m the decay mask
(all ones by default, as in ``optax.adamw`` and ``torch.optim.AdamW``).
The float hyperparameters (η, μ, ρ, β₁, β₂, ε, ε_root, λ, clip_norm) are arrays in
``opt_state.hyperparams``: a compiled step reads them, it does not bake them in,
so :func:`set_hyperparam` changes them without recompiling and ``jax.vmap`` can
give every member of a population its own values.

Notation (g_t the gradient, after clipping; t = 0, 1, ... counts updates):

=========  ===================================================================
sgd        d = g
momentum   v ← μ·v + g ;  d = v                          (Polyak heavy ball)
nesterov   v ← μ·v + g ;  d = g + μ·v                    (PyTorch's form)
rmsprop    s ← ρ·s + (1−ρ)·g² ;  d = g / √(s + ε)        (eps_in_sqrt=True)
                                 d = g / (√s + ε)        (eps_in_sqrt=False)
adam       m ← β₁·m + (1−β₁)·g ;  s ← β₂·s + (1−β₂)·g² ;
           m̂ = m/(1−β₁^{t+1}) ;  ŝ = s/(1−β₂^{t+1}) ;  d = m̂ / (√(ŝ + ε_root) + ε)
adamw      adam with λ = 1e-2 by default (decoupled weight decay)
adagrad    G ← G + g² (G₀ = initial_accumulator_value) ;
           d = g / √(G + ε) where G > 0, else 0
=========  ===================================================================

All accumulators start at zero except rmsprop's s (``initial_scale``) and
adagrad's G (``initial_accumulator_value``). The defaults are optax's except
adamw's λ (PyTorch's 1e-2); :func:`describe` and docs/defaults.md list where optax
and ``torch.optim`` differ. See docs/optimizers.md for the mapping to the course
slides (which swap the names: their ε is the learning rate, their η the small
constant) and to ``torch.optim``.
"""
from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets import tree as jtree

#: Optimizer names accepted by :func:`create`.
OPTIMIZERS: tuple[str, ...] = (
    "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad",
)

#: Schedule names accepted by :func:`make_schedule` (each may add linear warm-up).
SCHEDULES: tuple[str, ...] = ("constant", "step", "exponential", "cosine")

#: Weight-decay masks accepted by :func:`create` besides a callable: "all" (the
#: default) and None decay every leaf, "weights" only ``kernel``/``embedding`` leaves.
WEIGHT_DECAY_MASKS: tuple[Any, ...] = ("all", "weights", None)

# Per-optimizer defaults. Float values become traced state; booleans and the
# initial accumulator values are fixed when the optimizer is built (they only
# matter in ``init``), so they are not in ``opt_state.hyperparams``.
_DEFAULTS: dict[str, dict[str, float | bool]] = {
    "sgd": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9},
    "rmsprop": {"decay": 0.9, "eps": 1e-8, "eps_in_sqrt": True, "initial_scale": 0.0},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0},
    "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, "weight_decay": 1e-2},
    "adagrad": {"initial_accumulator_value": 0.1, "eps": 1e-7},
}

_STATIC_HYPERPARAMS = ("eps_in_sqrt", "initial_scale", "initial_accumulator_value")

# The same quantity's default in optax 0.2.8's alias (``optax.sgd`` for momentum and
# nesterov, whose ``momentum=None`` means none) and in torch.optim 2.x's class
# (SGD, RMSprop [alpha], Adam, AdamW, Adagrad): (optax, torch) per key of
# _DEFAULTS plus weight_decay. Checked against both libraries' signatures by the
# tests; PyTorch has no eps_root (0) and its rmsprop/adagrad ε is outside the root.
_REFERENCE_DEFAULTS: dict[str, dict[str, tuple[Any, Any]]] = {
    "sgd": {"weight_decay": (0.0, 0.0)},
    "momentum": {"momentum": (None, 0.0), "weight_decay": (0.0, 0.0)},
    "nesterov": {"momentum": (None, 0.0), "weight_decay": (0.0, 0.0)},
    "rmsprop": {"decay": (0.9, 0.99), "eps": (1e-8, 1e-8), "eps_in_sqrt": (True, False),
                "initial_scale": (0.0, 0.0), "weight_decay": (0.0, 0.0)},
    "adam": {"b1": (0.9, 0.9), "b2": (0.999, 0.999), "eps": (1e-8, 1e-8), "eps_root": (0.0, 0.0),
             "weight_decay": (0.0, 0.0)},
    "adamw": {"b1": (0.9, 0.9), "b2": (0.999, 0.999), "eps": (1e-8, 1e-8), "eps_root": (0.0, 0.0),
              "weight_decay": (1e-4, 1e-2)},
    "adagrad": {"initial_accumulator_value": (0.1, 0.0), "eps": (1e-7, 1e-10),
                "weight_decay": (0.0, 0.0)},
}

# (test, allowed-text) for every scalar hyperparameter.
_UNIT = (lambda v: 0.0 <= v < 1.0, "0 <= value < 1")
_NONNEG = (lambda v: v >= 0.0, ">= 0")
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0.0, "> 0"),
    "momentum": _UNIT,
    "decay": _UNIT,
    "b1": _UNIT,
    "b2": _UNIT,
    "eps": _NONNEG,
    "eps_root": _NONNEG,
    "initial_scale": _NONNEG,
    "initial_accumulator_value": _NONNEG,
    "weight_decay": _NONNEG,
    "clip_norm": (lambda v: v > 0.0, "> 0 or None"),
}

# The update rules, with η the learning rate (defaults are appended by describe).
_RULES: dict[str, str] = {
    "sgd": "θ ← θ − η·g",
    "momentum": "v ← μ·v + g;  θ ← θ − η·v  (Polyak heavy ball)",
    "nesterov": "v ← μ·v + g;  θ ← θ − η·(g + μ·v)",
    "rmsprop": "s ← ρ·s + (1−ρ)·g²;  θ ← θ − η·g/√(s + ε)  (torch: g/(√s + ε))",
    "adam": "m ← β₁m + (1−β₁)g;  s ← β₂s + (1−β₂)g²;  θ ← θ − η·m̂/(√(ŝ + ε_root) + ε)",
    "adamw": "adam, then θ ← θ − η·λ·θ on every leaf (decoupled decay)",
    "adagrad": "G ← G + g²;  θ ← θ − η·g/√(G + ε)  (torch: g/(√G + ε))",
}


def _fail(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field}: got {value!r}; allowed: {allowed}")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise _fail("name", name, ", ".join(OPTIMIZERS))
    return name


def _check_float(field: str, value: Any) -> float:
    """A finite real number inside the field's range, as a Python float."""
    test, allowed = _RANGES[field]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(field, value, f"a real number {allowed}")
    number = float(value)
    if not math.isfinite(number) or not test(number):
        raise _fail(field, value, allowed)
    if number and not _FLOAT32_TINY <= abs(number) <= _FLOAT32_MAX:
        # Hyperparameters live in float32 state: 1e300 would become inf, 1e-320 zero.
        raise _fail(field, value, f"{allowed}, held by float32 (|x| from 1.2e-38 to 3.4e38)")
    return number


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_int(field: str, value: Any, minimum: int) -> int:
    """An int >= minimum; an integral float (10.0, as a command line passes) counts."""
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise _fail(field, value, f"an int >= {minimum}")
    return int(value)


def _check_bool(field: str, value: Any) -> bool:
    """True/False, or a number equal to 1 or 0 (a command line passes 1.0/0.0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    raise _fail(field, value, "True, False (or 1, 0)")


def _format(value: Any) -> str:
    """A default as text: 1e-08 -> '1e-8', 2.5e-4 -> '2.5e-4', 0.0 -> '0', 0.9 -> '0.9'."""
    if value is None or isinstance(value, bool):
        return str(value)
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def default_hyperparams(name: str) -> dict[str, float | bool]:
    """The defaults :func:`create` uses for optimizer ``name``.

    These are optax's defaults except adamw's weight decay (1e-2, PyTorch's;
    optax 1e-4). Besides these, ``weight_decay`` defaults to 0 for the other
    optimizers and the decay applies to every leaf. :func:`describe` prints them
    with optax's and PyTorch's values where those differ.

    Args:
      name: one of :data:`OPTIMIZERS`.

    Returns:
      A fresh dict of the keyword hyperparameters (safe to modify).

    >>> default_hyperparams("adam")
    {'b1': 0.9, 'b2': 0.999, 'eps': 1e-08, 'eps_root': 0.0}
    """
    return dict(_DEFAULTS[_check_name(name)])


def reference_defaults(name: str) -> dict[str, tuple[Any, Any, Any]]:
    """Every default of optimizer ``name`` beside optax's and PyTorch's.

    Args:
      name: one of :data:`OPTIMIZERS`.

    Returns:
      ``{hyperparameter: (jaxnets, optax, torch)}`` for the keys of
      :func:`default_hyperparams` plus ``weight_decay``, in that order. optax's
      value is its alias's (``optax.sgd`` for momentum/nesterov, where None means
      no momentum), PyTorch's the ``torch.optim`` class's (RMSprop's ``alpha`` for
      ``decay``; no ``eps_root``, i.e. 0).

    >>> reference_defaults("adagrad")["eps"]
    (1e-07, 1e-07, 1e-10)
    """
    ours = {**_DEFAULTS[_check_name(name)]}
    ours.setdefault("weight_decay", 0.0)
    return {key: (value, *_REFERENCE_DEFAULTS[name][key]) for key, value in ours.items()}


def describe(name: str) -> str:
    """Optimizer ``name``'s update rule and defaults on one line (for ``jaxnets list``).

    Each default is followed by optax's and PyTorch's value where either differs
    (see :func:`reference_defaults`).

    Args:
      name: one of :data:`OPTIMIZERS`.

    Returns:
      ``"<rule>; defaults: key value (optax v, torch v), ..."``, η the learning rate.

    >>> describe("adamw").split("; defaults: ")[1]
    'b1 0.9, b2 0.999, eps 1e-8, eps_root 0, weight_decay 0.01 (optax 1e-4, torch 0.01)'
    """
    parts = []
    for key, (ours, optax_value, torch_value) in reference_defaults(name).items():
        text = f"{key} {_format(ours)}"
        if (optax_value, torch_value) != (ours, ours):
            text += f" (optax {_format(optax_value)}, torch {_format(torch_value)})"
        parts.append(text)
    return f"{_RULES[name]}; defaults: {', '.join(parts)}"


def defaults_table() -> str:
    """Every optimizer default beside optax's and PyTorch's, as a Markdown table.

    docs/defaults.md holds this table verbatim (a test regenerates and compares it).

    Returns:
      The table's lines joined by newlines: optimizer, hyperparameter, jaxnets,
      optax, PyTorch, and which reference differs.

    >>> defaults_table().splitlines()[2]
    '| `sgd` | `weight_decay` | 0 | 0 | 0 | |'
    """
    lines = ["| optimizer | hyperparameter | jaxnets | optax | PyTorch | differs |",
             "|---|---|---|---|---|---|"]
    for name in OPTIMIZERS:
        for key, (ours, optax_value, torch_value) in reference_defaults(name).items():
            differs = " and ".join(lib for lib, value in (("optax", optax_value), ("torch", torch_value))
                                   if value != ours)
            cells = [f"`{name}`", f"`{key}`", *map(_format, (ours, optax_value, torch_value))]
            lines.append("| " + " | ".join(cells) + f" | {differs} |".replace("|  |", "| |"))
    return "\n".join(lines)


def make_schedule(
    name: str = "constant",
    *,
    total_steps: int | None = None,
    decay_rate: float = 0.1,
    step_size: int | None = None,
    alpha: float = 0.0,
    warmup_steps: int = 0,
) -> Callable[[Any], jax.Array]:
    r"""A learning-rate multiplier s(t) for update number t = 0, 1, 2, ...

    The learning rate used at update t is η·s(t). The factors are:

    - ``constant``:     s(t) = 1
    - ``step``:         s(t) = decay_rate ** floor(t / step_size)
    - ``exponential``:  s(t) = decay_rate ** (t / step_size)
    - ``cosine``:       s(t) = alpha + (1 − alpha)·½·(1 + cos(π·min(t, T)/T)), T = total_steps

    With ``warmup_steps = W > 0`` the factor is further multiplied by
    min(1, (t + 1)/W): the first update uses 1/W of the rate and update W − 1 the
    full rate. Warm-up multiplies the schedule at the same t (the decay is not
    shifted to start after the warm-up).

    Args:
      name: one of :data:`SCHEDULES`.
      total_steps: T, required (int >= 1) by ``cosine``; ignored by the others.
      decay_rate: factor per ``step_size`` updates for ``step`` and
        ``exponential``, in (0, 1].
      step_size: updates per decay period, required (int >= 1) by ``step`` and
        ``exponential``.
      alpha: the final factor of ``cosine``, in [0, 1].
      warmup_steps: W, int >= 0 (0 = no warm-up).

    Returns:
      ``factor(t)``: a jax-traceable function of an int step (Python int or
      array), returning the float multiplier in the default float dtype.

    >>> f = make_schedule("cosine", total_steps=10, alpha=0.1, warmup_steps=2)
    >>> [round(float(f(t)), 3) for t in (0, 1, 5, 10, 99)]
    [0.5, 0.978, 0.55, 0.1, 0.1]
    """
    if not isinstance(name, str) or name not in SCHEDULES:
        raise _fail("schedule", name, ", ".join(SCHEDULES))
    warmup = _check_int("warmup_steps", warmup_steps, 0)
    if name in ("step", "exponential"):
        if isinstance(decay_rate, bool) or not isinstance(decay_rate, numbers.Real) or not (
            0.0 < float(decay_rate) <= 1.0
        ):
            raise _fail("decay_rate", decay_rate, "0 < decay_rate <= 1")
        if step_size is None:
            raise _fail("step_size", step_size, f"an int >= 1 (required by schedule {name!r})")
        period = _check_int("step_size", step_size, 1)
        rate = float(decay_rate)
    if name == "cosine":
        if total_steps is None:
            raise _fail("total_steps", total_steps, "an int >= 1 (required by schedule 'cosine')")
        horizon = _check_int("total_steps", total_steps, 1)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (
            0.0 <= float(alpha) <= 1.0
        ):
            raise _fail("alpha", alpha, "0 <= alpha <= 1")
        floor_value = float(alpha)

    def factor(step: Any) -> jax.Array:
        t = _as_float(step)
        if name == "constant":
            return jnp.ones_like(t)
        if name == "step":
            return rate ** jnp.floor(t / period)
        if name == "exponential":
            return rate ** (t / period)
        progress = jnp.minimum(t, horizon) / horizon
        return floor_value + (1.0 - floor_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    return _with_warmup(factor, warmup)


def _as_float(step: Any) -> jax.Array:
    return jnp.asarray(step).astype(jnp.result_type(float))


def _with_warmup(factor: Callable[[Any], Any], warmup: int) -> Callable[[Any], jax.Array]:
    """factor(t)·min(1, (t + 1)/W), or factor itself when W = 0."""
    if warmup == 0:
        return factor

    def warmed(step: Any) -> jax.Array:
        return factor(step) * jnp.minimum(1.0, (_as_float(step) + 1.0) / warmup)

    return warmed


def _direction(name: str, hp: Mapping[str, Any]) -> optax.GradientTransformation:
    """The optimizer-specific part of the chain: g -> d (before decay and -η)."""
    if name == "sgd":
        return optax.identity()
    if name in ("momentum", "nesterov"):
        return optax.trace(decay=hp["momentum"], nesterov=name == "nesterov")
    if name == "rmsprop":
        return optax.scale_by_rms(
            decay=hp["decay"], eps=hp["eps"], initial_scale=hp["initial_scale"],
            eps_in_sqrt=hp["eps_in_sqrt"],
        )
    if name in ("adam", "adamw"):
        return optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_root=hp["eps_root"])
    return optax.scale_by_rss(initial_accumulator_value=hp["initial_accumulator_value"], eps=hp["eps"])


def _chain(
    *,
    name: str,
    factor: Callable[[Any], jax.Array],
    mask: Any,
    learning_rate: Any,
    weight_decay: Any,
    clip_norm: Any,
    **hyperparams: Any,
) -> optax.GradientTransformation:
    """The whole optimizer for given (possibly traced) hyperparameter values."""
    parts = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(_direction(name, hyperparams))
    parts.append(optax.add_decayed_weights(weight_decay, mask))

    def step_size(count: jax.Array) -> jax.Array:
        # The schedule sees the count kept by scale_by_schedule; η stays traced.
        return learning_rate * jnp.asarray(factor(count), jnp.result_type(learning_rate))

    parts.append(optax.scale_by_learning_rate(step_size))
    return optax.chain(*parts)


def _checked_values(name: str, learning_rate: Any, weight_decay: Any, clip_norm: Any,
                    hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of optimizer ``name``, checked, defaults filled in."""
    defaults = _DEFAULTS[name]
    unknown = sorted(set(hyperparams) - set(defaults))
    if unknown:
        allowed = ", ".join(k for k in defaults if k != "weight_decay") or "none"
        raise _fail("hyperparameter", unknown[0], f"{allowed} (for {name!r})")
    values: dict[str, Any] = {"learning_rate": _check_float("learning_rate", learning_rate)}
    for key, default in defaults.items():
        if key == "weight_decay":
            continue
        value = hyperparams.get(key, default)
        if isinstance(default, bool):
            values[key] = _check_bool(key, value)
        else:
            values[key] = _check_float(key, value)
    if weight_decay is None:
        weight_decay = defaults.get("weight_decay", 0.0)
    values["weight_decay"] = _check_float("weight_decay", weight_decay)
    values["clip_norm"] = None if clip_norm is None else _check_float("clip_norm", clip_norm)
    return values


def _resolve_mask(weight_decay_mask: Any) -> Any:
    """The mask for ``optax.add_decayed_weights``: None (every leaf) or a callable."""
    if isinstance(weight_decay_mask, str) and weight_decay_mask in ("all", "weights"):
        return None if weight_decay_mask == "all" else jtree.weight_mask
    if weight_decay_mask is None or callable(weight_decay_mask):
        return weight_decay_mask
    raise _fail("weight_decay_mask", weight_decay_mask, "'all', 'weights', None, or a callable")


def create(
    name: str,
    learning_rate: float,
    *,
    schedule: str | Callable[[Any], Any] = "constant",
    total_steps: int | None = None,
    decay_rate: float = 0.1,
    step_size: int | None = None,
    alpha: float = 0.0,
    warmup_steps: int = 0,
    clip_norm: float | None = None,
    weight_decay: float | None = None,
    weight_decay_mask: str | Callable[[Any], Any] | None = "all",
    **hyperparams: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Build optimizer ``name`` as an Optax transformation with traced hyperparameters.

    One update, with g the gradient and t the update count (0 for the first):

    1. clipping (if ``clip_norm = c``):  g ← g·min(1, c/‖g‖₂), ‖·‖₂ over all leaves;
    2. direction d from g (see the module docstring for every optimizer), e.g.
       momentum  v ← μ·v + g, d = v;  adam  d = m̂/(√(ŝ + ε_root) + ε);
    3. decoupled weight decay:  d ← d + λ·θ on the leaves the mask selects
       (every leaf by default, as ``optax.adamw`` and ``torch.optim.AdamW``);
    4. θ ← θ − η·s(t)·d, with s the schedule factor (:func:`make_schedule`).

    The decay is multiplied by the (scheduled) learning rate, as in AdamW and
    PyTorch's ``AdamW``; for every optimizer it is applied after the direction, so
    for momentum it is not the L2-in-the-gradient of PyTorch's ``SGD(weight_decay)``.

    Epsilon: rmsprop puts ε inside the root by default (``eps_in_sqrt=True``, the
    slides' form; ``False`` gives PyTorch's g/(√s + ε)); adam puts ε outside and
    ε_root inside, so ``eps=0.0, eps_root=η_slides`` reproduces the slides'
    m̂/√(v̂ + η); adagrad puts ε inside (g/√(G + ε)).

    The returned state is ``optax.InjectStatefulHyperparamsState``; its
    ``hyperparams`` dict holds ``learning_rate``, ``weight_decay``, the float
    hyperparameters of the optimizer and ``clip_norm`` when given, as arrays of the
    parameters' float dtype. ``update`` must be called with ``params`` (the decay
    needs them).

    Args:
      name: one of :data:`OPTIMIZERS`.
      learning_rate: base rate η > 0.
      schedule: a name from :data:`SCHEDULES` or a callable ``factor(step)``
        returning the multiplier s(t) (traceable, int step).
      total_steps, decay_rate, step_size, alpha: passed to :func:`make_schedule`
        for a schedule name (each is ignored by the schedules that do not use
        it, and by a callable schedule).
      warmup_steps: linear warm-up W >= 0 (see :func:`make_schedule`); it
        multiplies any schedule, a callable one included.
      clip_norm: maximum global gradient norm, > 0, or None for no clipping.
      weight_decay: λ >= 0; None means the optimizer's default (1e-2 for adamw,
        0 otherwise).
      weight_decay_mask: ``"all"`` (default) or None decays every leaf;
        ``"weights"`` only leaves named as weights (``jaxnets.tree.weight_mask``:
        ``kernel``, ``embedding``; so not biases, batch-norm scales or a bare
        array); a callable ``params -> pytree of bools`` is used as given. A mask
        that selects no leaf of the params raises ValueError at ``init``.
      **hyperparams: overrides of :func:`default_hyperparams` for ``name``; the
        boolean ``eps_in_sqrt`` also takes 1/0 (1.0/0.0).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (``init``, ``update``).

    >>> import jax.numpy as jnp
    >>> tx = create("momentum", 0.1, momentum=0.5)
    >>> params = {"kernel": jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"kernel": jnp.array([1.0, 1.0])}, state, params)
    >>> [round(float(u), 3) for u in updates["kernel"]]
    [-0.1, -0.1]
    >>> sorted(state.hyperparams)
    ['learning_rate', 'momentum', 'weight_decay']
    """
    name = _check_name(name)
    values = _checked_values(name, learning_rate, weight_decay, clip_norm, hyperparams)

    if callable(schedule):
        factor = _with_warmup(schedule, _check_int("warmup_steps", warmup_steps, 0))
    else:
        factor = make_schedule(
            schedule, total_steps=total_steps, decay_rate=decay_rate, step_size=step_size,
            alpha=alpha, warmup_steps=warmup_steps,
        )

    mask = _resolve_mask(weight_decay_mask)

    # One factory whose signature lists exactly this optimizer's arguments, so
    # that inject_hyperparams stores only those (floats traced, the rest static).
    names = ["name", "factor", "mask", *values]
    factory = _chain_factory(names)
    static = ("factor", "mask", *(k for k in _STATIC_HYPERPARAMS if k in values))
    injected = optax.inject_hyperparams(factory, static_args=static)
    tx = injected(name=name, factor=factor, mask=mask, **values)
    if mask is not None:
        tx = tx._replace(init=_checking_mask(tx.init, mask, weight_decay_mask))
    schedule_args = {"total_steps": total_steps, "decay_rate": decay_rate, "step_size": step_size, "alpha": alpha,
                     "warmup_steps": warmup_steps}
    return Described.of(tx, _spec(name, schedule, schedule_args, weight_decay_mask, values))


def _spec(name: str, schedule: Any, schedule_args: dict, weight_decay_mask: Any, values: dict) -> dict:
    """How ``create`` built an optimizer: only what changes the updates (a constant schedule
    ignores total_steps, so a resumed run may train longer without being refused)."""
    used = (*_SCHEDULE_ARGS.get(schedule, ()), "warmup_steps") if isinstance(schedule, str) else ("warmup_steps",)
    return {"name": name, "schedule": _callable_name(schedule) if callable(schedule) else schedule,
            **{key: schedule_args[key] for key in used},
            "weight_decay_mask": _callable_name(weight_decay_mask) if callable(weight_decay_mask)
            else weight_decay_mask, **values}


#: The arguments each named schedule reads (see make_schedule).
_SCHEDULE_ARGS = {"step": ("decay_rate", "step_size"), "exponential": ("decay_rate", "step_size"),
                  "cosine": ("total_steps", "alpha")}


class Described(optax.GradientTransformationExtraArgs):
    """An Optax transformation that also records how ``create`` built it (``spec``).

    It is still the (init, update) pair Optax expects; ``spec`` is what ``fit``
    stores with a checkpoint and compares on resume, so a changed schedule or
    hyperparameter is refused instead of silently ignored.
    """

    @classmethod
    def of(cls, tx: optax.GradientTransformationExtraArgs, spec: dict) -> "Described":
        described = cls(*tx)
        described.__dict__["spec"] = spec
        return described

    def _replace(self, **changes):  # keep the spec through optax's and our own _replace
        return Described.of(optax.GradientTransformationExtraArgs(*self)._replace(**changes), self.spec)


def _callable_name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _checking_mask(init: Callable[[Any], Any], mask: Callable[[Any], Any],
                   given: Any) -> Callable[[Any], Any]:
    """``init`` that first refuses a mask selecting no leaf (a silent no-decay)."""

    def checked_init(params: Any) -> Any:
        leaves = jax.tree_util.tree_leaves(params)
        selected = jax.tree_util.tree_leaves(mask(params))
        # A mask computed from traced values cannot be read here: trust it.
        chosen = any(isinstance(leaf, jax.core.Tracer) or bool(np.any(np.asarray(leaf)))
                     for leaf in selected)
        if leaves and not chosen:
            shown = getattr(given, "__name__", given)
            raise ValueError(f"weight_decay_mask: got {shown!r}, which selects no leaf of the params; "
                             "allowed: a mask selecting at least one leaf ('all' decays every leaf)")
        return init(params)

    return checked_init


def _chain_factory(names: list[str]) -> Callable[..., optax.GradientTransformation]:
    def factory(**kwargs: Any) -> optax.GradientTransformation:
        return _chain(**kwargs)

    factory.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    )
    return factory


def _hyperparams_of(opt_state: Any) -> dict[str, Any]:
    hyperparams = getattr(opt_state, "hyperparams", None)
    if not isinstance(hyperparams, dict):
        raise _fail("opt_state", type(opt_state).__name__, "a state from jaxnets.optim.create(...).init")
    return hyperparams


def get_hyperparam(opt_state: Any, name: str) -> jax.Array:
    """The current value of a traced hyperparameter in ``opt_state``.

    Args:
      opt_state: a state made by ``create(...).init`` (or a later update; may be
        batched by ``jax.vmap``, then the value has the batch shape).
      name: a key of ``opt_state.hyperparams``, e.g. ``"learning_rate"``.

    Returns:
      The array stored for ``name``.

    >>> import jax.numpy as jnp
    >>> state = create("adam", 1e-3).init(jnp.zeros(3))
    >>> round(float(get_hyperparam(state, "b2")), 3)
    0.999
    """
    hyperparams = _hyperparams_of(opt_state)
    if name not in hyperparams:
        raise _fail("hyperparameter", name, ", ".join(sorted(hyperparams)))
    return hyperparams[name]


def set_hyperparam(opt_state: Any, name: str, value: Any) -> Any:
    """A copy of ``opt_state`` whose hyperparameter ``name`` is ``value``.

    The value is cast to the stored dtype and must have the stored shape (``()``
    for one optimizer, ``(P,)`` for a state batched over P members), so a jitted
    step that takes the state as an argument does not recompile. Works inside
    ``jit``/``vmap`` with traced values; a concrete Python number is range-checked.

    Args:
      opt_state: a state made by ``create(...).init`` (not modified).
      name: a key of ``opt_state.hyperparams``.
      value: the new value (number or array).

    Returns:
      The new state; the next ``update`` uses the new value.

    >>> import jax.numpy as jnp
    >>> state = create("sgd", 0.1).init(jnp.zeros(2))
    >>> state = set_hyperparam(state, "learning_rate", 0.5)
    >>> float(get_hyperparam(state, "learning_rate"))
    0.5
    """
    old = get_hyperparam(opt_state, name)
    if isinstance(value, numbers.Real) and name in _RANGES:
        _check_float(name, value)
    new = jnp.asarray(value, dtype=old.dtype)
    if new.shape != old.shape:
        raise _fail(f"{name} shape", tuple(new.shape), f"{tuple(old.shape)} (the stored shape)")
    return opt_state._replace(hyperparams={**opt_state.hyperparams, name: new})
