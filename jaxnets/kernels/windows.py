"""Sliding-window geometry shared by convolution and pooling, on both paths: padding, output sizes, strided views.

Layout is channels-last: (N, H, W, C) for images, (N, L, C) for signals. Output size
per spatial axis, for input size n, window k, stride s: SAME ⌈n/s⌉ (zero padding split
as evenly as possible, the extra one after); VALID ⌊(n − k)/s⌋ + 1; an integer padding p
on both sides ⌊(n + 2p − k)/s⌋ + 1.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import jax
from jax import lax

Array = jax.Array
Padding = str | int

#: Padding names; an integer p >= 0 (p zeros on both sides) is accepted too.
PADDINGS = ("SAME", "VALID")


def is_int(value: Any) -> bool:
    """True for a Python int that is not a bool."""
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
    if is_int(padding) and padding >= 0:
        return padding
    raise ValueError(f"{field}: got {padding!r}; allowed: SAME, VALID or an integer >= 0")


def as_tuple(value: int | Sequence[int], ndim: int, field: str) -> tuple[int, ...]:
    """An int broadcast to ``ndim`` axes, or a sequence of ``ndim`` ints >= 1."""
    values = (value,) * ndim if is_int(value) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != ndim or not all(is_int(v) and v >= 1 for v in values):
        raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1 or {ndim} such ints")
    return values


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
    if is_int(padding):
        return tuple((padding, padding) for _ in spatial_shape)
    return tuple(lax.padtype_to_pads(tuple(spatial_shape), tuple(kernel_size), tuple(strides),
                                     "SAME"))


def shifted_views(padded: Array, window: Sequence[int], strides: Sequence[int],
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


# is_int, as_tuple and shifted_views are shared inside jaxnets (kernels, models), not user API.
__all__ = ["PADDINGS", "Padding", "conv_output_size", "explicit_padding", "normalize_padding"]
