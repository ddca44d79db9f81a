"""Convolution on both paths: XLA's, and the patch-matrix products (im2col) with their hand-written VJP.

Layout is channels-last: a batch of 2-D images is (N, H, W, C), a batch of 1-D
signals is (N, L, C). A kernel is (k_h, k_w, C_in, C_out) (or (k, C_in, C_out)).

Convolution (a cross-correlation, as in the slides and in every deep-learning
library), for output position (i, j) and output channel o, with stride s and the
input zero-padded first:

    y[n, i, j, o] = Σ_{a, c, q} x[n, s·i + a, s·j + c, q] · W[a, c, q, o]
                    (a < k_h, c < k_w, q < C_in)

Output sizes and padding follow ``jaxnets.kernels.windows`` (SAME, VALID or an integer p).

The two paths (``jaxnets.kernels.select``) give the same values and gradients:

- ``"xla"``: ``lax.conv_general_dilated``, what ``flax.linen.Conv`` runs.
- ``"patches"`` (im2col): copy the k_h·k_w shifted views of the padded input side by
  side, giving a (N·H_out·W_out, k_h·k_w·C_in) matrix, and multiply it by the kernel
  reshaped to (k_h·k_w·C_in, C_out): a matrix product (GEMM). The batch is processed
  in chunks whose patch matrix is about ``PATCH_CHUNK_BYTES``, so each chunk's matrix
  is still in cache when the product reads it, and the backward pass is written by
  hand: per chunk it rebuilds the patch matrix (nothing that large is kept between
  the passes) and gets the kernel gradient Pᵀ·∂y and the input gradient (∂y·Wᵀ put
  back on the shifted views) from two more GEMMs.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.kernels.select import resolve
from jaxnets.kernels.windows import (Padding, as_tuple, conv_output_size, explicit_padding,
                                     normalize_padding, shifted_views)

Array = jax.Array

#: The "patches" path builds the patch matrix of the whole batch at once when it is at
#: most ``PATCH_WHOLE_BATCH_BYTES``, else in chunks of about ``PATCH_CHUNK_BYTES`` (a
#: loop over the batch). On the development CPU chunks paid off for large patch matrices
#: (in cache while the products read them) and a loop cost time for small ones
#: (docs/architectures/cnn.md).
PATCH_CHUNK_BYTES = 4 * 2**20
PATCH_WHOLE_BATCH_BYTES = 16 * 2**20


def check_conv_shapes(x: Array, kernel: Array) -> None:
    """Raise a one-line ValueError unless x is (N, *spatial, C) and kernel (*window, C, C_out), 1 or 2 spatial axes."""
    if x.ndim not in (3, 4) or kernel.ndim != x.ndim or kernel.shape[-2] != x.shape[-1]:
        raise ValueError(f"x, kernel: got shapes {x.shape}, {kernel.shape}; allowed: (N, *spatial, "
                         "C) with 1 or 2 spatial axes and a kernel (*window, C, C_out)")


def _dimension_numbers(ndim: int) -> tuple[str, str, str]:
    return ("NHWC", "HWIO", "NHWC") if ndim == 4 else ("NWC", "WIO", "NWC")


def extract_patches(x: Array, kernel_size: Sequence[int], strides: Sequence[int],
                    padding: Padding) -> Array:
    """The im2col matrix of ``x``: each output position's receptive field, flattened.

    Zero-pads ``x``, then takes the k_h·k_w strided views x_p[:, a::s, c::s, :] (one
    per kernel offset (a, c), in row-major order) and concatenates them on the
    channel axis, so entry [n, i, j, (a·k_w + c)·C + q] is x_p[n, s·i + a, s·j + c, q],
    the order of ``kernel.reshape(-1, C_out)``.

    Args:
      x: (N, H, W, C) or (N, L, C).
      kernel_size, strides: per spatial axis.
      padding: "SAME", "VALID" or an integer p.

    Returns:
      (N, H_out, W_out, k_h·k_w·C) (or (N, L_out, k·C)).

    >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    >>> extract_patches(x, (2, 2), (1, 1), "VALID")[0, 0, 0].tolist()
    [0.0, 1.0, 3.0, 4.0]
    """
    spatial = x.shape[1:-1]
    pads = explicit_padding(spatial, kernel_size, strides, padding)
    if any(low or high for low, high in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    padded = x.shape[1:-1]
    out = [(n - k) // s + 1 for n, k, s in zip(padded, kernel_size, strides)]
    if any(o < 1 for o in out):
        raise ValueError(f"input: got spatial shape {tuple(spatial)} with padding {padding!r}; "
                         f"allowed: at least the kernel size {tuple(kernel_size)}")
    views = shifted_views(x, kernel_size, strides, out)
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def convolve(x: Array, kernel: Array, strides: int | Sequence[int] = 1,
             padding: Padding = "SAME", impl: str = "auto") -> Array:
    """Cross-correlate a batch with a kernel (no bias): the formula of the module docstring.

    Args:
      x: (N, H, W, C_in) or (N, L, C_in).
      kernel: (k_h, k_w, C_in, C_out) or (k, C_in, C_out).
      strides: an int or one per spatial axis.
      padding: "SAME", "VALID" or an integer p.
      impl: "auto", "xla" or "patches" (``jaxnets.kernels.select.resolve``).

    Returns:
      (N, H_out, W_out, C_out) (or (N, L_out, C_out)).

    >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)          # the slides' example
    >>> w = jnp.arange(4.0).reshape(2, 2, 1, 1)
    >>> convolve(x, w, padding="VALID", impl="patches")[0, :, :, 0].tolist()
    [[19.0, 25.0], [37.0, 43.0]]
    """
    check_conv_shapes(x, kernel)
    strides = as_tuple(strides, x.ndim - 2, "strides")
    padding = normalize_padding(padding)
    kernel_size = kernel.shape[:-2]
    if resolve(impl) == "xla":
        pads = explicit_padding(x.shape[1:-1], kernel_size, strides, padding)
        return lax.conv_general_dilated(x, kernel, strides, pads,
                                        dimension_numbers=_dimension_numbers(x.ndim))
    if x.shape[0] == 0:
        return jnp.dot(extract_patches(x, kernel_size, strides, padding), kernel.reshape(-1, kernel.shape[-1]))
    return _patches_conv(x, kernel, strides, padding, examples_per_chunk(x, kernel, strides, padding))


def examples_per_chunk(x: Array, kernel: Array, strides: tuple[int, ...], padding: Padding,
                       with_output: bool = False) -> int:
    """Examples per chunk: all N when the whole patch matrix is small, else ~``PATCH_CHUNK_BYTES``.

    Args:
      x: (N, *spatial, C_in); kernel: (*window, C_in, C_out).
      strides, padding: of the convolution.
      with_output: count the convolution output too (the fused path pools it inside the loop).

    Returns:
      The number of examples per chunk, 1 to N.

    >>> examples_per_chunk(jnp.ones((8, 4, 4, 1)), jnp.ones((3, 3, 1, 2)), (1, 1), "SAME")
    8
    """
    positions = math.prod(conv_output_size(size, k, s, padding)
                          for size, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides))
    width = math.prod(kernel.shape[:-1]) + (kernel.shape[-1] if with_output else 0)
    return chunk_examples(x.shape[0], positions * width * x.dtype.itemsize,
                          whole_batch_bytes=PATCH_WHOLE_BATCH_BYTES, chunk_bytes=PATCH_CHUNK_BYTES)


def chunk_examples(n: int, per_example_bytes: int, *, whole_batch_bytes: int, chunk_bytes: int) -> int:
    """Examples per chunk of a loop over a batch of ``n``: all up to ``whole_batch_bytes``, else ~``chunk_bytes``.

    Within a factor 2 of the target size, the largest divisor of n is taken (the
    chunks tile the batch: no padding); otherwise the chunks are evened out
    (ceil(n / number of chunks)) and the last one is padded with zero examples.

    >>> [chunk_examples(n, 100, whole_batch_bytes=500, chunk_bytes=300) for n in (4, 7, 64)]
    [4, 3, 2]
    """
    per_example = max(1, per_example_bytes)
    if n * per_example <= whole_batch_bytes:
        return n
    size = max(1, min(n, chunk_bytes // per_example))
    divisor = max(d for d in range(1, size + 1) if n % d == 0)
    if 2 * divisor >= size:
        return divisor  # chunks that tile the batch exactly: no padding
    chunks = -(-n // size)
    return -(-n // chunks)


def merge_chunks(chunks: Array, n: int) -> Array:
    """The inverse of ``to_chunks``: (G, size, ...) -> (n, ...), padding rows dropped."""
    return chunks.reshape(-1, *chunks.shape[2:])[:n]


def to_chunks(x: Array, size: int) -> Array:
    """(N, ...) -> (ceil(N / size), size, ...), zero rows appended to fill the last chunk."""
    extra = -x.shape[0] % size
    if extra:
        x = jnp.pad(x, ((0, extra),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape(-1, size, *x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _patches_conv(x: Array, kernel: Array, strides: tuple[int, ...], padding: Padding,
                  chunk: int) -> Array:
    """im2col convolution, ``chunk`` examples at a time, with the hand-written backward below."""
    return _patches_conv_forward(x, kernel, strides, padding, chunk)[0]


def _patches_conv_forward(x, kernel, strides, padding, chunk):
    flat = kernel.reshape(-1, kernel.shape[-1])

    def product(xc):
        return jnp.dot(extract_patches(xc, kernel.shape[:-2], strides, padding), flat)

    y = product(x) if chunk >= x.shape[0] else merge_chunks(lax.map(product, to_chunks(x, chunk)), x.shape[0])
    # Residuals are the inputs only: the backward pass rebuilds each chunk's patches.
    return y, (x, kernel)


def _patches_conv_backward(strides, padding, chunk, residuals, dy):
    x, kernel = residuals
    return backward_by_chunks(strides, padding, chunk, x, kernel, (dy,), lambda d: d)


def backward_by_chunks(strides: tuple[int, ...], padding: Padding, chunk: int, x: Array, kernel: Array,
                       per_example: tuple[Array, ...], to_dy: Callable[..., Array]) -> tuple[Array, Array]:
    """Per chunk: ∂W += Pᵀ·∂Y, and ∂X = the shifted views' transpose applied to ∂Y·Wᵀ.

    Args:
      strides, padding, chunk: of the forward pass.
      x, kernel: its inputs.
      per_example: arrays with the batch axis first, cut into the same chunks.
      to_dy: maps a chunk of them to that chunk's ∂Y (the identity, or the
        un-pooling of the fused path).

    Returns:
      (∂x, ∂kernel).
    """
    window, c_out = kernel.shape[:-2], kernel.shape[-1]
    flat = kernel.reshape(-1, c_out)
    # Accumulate the kernel gradient in at least float32 (bfloat16 inputs; float64 kept).
    accumulate = jnp.promote_types(kernel.dtype, jnp.float32)

    def one_chunk(dw, inputs):
        xc, dyc = inputs[0], to_dy(*inputs[1:]).astype(x.dtype)
        patches, patches_transpose = jax.vjp(lambda a: extract_patches(a, window, strides, padding), xc)
        rows, grads = patches.reshape(-1, flat.shape[0]), dyc.reshape(-1, c_out)
        dw = dw + jnp.dot(rows.T, grads, preferred_element_type=accumulate)
        (dxc,) = patches_transpose(jnp.dot(grads, flat.T).reshape(patches.shape))
        return dw, dxc  # for a network's first layer nothing reads dxc and XLA drops it

    zero = jnp.zeros(flat.shape, accumulate)
    if chunk >= x.shape[0]:
        dw, dx = one_chunk(zero, (x, *per_example))
    else:
        dw, dx = lax.scan(one_chunk, zero, tuple(to_chunks(a, chunk) for a in (x, *per_example)))
        dx = merge_chunks(dx, x.shape[0])
    return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


_patches_conv.defvjp(_patches_conv_forward, _patches_conv_backward)


__all__ = ["PATCH_CHUNK_BYTES", "PATCH_WHOLE_BATCH_BYTES", "backward_by_chunks", "check_conv_shapes", "chunk_examples",
           "convolve", "examples_per_chunk", "extract_patches", "merge_chunks", "to_chunks"]
