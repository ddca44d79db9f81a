"""The one switch: which implementation of convolution and pooling runs on which backend.

``conv_impl`` (on ``CNN``, ``LeNet``, ``CNN1D``) and ``impl`` (on ``Conv`` and the
functions of this package) take one of ``CONV_IMPLS``:

- ``"xla"``: ``lax.conv_general_dilated`` and ``lax.reduce_window``, what
  ``flax.linen.Conv`` and ``flax.linen.max_pool`` run.
- ``"patches"``: the hand-written kernels of this package (patch-matrix products for
  the convolution, strided views for the pooling, the two fused for conv + max pool).
- ``"auto"``: ``"patches"`` on the CPU, ``"xla"`` on every other backend.
"""
from __future__ import annotations

import jax

#: Implementations of convolution and pooling (see the module docstring).
CONV_IMPLS = ("auto", "xla", "patches")


def check_impl(impl: str, field: str = "impl") -> str:
    """Return ``impl`` if it is one of ``CONV_IMPLS``, else raise a one-line ValueError.

    Args:
      impl: the value to check.
      field: the name used in the error message.

    Returns:
      ``impl``.

    >>> check_impl("xla")
    'xla'
    """
    if not isinstance(impl, str) or impl not in CONV_IMPLS:
        raise ValueError(f"{field}: got {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
    return impl


def resolve(impl: str, backend: str | None = None) -> str:
    """The implementation ``impl`` stands for on ``backend``, for convolution and pooling alike.

    "auto" is "patches" on the CPU, where XLA's convolution gradients and its
    ``reduce_window`` max-pooling gradient run far below its matrix products
    (docs/architectures/cnn.md, "The CPU seam"), and "xla" on every other backend
    ("gpu", "cuda", "rocm", "tpu", ...): cuDNN and the TPU's convolution units are
    fast, and the hand-written kernels were tuned and measured on a CPU only.

    Args:
      impl: one of ``CONV_IMPLS``.
      backend: "cpu", "gpu", "tpu", ...; ``None`` reads ``jax.default_backend()``.

    Returns:
      "xla" or "patches".

    >>> resolve("auto", "cpu"), resolve("auto", "gpu")
    ('patches', 'xla')
    >>> resolve("patches", "tpu")
    'patches'
    """
    check_impl(impl)
    if impl != "auto":
        return impl
    return "patches" if (backend or jax.default_backend()) == "cpu" else "xla"


__all__ = ["CONV_IMPLS", "check_impl", "resolve"]
