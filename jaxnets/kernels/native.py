"""The C++ kernels of the "patches" path, through XLA's FFI (CPU only).

Two fused convolutions with 2×2 max pooling run in C++ on the CPU (docs/architectures/cnn.md,
"The C++ kernels"):

- ``conv_pool.cc``: a network's first layer (1 to 3 input channels). Its convolution has
  almost no arithmetic per output, and as matrix products (``jaxnets.kernels.conv``) its time
  goes into building patches, selecting the maxima and scattering ∂y back, one pass over
  memory per operation. The handler computes the four outputs of each pooling window from the
  input tile under it and pools them at once, keeping the index of the first maximum. The
  backward pass is two more calls, the kernel gradient and the input gradient, so that XLA
  drops the input gradient where nothing reads it. This module holds that layer's VJP.
- ``winograd.cc``: F(2×2, 3×3) (``jaxnets.kernels.winograd``, which holds its VJP), every step
  for a group of tiles while it is in cache.

Each call splits the batch into one block of examples per thread of XLA's pool, and a thread
keeps to its block through the call. The library is built by ``pip install`` (setup.py)
against the XLA FFI headers that jaxlib ships, for the installing machine's CPU. Where it
could not be built (no C++20 compiler), ``AVAILABLE`` is False, ``UNAVAILABLE`` says why, and
the "patches" path runs its JAX kernels instead, with the same values. Lowered for any
platform but the CPU, the same calls run the JAX kernels (``on_cpu``: ``lax.platform_dependent``).
"""
from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

#: Input channels up to which a 2×2-max-pooled convolution runs here (grayscale and RGB
#: first layers; from 8 on, 3×3 kernels go to Winograd's algorithm).
MAX_INPUT_CHANNELS = 3
#: Output channel counts compiled into the library (``by_channels`` in conv_pool.cc).
OUTPUT_CHANNELS = (8, 16, 32, 64)
#: Largest kernel side handled here.
MAX_KERNEL_SIZE = 7
_SUFFIX = {jnp.dtype(jnp.float32): "F32", jnp.dtype(jnp.float64): "F64"}
_HANDLERS = ("ConvPoolForward", "ConvPoolKernelGradient", "ConvPoolInputGradient", "WinogradForward",
             "WinogradBackward")


def library_path(folder: Path = Path(__file__).parent) -> Path | None:
    """The built library next to this file (``_cpu_kernels`` with this Python's extension suffix), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"_cpu_kernels{suffix}"
        if path.is_file():
            return path
    return None


def _register() -> tuple[str | None, int]:
    """Load the library and register its handlers with XLA: (None, or why it cannot run; its vector bytes)."""
    path = library_path()
    if path is None:
        return "jaxnets/kernels/_cpu_kernels was not built (pip install could not compile conv_pool.cc, winograd.cc)", 0
    try:
        library = ctypes.cdll.LoadLibrary(str(path))
    except OSError as error:
        return f"{path.name} did not load: {error}", 0
    vector_bytes = int(library.jaxnets_vector_bytes())
    missing = missing_vector_feature(vector_bytes)
    if missing:
        return (f"{path.name} was built for a CPU with {missing} (vectors of {vector_bytes} bytes), which this one "
                "lacks: reinstall jaxnets on this machine"), 0
    for handler in _HANDLERS:
        for suffix in _SUFFIX.values():
            jax.ffi.register_ffi_target(f"jaxnets_{handler}{suffix}", jax.ffi.pycapsule(getattr(library, handler + suffix)),
                                        platform="cpu")
    return None, vector_bytes


def missing_vector_feature(vector_bytes: int, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The x86 vector extension a library built for ``vector_bytes`` needs and this CPU lacks, or None.

    pip builds the library for the installing machine's CPU; on a shared disk another machine
    may lack its instructions and would stop at the first one. Checked where Linux lists the
    CPU's flags (x86-64); elsewhere nothing is checked.
    """
    needed = {64: "avx512f", 32: "avx"}.get(vector_bytes)
    if needed is None or not cpuinfo.is_file():
        return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), None)
    return None if flags is None or needed in flags else needed


