"""Pooling on both paths: maximum and mean over sliding windows, and the global average.

The two paths (``jaxnets.kernels.select``) give identical values and gradients:
``"xla"`` runs ``lax.reduce_window`` (what Flax's pooling runs); ``"patches"`` combines
the window's k_h·k_w strided views of the input elementwise, with a custom JVP for the
maximum. Both send a window's gradient to its FIRST maximum in row-major order when
entries tie, as reduce_window, Flax and PyTorch do (docs/architectures/cnn.md); the
helpers ``first_max_index`` and ``first_max_chosen`` carry that rule, also for the
fused convolution + pooling of ``jaxnets.kernels.fused``.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets.kernels.select import resolve
from jaxnets.kernels.windows import (Padding, as_tuple, conv_output_size, explicit_padding,
                                     normalize_padding, shifted_views)

Array = jax.Array


def _pool_args(x: Array, window: int | Sequence[int], strides: int | Sequence[int] | None,
               padding: Padding) -> tuple[tuple[int, ...], tuple[int, ...], Padding]:
    if x.ndim not in (3, 4):
        raise ValueError(f"x: got shape {x.shape}; allowed: (N, L, C) or (N, H, W, C)")
    ndim = x.ndim - 2
    window = as_tuple(window, ndim, "window")
    strides = window if strides is None else as_tuple(strides, ndim, "strides")
    padding = normalize_padding(padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], window, strides)]
    if any(o < 1 for o in out):
        raise ValueError(f"x: got spatial shape {x.shape[1:-1]}; allowed: at least the pooling "
                         f"window {window} (padding {padding!r})")
    return window, strides, padding


def _windows_tile(x: Array, window: tuple[int, ...], strides: tuple[int, ...],
                  padding: Padding) -> bool:
    """Non-overlapping windows (stride == window) that need no padding.

    VALID drops a remainder (cropped first); SAME needs no padding only when the
    size divides by the window; an integer padding must be 0.
    """
    if window != strides:
        return False
    if padding == "SAME":
        return all(n % k == 0 for n, k in zip(x.shape[1:-1], window))
    return padding == "VALID" or padding == 0


def _blocks(x: Array, window: tuple[int, ...]) -> Array:
    """(N, o_1·k_1, o_2·k_2, C) (after cropping) -> (N, o_1, k_1, o_2, k_2, C)."""
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    x = x[(slice(None), *(slice(0, o * k) for o, k in zip(out, window)), slice(None))]
    shape = [x.shape[0]]
    for o, k in zip(out, window):
        shape += [o, k]
    return x.reshape(*shape, x.shape[-1])


def window_axes(ndim: int) -> tuple[int, ...]:
    """The window axes of the (N, o_1, k_1, o_2, k_2, C) blocks view (also used by the fused convolution).

    >>> window_axes(2)
    (2, 4)
    """
    return tuple(2 + 2 * d for d in range(ndim))


def window_rank(window: tuple[int, ...], dtype) -> Array:
    """Each window position's row-major rank, shaped to broadcast against (N, o_1, k_1, o_2, k_2, C)."""
    shape = [1] * (2 * len(window) + 2)
    for axis, k in zip(window_axes(len(window)), window):
        shape[axis] = k
    return jnp.arange(math.prod(window), dtype=dtype).reshape(window).reshape(shape)


def _pool_views(x: Array, window: tuple[int, ...], strides: tuple[int, ...], padding: Padding,
                fill: float) -> list[Array]:
    """``shifted_views`` of ``x`` padded with ``fill`` (−∞ for max, 0 for a sum)."""
    pads = explicit_padding(x.shape[1:-1], window, strides, padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], window, strides)]
    if any(low or high for low, high in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=np.array(fill, x.dtype))
    return shifted_views(x, window, strides, out)


@jax.custom_jvp
def _max_of_views(*views: Array) -> Array:
    return functools.reduce(jnp.maximum, views)


@_max_of_views.defjvp
def _max_of_views_jvp(primals: tuple[Array, ...], tangents: tuple[Array, ...]) -> tuple[Array, Array]:
    # The tangent of the FIRST maximum in window order (a strict ">" keeps the
    # earlier of two equal values): the same first-maximum rule as the other paths.
    index = first_max_index(primals).astype(jnp.int32)  # select_n takes int32 (or bool) cases
    return _max_of_views(*primals), lax.select_n(index, *tangents)


def first_max_index(views: Sequence[Array]) -> Array:
    """Per output position, the index (window order) of the first view holding the maximum."""
    dtype = jnp.int8 if len(views) <= 127 else jnp.int32
    best, index = views[0], jnp.zeros(views[0].shape, dtype)
    for i, view in enumerate(views[1:], 1):
        later_is_larger = view > best  # strict: the earlier of two equal values stays
        best = jnp.where(later_is_larger, view, best)
        index = jnp.where(later_is_larger, jnp.asarray(i, dtype), index)
    return index


