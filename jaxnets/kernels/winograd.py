"""3×3 convolution fused with 2×2 max pooling by Winograd's minimal filtering, F(2×2, 3×3).

A 2×2 block of a stride-1 3×3 convolution's output needs the 4×4 tile of input
under it. Winograd's algorithm (Lavin and Gray, 2016) computes that block with 16
products per channel pair instead of 36, and the 2×2 block is exactly one window of
a 2×2 max pooling, so the pooling is taken on the block as it comes out. With d a
4×4 input tile, g a 3×3 kernel slice and

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]

the 2×2 output block is Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A. Over channels the
elementwise product becomes 16 matrix products, one per transform position ξ:
M[ξ] = V[ξ] · U[ξ] with V[ξ] (tiles × C_in) from the input and U[ξ] (C_in × C_out)
from the kernel. The backward pass is written by hand in the same transform domain:
∂M = A ∂Y Aᵀ (∂Y is ∂y at each window's first maximum, 0 elsewhere), then
∂U[ξ] = V[ξ]ᵀ·∂M[ξ] (∂W = Gᵀ ∂U G) and ∂V[ξ] = ∂M[ξ]·U[ξ]ᵀ (∂x: the tiles
B ∂V Bᵀ added back where they overlap). Every transform entry is 0, ±1 or ±½, so
with inputs that are small integers (as in the tests) every step is exact.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets.kernels import native
from jaxnets.kernels.conv import chunk_examples, merge_chunks, to_chunks
from jaxnets.kernels.pooling import first_max_index
from jaxnets.kernels.windows import Padding, explicit_padding

Array = jax.Array

_B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
_A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])

#: The batch runs whole when its transformed tiles (input and output, all 16 positions)
#: take at most this many bytes, else in chunks of about this size (a loop over the batch).
#: Set from timing the benchmark CNN's whole step (``python -m experiments.conv_choices``).
WINOGRAD_CHUNK_BYTES = 10 * 2**20
#: Fewest input channels for which the "patches" path takes this algorithm. With fewer (a
#: network's first layer: 1 or 3), the 16 products have almost nothing to add up and the
#: transforms dominate; the patch products stay (``python -m experiments.conv_choices``).
WINOGRAD_MIN_CHANNELS = 8


def applies(kernel_shape: Sequence[int], strides: Sequence[int], window: Sequence[int]) -> bool:
    """Whether the "patches" path computes this convolution + max pooling here.

    It does for a 2-D 3×3 kernel with at least ``WINOGRAD_MIN_CHANNELS`` input channels,
    stride 1 and 2×2 pooling windows.

    Args:
      kernel_shape: (k_h, k_w, C_in, C_out) (or the 1-D (k, C_in, C_out)).
      strides, window: of the convolution and of the pooling, one per spatial axis.

    >>> applies((3, 3, 32, 64), (1, 1), (2, 2)), applies((3, 3, 1, 32), (1, 1), (2, 2))
    (True, False)
    """
    return (len(kernel_shape) == 4 and tuple(kernel_shape[:2]) == (3, 3) and kernel_shape[2] >= WINOGRAD_MIN_CHANNELS
            and tuple(strides) == (1, 1) and tuple(window) == (2, 2))


def _combine(matrix: np.ndarray, terms: Sequence[Array]) -> list[Array]:
    """[Σ_j matrix[i, j]·terms[j] for each row i], skipping zero entries and multiplying by ±1 as signs."""
    rows = []
    for row in matrix:
        total = None
        for coefficient, term in zip(row, terms):
            if coefficient == 0:
                continue
            value = term if coefficient == 1 else -term if coefficient == -1 else term * coefficient
            total = value if total is None else total + value
        rows.append(total)
    return rows


def _geometry(shape: Sequence[int], padding: Padding) -> tuple[tuple[tuple[int, int], ...], int, int]:
    """For an input of ``shape`` (N, H, W, C): (explicit pads, tile rows, tile columns), a tile per pooling window."""
    pads = explicit_padding(shape[1:3], (3, 3), (1, 1), padding)
    rows, cols = (shape[1 + d] + sum(pads[d]) - 2 for d in range(2))
    return pads, rows // 2, cols // 2


def _input_tiles(x: Array, padding: Padding) -> Array:
    """V = Bᵀ d B for every 4×4 input tile (stride 2): (16, N·tiles, C_in), ξ-major."""
    pads, th, tw = _geometry(x.shape, padding)
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    rows = [lax.slice_in_dim(xp, u, u + 2 * th - 1, 2, axis=1) for u in range(4)]
    tiles = []
    for half in _combine(_B_T, rows):
        columns = [lax.slice_in_dim(half, v, v + 2 * tw - 1, 2, axis=2) for v in range(4)]
        tiles += _combine(_B_T, columns)
    return jnp.stack(tiles).reshape(16, -1, x.shape[-1])


def _kernel_tiles(kernel: Array) -> Array:
    """U = G g Gᵀ for every channel pair: (16, C_in, C_out)."""
    g = jnp.asarray(_G, kernel.dtype)
    return jnp.einsum("xa,abio,yb->xyio", g, kernel, g).reshape(16, *kernel.shape[2:])


def _output_blocks(m: Array) -> list[Array]:
    """Y = Aᵀ M A: the 2×2 output block's four entries in row-major (pooling window) order."""
    halves = _combine(_A_T, [m[4 * xi:4 * xi + 4] for xi in range(4)])  # (4, P, O) each, over ν
    return [entry for half in halves for entry in _combine(_A_T, list(half))]


