"""Convolution: the ``Conv`` layer, its two implementations, and convolution fused with max pooling.

Layout is channels-last: a batch of 2-D images is (N, H, W, C), a batch of 1-D
signals is (N, L, C). A kernel is (k_h, k_w, C_in, C_out) (or (k, C_in, C_out)).

Convolution (a cross-correlation, as in the slides and in every deep-learning
library), for output position (i, j) and output channel o, with stride s and the
input zero-padded first:

    y[n, i, j, o] = b[o] + Σ_{a, c, q} x[n, s·i + a, s·j + c, q] · W[a, c, q, o]
                    (a < k_h, c < k_w, q < C_in)

Output sizes and padding follow ``jaxnets.models.windows`` (SAME, VALID or an integer p).

Two implementations give the same values and gradients and share one parameter
("kernel", same shape), so a checkpoint works with either:

- ``"xla"``: ``lax.conv_general_dilated``, what ``flax.linen.Conv`` runs. Fast with
  cuDNN on a GPU.
- ``"patches"`` (im2col): copy the k_h·k_w shifted views of the padded input side by
  side, giving a (N·H_out·W_out, k_h·k_w·C_in) matrix, and multiply it by the kernel
  reshaped to (k_h·k_w·C_in, C_out): a matrix product (GEMM). The batch is processed
  in chunks whose patch matrix is about ``PATCH_CHUNK_BYTES``, so each chunk's matrix
  is still in cache when the product reads it, and the backward pass is written by
  hand: per chunk it rebuilds the patch matrix (nothing that large is kept between
  the passes) and gets the kernel gradient Pᵀ·∂y and the input gradient (∂y·Wᵀ put
  back on the shifted views) from two more GEMMs.

``"auto"`` picks ``"xla"`` on every backend but the CPU (GPU, TPU, ...) and ``"patches"`` on CPU, where XLA's own
convolution gradients are several times slower than the GEMMs (measurements in
docs/architectures/cnn.md).

A convolution followed by max pooling over tiling windows (``convolve_max_pool``,
what ``CNN`` runs) is fused on the "patches" path: each chunk is pooled while its
convolution output is in cache, so the full-resolution map is never written out.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.models.initializers import INITIALIZERS, get_initializer
from jaxnets.models.pooling import (POOL_IMPLS, first_max_chosen, first_max_index, max_pool,
                                    resolve_pool_impl, window_axes)
from jaxnets.models.windows import (Padding, as_tuple, conv_output_size, explicit_padding, is_int,
                                    normalize_padding, shifted_views)

Array = jax.Array

#: Convolution implementations (see the module docstring).
CONV_IMPLS = ("auto", "xla", "patches")


#: The "patches" path builds the patch matrix of the whole batch at once when it is at
#: most ``PATCH_WHOLE_BATCH_BYTES``, else in chunks of about ``PATCH_CHUNK_BYTES`` (a
#: loop over the batch). On the development CPU chunks paid off for large patch matrices
#: (in cache while the products read them) and a loop cost time for small ones
#: (docs/architectures/cnn.md).
PATCH_CHUNK_BYTES = 4 * 2**20
PATCH_WHOLE_BATCH_BYTES = 16 * 2**20


def resolve_conv_impl(impl: str, backend: str | None = None) -> str:
    """The implementation ``impl`` stands for on ``backend``.

    "auto" is "xla" on every backend but the CPU ("gpu", "cuda", "rocm", "tpu", ...:
    cuDNN and the TPU convolution units are fast, the patches were never measured
    there) and "patches" on CPU, where XLA's convolution gradients run far below its matrix
    products (docs/architectures/cnn.md has the measurements).

    Args:
      impl: one of ``CONV_IMPLS``.
      backend: "cpu", "gpu", "tpu", ...; ``None`` reads ``jax.default_backend()``.

    Returns:
      "xla" or "patches".

    >>> resolve_conv_impl("auto", "cpu"), resolve_conv_impl("auto", "gpu")
    ('patches', 'xla')
    >>> resolve_conv_impl("patches", "gpu")
    'patches'
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"impl: got {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
    if impl != "auto":
        return impl
    return "patches" if (backend or jax.default_backend()) == "cpu" else "xla"