def first_max_chosen(index: Array, window: tuple[int, ...]) -> Array:
    """True at each window's first maximum, as (N, o_1, k_1, o_2, k_2, C) blocks, from its index."""
    return window_rank(window, index.dtype) == jnp.expand_dims(index, window_axes(len(window)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool_tiled(x: Array, window: tuple[int, ...]) -> Array:
    """Max pooling over windows that tile ``x`` (stride == window, no padding; a remainder is dropped)."""
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    return functools.reduce(jnp.maximum, shifted_views(x, window, window, out))


@_max_pool_tiled.defjvp
def _max_pool_tiled_jvp(window: tuple[int, ...], primals: tuple[Array], tangents: tuple[Array]
                        ) -> tuple[Array, Array]:
    # The same first-maximum rule as _max_of_views, written on the (N, o_1, k_1, o_2, k_2, C)
    # blocks of the tangent. Its transpose (the gradient) is then one elementwise pass that
    # writes ∂x in its own memory order, where(rank == index, ∂y, 0), instead of scattering
    # k_1·k_2 strided views back with pads and adds; only the small index is kept for it.
    (x,), (tangent,) = primals, tangents
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    views = shifted_views(x, window, window, out)
    chosen = first_max_chosen(first_max_index(views), window)
    blocks = _blocks(tangent, window)
    return (functools.reduce(jnp.maximum, views),
            jnp.sum(jnp.where(chosen, blocks, jnp.zeros_like(blocks)), axis=window_axes(len(window))))


def max_pool(x: Array, window: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
             padding: Padding = "VALID", impl: str = "auto") -> Array:
    """Maximum over each window: y[n, i, j, c] = max_{a<k_h, b<k_w} x[n, s·i + a, s·j + b, c].

    Padded positions count as −∞ (never the maximum). The output size per axis is
    that of ``conv_output_size``. The gradient of each window goes entirely to its
    first maximum (row-major order) when several entries tie, on both paths.

    Args:
      x: (N, H, W, C) or (N, L, C).
      window: window size, an int or one per spatial axis.
      strides: step between windows; ``None`` means ``window`` (non-overlapping).
      padding: "VALID" (drop a remainder), "SAME" or an integer p.
      impl: "auto", "xla" (``lax.reduce_window``) or "patches" (the elementwise maximum
        of the window's strided views); see ``jaxnets.kernels.select.resolve``.

    Returns:
      (N, H_out, W_out, C) (or (N, L_out, C)).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, 2)[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    window, strides, padding = _pool_args(x, window, strides, padding)
    if resolve(impl) == "patches":
        if _windows_tile(x, window, strides, padding):
            return _max_pool_tiled(x, window)
        return _max_of_views(*_pool_views(x, window, strides, padding, -np.inf))
    pads = explicit_padding(x.shape[1:-1], window, strides, padding)
    # A concrete (NumPy) identity element makes this lax's differentiable
    # reduce_window_max; a traced one would give an opaque, non-differentiable reduction.
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1, *window, 1),
                             (1, *strides, 1), ((0, 0), *pads, (0, 0)))


def avg_pool(x: Array, window: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
             padding: Padding = "VALID", impl: str = "auto") -> Array:
    """Mean over each window: y[n, i, j, c] = (1/|w|) Σ_{(a,b) ∈ w} x[n, s·i + a, s·j + b, c].

    |w| counts only the real (unpadded) entries of the window, so with SAME padding
    the border windows are means of what they cover (zeros are not averaged in).

    Args:
      x: (N, H, W, C) or (N, L, C).
      window: window size, an int or one per spatial axis.
      strides: step between windows; ``None`` means ``window``.
      padding: "VALID", "SAME" or an integer p.
      impl: "auto", "xla" or "patches" (see ``max_pool``).

    Returns:
      (N, H_out, W_out, C) (or (N, L_out, C)).

    >>> avg_pool(jnp.arange(16.0).reshape(1, 4, 4, 1), 2)[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    window, strides, padding = _pool_args(x, window, strides, padding)
    if resolve(impl) == "patches":
        total = functools.reduce(jnp.add, _pool_views(x, window, strides, padding, 0.0))
        if all(low == high == 0 for low, high in explicit_padding(x.shape[1:-1], window, strides, padding)):
            return total / math.prod(window)
        ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
        return total / functools.reduce(jnp.add, _pool_views(ones, window, strides, padding, 0.0))
    pads = ((0, 0), *explicit_padding(x.shape[1:-1], window, strides, padding), (0, 0))
    dims, steps = (1, *window, 1), (1, *strides, 1)
    total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, steps, pads)
    if all(low == high == 0 for low, high in pads):
        return total / math.prod(window)
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    count = lax.reduce_window(ones, np.array(0, x.dtype), lax.add, dims, steps, pads)
    return total / count


def global_avg_pool(x: Array) -> Array:
    """Mean over all spatial positions: y[n, c] = (1/(H·W)) Σ_{i,j} x[n, i, j, c].

    Args:
      x: (N, H, W, C) or (N, L, C).

    Returns:
      (N, C).

    >>> global_avg_pool(jnp.arange(8.0).reshape(1, 2, 2, 2)).tolist()
    [[3.0, 4.0]]
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"x: got shape {x.shape}; allowed: (N, L, C) or (N, H, W, C)")
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


__all__ = ["avg_pool", "first_max_chosen", "first_max_index", "global_avg_pool", "max_pool", "window_axes"]