def _forward_chunk(x: Array, u: Array, padding: Padding) -> tuple[Array, Array]:
    _, th, tw = _geometry(x.shape, padding)
    blocks = _output_blocks(jnp.einsum("xpi,xio->xpo", _input_tiles(x, padding), u))
    shape = (x.shape[0], th, tw, u.shape[-1])
    return functools.reduce(jnp.maximum, blocks).reshape(shape), first_max_index(blocks).reshape(shape)


def _output_gradient(dy: Array, index: Array) -> Array:
    """∂M = A ∂Y Aᵀ, with ∂Y = ∂y at each window's first maximum: (16, P, C_out), ξ-major."""
    dy, index = dy.reshape(-1, dy.shape[-1]), index.reshape(-1, dy.shape[-1])
    zero = jnp.zeros((), dy.dtype)
    block = [jnp.where(index == k, dy, zero) for k in range(4)]  # ∂Y[r, c] at 2·r + c
    by_column = [_combine(_A_T.T, [block[c], block[2 + c]]) for c in range(2)]  # [c][ξ]
    return jnp.stack([entry for xi in range(4)
                      for entry in _combine(_A_T.T, [by_column[0][xi], by_column[1][xi]])])


def _input_gradient(dv: Array, x_shape: tuple[int, ...], padding: Padding) -> Array:
    """∂x from ∂V: each tile's B ∂V Bᵀ, added where tiles overlap (stride 2, size 4), padding cut off."""
    n, height, width, c = x_shape
    pads, th, tw = _geometry(x_shape, padding)
    dv = dv.reshape(4, 4, n, th, tw, c)
    halves = _combine(_B_T.T, [dv[xi] for xi in range(4)])            # over the tile row u
    tile = [_combine(_B_T.T, [half[nu] for nu in range(4)]) for half in halves]  # tile[u][v]

    def shifted(a, down, right):  # onto the (th + 1, tw + 1) grid of one row and column parity
        return jnp.pad(a, ((0, 0), (down, 1 - down), (right, 1 - right), (0, 0)))

    # Padded-input row 2k + p (p = 0, 1) gets tile row p of tile k and tile row p + 2 of tile k − 1.
    parity = [[shifted(tile[p][q], 0, 0) + shifted(tile[p + 2][q], 1, 0) + shifted(tile[p][q + 2], 0, 1)
               + shifted(tile[p + 2][q + 2], 1, 1) for q in range(2)] for p in range(2)]
    grid = jnp.stack([jnp.stack(parity[p], axis=3) for p in range(2)], axis=2)
    dxp = grid.reshape(n, 2 * th + 2, 2 * tw + 2, c)
    full = [size + sum(pad) for size, pad in zip((height, width), pads)]
    dxp = jnp.pad(dxp, ((0, 0), (0, full[0] - 2 * th - 2), (0, full[1] - 2 * tw - 2), (0, 0)))
    return dxp[:, pads[0][0]:pads[0][0] + height, pads[1][0]:pads[1][0] + width, :]


def _backward_chunk(x: Array, dy: Array, index: Array, u: Array, padding: Padding) -> tuple[Array, Array]:
    dm = _output_gradient(dy, index)
    accumulate = jnp.promote_types(u.dtype, jnp.float32)
    du = jnp.einsum("xpi,xpo->xio", _input_tiles(x, padding), dm, preferred_element_type=accumulate)
    dx = _input_gradient(jnp.einsum("xpo,xio->xpi", dm, u), x.shape, padding)
    return du, dx


def examples_per_chunk(x: Array, c_out: int, padding: Padding) -> int:
    """All N when the transformed tiles of the batch fit ``WINOGRAD_CHUNK_BYTES``, else a chunk that does.

    >>> examples_per_chunk(jnp.ones((256, 14, 14, 32), jnp.float32), 64, "SAME")
    32
    """
    _, th, tw = _geometry(x.shape, padding)
    return chunk_examples(x.shape[0], 16 * th * tw * (x.shape[-1] + c_out) * x.dtype.itemsize,
                          whole_batch_bytes=WINOGRAD_CHUNK_BYTES, chunk_bytes=WINOGRAD_CHUNK_BYTES)


