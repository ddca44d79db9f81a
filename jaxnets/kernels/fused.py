"""One convolution block, y = pool(g(normalize(x ⋆ W) + b)), and convolution fused with max pooling.

``conv_bias_act_pool`` is the one place where the order of a block's operations may
change. On the "xla" path it runs them literally in that order. On the "patches" path,
when the pooling is a max, there is no normalization and g commutes with the maximum
(``max_commutes``: g non-decreasing and piecewise linear, such as identity, ReLU, leaky
ReLU), it computes the same thing as g(max_pool(x ⋆ W) + b):

    max_w(z + b) = max_w(z) + b        (b one number per channel)
    max_w(g(z))  = g(max_w(z))         (g non-decreasing)

exactly in floating point, and with the same gradients (the first maximum of a window
of z + b or of g(z + b) is the first maximum of z, where g' is not 0). The bias and
the activation then touch pool_size² times fewer values, and the convolution and the
pooling run fused (``convolve_max_pool``): each chunk of examples is pooled while its
convolution output is still in cache, so the full-resolution map is never written. A 3×3
convolution at stride 1 with 2×2 pooling and enough input channels runs by Winograd's
algorithm instead of patch products (``jaxnets.kernels.winograd``).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.kernels import native, winograd
from jaxnets.kernels.conv import (backward_by_chunks, check_conv_shapes, convolve, examples_per_chunk,
                                  extract_patches, merge_chunks, to_chunks)
from jaxnets.kernels.pooling import avg_pool, first_max_chosen, first_max_index, max_pool, window_axes
from jaxnets.kernels.select import check_impl, resolve
from jaxnets.kernels.windows import (Padding, as_tuple, conv_output_size, explicit_padding, normalize_padding,
                                     shifted_views)

Array = jax.Array

#: Pooling of a block: maximum, mean, or none.
BLOCK_POOLS = ("max", "avg", None)


def conv_bias_act_pool(x: Array, kernel: Array, bias: Array | None = None, *,
                       strides: int | Sequence[int] = 1, padding: Padding = "SAME",
                       normalize: Callable[[Array], Array] | None = None,
                       activation: Callable[[Array], Array] | None = None, max_commutes: bool = False,
                       pool: str | None = None, pool_size: int | Sequence[int] = 2,
                       impl: str = "auto") -> Array:
    """One block: y = pool(g(normalize(x ⋆ W) + b)), pooling over tiling windows (VALID).

    Args:
      x: (N, H, W, C_in) or (N, L, C_in).
      kernel: (k_h, k_w, C_in, C_out) or (k, C_in, C_out).
      bias: (C_out,) or None.
      strides, padding: of the convolution, as in ``convolve``.
      normalize: applied to x ⋆ W first (a batch-norm layer), or None.
      activation: g, elementwise; None is the identity.
      max_commutes: g is non-decreasing and piecewise linear, so that max pooling
        may run before the bias and g (the module docstring); only a speed-up.
      pool: "max", "avg" or None.
      pool_size: pooling window = stride (a remainder is dropped).
      impl: "auto", "xla" or "patches" (``jaxnets.kernels.select.resolve``).

    Returns:
      (N, H', W', C_out) (or the 1-D analogue).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> y = conv_bias_act_pool(x, jnp.ones((1, 1, 1, 1)), jnp.array([-6.0]), activation=jax.nn.relu,
    ...                        max_commutes=True, pool="max", impl="patches")
    >>> y[0, :, :, 0].tolist()
    [[0.0, 1.0], [7.0, 9.0]]
    """
    if pool not in BLOCK_POOLS:
        raise ValueError(f"pool: got {pool!r}; allowed: max, avg, None")
    if not isinstance(max_commutes, bool):
        raise ValueError(f"max_commutes: got {max_commutes!r}; allowed: True, False")
    g = activation if activation is not None else (lambda z: z)
    path = resolve(impl)
    if path == "patches" and pool == "max" and normalize is None and max_commutes:
        z = convolve_max_pool(x, kernel, pool_size, strides, padding, path)
        return g(z if bias is None else z + bias)
    z = convolve(x, kernel, strides, padding, path)
    if normalize is not None:
        z = normalize(z)
    if bias is not None:
        z = z + bias
    z = g(z)
    if pool == "max":
        return max_pool(z, pool_size, impl=path)
    if pool == "avg":
        return avg_pool(z, pool_size, impl=path)
    return z


def convolve_max_pool(x: Array, kernel: Array, window: int | Sequence[int],
                      strides: int | Sequence[int] = 1, padding: Padding = "SAME",
                      impl: str = "auto") -> Array:
    """max_pool(convolve(x, kernel), window) (tiling windows), fused on the "patches" path.

    Fused, each chunk of examples is convolved and pooled while its convolution
    output is still in cache; only the pooled map and the index of each window's
    first maximum (one byte per pooled value) leave the loop, and the backward pass
    puts ∂y back at those indices chunk by chunk. Values and gradients equal the
    two calls in sequence (the first-maximum rule of ``max_pool``). Where
    ``winograd.applies`` (3×3, stride 1, 2×2 windows, enough input channels), the
    convolution runs by Winograd's F(2×2, 3×3) instead of patch products, also fused.
    On the "xla" path, for an empty batch, or when the map is smaller than one
    window, it runs the two calls.

    Args:
      x: (N, H, W, C_in) or (N, L, C_in).
      kernel: (k_h, k_w, C_in, C_out) or (k, C_in, C_out).
      window: pooling window (stride = window, remainder dropped).
      strides, padding, impl: of the convolution, as in ``convolve``.

    Returns:
      (N, ⌊H_out/p_h⌋, ⌊W_out/p_w⌋, C_out) (or the 1-D analogue).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> convolve_max_pool(x, jnp.ones((1, 1, 1, 1)), 2, impl="patches")[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    check_conv_shapes(x, kernel)
    check_impl(impl)
    ndim = x.ndim - 2
    strides = as_tuple(strides, ndim, "strides")
    window = as_tuple(window, ndim, "window")
    padding = normalize_padding(padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides)]
    if resolve(impl) == "xla" or x.shape[0] == 0 or any(o < k for o, k in zip(out, window)):
        return max_pool(convolve(x, kernel, strides, padding, impl), window, impl=impl)
    if winograd.applies(kernel.shape, strides, window):
        return winograd.convolve_max_pool(x, kernel, padding)
    chunk = examples_per_chunk(x, kernel, strides, padding, with_output=True)

    def in_jax(x, kernel):
        return _patches_conv_pool(x, kernel, strides, padding, window, chunk)

    if native.first_layer_applies(x.shape, kernel.shape, x.dtype, strides, window) and kernel.dtype == x.dtype:
        pads = explicit_padding(x.shape[1:-1], kernel.shape[:-2], strides, padding)
        return native.convolve_max_pool(x, kernel, pads, in_jax)
    return in_jax(x, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _patches_conv_pool(x, kernel, strides, padding, window, chunk):
    return _patches_conv_pool_forward(x, kernel, strides, padding, window, chunk)[0]


def _patches_conv_pool_forward(x, kernel, strides, padding, window, chunk):
    flat = kernel.reshape(-1, kernel.shape[-1])

    def conv_pool(xc):
        z = jnp.dot(extract_patches(xc, kernel.shape[:-2], strides, padding), flat)
        out = [n // k for n, k in zip(z.shape[1:-1], window)]
        views = shifted_views(z, window, window, out)
        return functools.reduce(jnp.maximum, views), first_max_index(views)

    if chunk >= x.shape[0]:
        y, index = conv_pool(x)
    else:
        y, index = lax.map(conv_pool, to_chunks(x, chunk))
        y, index = merge_chunks(y, x.shape[0]), merge_chunks(index, x.shape[0])
    return y, (x, kernel, index)


def _patches_conv_pool_backward(strides, padding, window, chunk, residuals, dy):
    x, kernel, index = residuals
    conv_shape = [conv_output_size(n, k, s, padding)
                  for n, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides)]
    axes = window_axes(len(window))

    def unpool(dyc, ic):
        # ∂z: ∂y at each window's first maximum, 0 elsewhere (and on a dropped remainder).
        blocks = jnp.where(first_max_chosen(ic, window), jnp.expand_dims(dyc, axes),
                           jnp.zeros((), dyc.dtype))
        dz = blocks.reshape(dyc.shape[0], *(o * k for o, k in zip(dyc.shape[1:-1], window)), dyc.shape[-1])
        missing = [c - d for c, d in zip(conv_shape, dz.shape[1:-1])]
        return jnp.pad(dz, ((0, 0), *((0, m) for m in missing), (0, 0))) if any(missing) else dz

    return backward_by_chunks(strides, padding, chunk, x, kernel, (dy, index), unpool)


_patches_conv_pool.defvjp(_patches_conv_pool_forward, _patches_conv_pool_backward)


__all__ = ["BLOCK_POOLS", "conv_bias_act_pool", "convolve_max_pool"]