# Registering is a process-wide effect, like jax's own custom calls: once, when imported.
UNAVAILABLE, VECTOR_BYTES = _register()
#: Whether the C++ kernels are built and registered in this process.
AVAILABLE = UNAVAILABLE is None


def first_layer_applies(x_shape: Sequence[int], kernel_shape: Sequence[int], dtype, strides: Sequence[int],
            window: Sequence[int]) -> bool:
    """Whether this convolution + max pooling runs here on the CPU.

    It does for a 2-D convolution at stride 1 with at most ``MAX_INPUT_CHANNELS`` input
    channels, ``OUTPUT_CHANNELS`` output channels, kernel sides up to ``MAX_KERNEL_SIZE``,
    2×2 pooling windows and float32 or float64, when the library is ``AVAILABLE``.
    """
    return (AVAILABLE and len(x_shape) == 4 and len(kernel_shape) == 4 and jnp.dtype(dtype) in _SUFFIX
            and x_shape[-1] <= MAX_INPUT_CHANNELS and kernel_shape[-1] in OUTPUT_CHANNELS
            and max(kernel_shape[:2]) <= MAX_KERNEL_SIZE and tuple(strides) == (1, 1) and tuple(window) == (2, 2))


def _attributes(pads: tuple[tuple[int, int], tuple[int, int]]) -> dict:
    (top, bottom), (left, right) = pads
    return {name: np.int64(value) for name, value in
            zip(("pad_top", "pad_bottom", "pad_left", "pad_right"), (top, bottom, left, right))}