# ------------------------------------------------------------------ convolution


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
      impl: one of ``CONV_IMPLS``.

    Returns:
      (N, H_out, W_out, C_out) (or (N, L_out, C_out)).

    >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)          # the slides' example
    >>> w = jnp.arange(4.0).reshape(2, 2, 1, 1)
    >>> convolve(x, w, padding="VALID", impl="patches")[0, :, :, 0].tolist()
    [[19.0, 25.0], [37.0, 43.0]]
    """
    if x.ndim not in (3, 4) or kernel.ndim != x.ndim or kernel.shape[-2] != x.shape[-1]:
        raise ValueError(f"x, kernel: got shapes {x.shape}, {kernel.shape}; allowed: (N, *spatial, "
                         "C) with 1 or 2 spatial axes and a kernel (*window, C, C_out)")
    ndim = x.ndim - 2
    strides = as_tuple(strides, ndim, "strides")
    padding = normalize_padding(padding)
    kernel_size = kernel.shape[:-2]
    if resolve_conv_impl(impl) == "xla":
        pads = explicit_padding(x.shape[1:-1], kernel_size, strides, padding)
        return lax.conv_general_dilated(x, kernel, strides, pads,
                                        dimension_numbers=_dimension_numbers(x.ndim))
    if x.shape[0] == 0:
        return jnp.dot(extract_patches(x, kernel_size, strides, padding), kernel.reshape(-1, kernel.shape[-1]))
    return _patches_conv(x, kernel, strides, padding, _examples_per_chunk(x, kernel, strides, padding))


def _examples_per_chunk(x: Array, kernel: Array, strides: tuple[int, ...], padding: Padding,
                        with_output: bool = False) -> int:
    """Examples per chunk: all N when the whole patch matrix is small, else ~``PATCH_CHUNK_BYTES``.

    Within a factor 2 of the target size, the largest divisor of N is taken (the
    chunks tile the batch: no padding); otherwise the chunks are evened out
    (ceil(N / number of chunks)) and the last one is padded with zero examples.
    """
    n = x.shape[0]
    positions = math.prod(conv_output_size(size, k, s, padding)
                          for size, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides))
    # With ``with_output`` the convolution output (pooled inside the loop) is counted too.
    width = math.prod(kernel.shape[:-1]) + (kernel.shape[-1] if with_output else 0)
    per_example = max(1, positions * width * x.dtype.itemsize)
    if n * per_example <= PATCH_WHOLE_BATCH_BYTES:
        return n
    size = max(1, min(n, PATCH_CHUNK_BYTES // per_example))
    divisor = max(d for d in range(1, size + 1) if n % d == 0)
    if 2 * divisor >= size:
        return divisor  # chunks that tile the batch exactly: no padding
    chunks = -(-n // size)
    return -(-n // chunks)


def _merge_chunks(chunks: Array, n: int) -> Array:
    """The inverse of ``_to_chunks``: (G, size, ...) -> (n, ...), padding rows dropped."""
    return chunks.reshape(-1, *chunks.shape[2:])[:n]


def _to_chunks(x: Array, size: int) -> Array:
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

    y = product(x) if chunk >= x.shape[0] else _merge_chunks(lax.map(product, _to_chunks(x, chunk)), x.shape[0])
    # Residuals are the inputs only: the backward pass rebuilds each chunk's patches.
    return y, (x, kernel)


def _patches_conv_backward(strides, padding, chunk, residuals, dy):
    x, kernel = residuals
    return _backward_by_chunks(strides, padding, chunk, x, kernel, (dy,), lambda d: d)


def _backward_by_chunks(strides, padding, chunk, x, kernel, per_example, to_dy):
    """Per chunk: ∂W += Pᵀ·∂Y, and ∂X = the shifted views' transpose applied to ∂Y·Wᵀ.

    ``per_example`` are arrays with the batch axis first; ``to_dy`` maps a chunk of
    them to that chunk's ∂Y (the identity, or the un-pooling of the fused path).
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
        dw, dx = lax.scan(one_chunk, zero, tuple(_to_chunks(a, chunk) for a in (x, *per_example)))
        dx = _merge_chunks(dx, x.shape[0])
    return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


