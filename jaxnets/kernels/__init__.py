"""Hand-written CPU kernels for convolution and pooling, behind one switch.

Every function here takes ``impl`` = "auto", "xla" or "patches" (``CONV_IMPLS``;
``resolve`` says what "auto" picks on a backend) and gives the same values and
gradients on both paths:

- ``"xla"``: ``lax.conv_general_dilated`` and ``lax.reduce_window``, what
  ``flax.linen.Conv`` and ``flax.linen.max_pool`` run; "auto" on every backend but the CPU.
- ``"patches"``: the kernels of this package, "auto" on the CPU: the convolution as
  patch-matrix products with a hand-written VJP, processed in chunks of examples
  (``conv``); pooling over strided views with custom JVPs that keep the first-maximum
  tie rule (``pooling``); convolution and max pooling fused (``fused``), for a 3×3
  kernel at stride 1 by Winograd's minimal filtering (``winograd``); on the CPU both fused
  convolutions run in C++ through XLA's FFI (``native``).

Modules:
  select: ``CONV_IMPLS``, ``resolve``: the switch.
  windows: padding and output sizes, shared by both paths.
  conv: ``convolve``, ``extract_patches``, the chunking.
  pooling: ``max_pool``, ``avg_pool``, ``global_avg_pool``.
  fused: ``conv_bias_act_pool`` (one convolution block, the only place that reorders
    pooling and the activation) and ``convolve_max_pool``.
  winograd: 3×3 convolution + 2×2 max pooling by F(2×2, 3×3), with its VJP.
  native: the C++ kernels (conv_pool.cc: a first layer + 2×2 max pooling; winograd.cc), loaded
    and registered with XLA, and the first layer's VJP.

The models (``jaxnets.models.Conv``, ``CNN``) pass their ``conv_impl`` here and hold
no other implementation choice; this package is the only one in jaxnets that defines
custom differentiation rules (tests/test_cnn.py checks it).

>>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
>>> w = jnp.arange(4.0).reshape(2, 2, 1, 1)
>>> [convolve(x, w, padding="VALID", impl=impl)[0, :, :, 0].tolist() for impl in ("xla", "patches")]
[[[19.0, 25.0], [37.0, 43.0]], [[19.0, 25.0], [37.0, 43.0]]]
"""
from __future__ import annotations

import jax.numpy as jnp  # noqa: F401  (the doctest uses it)

from jaxnets.kernels.conv import convolve, extract_patches
from jaxnets.kernels.fused import conv_bias_act_pool, convolve_max_pool
from jaxnets.kernels.pooling import avg_pool, global_avg_pool, max_pool
from jaxnets.kernels.select import CONV_IMPLS, check_impl, resolve

__all__ = ["CONV_IMPLS", "avg_pool", "check_impl", "conv_bias_act_pool", "convolve", "convolve_max_pool",
           "extract_patches", "global_avg_pool", "max_pool", "resolve"]
