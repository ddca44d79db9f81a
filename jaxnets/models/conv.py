"""Convolution, pooling, dropout and batch-norm layers for the convolutional networks.

Layout is channels-last: a batch of 2-D images is (N, H, W, C), a batch of 1-D
signals is (N, L, C). A kernel is (k_h, k_w, C_in, C_out) (or (k, C_in, C_out)).

Convolution (a cross-correlation, as in the slides and in every deep-learning
library), for output position (i, j) and output channel o, with stride s and the
input zero-padded first:

    y[n, i, j, o] = b[o] + Σ_{a, c, q} x[n, s·i + a, s·j + c, q] · W[a, c, q, o]
                    (a < k_h, c < k_w, q < C_in)

Output size per spatial axis, for input size n, kernel k, stride s:
SAME ⌈n/s⌉ (zero padding split as evenly as possible, the extra one after);
VALID ⌊(n − k)/s⌋ + 1; an integer padding p on both sides ⌊(n + 2p − k)/s⌋ + 1.

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

``"auto"`` picks ``"xla"`` on GPU/TPU and ``"patches"`` on CPU, where XLA's own
convolution gradients are several times slower than the GEMMs (measurements in
docs/architectures/cnn.md).

A convolution followed by max pooling over tiling windows (``convolve_max_pool``,
what ``CNN`` runs) is fused on the "patches" path: each chunk is pooled while its
convolution output is in cache, so the full-resolution map is never written out.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets.models.initializers import INITIALIZERS, get_initializer

Array = jax.Array
Padding = str | int

#: Convolution implementations (see the module docstring).
CONV_IMPLS = ("auto", "xla", "patches")
#: Pooling implementations: the k_h·k_w strided views of the input combined
#: elementwise ("slices", what "auto" runs), ``lax.reduce_window`` (what flax's pooling
#: runs), or a reshape of non-overlapping windows.
POOL_IMPLS = ("auto", "slices", "reduce_window", "reshape")
#: Padding names; an integer p >= 0 (p zeros on both sides) is accepted too.
PADDINGS = ("SAME", "VALID")


# ------------------------------------------------------------------ validation helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_padding(padding: Padding, field: str = "padding") -> Padding:
    """Check a padding and return it in canonical form (upper-case name or int).

    Args:
      padding: "SAME", "VALID" (any case) or an integer p >= 0.
      field: the name used in the error message.

    Returns:
      "SAME", "VALID" or the integer.

    Raises:
      ValueError: anything else.

    >>> normalize_padding("same"), normalize_padding(1)
    ('SAME', 1)
    """
    if isinstance(padding, str) and padding.upper() in PADDINGS:
        return padding.upper()
    if _is_int(padding) and padding >= 0:
        return padding
    raise ValueError(f"{field}: got {padding!r}; allowed: SAME, VALID or an integer >= 0")


def _tuple_of(value: int | Sequence[int], ndim: int, field: str) -> tuple[int, ...]:
    """An int broadcast to ``ndim`` axes, or a sequence of ``ndim`` ints >= 1."""
    values = (value,) * ndim if _is_int(value) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != ndim or not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1 or {ndim} such ints")
    return values


#: The "patches" path builds the patch matrix of the whole batch at once when it is at
#: most ``PATCH_WHOLE_BATCH_BYTES``, else in chunks of about ``PATCH_CHUNK_BYTES`` (a
#: loop over the batch). On the development CPU chunks paid off for large patch matrices
#: (in cache while the products read them) and a loop cost time for small ones
#: (docs/architectures/cnn.md).
PATCH_CHUNK_BYTES = 4 * 2**20
PATCH_WHOLE_BATCH_BYTES = 16 * 2**20


def resolve_conv_impl(impl: str, backend: str | None = None) -> str:
    """The implementation ``impl`` stands for on ``backend``.

    "auto" is "xla" on GPU/TPU (cuDNN and the TPU convolution units are fast) and
    "patches" on CPU, where XLA's convolution gradients run far below its matrix
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


