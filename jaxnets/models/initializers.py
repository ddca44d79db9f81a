"""Weight initializers by name, built on ``jax.nn.initializers``.

For a dense kernel of shape (fan_in, fan_out), with ``s`` the optional ``scale``:

======  ==========================================  ===============================  =========
name    distribution                                variance of each weight          default s
======  ==========================================  ===============================  =========
normal  N(0, σ²) with σ = s                         s²                               0.01
lecun   normal truncated at ±2σ (LeCun 1998)        s / fan_in                       1
glorot  uniform on [−a, a], a = √(6·s/(in+out))     2·s / (fan_in + fan_out)         1
he      normal truncated at ±2σ (He et al. 2015)    2·s / fan_in                     1
======  ==========================================  ===============================  =========

So ``scale`` is the standard deviation for ``normal`` and a multiplier on the
variance for the three fan-based rules. The truncated normals are rescaled by JAX
so that the variance is exactly the one in the table. LeCun suits tanh/identity/
SELU-like layers, Glorot (Xavier) sigmoid/tanh, He (Kaiming) ReLU: each keeps the
variance of the pre-activations roughly constant from layer to layer.
"""
from __future__ import annotations

from typing import Callable

import jax

Initializer = Callable[..., jax.Array]

#: Default standard deviation of the "normal" initializer.
DEFAULT_NORMAL_STDDEV = 0.01


def _normal(scale: float | None) -> Initializer:
    return jax.nn.initializers.normal(stddev=DEFAULT_NORMAL_STDDEV if scale is None else scale)


def _lecun(scale: float | None) -> Initializer:
    return jax.nn.initializers.variance_scaling(1.0 if scale is None else scale, "fan_in",
                                                "truncated_normal")


def _glorot(scale: float | None) -> Initializer:
    return jax.nn.initializers.variance_scaling(1.0 if scale is None else scale, "fan_avg",
                                                "uniform")


def _he(scale: float | None) -> Initializer:
    return jax.nn.initializers.variance_scaling(2.0 * (1.0 if scale is None else scale),
                                                "fan_in", "truncated_normal")


#: Builders ``scale -> initializer`` by name (see the module docstring for variances).
INITIALIZERS: dict[str, Callable[[float | None], Initializer]] = {
    "normal": _normal,
    "lecun": _lecun,
    "glorot": _glorot,
    "he": _he,
}


def get_initializer(name: str, scale: float | None = None) -> Initializer:
    """The kernel initializer called ``name``.

    Variances for a (fan_in, fan_out) kernel: normal s² (s defaults to 0.01),
    lecun s/fan_in, glorot 2s/(fan_in+fan_out), he 2s/fan_in (s defaults to 1).

    Args:
      name: a key of ``INITIALIZERS``.
      scale: standard deviation for "normal"; variance multiplier for the others;
        ``None`` for the default.

    Returns:
      A ``jax.nn.initializers`` function ``(key, shape, dtype) -> array``.

    Raises:
      ValueError: unknown name, or a scale that is not a positive number.

    >>> w = get_initializer("normal", 0.5)(jax.random.key(0), (1000, 100))
    >>> round(float(w.std()), 1)
    0.5
    """
    if name not in INITIALIZERS:
        raise ValueError(f"kernel_init: got {name!r}; allowed: {', '.join(INITIALIZERS)}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not scale > 0):
        raise ValueError(f"init_scale: got {scale!r}; allowed: None or a number > 0")
    return INITIALIZERS[name](None if scale is None else float(scale))