def convolve_max_pool(x: Array, kernel: Array, padding: Padding = "SAME") -> Array:
    """max_pool(x ⋆ kernel, 2) for a 3×3 kernel at stride 1, by F(2×2, 3×3), with its hand-written VJP.

    Windows tile the convolution output (a last odd row or column is dropped, as the
    pooling drops it); ties go to the first maximum in row-major order, as in
    ``jaxnets.kernels.pooling.max_pool``.

    Args:
      x: (N, H, W, C_in), N ≥ 1, with a convolution output of at least 2×2.
      kernel: (3, 3, C_in, C_out).
      padding: "SAME", "VALID" or an integer p.

    Returns:
      (N, ⌊H_out/2⌋, ⌊W_out/2⌋, C_out).

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> convolve_max_pool(x, jnp.ones((3, 3, 1, 1)))[0, :, :, 0].tolist()
    [[45.0, 54.0], [81.0, 90.0]]
    """
    chunk = examples_per_chunk(x, kernel.shape[-1], padding)

    def in_jax(x, kernel):
        return _winograd_conv_pool(x, kernel, padding, chunk)

    if native.winograd_applies(x.shape, kernel.shape[-1], x.dtype) and kernel.dtype == x.dtype:
        pads = _geometry(x.shape, padding)[0]
        return native.on_cpu(lambda x, kernel: _winograd_in_cpp(x, kernel, pads), in_jax, x, kernel)
    return in_jax(x, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _winograd_conv_pool(x, kernel, padding, chunk):
    return _winograd_forward(x, kernel, padding, chunk)[0]


def _winograd_forward(x, kernel, padding, chunk):
    u = _kernel_tiles(kernel)
    if chunk >= x.shape[0]:
        y, index = _forward_chunk(x, u, padding)
    else:
        y, index = lax.map(lambda xc: _forward_chunk(xc, u, padding), to_chunks(x, chunk))
        y, index = merge_chunks(y, x.shape[0]), merge_chunks(index, x.shape[0])
    return y, (x, kernel, index)


def _winograd_backward(padding, chunk, residuals, dy):
    x, kernel, index = residuals
    u = _kernel_tiles(kernel)
    accumulate = jnp.promote_types(kernel.dtype, jnp.float32)
    if chunk >= x.shape[0]:
        du, dx = _backward_chunk(x, dy, index, u, padding)
    else:
        def one_chunk(du, inputs):
            du_chunk, dx_chunk = _backward_chunk(*inputs, u, padding)
            return du + du_chunk, dx_chunk  # for a network's first layer nothing reads dx and XLA drops it

        du, dx = lax.scan(one_chunk, jnp.zeros(u.shape, accumulate),
                          tuple(to_chunks(a, chunk) for a in (x, dy, index)))
        dx = merge_chunks(dx, x.shape[0])
    return dx, _kernel_gradient(du, kernel.dtype)


def _kernel_gradient(du: Array, dtype) -> Array:
    """∂W = Gᵀ ∂U G from ∂U (16, C_in, C_out)."""
    g = jnp.asarray(_G, du.dtype)
    return jnp.einsum("xa,xyio,yb->abio", g, du.reshape(4, 4, *du.shape[1:]), g).astype(dtype)


_winograd_conv_pool.defvjp(_winograd_forward, _winograd_backward)


# The same algorithm in C++ (jaxnets.kernels.native, winograd.cc): every step for a group of
# tiles while it is in cache, each of XLA's threads on its own block of examples.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _winograd_in_cpp(x, kernel, pads):
    return native.winograd_forward(x, _kernel_tiles(kernel), pads)[0]


def _winograd_in_cpp_forward(x, kernel, pads):
    y, index = native.winograd_forward(x, _kernel_tiles(kernel), pads)
    return y, (x, kernel, index)


def _winograd_in_cpp_backward(pads, residuals, dy):
    x, kernel, index = residuals
    u_t = jnp.swapaxes(_kernel_tiles(kernel), 1, 2)
    du, dx = native.winograd_backward(x, dy.astype(x.dtype), index, u_t, pads)
    return dx, _kernel_gradient(du, kernel.dtype)


_winograd_in_cpp.defvjp(_winograd_in_cpp_forward, _winograd_in_cpp_backward)


__all__ = ["WINOGRAD_CHUNK_BYTES", "WINOGRAD_MIN_CHANNELS", "applies", "convolve_max_pool", "examples_per_chunk"]