# ------------------------------------------------------------------ sizes and padding


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: Padding = "SAME") -> int:
    """Length of one spatial axis after a convolution (or pooling) window.

    SAME: ⌈n/s⌉; VALID: ⌊(n − k)/s⌋ + 1; integer p: ⌊(n + 2p − k)/s⌋ + 1
    (0 when the window does not fit at all).

    Args:
      size: input length n.
      kernel: window length k.
      stride: step s between windows.
      padding: "SAME", "VALID" or an integer p.

    Returns:
      The output length (>= 0).

    >>> conv_output_size(40, 5, 2, 1), conv_output_size(8, 3, 1, "VALID"), conv_output_size(7, 3, 2)
    (19, 6, 4)
    """
    padding = normalize_padding(padding)
    if padding == "SAME":
        return -(-size // stride)
    extra = 0 if padding == "VALID" else 2 * padding
    return max(0, (size + extra - kernel) // stride + 1)


def explicit_padding(spatial_shape: Sequence[int], kernel_size: Sequence[int],
                     strides: Sequence[int], padding: Padding) -> tuple[tuple[int, int], ...]:
    """The (low, high) zero padding of each spatial axis.

    SAME pads t = max((⌈n/s⌉ − 1)·s + k − n, 0) zeros, ⌊t/2⌋ before and the rest
    after (XLA's and TensorFlow's convention); VALID pads none; an integer p pads
    p on both sides (PyTorch's ``padding=p``).

    Args:
      spatial_shape: input lengths per spatial axis.
      kernel_size, strides: per spatial axis.
      padding: "SAME", "VALID" or an integer p.

    Returns:
      One (low, high) pair per spatial axis.

    >>> explicit_padding((40,), (5,), (2,), "SAME"), explicit_padding((8, 8), (3, 3), (1, 1), 1)
    (((1, 2),), ((1, 1), (1, 1)))
    """
    padding = normalize_padding(padding)
    if padding == "VALID":
        return tuple((0, 0) for _ in spatial_shape)
    if _is_int(padding):
        return tuple((padding, padding) for _ in spatial_shape)
    return tuple(lax.padtype_to_pads(tuple(spatial_shape), tuple(kernel_size), tuple(strides),
                                     "SAME"))


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
    views = _shifted_views(x, kernel_size, strides, out)
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def _shifted_views(padded: Array, window: Sequence[int], strides: Sequence[int],
                  out: Sequence[int]) -> list[Array]:
    """The window's k_h·k_w strided views of an (already padded) input, row-major.

    View (a, c) is padded[:, a::s_h, c::s_w, :] cut to ``out`` positions per axis, so
    element [n, i, j, q] of view (a, c) is padded[n, s_h·i + a, s_w·j + c, q]: what
    window offset (a, c) sees at output position (i, j). Convolution patches and
    pooling are both built from these.
    """
    views = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = (0, *offset, 0)
        limit = (padded.shape[0], *(a + s * (o - 1) + 1 for a, s, o in zip(offset, strides, out)),
                 padded.shape[-1])
        views.append(lax.slice(padded, start, limit, (1, *strides, 1)))
    return views


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
    strides = _tuple_of(strides, ndim, "strides")
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
        if not _is_int(self.features) or self.features < 1:
            raise ValueError(f"features: got {self.features!r}; allowed: an int >= 1")
        if isinstance(self.kernel_size, list):
            self.kernel_size = tuple(self.kernel_size)
        if isinstance(self.strides, list):
            self.strides = tuple(self.strides)
        for field in ("kernel_size", "strides"):
            value = getattr(self, field)
            if not (_is_int(value) and value >= 1) and not (
                    isinstance(value, tuple) and len(value) in (1, 2)
                    and all(_is_int(v) and v >= 1 for v in value)):
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
        window = math.prod(_tuple_of(self.kernel_size, spatial_dims, "kernel_size"))
        return window * in_channels * self.features + (self.features if self.use_bias else 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Map (N, *spatial, C_in) to (N, *spatial_out, features)."""
        if x.ndim not in (3, 4):
            raise ValueError(f"x: got shape {x.shape}; allowed: (N, L, C) or (N, H, W, C)")
        ndim = x.ndim - 2
        kernel_size = _tuple_of(self.kernel_size, ndim, "kernel_size")
        kernel = self.param("kernel", get_initializer(self.kernel_init, self.init_scale),
                            (*kernel_size, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                          self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        strides = _tuple_of(self.strides, ndim, "strides")
        if self.max_pool_window is None:
            y = convolve(x, kernel, strides, self.padding, self.impl)
        else:
            y = convolve_max_pool(x, kernel, self.max_pool_window, strides, self.padding,
                                  self.impl, self.pool_impl)
        return y if bias is None else y + bias


# ------------------------------------------------------------------ pooling


def _pool_args(x: Array, window: int | Sequence[int], strides: int | Sequence[int] | None,
               padding: Padding) -> tuple[tuple[int, ...], tuple[int, ...], Padding]:
    if x.ndim not in (3, 4):
        raise ValueError(f"x: got shape {x.shape}; allowed: (N, L, C) or (N, H, W, C)")
    ndim = x.ndim - 2
    window = _tuple_of(window, ndim, "window")
    strides = window if strides is None else _tuple_of(strides, ndim, "strides")
    padding = normalize_padding(padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], window, strides)]
    if any(o < 1 for o in out):
        raise ValueError(f"x: got spatial shape {x.shape[1:-1]}; allowed: at least the pooling "
                         f"window {window} (padding {padding!r})")
    return window, strides, padding


def _reshape_applies(x: Array, window: tuple[int, ...], strides: tuple[int, ...],
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


def _window_axes(ndim: int) -> tuple[int, ...]:
    return tuple(2 + 2 * d for d in range(ndim))


def _pool_rank(window: tuple[int, ...], dtype) -> Array:
    """Each window position's row-major rank, shaped to broadcast against (N, o_1, k_1, o_2, k_2, C)."""
    shape = [1] * (2 * len(window) + 2)
    for axis, k in zip(_window_axes(len(window)), window):
        shape[axis] = k
    return jnp.arange(math.prod(window), dtype=dtype).reshape(window).reshape(shape)


def _first_max_mask(blocks: Array, ndim: int) -> Array:
    """True at the first maximum of each window, in row-major window order.

    Each window position gets its rank a·k_2 + b; among the positions equal to the
    window's maximum the smallest rank wins, so exactly one entry per window is
    True (the one reduce_window's gradient also picks).
    """
    axes = _window_axes(ndim)
    window = tuple(blocks.shape[a] for a in axes)
    rank = _pool_rank(window, jnp.int32)
    is_max = blocks == jnp.max(blocks, axis=axes, keepdims=True)
    ranked = jnp.where(is_max, rank, math.prod(window))
    return ranked == jnp.min(ranked, axis=axes, keepdims=True)


@jax.custom_jvp
def _max_blocks(blocks: Array) -> Array:
    ndim = (blocks.ndim - 2) // 2
    return jnp.max(blocks, axis=_window_axes(ndim))


@_max_blocks.defjvp
def _max_blocks_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    # The derivative routes each window's tangent through its FIRST maximum only
    # (not split among ties as jnp.max's rule does), so values AND gradients match
    # lax.reduce_window (flax.linen.max_pool) and PyTorch's max_pool.
    (blocks,), (tangent,) = primals, tangents
    ndim = (blocks.ndim - 2) // 2
    axes = _window_axes(ndim)
    mask = _first_max_mask(blocks, ndim)
    return (jnp.max(blocks, axis=axes),
            jnp.sum(jnp.where(mask, tangent, jnp.zeros_like(tangent)), axis=axes))


def _pool_views(x: Array, window: tuple[int, ...], strides: tuple[int, ...], padding: Padding,
                fill: float) -> list[Array]:
    """``_shifted_views`` of ``x`` padded with ``fill`` (−∞ for max, 0 for a sum)."""
    pads = explicit_padding(x.shape[1:-1], window, strides, padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], window, strides)]
    if any(low or high for low, high in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=np.array(fill, x.dtype))
    return _shifted_views(x, window, strides, out)


@jax.custom_jvp
def _max_of_views(*views: Array) -> Array:
    return functools.reduce(jnp.maximum, views)


@_max_of_views.defjvp
def _max_of_views_jvp(primals: tuple[Array, ...], tangents: tuple[Array, ...]) -> tuple[Array, Array]:
    # The tangent of the FIRST maximum in window order (a strict ">" keeps the
    # earlier of two equal values): the same first-maximum rule as the other paths.
    best, tangent = primals[0], tangents[0]
    for view, view_tangent in zip(primals[1:], tangents[1:]):
        later_is_larger = view > best
        best = jnp.where(later_is_larger, view, best)
        tangent = jnp.where(later_is_larger, view_tangent, tangent)
    return _max_of_views(*primals), tangent


def _first_max_index(views: Sequence[Array]) -> Array:
    """Per output position, the index (window order) of the first view holding the maximum."""
    dtype = jnp.int8 if len(views) <= 127 else jnp.int32
    best, index = views[0], jnp.zeros(views[0].shape, dtype)
    for i, view in enumerate(views[1:], 1):
        later_is_larger = view > best  # strict: the earlier of two equal values stays
        best = jnp.where(later_is_larger, view, best)
        index = jnp.where(later_is_larger, jnp.asarray(i, dtype), index)
    return index


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool_tiled(x: Array, window: tuple[int, ...]) -> Array:
    """Max pooling over windows that tile ``x`` (stride == window, no padding; a remainder is dropped)."""
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    return functools.reduce(jnp.maximum, _shifted_views(x, window, window, out))


@_max_pool_tiled.defjvp
def _max_pool_tiled_jvp(window: tuple[int, ...], primals: tuple[Array], tangents: tuple[Array]
                        ) -> tuple[Array, Array]:
    # The same first-maximum rule as _max_of_views, written on the (N, o_1, k_1, o_2, k_2, C)
    # blocks of the tangent. Its transpose (the gradient) is then one elementwise pass that
    # writes ∂x in its own memory order, where(rank == index, ∂y, 0), instead of scattering
    # k_1·k_2 strided views back with pads and adds; only the small index is kept for it.
    (x,), (tangent,) = primals, tangents
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    views = _shifted_views(x, window, window, out)
    index = _first_max_index(views)
    axes = _window_axes(len(window))
    chosen = _pool_rank(window, index.dtype) == jnp.expand_dims(index, axes)
    blocks = _blocks(tangent, window)
    return (functools.reduce(jnp.maximum, views),
            jnp.sum(jnp.where(chosen, blocks, jnp.zeros_like(blocks)), axis=axes))


def max_pool(x: Array, window: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
             padding: Padding = "VALID", impl: str = "auto") -> Array:
    """Maximum over each window: y[n, i, j, c] = max_{a<k_h, b<k_w} x[n, s·i + a, s·j + b, c].

    Padded positions count as −∞ (never the maximum). The output size per axis is
    that of ``conv_output_size``. The gradient of each window goes entirely to its
    first maximum (row-major order) when several entries tie, in both implementations.

    Args:
      x: (N, H, W, C) or (N, L, C).
      window: window size, an int or one per spatial axis.
      strides: step between windows; ``None`` means ``window`` (non-overlapping).
      padding: "VALID" (drop a remainder), "SAME" or an integer p.
      impl: "auto" (= "slices"), "slices" (elementwise maximum over the window's
        strided views), "reduce_window" or "reshape" (non-overlapping windows that
        need no padding only).

    Returns:
      (N, H_out, W_out, C) (or (N, L_out, C)).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, 2)[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    window, strides, padding = _pool_args(x, window, strides, padding)
    impl = _pool_impl(impl, x, window, strides, padding)
    if impl == "slices":
        if _reshape_applies(x, window, strides, padding):
            return _max_pool_tiled(x, window)
        return _max_of_views(*_pool_views(x, window, strides, padding, -np.inf))
    if impl == "reshape":
        return _max_blocks(_blocks(x, window))
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
      impl: "auto", "slices", "reduce_window" or "reshape" (see ``max_pool``).

    Returns:
      (N, H_out, W_out, C) (or (N, L_out, C)).

    >>> avg_pool(jnp.arange(16.0).reshape(1, 4, 4, 1), 2)[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    window, strides, padding = _pool_args(x, window, strides, padding)
    impl = _pool_impl(impl, x, window, strides, padding)
    if impl == "slices":
        total = functools.reduce(jnp.add, _pool_views(x, window, strides, padding, 0.0))
        if all(low == high == 0 for low, high in explicit_padding(x.shape[1:-1], window, strides, padding)):
            return total / math.prod(window)
        ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
        return total / functools.reduce(jnp.add, _pool_views(ones, window, strides, padding, 0.0))
    if impl == "reshape":
        return jnp.mean(_blocks(x, window), axis=_window_axes(len(window)))
    pads = ((0, 0), *explicit_padding(x.shape[1:-1], window, strides, padding), (0, 0))
    dims, steps = (1, *window, 1), (1, *strides, 1)
    total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, steps, pads)
    if all(low == high == 0 for low, high in pads):
        return total / math.prod(window)
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    count = lax.reduce_window(ones, np.array(0, x.dtype), lax.add, dims, steps, pads)
    return total / count


def _pool_impl(impl: str, x: Array, window: tuple[int, ...], strides: tuple[int, ...],
               padding: Padding) -> str:
    if impl not in POOL_IMPLS:
        raise ValueError(f"impl: got {impl!r}; allowed: {', '.join(POOL_IMPLS)}")
    applies = _reshape_applies(x, window, strides, padding)
    if impl == "reshape" and not applies:
        raise ValueError(f"impl: got 'reshape' for window {window}, strides {strides}, padding "
                         f"{padding!r} on {x.shape[1:-1]}; allowed: 'reshape' only when strides "
                         "== window and no padding is needed")
    if impl == "auto":
        # The views are plain strided slices and elementwise ops on every backend, and
        # their gradient is cheap; reduce_window's max gradient is slow on CPU
        # (experiments/architectures.py cnn_speed times all three).
        return "slices"
    return impl


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
        (and "auto") rule, so "reduce_window" and "reshape" run unfused.

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
    strides = _tuple_of(strides, ndim, "strides")
    window = _tuple_of(window, ndim, "window")
    padding = normalize_padding(padding)
    out = [conv_output_size(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides)]
    if pool_impl not in POOL_IMPLS:
        raise ValueError(f"pool_impl: got {pool_impl!r}; allowed: {', '.join(POOL_IMPLS)}")
    if (resolve_conv_impl(impl) == "xla" or pool_impl not in ("auto", "slices") or x.shape[0] == 0
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
        views = _shifted_views(z, window, window, out)
        return functools.reduce(jnp.maximum, views), _first_max_index(views)

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
    rank = _pool_rank(window, index.dtype)
    axes = _window_axes(len(window))

    def unpool(dyc, ic):
        # ∂z: ∂y at each window's first maximum, 0 elsewhere (and on a dropped remainder).
        blocks = jnp.where(rank == jnp.expand_dims(ic, axes), jnp.expand_dims(dyc, axes),
                           jnp.zeros((), dyc.dtype))
        dz = blocks.reshape(dyc.shape[0], *(o * k for o, k in zip(dyc.shape[1:-1], window)), dyc.shape[-1])
        missing = [c - d for c, d in zip(conv_shape, dz.shape[1:-1])]
        return jnp.pad(dz, ((0, 0), *((0, m) for m in missing), (0, 0))) if any(missing) else dz

    return _backward_by_chunks(strides, padding, chunk, x, kernel, (dy, index), unpool)


_patches_conv_pool.defvjp(_patches_conv_pool_forward, _patches_conv_pool_backward)


# ------------------------------------------------------------------ dropout, batch norm


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
                    param_dtype: Any = jnp.float32, name: str | None = None) -> nn.BatchNorm:
    """Flax's batch normalization over every axis but the last (features/channels).

    Training: μ_B, σ²_B are the batch mean and the biased variance (1/m)Σ(x − μ_B)²
    per feature; y = γ·(x − μ_B)/√(σ²_B + ε) + β; the running averages in the
    "batch_stats" collection become μ ← momentum·μ + (1 − momentum)·μ_B and
    σ² ← momentum·σ² + (1 − momentum)·σ²_B. Evaluation uses the running μ, σ².
    Parameters: γ ("scale") and β ("bias"), 2 per feature.

    Args:
      train: normalize with the batch statistics and update the running ones.
      momentum: weight of the old running average (Flax convention; 0.9 here is
        PyTorch's momentum=0.1).
      epsilon: ε added to the variance.
      dtype, param_dtype: computation and parameter dtypes.
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
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        dtype=dtype, param_dtype=param_dtype, name=name)


__all__ = [
    "BATCH_NORM_EPSILON", "BATCH_NORM_MOMENTUM", "CONV_IMPLS",
    "PADDINGS", "PATCH_CHUNK_BYTES", "PATCH_WHOLE_BATCH_BYTES", "POOL_IMPLS",
    "Conv", "avg_pool", "check_rate", "conv_output_size", "convolve", "convolve_max_pool",
    "explicit_padding",
    "extract_patches", "global_avg_pool", "make_batch_norm", "make_dropout", "max_pool",
    "normalize_padding", "resolve_conv_impl",
]