_patches_conv.defvjp(_patches_conv_forward, _patches_conv_backward)


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
      impl: "auto", "xla" or "patches" (same values and gradients).
      kernel_init, init_scale: kernel initializer by name (fan-in = k_h·k_w·C_in).
      dtype: computation dtype; param_dtype: parameter dtype.
      max_pool_window: max pooling with this (tiling) window applied to x ⋆ W before
        the bias is added (None: none). ``CNN`` pools here: max_w(a + b) = max_w(a) + b
        for a per-channel b, adding b to the pooled map touches 4x fewer values, and
        on the "patches" path the convolution and the pooling run fused
        (``convolve_max_pool``).
      pool_impl: the pooling implementation (``POOL_IMPLS``) when not fused.

    >>> layer = Conv(features=4, kernel_size=3)
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables["params"])
    {'bias': (4,), 'kernel': (3, 3, 1, 4)}
    >>> layer.apply(variables, x).shape
    (2, 8, 8, 4)
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
    max_pool_window: int | Sequence[int] | None = None
    pool_impl: str = "auto"

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
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"impl: got {self.impl!r}; allowed: {', '.join(CONV_IMPLS)}")
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
    def __call__(self, x: Array) -> Array:
        """Map (N, *spatial, C_in) to (N, *spatial_out, features)."""
        if x.ndim not in (3, 4):
            raise ValueError(f"x: got shape {x.shape}; allowed: (N, L, C) or (N, H, W, C)")
        ndim = x.ndim - 2
        kernel_size = as_tuple(self.kernel_size, ndim, "kernel_size")
        kernel = self.param("kernel", get_initializer(self.kernel_init, self.init_scale),
                            (*kernel_size, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                          self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        strides = as_tuple(self.strides, ndim, "strides")
        if self.max_pool_window is None:
            y = convolve(x, kernel, strides, self.padding, self.impl)
        else:
            y = convolve_max_pool(x, kernel, self.max_pool_window, strides, self.padding,
                                  self.impl, self.pool_impl)
        return y if bias is None else y + bias


# ------------------------------------------------------------------ convolution + max pooling, fused


def convolve_max_pool(x: Array, kernel: Array, window: int | Sequence[int],
                      strides: int | Sequence[int] = 1, padding: Padding = "SAME",
                      impl: str = "auto", pool_impl: str = "auto") -> Array:
    """max_pool(convolve(x, kernel), window) (tiling windows), fused on the "patches" path.

    Fused, each chunk of examples is convolved and pooled while its convolution
    output is still in cache; only the pooled map and the index of each window's
    first maximum (one byte per pooled value) leave the loop, and the backward pass
    puts ∂y back at those indices chunk by chunk. Values and gradients equal the
    two calls in sequence (the first-maximum rule of ``max_pool``).

    Args:
      x: (N, H, W, C_in) or (N, L, C_in).
      kernel: (k_h, k_w, C_in, C_out) or (k, C_in, C_out).
      window: pooling window (stride = window, remainder dropped).
      strides, padding, impl: of the convolution, as in ``convolve``.
      pool_impl: of the pooling, as in ``max_pool``; the fused path is its "slices"
        rule, so a ``pool_impl`` that does not resolve to "slices" (``resolve_pool_impl``:
        "reduce_window", "reshape", or "auto" off the CPU) runs unfused.

    Returns:
      (N, ⌊H_out/p_h⌋, ⌊W_out/p_w⌋, C_out) (or the 1-D analogue).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> convolve_max_pool(x, jnp.ones((1, 1, 1, 1)), 2, impl="patches")[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    if x.ndim not in (3, 4) or kernel.ndim != x.ndim or kernel.shape[-2] != x.shape[-1]:
        raise ValueError(f"x, kernel: got shapes {x.shape}, {kernel.shape}; allowed: (N, *spatial, "
                         "C) with 1 or 2 spatial axes and a kernel (*window, C, C_out)")
    ndim = x.ndim - 2
    strides = as_tuple(strides, ndim, "strides")
    window = as_tuple(window, ndim, "window")
    padding = normalize_padding(padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides)]
    if pool_impl not in POOL_IMPLS:
        raise ValueError(f"pool_impl: got {pool_impl!r}; allowed: {', '.join(POOL_IMPLS)}")
    if (resolve_conv_impl(impl) == "xla" or resolve_pool_impl(pool_impl) != "slices" or x.shape[0] == 0
            or any(o < k for o, k in zip(out, window))):
        return max_pool(convolve(x, kernel, strides, padding, impl), window, impl=pool_impl)
    return _patches_conv_pool(x, kernel, strides, padding, window,
                              _examples_per_chunk(x, kernel, strides, padding, with_output=True))


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
        y, index = lax.map(conv_pool, _to_chunks(x, chunk))
        y, index = _merge_chunks(y, x.shape[0]), _merge_chunks(index, x.shape[0])
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

    return _backward_by_chunks(strides, padding, chunk, x, kernel, (dy, index), unpool)


_patches_conv_pool.defvjp(_patches_conv_pool_forward, _patches_conv_pool_backward)


__all__ = ["CONV_IMPLS", "PATCH_CHUNK_BYTES", "PATCH_WHOLE_BATCH_BYTES", "Conv", "convolve",
           "convolve_max_pool", "extract_patches", "resolve_conv_impl"]
