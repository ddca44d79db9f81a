"""Dropout and batch normalization, built from Flax's layers with checked arguments."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax  # noqa: F401  (the doctests use it)
import jax.numpy as jnp


def check_rate(rate: float, field: str = "dropout_rate") -> float:
    """Return ``rate`` if 0 <= rate < 1, else raise a one-line ValueError.

    Args:
      rate: the probability of dropping a unit.
      field: the name used in the error message.

    Returns:
      ``rate`` as a float.

    >>> check_rate(0.5)
    0.5
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"{field}: got {rate!r}; allowed: 0 <= rate < 1")
    return float(rate)


def make_dropout(rate: float, *, train: bool, name: str | None = None) -> nn.Dropout:
    """Flax's inverted dropout: in training x'_i = 0 with probability p, else x_i/(1 − p).

    E[x'_i] = (1 − p)·x_i/(1 − p) = x_i, so the expected activation is the same in
    training and evaluation, and evaluation is the identity. The mask is drawn from
    the "dropout" PRNG stream (``rngs={"dropout": key}`` in ``apply``).

    Args:
      rate: p, 0 <= p < 1.
      train: drop units (True) or pass x through unchanged (False).
      name: the layer's name.

    Returns:
      An unbound ``nn.Dropout``.

    >>> layer = make_dropout(0.5, train=False)
    >>> layer.apply({}, jnp.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    """
    return nn.Dropout(rate=check_rate(rate, "rate"), deterministic=not train, name=name)


#: Defaults of ``make_batch_norm``: PyTorch's (its momentum 0.1 is Flax's 0.9).
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def make_batch_norm(*, train: bool, momentum: float = BATCH_NORM_MOMENTUM,
                    epsilon: float = BATCH_NORM_EPSILON, dtype: Any = jnp.float32,
                    param_dtype: Any = jnp.float32, axis_name: str | None = None,
                    name: str | None = None) -> nn.BatchNorm:
    """Flax's batch normalization over every axis but the last (features/channels).

    Training: μ_B, σ²_B are the batch mean and the biased variance (1/m)Σ(x − μ_B)²
    per feature; y = γ·(x − μ_B)/√(σ²_B + ε) + β; the running averages in the
    "batch_stats" collection become μ ← momentum·μ + (1 − momentum)·μ_B and
    σ² ← momentum·σ² + (1 − momentum)·σ²_B. Evaluation uses the running μ, σ².
    Parameters: γ ("scale") and β ("bias"), 2 per feature.

    With ``axis_name`` (synchronized batch norm), training averages the per-device
    mean and mean of squares over that mapped axis (``jax.lax.pmean``, as
    ``flax.linen.BatchNorm(axis_name=...)``), so under ``jax.pmap`` every device
    normalizes with, and stores, the statistics of the whole global batch: the result
    of one device holding the whole batch (equal shards per device).

    Args:
      train: normalize with the batch statistics and update the running ones.
      momentum: weight of the old running average (Flax convention; 0.9 here is
        PyTorch's momentum=0.1).
      epsilon: ε added to the variance.
      dtype, param_dtype: computation and parameter dtypes.
      axis_name: the mapped axis (e.g. ``pmap``'s ``axis_name``) to average the batch
        statistics over; None uses each device's own batch.
      name: the layer's name.

    Returns:
      An unbound ``nn.BatchNorm``.

    >>> layer = make_batch_norm(train=True)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((4, 3)))
    >>> sorted(variables), jax.tree.map(jnp.shape, variables["batch_stats"])
    (['batch_stats', 'params'], {'mean': (3,), 'var': (3,)})
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
            or not 0 <= momentum < 1:
        raise ValueError(f"momentum: got {momentum!r}; allowed: 0 <= momentum < 1")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"epsilon: got {epsilon!r}; allowed: a number > 0")
    if axis_name is not None and (not isinstance(axis_name, str) or not axis_name):
        raise ValueError(f"axis_name: got {axis_name!r}; allowed: None or a non-empty string")
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        dtype=dtype, param_dtype=param_dtype, axis_name=axis_name, name=name)


__all__ = ["BATCH_NORM_EPSILON", "BATCH_NORM_MOMENTUM", "check_rate", "make_batch_norm", "make_dropout"]
