r"""What Zhou et al. (2020) measure: the tail index of gradient noise, and the sharpness of a minimum.

**Tail index** (Mohammadi et al. 2015, as used by Simsekli et al. 2019 and Zhou
et al. 2020). Let g_1..g_B be minibatch gradients at one point and ḡ their mean;
the noise samples are all coordinates of g_b − ḡ pooled into one vector
X_1..X_N. Split them into K = ⌊N/m⌋ blocks of m and let Y_k be the block sums.
For a symmetric α-stable law the sum of m samples is m^{1/α} times one sample, so

    1/α̂ = ( (1/K) Σ_k log|Y_k|  −  (1/(K·m)) Σ_i log|X_i| ) / log m

α = 2 is Gaussian; α < 2 is heavy-tailed (α = 1 is Cauchy). Zhou et al. report
a smaller α (heavier tails) for SGD's noise than for Adam's and argue that heavy
tails help escape sharp minima.

**Sharpness**: the largest eigenvalue of the Hessian of the loss at θ, by power
iteration on Hessian-vector products Hv = ∂/∂ε ∇f(θ + εv) (forward-over-reverse,
never forming H), and the mean loss increase along random directions of a given
length.

All functions take a loss ``f(params) -> scalar`` (or minibatch gradients) and
work on any parameter pytree.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


#: The estimator variants ``tail_index`` computes (see its docstring).
TAIL_INDEX_VARIANTS = ("ours", "released")


def tail_index(samples: Any, block_size: int | None = None, *, variant: str = "ours") -> float:
    """The tail index estimate α̂ of pooled noise samples (module docstring).

    Two variants of the same estimator, which differ where a coordinate is exactly 0
    (a dead ReLU gives many) and in the block size:

    - ``"ours"``: exact zeros are dropped (log 0 is undefined; they carry no noise),
      m = ⌊√N⌋ of the remaining N, and the last N mod m samples are left out;
    - ``"released"``: as the code released with Simsekli et al. 2019 (and used by Zhou
      et al. 2020): zeros are kept and every log is of |x| + ε with ε = ``np.spacing(1)``
      (2.2e-16), so each zero contributes log ε ≈ −36; m is the largest divisor of N
      that is at most √N (every sample is used).

    Args:
      samples: the noise values X_i (any shape; flattened).
      block_size: m >= 2; None picks it as the variant says.
      variant: one of ``TAIL_INDEX_VARIANTS``.

    Returns:
      α̂ (a float; NaN when fewer than two blocks are available).

    >>> rng = np.random.default_rng(0)
    >>> round(tail_index(rng.standard_normal(200_000)), 1), round(tail_index(rng.standard_cauchy(200_000)), 1)
    (2.0, 1.0)
    >>> round(tail_index(rng.standard_normal(200_000), variant="released"), 1)
    2.0
    """
    if variant not in TAIL_INDEX_VARIANTS:
        raise ValueError(f"variant: got {variant!r}; allowed: {', '.join(TAIL_INDEX_VARIANTS)}")
    x = np.asarray(samples, dtype=np.float64).ravel()
    eps = 0.0
    if variant == "ours":
        x = x[x != 0]
        default_m = int(math.isqrt(x.size))
    else:
        eps = float(np.spacing(1))
        default_m = largest_divisor_at_most(x.size, math.isqrt(x.size))
    m = default_m if block_size is None else block_size
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
        raise ValueError(f"block_size: got {block_size!r}; allowed: an integer >= 2 (or None)")
    k = x.size // m
    if k < 2:
        return math.nan
    x = x[:k * m]
    blocks = x.reshape(k, m).sum(axis=1)
    inverse = (np.mean(np.log(np.abs(blocks) + eps)) - np.mean(np.log(np.abs(x) + eps))) / math.log(m)
    return float(1.0 / inverse)


def largest_divisor_at_most(n: int, bound: int) -> int:
    """The largest d <= bound that divides n (1 when n < 1).

    >>> largest_divisor_at_most(200_000, 447), largest_divisor_at_most(97, 9)
    (400, 1)
    """
    for d in range(min(bound, n), 0, -1):
        if n % d == 0:
            return d
    return 1


def minibatch_gradients(loss: Callable[[Any, Any, Any], jax.Array], params: Any, xs: Any, ys: Any) -> jax.Array:
    """Flattened gradients of ``loss(params, x, y)`` on each of B minibatches: a (B, D) array.

    Args:
      loss: the minibatch loss, e.g. a mean cross-entropy.
      params: the parameter pytree (D scalars).
      xs, ys: minibatches stacked on a leading axis, (B, batch, ...) each.

    Returns:
      The (B, D) gradients, one row per minibatch (``ravel_pytree`` order).

    >>> f = lambda w, x, y: jnp.mean((x * w - y) ** 2)
    >>> minibatch_gradients(f, jnp.array(0.0), jnp.ones((3, 2)), jnp.ones((3, 2))).tolist()
    [[-2.0], [-2.0], [-2.0]]
    """
    return _minibatch_gradients(loss, params, xs, ys)


# The loss is a static argument: calls with the same loss object (a measurement repeated over
# seeds and checkpoints) reuse one compiled program instead of compiling with the point baked in.
@functools.partial(jax.jit, static_argnums=0)
def _minibatch_gradients(loss, params, xs, ys):
    return jax.vmap(lambda x, y: ravel_pytree(jax.grad(loss)(params, x, y))[0])(xs, ys)


@functools.partial(jax.jit, static_argnums=0)
def _flat_hvp(loss, params, v):
    unravel = ravel_pytree(params)[1]
    return ravel_pytree(hessian_vector_product(loss, params, unravel(v)))[0]


@functools.partial(jax.jit, static_argnums=0)
def _shifted_losses(loss, params, steps):
    flat, unravel = ravel_pytree(params)
    return jax.vmap(lambda step: loss(unravel(flat + step)))(steps)


def gradient_noise(gradients: Any) -> np.ndarray:
    """The centred noise g_b − ḡ of (B, D) minibatch gradients, pooled into one vector of B·D values.

    >>> gradient_noise(np.array([[1.0, 2.0], [3.0, 2.0]])).tolist()
    [-1.0, 0.0, 1.0, 0.0]
    """
    g = np.asarray(gradients, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"gradients: got shape {g.shape}; allowed: (B, D) with B >= 2 minibatches")
    return (g - g.mean(axis=0, keepdims=True)).ravel()


def hessian_vector_product(loss: Callable[[Any], jax.Array], params: Any, vector: Any) -> Any:
    """H(θ)·v for ``loss(params)``, forward-over-reverse: ∂/∂ε ∇f(θ + εv) at ε = 0.

    >>> f = lambda w: 0.5 * w @ jnp.array([[2.0, 0.0], [0.0, 3.0]]) @ w
    >>> hessian_vector_product(f, jnp.zeros(2), jnp.array([1.0, 1.0])).tolist()
    [2.0, 3.0]
    """
    return jax.jvp(jax.grad(loss), (params,), (vector,))[1]


def top_hessian_eigenvalue(loss: Callable[[Any], jax.Array], params: Any, key: jax.Array, *,
                           iterations: int = 100, tolerance: float = 1e-6) -> dict[str, float]:
    """The eigenvalue of largest magnitude of the Hessian, by power iteration on H·v.

    v_0 is a random unit vector (from ``key``); v_{k+1} = Hv_k / ‖Hv_k‖ and
    λ_k = v_kᵀHv_k, stopping when |λ_k − λ_{k−1}| <= tolerance·|λ_k|.

    Args:
      loss: ``f(params) -> scalar`` (e.g. the full training loss at fixed data).
      params: the point θ (any pytree).
      key: PRNG key of the starting vector.
      iterations: the most H·v products.
      tolerance: relative change that stops the iteration.

    Returns:
      ``{"eigenvalue": λ, "iterations": k, "residual": ‖Hv − λv‖}``.

    >>> f = lambda w: 0.5 * jnp.sum(jnp.array([5.0, 2.0, 1.0]) * w ** 2)
    >>> round(top_hessian_eigenvalue(f, jnp.zeros(3), jax.random.key(0))["eigenvalue"], 4)
    5.0
    """
    flat = ravel_pytree(params)[0]
    hvp = functools.partial(_flat_hvp, loss, params)
    v = jax.random.normal(key, flat.shape, flat.dtype)
    v = v / jnp.linalg.norm(v)
    eigenvalue, previous, used = math.nan, math.nan, 0
    hv = hvp(v)
    for used in range(1, iterations + 1):
        eigenvalue = float(v @ hv)
        norm = float(jnp.linalg.norm(hv))
        if norm == 0.0:
            break
        v = hv / norm
        hv = hvp(v)
        if math.isfinite(previous) and abs(eigenvalue - previous) <= tolerance * abs(eigenvalue):
            break
        previous = eigenvalue
    eigenvalue = float(v @ hv)
    residual = float(jnp.linalg.norm(hv - eigenvalue * v))
    return {"eigenvalue": eigenvalue, "iterations": used, "residual": residual}


def random_direction_sharpness(loss: Callable[[Any], jax.Array], params: Any, key: jax.Array, *,
                               radius: float, directions: int = 20) -> dict[str, float]:
    """Mean and spread of f(θ + r·d) − f(θ) over random unit directions d (uniform on the sphere).

    For a quadratic with Hessian H at its minimum the expectation is r²·tr(H)/(2D).

    Args:
      loss: ``f(params) -> scalar``.
      params: θ.
      key: PRNG key of the directions.
      radius: r, the step length (in the parameters' global norm), > 0.
      directions: how many directions.

    Returns:
      ``{"mean": ..., "std": ..., "max": ..., "radius": r, "directions": n}``.

    >>> f = lambda w: 0.5 * 3.0 * jnp.sum(w ** 2)   # H = 3·I: every direction gives 3·r²/2
    >>> round(random_direction_sharpness(f, jnp.zeros(4), jax.random.key(0), radius=0.1)["mean"], 6)
    0.015
    """
    if not radius > 0:
        raise ValueError(f"radius: got {radius!r}; allowed: a number > 0")
    flat = ravel_pytree(params)[0]
    base = float(_shifted_losses(loss, params, jnp.zeros((1, flat.size), flat.dtype))[0])
    d = jax.random.normal(key, (directions, flat.size), flat.dtype)
    d = d / jnp.linalg.norm(d, axis=1, keepdims=True)
    rises = np.asarray(_shifted_losses(loss, params, radius * d), np.float64) - base
    return {"mean": float(rises.mean()), "std": float(rises.std(ddof=1)) if directions > 1 else math.nan,
            "max": float(rises.max()), "radius": float(radius), "directions": int(directions)}


__all__ = ["gradient_noise", "hessian_vector_product", "minibatch_gradients", "random_direction_sharpness",
           "tail_index", "top_hessian_eigenvalue"]
