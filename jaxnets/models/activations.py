"""Activation functions for hidden layers and output functions ("heads") for the last layer.

Hidden activations, by name (``ACTIVATIONS``):

============  =====================================================  ==========
name          formula                                                range
============  =====================================================  ==========
identity      g(z) = z                                               ℝ
sigmoid       g(z) = 1 / (1 + e^(−z))                                (0, 1)
tanh          g(z) = (e^z − e^(−z)) / (e^z + e^(−z))                 (−1, 1)
relu          g(z) = max(z, 0)                                       [0, ∞)
leaky_relu    g(z) = z if z ≥ 0 else 0.01·z  (negative slope 0.01)   ℝ
gelu          g(z) = z·Φ(z) = ½·z·(1 + erf(z/√2))  (exact, not tanh)  ≈[−0.17, ∞)
softplus      g(z) = log(1 + e^z)                                    (0, ∞)
============  =====================================================  ==========

Output functions (``HEADS``) turn the last layer's values z into the model's output:
``"logits"`` and ``"identity"`` are the same thing (ŷ = z: regression, or logits
to be fed to a loss "from logits"); ``"sigmoid"`` gives a probability per output;
``"softmax"`` gives a distribution over the last axis,
softmax(z)_k = e^(z_k) / Σ_j e^(z_j); ``"relu"`` is there because some worked
examples (the ReLU network of the Econ 425 slides) apply ReLU to the output too.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

#: Slope of leaky_relu for negative inputs.
LEAKY_RELU_SLOPE = 0.01


def identity(z: Array) -> Array:
    """g(z) = z.

    Args:
      z: any array.

    Returns:
      ``z`` unchanged.

    >>> identity(jnp.array([-1.0, 2.0])).tolist()
    [-1.0, 2.0]
    """
    return z


def leaky_relu(z: Array) -> Array:
    """g(z) = z for z ≥ 0, 0.01·z otherwise (slope ``LEAKY_RELU_SLOPE``).

    Args:
      z: any array.

    Returns:
      An array of the same shape.

    >>> leaky_relu(jnp.array([-100.0, 3.0])).tolist()
    [-1.0, 3.0]
    """
    return jax.nn.leaky_relu(z, negative_slope=LEAKY_RELU_SLOPE)


def gelu(z: Array) -> Array:
    """Exact GELU: g(z) = z·Φ(z) = ½·z·(1 + erf(z/√2)), Φ the standard normal CDF.

    The exact form (not the tanh approximation) is used, as PyTorch does by default.

    Args:
      z: any array.

    Returns:
      An array of the same shape.

    >>> round(float(gelu(jnp.array(1.0))), 4)
    0.8413
    """
    return jax.nn.gelu(z, approximate=False)


def softmax(z: Array) -> Array:
    """softmax(z)_k = e^(z_k) / Σ_j e^(z_j) over the last axis (computed stably).

    Args:
      z: array of shape (..., K).

    Returns:
      Non-negative array of the same shape whose last axis sums to 1.

    >>> [round(p, 3) for p in softmax(jnp.array([0.0, 0.0, jnp.log(2.0)])).tolist()]
    [0.25, 0.25, 0.5]
    """
    return jax.nn.softmax(z, axis=-1)


#: Hidden-layer activations by name.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "identity": identity,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": leaky_relu,
    "gelu": gelu,
    "softplus": jax.nn.softplus,
}

#: Output functions by name; "logits" and "identity" are the same linear output.
HEADS: dict[str, Callable[[Array], Array]] = {
    "logits": identity,
    "identity": identity,
    "sigmoid": jax.nn.sigmoid,
    "softmax": softmax,
    "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    """The hidden activation called ``name``.

    Args:
      name: a key of ``ACTIVATIONS``.

    Returns:
      The elementwise function.

    Raises:
      ValueError: unknown name.

    >>> get_activation("relu")(jnp.array([-2.0, 3.0])).tolist()
    [0.0, 3.0]
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: got {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def get_head(name: str) -> Callable[[Array], Array]:
    """The output function called ``name``.

    Args:
      name: a key of ``HEADS``.

    Returns:
      The function applied to the last layer's values.

    Raises:
      ValueError: unknown name.

    >>> [round(p, 3) for p in get_head("sigmoid")(jnp.array([0.0, 1.0])).tolist()]
    [0.5, 0.731]
    """
    if name not in HEADS:
        raise ValueError(f"head: got {name!r}; allowed: {', '.join(HEADS)}")
    return HEADS[name]