def _pooled_shape(x_shape, kernel_hw, c_out, pads) -> tuple[int, ...]:
    """(N, pooled height, pooled width, c_out) of a stride-1 convolution with explicit ``pads`` and 2×2 pooling."""
    sizes = [(n + sum(pad) - k + 1) // 2 for n, k, pad in zip(x_shape[1:3], kernel_hw, pads)]
    return (x_shape[0], *sizes, c_out)


def _call(handler: str, dtype, results, *operands, pads):
    name = f"jaxnets_{handler}{_SUFFIX[jnp.dtype(dtype)]}"
    # vmap runs the call once per mapped element: the handlers know one batch axis only.
    return jax.ffi.ffi_call(name, results, vmap_method="sequential")(*operands, **_attributes(pads))


def _forward_call(x, kernel, pads):
    shape = _pooled_shape(x.shape, kernel.shape[:2], kernel.shape[-1], pads)
    return _call("ConvPoolForward", x.dtype, (jax.ShapeDtypeStruct(shape, x.dtype), jax.ShapeDtypeStruct(shape, jnp.int8)),
                 x, kernel, pads=pads)


def _kernel_gradient_call(x, dy, index, kernel_shape, pads):
    return _call("ConvPoolKernelGradient", x.dtype, jax.ShapeDtypeStruct(kernel_shape, x.dtype), x, dy, index, pads=pads)


def _input_gradient_call(kernel, dy, index, x_shape, pads):
    return _call("ConvPoolInputGradient", kernel.dtype, jax.ShapeDtypeStruct(x_shape, kernel.dtype), kernel, dy, index,
                 pads=pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _native_conv_pool(x, kernel, pads):
    return _native_forward(x, kernel, pads)[0]


def _native_forward(x, kernel, pads):
    y, index = _forward_call(x, kernel, pads)
    return y, (x, kernel, index)


def _native_backward(pads, residuals, dy):
    x, kernel, index = residuals
    dy = dy.astype(x.dtype)
    return (_input_gradient_call(kernel, dy, index, x.shape, pads),
            _kernel_gradient_call(x, dy, index, kernel.shape, pads))


_native_conv_pool.defvjp(_native_forward, _native_backward)


def on_cpu(native: Callable[[Array, Array], Array], elsewhere: Callable[[Array, Array], Array], x: Array,
           kernel: Array) -> Array:
    """``native(x, kernel)`` where the computation is lowered for the CPU, ``elsewhere(x, kernel)`` on any other platform."""
    return lax.platform_dependent(x, kernel, cpu=native, default=elsewhere)


def winograd_applies(x_shape: Sequence[int], c_out: int, dtype) -> bool:
    """Whether ``winograd_forward`` / ``winograd_backward`` take a 2-D input of ``x_shape`` with ``c_out`` output
    channels: float32 or float64, input and output channels of 1, 2, 4, 8 or 16 of the library's vectors
    (``VECTOR_BYTES``: 64 with AVX-512, so 16 to 256 float32 channels), with the library ``AVAILABLE``."""
    return (AVAILABLE and len(x_shape) == 4 and jnp.dtype(dtype) in _SUFFIX
            and all(whole_vectors(channels, dtype) for channels in (x_shape[-1], c_out)))


def whole_vectors(channels: int, dtype) -> bool:
    """Whether ``channels`` is 1, 2, 4, 8 or 16 vectors of ``dtype`` (winograd.cc's ``by_vectors``)."""
    lanes = VECTOR_BYTES // jnp.dtype(dtype).itemsize if VECTOR_BYTES else 0
    return lanes > 0 and channels % lanes == 0 and channels // lanes in (1, 2, 4, 8, 16)


def winograd_forward(x: Array, u: Array, pads) -> tuple[Array, Array]:
    """F(2×2, 3×3) convolution + 2×2 max pooling from the kernel's transform ``u`` (16, C_in, C_out): (y, index)."""
    shape = _pooled_shape(x.shape, (3, 3), u.shape[-1], pads)
    return _call("WinogradForward", x.dtype, (jax.ShapeDtypeStruct(shape, x.dtype), jax.ShapeDtypeStruct(shape, jnp.int8)),
                 x, u, pads=pads)


def winograd_backward(x: Array, dy: Array, index: Array, u_t: Array, pads) -> tuple[Array, Array]:
    """The transformed kernel's gradient ∂U (16, C_in, C_out) and ∂x, from ``u_t`` = Uᵀ (16, C_out, C_in)."""
    du = jax.ShapeDtypeStruct((16, u_t.shape[2], u_t.shape[1]), x.dtype)
    return _call("WinogradBackward", x.dtype, (du, jax.ShapeDtypeStruct(x.shape, x.dtype)), x, dy, index, u_t,
                 pads=pads)


def convolve_max_pool(x: Array, kernel: Array, pads: tuple[tuple[int, int], tuple[int, int]],
                      elsewhere: Callable[[Array, Array], Array]) -> Array:
    """max_pool(x ⋆ kernel, 2×2) at stride 1 with explicit ``pads``, by the C++ kernels on the CPU.

    Call it where ``first_layer_applies``. Ties go to the first maximum in row-major order and a NaN
    in a window makes its pooled value NaN, as in ``jaxnets.kernels.pooling.max_pool``.

    Args:
      x: (N, H, W, C_in), float32 or float64.
      kernel: (k_h, k_w, C_in, C_out), of x's dtype.
      pads: ((top, bottom), (left, right)) zero padding.
      elsewhere: the same function in JAX (with its own VJP), lowered on every platform but the CPU.

    Returns:
      (N, ⌊H_out/2⌋, ⌊W_out/2⌋, C_out).
    """
    return on_cpu(lambda x, k: _native_conv_pool(x, k, pads), elsewhere, x, kernel)


__all__ = ["AVAILABLE", "MAX_INPUT_CHANNELS", "MAX_KERNEL_SIZE", "OUTPUT_CHANNELS", "UNAVAILABLE", "VECTOR_BYTES",
           "convolve_max_pool", "first_layer_applies", "library_path", "missing_vector_feature", "on_cpu",
           "whole_vectors", "winograd_applies", "winograd_backward", "winograd_forward"]
