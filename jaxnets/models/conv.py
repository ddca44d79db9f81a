"""The convolution layer ``Conv``: y = x ⋆ W + b, optionally followed by an activation and pooling.

Layout is channels-last: a batch of 2-D images is (N, H, W, C), a batch of 1-D
signals is (N, L, C). Output channel o at position (i, j), stride s, input
zero-padded first (``jaxnets.kernels.windows``):

    y[n, i, j, o] = b[o] + Σ_{a<k_h, c<k_w, q<C_in} x[n, s·i + a, s·j + c, q] · W[a, c, q, o]

The arithmetic lives in ``jaxnets.kernels``: ``impl`` picks XLA's convolution or the
hand-written patch-matrix products ("auto": the latter on CPU only). Both use the
same parameters, so a checkpoint written with one runs with the other.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets import kernels
from jaxnets.kernels.windows import Padding, as_tuple, is_int, normalize_padding
from jaxnets.models.activations import get_activation
from jaxnets.models.initializers import INITIALIZERS, get_initializer

Array = jax.Array

#: Activations g with g(max z) = max g(z) exactly in floating point (piecewise linear,
#: non-decreasing): ``jaxnets.kernels.conv_bias_act_pool`` may pool before them.
POOL_COMMUTING_ACTIVATIONS = ("identity", "relu", "leaky_relu")


class Conv(nn.Module):
    """A convolution layer: y = x ⋆ W + b (see the module docstring for the formula).

    Parameters: ``kernel`` (k_h, k_w, C_in, C_out) and, with ``use_bias``, ``bias``
    (C_out,): k_h·k_w·C_in·C_out + C_out scalars (the same names and shapes as
    ``flax.linen.Conv``).

    Attributes:
      features: output channels C_out.
      kernel_size: an int (the same on every spatial axis) or one per axis.
      strides: an int or one per axis.
      padding: "SAME", "VALID" or an integer p >= 0 (p zeros on both sides).
      use_bias: add a learned bias per output channel.
      impl: "auto", "xla" or "patches" (``jaxnets.kernels.resolve``; same values,
        gradients and parameters).
      kernel_init, init_scale: kernel initializer by name (fan-in = k_h·k_w·C_in).
      dtype: computation dtype; param_dtype: parameter dtype.

    >>> layer = Conv(features=4, kernel_size=3)
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables["params"])
    {'bias': (4,), 'kernel': (3, 3, 1, 4)}
    >>> layer.apply(variables, x).shape, layer.apply(variables, x, activation="relu", pool="max").shape
    ((2, 8, 8, 4), (2, 4, 4, 4))
    """

    features: int
    kernel_size: int | Sequence[int] = 3
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    impl: str = "auto"
    kernel_init: str = "lecun"
    init_scale: float | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if not is_int(self.features) or self.features < 1:
            raise ValueError(f"features: got {self.features!r}; allowed: an int >= 1")
        if isinstance(self.kernel_size, list):
            self.kernel_size = tuple(self.kernel_size)
        if isinstance(self.strides, list):
            self.strides = tuple(self.strides)
        for field in ("kernel_size", "strides"):
            value = getattr(self, field)
            if not (is_int(value) and value >= 1) and not (
                    isinstance(value, tuple) and len(value) in (1, 2)
                    and all(is_int(v) and v >= 1 for v in value)):
                raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1 or a tuple of "
                                 "1 or 2 such ints")
        self.padding = normalize_padding(self.padding)
        if not isinstance(self.use_bias, bool):
            raise ValueError(f"use_bias: got {self.use_bias!r}; allowed: True, False")
        kernels.check_impl(self.impl)
        if self.kernel_init not in INITIALIZERS:
            raise ValueError(f"kernel_init: got {self.kernel_init!r}; allowed: "
                             f"{', '.join(INITIALIZERS)}")
        get_initializer(self.kernel_init, self.init_scale)  # validates init_scale
        super().__post_init__()

    def param_count(self, in_channels: int, spatial_dims: int = 2) -> int:
        """k_h·k_w·C_in·C_out + C_out (the bias term only with ``use_bias``).

        Args:
          in_channels: C_in.
          spatial_dims: 1 for signals, 2 for images (used when ``kernel_size`` is an int).

        Returns:
          The number of scalars in the layer's parameters.

        >>> Conv(features=32, kernel_size=3).param_count(1)
        320
        """
        window = math.prod(as_tuple(self.kernel_size, spatial_dims, "kernel_size"))
        return window * in_channels * self.features + (self.features if self.use_bias else 0)

    @nn.compact
    def __call__(self, x: Array, *, normalize: Callable[[Array], Array] | None = None,
                 activation: str = "identity", pool: str | None = None, pool_size: int = 2) -> Array:
        """y = pool(g(normalize(x ⋆ W) + b)); with the defaults, y = x ⋆ W + b.

        Args:
          x: (N, *spatial, C_in).
          normalize: applied to x ⋆ W before the bias (a batch-norm layer), or None.
          activation: g, a key of ``ACTIVATIONS``.
          pool: "max", "avg" or None, over windows of ``pool_size`` (stride = window).
          pool_size: the pooling window.

        Returns:
          (N, *spatial_out, features).
        """
        if x.ndim not in (3, 4):
            raise ValueError(f"x: got shape {x.shape}; allowed: (N, L, C) or (N, H, W, C)")
        ndim = x.ndim - 2
        kernel_size = as_tuple(self.kernel_size, ndim, "kernel_size")
        kernel = self.param("kernel", get_initializer(self.kernel_init, self.init_scale),
                            (*kernel_size, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                          self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return kernels.conv_bias_act_pool(
            x, kernel, bias, strides=as_tuple(self.strides, ndim, "strides"), padding=self.padding,
            normalize=normalize, activation=get_activation(activation),
            max_commutes=activation in POOL_COMMUTING_ACTIVATIONS, pool=pool, pool_size=pool_size,
            impl=self.impl)


__all__ = ["Conv", "POOL_COMMUTING_ACTIVATIONS"]
