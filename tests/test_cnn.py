"""Convolutional networks, pooling, dropout and batch normalization.

References are independent of the code under test: a NumPy loop over output
positions for convolution and pooling, NumPy batch statistics for batch norm,
hand-written parameter formulas, and float64 finite differences (check_grads).
"""
import doctest
import json
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxnets as jn
from jaxnets import kernels
from jaxnets.kernels import (avg_pool, conv, conv_bias_act_pool, convolve, fused, global_avg_pool, max_pool,
                             pooling, select, windows, winograd)
from jaxnets.models import CNN, CNN1D, Conv, LeNet, cnn, get_model, regularizers
from jaxnets.models import conv as conv_layer
from jaxnets.models.regularizers import make_batch_norm, make_dropout
from jaxnets.tree import count_params, params_sha256

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("xla", "patches")


# ---------------------------------------------------------------- NumPy references


def np_pads(spatial, window, strides, padding):
    """(low, high) per axis: SAME as XLA/TensorFlow, VALID none, int p on both sides."""
    pads = []
    for n, k, s in zip(spatial, window, strides):
        if padding == "VALID":
            pads.append((0, 0))
        elif padding == "SAME":
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        else:
            pads.append((padding, padding))
    return pads


def np_conv(x, w, strides, padding):
    """y[n, i, o] = Σ_{window, c} x_padded[n, s·i + window, c] · w[window, c, o], by loops."""
    nd = x.ndim - 2
    window = w.shape[:nd]
    strides = (strides,) * nd if isinstance(strides, int) else strides
    xp = np.pad(x, [(0, 0), *np_pads(x.shape[1:-1], window, strides, padding), (0, 0)])
    out = [(xp.shape[1 + d] - window[d]) // strides[d] + 1 for d in range(nd)]
    y = np.zeros((x.shape[0], *out, w.shape[-1]))
    for index in np.ndindex(*out):
        field = tuple(slice(i * s, i * s + k) for i, s, k in zip(index, strides, window))
        patch = xp[(slice(None), *field)]  # (N, *window, C)
        y[(slice(None), *index)] = np.tensordot(patch, w, axes=(list(range(1, nd + 2)),
                                                                list(range(nd + 1))))
    return y


def np_pool(x, window, strides, padding, op):
    """Max (padding = −∞) or mean over the real entries of each window, by loops."""
    nd = x.ndim - 2
    pads = np_pads(x.shape[1:-1], window, strides, padding)
    fill = -np.inf if op == "max" else np.nan
    xp = np.pad(x.astype(np.float64), [(0, 0), *pads, (0, 0)], constant_values=fill)
    out = [(xp.shape[1 + d] - window[d]) // strides[d] + 1 for d in range(nd)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    axes = tuple(range(1, nd + 1))
    for index in np.ndindex(*out):
        field = tuple(slice(i * s, i * s + k) for i, s, k in zip(index, strides, window))
        block = xp[(slice(None), *field)]
        y[(slice(None), *index)] = block.max(axis=axes) if op == "max" else np.nanmean(block, axes)
    return y


def np_first_max_grad(x, window):
    """Gradient of Σ max_pool(x) for non-overlapping windows: 1 at each window's first maximum."""
    grad = np.zeros_like(x)
    nd = x.ndim - 2
    out = [n // k for n, k in zip(x.shape[1:-1], window)]
    for n in range(x.shape[0]):
        for c in range(x.shape[-1]):
            for index in np.ndindex(*out):
                field = tuple(slice(i * k, i * k + k) for i, k in zip(index, window))
                block = x[(n, *field, c)]
                first = np.unravel_index(np.argmax(block), block.shape)  # argmax: first max
                grad[(n, *(i * k + f for i, k, f in zip(index, window, first)), c)] = 1.0
    return grad


# ---------------------------------------------------------------- convolution


@pytest.mark.parametrize("impl", IMPLS)
def test_slides_example_through_the_conv_layer(impl):
    # Input 0..8 as a 3x3 image, kernel [[0, 1], [2, 3]], VALID, no bias (the slides).
    layer = Conv(features=1, kernel_size=2, padding="VALID", use_bias=False, impl=impl)
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    variables = {"params": {"kernel": jnp.arange(4.0).reshape(2, 2, 1, 1)}}
    assert layer.apply(variables, x)[0, :, :, 0].tolist() == [[19.0, 25.0], [37.0, 43.0]]


CONV_CASES = [  # x shape, kernel window, C_out, strides, padding
    ((1, 7, 2), (3,), 3, 1, "SAME"),
    ((3, 8, 2), (4,), 2, 2, "SAME"),
    ((3, 9, 1), (5,), 2, 2, "VALID"),
    ((3, 40, 1), (5,), 4, 2, 1),
    ((1, 5, 5, 2), (3, 3), 3, 1, "SAME"),
    ((3, 6, 7, 2), (2, 2), 2, 1, "VALID"),
    ((3, 8, 8, 1), (4, 4), 3, 2, "SAME"),
    ((1, 7, 6, 3), (3, 2), 2, (2, 1), "VALID"),
    ((3, 9, 9, 2), (3, 3), 4, 2, 1),
    ((3, 6, 6, 2), (2, 3), 2, 2, "SAME"),
    ((1, 4, 4, 3), (1, 1), 2, 1, "SAME"),
]


@pytest.mark.parametrize("shape, window, c_out, strides, padding", CONV_CASES)
def test_patches_equals_xla_and_numpy_values_and_gradients_float64(shape, window, c_out,
                                                                   strides, padding):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape)
    w = rng.normal(size=(*window, shape[-1], c_out))
    expected = np_conv(x, w, strides, padding)
    cotangent = rng.normal(size=expected.shape)

    def values_and_grads(xx, ww, impl):
        y, pullback = jax.vjp(lambda a, b: convolve(a, b, strides, padding, impl), xx, ww)
        return y, pullback(jnp.asarray(cotangent))

    with jax.enable_x64(True):
        results = {impl: jax.jit(values_and_grads, static_argnums=2)(
            jnp.asarray(x), jnp.asarray(w), impl) for impl in IMPLS}
    for impl, (y, _) in results.items():
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(results["xla"][1], results["patches"][1]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, window, c_out, strides, padding", CONV_CASES[::5])
def test_patches_equals_xla_float32(shape, window, c_out, strides, padding):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*window, shape[-1], c_out)), jnp.float32)
    y_xla, y_patches = (convolve(x, w, strides, padding, impl) for impl in IMPLS)
    assert y_patches.dtype == jnp.float32
    np.testing.assert_allclose(y_patches, y_xla, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape, window, strides, padding",
                         [((2, 5, 5, 2), (3, 3), 2, "SAME"), ((2, 9, 2), (3,), 1, 1)])
def test_conv_check_grads_float64(impl, shape, window, strides, padding):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(size=shape))
        w = jnp.asarray(rng.normal(size=(*window, shape[-1], 3)))
        f = jax.jit(lambda a, b: jnp.sum(jnp.tanh(convolve(a, b, strides, padding, impl))))
        check_grads(f, (x, w), order=1, modes=("rev",))


def test_conv_layer_parameters_are_the_same_for_both_impls():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)
    layers = [Conv(features=4, kernel_size=(3, 2), strides=2, impl=impl) for impl in IMPLS]

    @jax.jit
    def run(a):
        v_xla, v_patches = (layer.init(jax.random.key(0), a) for layer in layers)
        # A checkpoint of one runs in the other.
        return v_xla, v_patches, layers[0].apply(v_xla, a), layers[1].apply(v_xla, a)

    v_xla, v_patches, y_xla, y_patches = run(x)
    assert jax.tree.map(jnp.shape, v_xla) == jax.tree.map(jnp.shape, v_patches) == \
        {"params": {"bias": (4,), "kernel": (3, 2, 3, 4)}}
    assert params_sha256(v_xla) == params_sha256(v_patches)
    np.testing.assert_allclose(y_patches, y_xla, rtol=1e-5, atol=1e-5)


def test_conv_dtypes_and_flax_equivalence():
    import flax.linen as nn

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 7, 3)), jnp.float32)
    ours = Conv(features=5, kernel_size=3, strides=2, padding="SAME", impl="patches")
    theirs = nn.Conv(features=5, kernel_size=(3, 3), strides=(2, 2), padding="SAME")
    half = Conv(features=5, dtype=jnp.bfloat16, param_dtype=jnp.float32)

    @jax.jit
    def run(a):
        variables = ours.init(jax.random.key(0), a)
        v_half = half.init(jax.random.key(0), a)
        return (ours.apply(variables, a), theirs.apply(variables, a),
                v_half["params"]["kernel"], half.apply(v_half, a))

    y_ours, y_flax, half_kernel, y_half = run(x)
    np.testing.assert_allclose(y_ours, y_flax, rtol=1e-5, atol=1e-5)
    assert half_kernel.dtype == jnp.float32 and y_half.dtype == jnp.bfloat16


@pytest.mark.parametrize("backend", ["cpu", "gpu", "cuda", "rocm", "tpu"])
def test_auto_picks_the_hand_written_paths_on_cpu_only(backend):
    assert kernels.resolve("auto", backend) == ("patches" if backend == "cpu" else "xla")
    for impl in ("xla", "patches"):  # an explicit choice is kept on every backend
        assert kernels.resolve(impl, backend) == impl
    for bad in ("fast", "slices", "reduce_window", None):
        with pytest.raises(ValueError, match=r"^impl: got .*; allowed: auto, xla, patches$"):
            kernels.resolve(bad, backend)


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_auto_layers_follow_the_default_backend(monkeypatch, backend):
    """A CNN built with the defaults runs XLA's convolution and reduce_window off the CPU only."""
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    x = jnp.ones((2, 8, 8, 1))
    for model in (CNN(output_dim=3, channels=(2,), dense=()),  # max pooling fused into the conv
                  CNN(output_dim=3, channels=(2,), dense=(), pool="avg"),
                  CNN(output_dim=3, channels=(2,), dense=(), batch_norm=True)):  # pooled after BN
        variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, x)
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda v: model.apply(v, x).sum()))(variables))
        assert ("conv_general_dilated" in jaxpr) == (backend != "cpu")
        assert ("reduce_window" in jaxpr) == (backend != "cpu")


@pytest.mark.parametrize("n", [1, 7, 64])
def test_patches_path_chunks_the_batch_and_keeps_values_and_gradients(monkeypatch, n):
    """Chunks of a few examples (padded when they cannot tile the batch) give XLA's values and gradients."""
    # Stride 2 on 6x6: 3x3 positions, patch width 3·3·3 = 27, float64: 1944 bytes per example.
    monkeypatch.setattr(conv, "PATCH_CHUNK_BYTES", 3 * 9 * 27 * 8)
    monkeypatch.setattr(conv, "PATCH_WHOLE_BATCH_BYTES", 3 * 9 * 27 * 8)  # more than 3 examples: chunks
    with jax.enable_x64(True):
        # 1: the whole batch fits; 7 (prime): chunks of 3, the last padded; 64: chunks of 2 tile it exactly.
        assert conv.examples_per_chunk(jnp.ones((n, 6, 6, 3)), jnp.ones((3, 3, 3, 4)), (2, 2), "SAME") \
            == {1: 1, 7: 3, 64: 2}[n]
        rng = np.random.default_rng(n)
        x = jnp.asarray(rng.normal(size=(n, 6, 6, 3)))
        w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
        probe = jnp.asarray(rng.normal(size=(n, 3, 3, 4)))

        def loss(impl):
            return lambda a, b: jnp.sum(jnp.tanh(convolve(a, b, 2, "SAME", impl)) * probe)

        values = {impl: jax.jit(jax.value_and_grad(loss(impl), argnums=(0, 1)))(x, w) for impl in ("xla", "patches")}
        np.testing.assert_allclose(values["patches"][0], values["xla"][0], rtol=1e-12)
        for got, want in zip(values["patches"][1], values["xla"][1]):
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
        check_grads(jax.jit(loss("patches")), (x, w), order=1, modes=("rev",))


FUSED_CASES = [  # x shape, kernel window, C_out, strides, padding, pool window, examples per chunk
    ((6, 9, 8, 2), (3, 3), 4, 1, "SAME", 2, 2),        # 9 rows: a remainder row is dropped
    ((5, 8, 8, 2), (3, 3), 3, 1, "SAME", 2, 5),        # the whole batch at once
    ((7, 10, 10, 1), (3, 3), 3, 1, "VALID", (3, 2), 3),  # uneven windows, last chunk padded
    ((6, 13, 3), (3,), 5, 2, 1, 2, 3),                 # 1-D, strided convolution
]


@pytest.mark.parametrize("shape, window, c_out, strides, padding, pool, chunk", FUSED_CASES)
def test_fused_conv_max_pool_equals_conv_then_reduce_window_float64(shape, window, c_out, strides,
                                                                    padding, pool, chunk, monkeypatch):
    """Values and gradients of the fused path equal XLA's convolution + reduce_window, ties included."""
    rng = np.random.default_rng(sum(shape))
    # Integer inputs and kernels: many exact ties inside the pooling windows.
    x = rng.integers(-1, 2, size=shape).astype(np.float64)
    w = rng.integers(-1, 2, size=(*window, shape[-1], c_out)).astype(np.float64)
    per_example = math.prod(windows.conv_output_size(n, k, s, padding) for n, k, s in
                            zip(shape[1:-1], window, np.broadcast_to(strides, len(window)))) \
        * (math.prod(window) * shape[-1] + c_out) * 8
    monkeypatch.setattr(conv, "PATCH_CHUNK_BYTES", chunk * per_example)
    monkeypatch.setattr(conv, "PATCH_WHOLE_BATCH_BYTES", chunk * per_example)
    with jax.enable_x64(True):
        xx, ww = jnp.asarray(x), jnp.asarray(w)
        assert conv.examples_per_chunk(xx, ww, windows.as_tuple(strides, len(window), "strides"), padding,
                                       with_output=True) == chunk

        def reference(a, b):
            return max_pool(convolve(a, b, strides, padding, "xla"), pool, impl="xla")

        def fused_path(a, b):
            return fused.convolve_max_pool(a, b, pool, strides, padding, "patches")

        y_ref, pull_ref = jax.vjp(reference, xx, ww)
        y_fused, pull_fused = jax.jit(lambda a, b: jax.vjp(fused_path, a, b))(xx, ww)
        probe = jnp.asarray(rng.normal(size=y_ref.shape))
        np.testing.assert_array_equal(np.asarray(y_fused), np.asarray(y_ref))
        for got, want in zip(pull_fused(probe), pull_ref(probe)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
        jaxpr = str(jax.make_jaxpr(fused_path)(xx, ww))
        assert "conv_general_dilated" not in jaxpr and "reduce_window" not in jaxpr


WINOGRAD_CASES = [  # x shape, C_out, padding, examples per chunk
    ((6, 9, 8, 8), 4, "SAME", 2),      # 9 rows: a remainder row of the convolution output is dropped
    ((5, 7, 7, 9), 3, "VALID", 5),     # the whole batch at once; 5x5 output, remainders dropped
    ((7, 6, 10, 8), 5, 1, 3),          # integer padding; chunks of 3, the last one padded
    ((2, 4, 4, 16), 2, 2, 1),          # wide padding, one example per chunk
]


def _winograd_chunk_bytes(shape, c_out, padding, chunk):
    """The ``WINOGRAD_CHUNK_BYTES`` that gives ``chunk`` examples per chunk in float64."""
    pads = windows.explicit_padding(shape[1:3], (3, 3), (1, 1), padding)
    tiles = math.prod((n + sum(p) - 2) // 2 for n, p in zip(shape[1:3], pads))
    return chunk * 16 * tiles * (shape[-1] + c_out) * 8


@pytest.mark.parametrize("shape, c_out, padding, chunk", WINOGRAD_CASES)
def test_winograd_conv_max_pool_equals_conv_then_reduce_window_float64(shape, c_out, padding, chunk, monkeypatch):
    """F(2x2, 3x3) + pooling: XLA's convolution + reduce_window values exactly (integer inputs, many
    ties) and gradients, random float64 values and gradients, and finite differences."""
    rng = np.random.default_rng(sum(shape) + c_out)
    monkeypatch.setattr(winograd, "WINOGRAD_CHUNK_BYTES", _winograd_chunk_bytes(shape, c_out, padding, chunk))
    with jax.enable_x64(True):
        integers = [jnp.asarray(rng.integers(-1, 2, size=s).astype(np.float64))
                    for s in (shape, (3, 3, shape[-1], c_out))]
        normals = [jnp.asarray(rng.normal(size=a.shape)) for a in integers]
        assert winograd.examples_per_chunk(integers[0], c_out, padding) == chunk

        def reference(a, b):
            return max_pool(convolve(a, b, 1, padding, "xla"), 2, impl="xla")

        def fused_path(a, b):
            return fused.convolve_max_pool(a, b, 2, 1, padding, "patches")

        assert "_winograd_conv_pool" in str(jax.make_jaxpr(fused_path)(*integers))
        for (x, w), exact in ((integers, True), (normals, False)):
            y_ref, pull_ref = jax.vjp(reference, x, w)
            y_got, pull_got = jax.jit(lambda a, b: jax.vjp(fused_path, a, b))(x, w)
            probe = jnp.asarray(rng.normal(size=y_ref.shape))
            if exact:  # every transform entry is 0, ±1 or ±1/2: exact on small integers
                np.testing.assert_array_equal(np.asarray(y_got), np.asarray(y_ref))
            else:
                np.testing.assert_allclose(np.asarray(y_got), np.asarray(y_ref), rtol=1e-12, atol=1e-12)
            for got, want in zip(pull_got(probe), pull_ref(probe)):
                np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
        check_grads(jax.jit(lambda a, b: jnp.sum(jnp.tanh(fused_path(a, b)) * probe)), tuple(normals),
                    order=1, modes=("rev",))


def test_winograd_float32_stays_within_float32_rounding_of_xla():
    """In float32 (the benchmark's dtype) the transforms add rounding, not error: XLA's values within 1e-5."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(37, 14, 14, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 64)) / np.sqrt(9 * 32), jnp.float32)
    probe = jnp.asarray(rng.normal(size=(37, 7, 7, 64)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        ref, pull_ref = jax.vjp(lambda a, b: max_pool(convolve(a, b, impl="xla"), 2, impl="xla"), x, w)
    got, pull_got = jax.vjp(lambda a, b: fused.convolve_max_pool(a, b, 2, impl="patches"), x, w)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(pull_got(probe), pull_ref(probe)):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


def _traced_shapes(jaxpr) -> set[tuple[int, ...]]:
    """Shapes of every value a jaxpr computes, inside its sub-jaxprs (loops, custom rules) too."""
    shapes = set()
    for eqn in jaxpr.eqns:
        shapes |= {tuple(v.aval.shape) for v in eqn.outvars}
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    shapes |= _traced_shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    shapes |= _traced_shapes(sub)
    return shapes


def test_winograd_never_forms_the_full_resolution_convolution_output():
    """The docs' promise: forward and backward work on pooled blocks and transformed tiles only."""
    n, c_out = 4, 6
    x, w = jnp.ones((n, 10, 12, 8)), jnp.ones((3, 3, 8, c_out))

    def loss(a, b):
        return fused.convolve_max_pool(a, b, 2, impl="patches").sum()

    shapes = _traced_shapes(jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(x, w).jaxpr)
    assert (n, 5, 6, c_out) in shapes  # the pooled map
    assert not {(n, 10, 12, c_out), (n * 10 * 12, c_out), (n, 5, 2, 6, 2, c_out)} & shapes
    first_layer = jax.make_jaxpr(loss)(jnp.ones((n, 10, 12, 1)), jnp.ones((3, 3, 1, c_out)))
    assert (n, 10, 12, c_out) in _traced_shapes(first_layer.jaxpr)  # the check can fail: patch products form it


@pytest.mark.parametrize("kernel_shape, strides, window, expected", [
    ((3, 3, 8, 4), (1, 1), (2, 2), True),
    ((3, 3, winograd.WINOGRAD_MIN_CHANNELS - 1, 4), (1, 1), (2, 2), False),  # a first layer: patch products
    ((5, 5, 8, 4), (1, 1), (2, 2), False),
    ((3, 3, 8, 4), (2, 2), (2, 2), False),
    ((3, 3, 8, 4), (1, 1), (3, 3), False),
    ((3, 8, 4), (1,), (2,), False),                                     # 1-D
])
def test_winograd_runs_only_where_it_applies(kernel_shape, strides, window, expected):
    assert winograd.applies(kernel_shape, strides, window) is expected
    x = jnp.ones((2, *(8,) * (len(kernel_shape) - 2), kernel_shape[-2]))
    jaxpr = str(jax.make_jaxpr(lambda a, b: fused.convolve_max_pool(a, b, window, strides, impl="patches"))(
        x, jnp.ones(kernel_shape)))
    assert ("_winograd_conv_pool" in jaxpr) is expected


def test_fused_conv_max_pool_falls_back_to_the_two_calls():
    """XLA convolutions, empty batches and maps smaller than a window run convolve, then max_pool."""
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    expected = max_pool(convolve(x, w, impl="xla"), 2, impl="xla")
    got = fused.convolve_max_pool(x, w, 2, impl="xla")
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda a, b: fused.convolve_max_pool(a, b, 2, impl="xla"))(x, w))
    assert "conv_general_dilated" in jaxpr and "reduce_window" in jaxpr
    assert fused.convolve_max_pool(jnp.ones((0, 8, 8, 3)), w, 2, impl="patches").shape == (0, 4, 4, 4)
    with pytest.raises(ValueError, match=r"^x: got spatial shape \(2, 2\); allowed: at least the pooling window"):
        fused.convolve_max_pool(jnp.ones((1, 2, 2, 3)), w, 3, impl="patches")
    with pytest.raises(ValueError, match=r"^impl: got 'slices'; allowed: auto, xla, patches$"):
        fused.convolve_max_pool(x, w, 2, impl="slices")
    with pytest.raises(ValueError, match=r"^window: got 0; allowed"):
        fused.convolve_max_pool(x, w, 0)


BLOCK_CASES = [  # activation, max_commutes, pool, with a normalization, x shape
    ("relu", True, "max", False, (5, 9, 8, 2)),         # pooled first and fused on "patches"
    ("leaky_relu", True, "max", False, (4, 11, 2)),     # 1-D, a remainder dropped
    ("identity", True, "max", False, (3, 6, 6, 1)),
    ("tanh", False, "max", False, (3, 8, 8, 2)),        # conv, bias, tanh, pool in this order
    ("relu", True, "avg", False, (3, 8, 8, 2)),
    ("relu", True, None, False, (3, 7, 7, 2)),
    ("relu", True, "max", True, (3, 8, 8, 2)),          # a normalization in between: not reordered
]


@pytest.mark.parametrize("activation, max_commutes, pool, normalized, shape", BLOCK_CASES)
def test_conv_bias_act_pool_equals_the_literal_block_on_both_paths_float64(activation, max_commutes, pool,
                                                                           normalized, shape):
    """pool(g(normalize(x ⋆ W) + b)) computed op by op with XLA, against both paths: values and gradients."""
    from jaxnets.models.activations import get_activation

    g = get_activation(activation)
    rng = np.random.default_rng(sum(shape))
    window = (3,) * (len(shape) - 2)
    normalize = (lambda z: 2.0 * z - 0.5) if normalized else None
    with jax.enable_x64(True):
        # Integer inputs, kernels and biases: many exact ties inside the pooling windows.
        x = jnp.asarray(rng.integers(-1, 2, size=shape), jnp.float64)
        w = jnp.asarray(rng.integers(-1, 2, size=(*window, shape[-1], 3)), jnp.float64)
        b = jnp.asarray(rng.integers(-2, 3, size=3), jnp.float64)

        def literal(a, k, c):
            z = lax_conv(a, k)
            z = normalize(z) if normalize else z
            z = g(z + c)
            if pool is None:
                return z
            dims = (1, *(2,) * len(window), 1)
            init, op = (-np.inf, jax.lax.max) if pool == "max" else (0.0, jax.lax.add)
            y = jax.lax.reduce_window(z, np.float64(init), op, dims, dims, "VALID")
            return y if pool == "max" else y / 2 ** len(window)

        def block(impl):
            return lambda a, k, c: conv_bias_act_pool(a, k, c, normalize=normalize, activation=g,
                                                      max_commutes=max_commutes, pool=pool, impl=impl)

        y_ref, pull_ref = jax.vjp(literal, x, w, b)
        probe = jnp.asarray(rng.normal(size=y_ref.shape))
        want = pull_ref(probe)
        for impl in ("xla", "patches"):
            y, pull = jax.jit(lambda a, k, c, impl=impl: jax.vjp(block(impl), a, k, c))(x, w, b)
            np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
            for got, expected in zip(pull(probe), want):
                np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-12, atol=1e-12)
        jaxpr = str(jax.make_jaxpr(block("patches"))(x, w, b))
        assert "conv_general_dilated" not in jaxpr and "reduce_window" not in jaxpr


def lax_conv(x, w):
    """XLA's convolution, SAME padding, stride 1 (the reference of the block tests)."""
    spec = ("NHWC", "HWIO", "NHWC") if x.ndim == 4 else ("NWC", "WIO", "NWC")
    return jax.lax.conv_general_dilated(x, w, (1,) * (x.ndim - 2), "SAME", dimension_numbers=spec)


def test_conv_bias_act_pool_rejects_bad_options_in_one_line():
    x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"^pool: got 'min'; allowed: max, avg, None$"):
        conv_bias_act_pool(x, w, pool="min")
    with pytest.raises(ValueError, match=r"^max_commutes: got 1; allowed: True, False$"):
        conv_bias_act_pool(x, w, max_commutes=1)
    with pytest.raises(ValueError, match=r"^impl: got 'cudnn'; allowed: auto, xla, patches$"):
        conv_bias_act_pool(x, w, impl="cudnn")


# ---------------------------------------------------------------- pooling


POOL_CASES = [  # shape, window, strides, padding, windows tile the input
    ((2, 4, 6, 3), (2, 2), (2, 2), "VALID", True),
    ((2, 7, 5, 2), (2, 2), (2, 2), "VALID", True),    # remainder row/column dropped
    ((2, 6, 6, 1), (3, 2), (3, 2), "SAME", True),     # divisible: no padding needed
    ((3, 9, 2), (3,), (3,), "VALID", True),
    ((2, 5, 5, 2), (2, 2), (2, 2), "SAME", False),    # needs padding
    ((2, 6, 6, 1), (3, 3), (2, 2), "VALID", False),   # overlapping windows
    ((2, 6, 6, 1), (2, 2), (2, 2), 1, False),
    ((3, 10, 2), (4,), (3,), "SAME", False),
]


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("shape, window, strides, padding, tiles", POOL_CASES)
def test_pooling_values_match_numpy_for_both_impls(op, shape, window, strides, padding, tiles):
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    expected = np_pool(x, window, strides, padding, op)
    pool = max_pool if op == "max" else avg_pool
    for impl in ("patches", "xla", "auto"):
        got = pool(jnp.asarray(x), window, strides, padding, impl=impl)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"^impl: got 'reshape'; allowed: auto, xla, patches$"):
        pool(jnp.asarray(x), window, strides, padding, impl="reshape")
    jaxpr = str(jax.make_jaxpr(lambda a: pool(a, window, strides, padding))(x))
    assert "reduce_window" not in jaxpr  # "auto" on CPU is the strided views, whatever the window


def test_global_avg_pool_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(global_avg_pool(jnp.asarray(x)), x.mean(axis=(1, 2)), rtol=1e-6)
    assert global_avg_pool(jnp.ones((2, 7, 3))).shape == (2, 3)


@pytest.mark.parametrize("impl", ["patches", "xla"])
def test_pooling_check_grads_float64(impl):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(2, 4, 6, 2)))
        check_grads(jax.jit(lambda a: jnp.sum(jnp.sin(avg_pool(a, 2, impl=impl)))), (x,),
                    order=1, modes=("rev",))
        # Distinct values 0.1 apart: no ties, so finite differences never flip a maximum.
        distinct = jnp.asarray(0.1 * rng.permutation(2 * 4 * 6 * 2).reshape(2, 4, 6, 2))
        check_grads(jax.jit(lambda a: jnp.sum(jnp.sin(max_pool(a, 2, impl=impl)))),
                    (distinct,), order=1, modes=("rev",))


@pytest.mark.parametrize("shape, window", [((2, 4, 6, 3), (2, 2)), ((2, 9, 2), (3,))])
def test_max_pool_ties_send_the_gradient_to_the_first_maximum(shape, window):
    # Few distinct values: ties are everywhere (as after a ReLU, where many are 0).
    x = np.random.default_rng(5).integers(0, 2, size=shape).astype(np.float32)
    expected = np_first_max_grad(x, window)
    for impl in ("patches", "xla"):
        grad = jax.jit(jax.grad(lambda a, impl=impl: jnp.sum(max_pool(a, window, impl=impl))))(
            jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(grad), expected)
    # Forward mode works too (the patches path's rules are custom JVPs), overlapping windows included.
    tangent = jnp.ones(shape)
    for strides in (window, 1):
        _, out = jax.jit(lambda a, t, s=strides: jax.jvp(lambda b: max_pool(b, window, s, impl="patches"), (a,),
                                                         (t,)))(jnp.asarray(x), tangent)
        np.testing.assert_array_equal(np.asarray(out), 1.0)


@pytest.mark.parametrize("shape, window, strides, padding, tiles", POOL_CASES)
def test_max_pool_gradients_agree_across_impls_with_ties_and_overlaps(shape, window, strides, padding, tiles):
    """Overlapping and padded windows too: both paths route every window's gradient alike."""
    x = np.random.default_rng(3).integers(0, 3, size=shape).astype(np.float32)
    probe = np.random.default_rng(4).normal(size=np.shape(np_pool(x, window, strides, padding, "max")))

    def grad(impl):
        f = lambda a: jnp.sum(max_pool(a, window, strides, padding, impl=impl) * probe)  # noqa: E731
        return np.asarray(jax.jit(jax.grad(f))(jnp.asarray(x)))

    np.testing.assert_allclose(grad("patches"), grad("xla"), rtol=1e-6, atol=1e-6)


def test_max_pool_propagates_nan():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(jnp.nan)
    out = max_pool(x, 2)
    assert bool(jnp.isnan(out[0, 0, 0, 0])) and not bool(jnp.isnan(out[0, 1, 1, 0]))


# ---------------------------------------------------------------- dropout


def test_dropout_is_inverted_and_keeps_the_mean():
    rate, units, draws = 0.3, 1000, 200
    layer = make_dropout(rate, train=True)
    x = jnp.ones((units,))
    outs = jax.vmap(lambda k: layer.apply({}, x, rngs={"dropout": k}))(
        jax.random.split(jax.random.key(0), draws))
    values = np.unique(np.asarray(outs))
    np.testing.assert_allclose(values, [0.0, 1 / (1 - rate)], rtol=1e-6)
    assert abs(float(jnp.mean(outs == 0)) - rate) < 0.01
    assert abs(float(jnp.mean(outs)) - 1.0) < 0.01  # E[x'] = x


def test_dropout_evaluation_identity_and_keys():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 50)), jnp.float32)
    assert np.array_equal(make_dropout(0.5, train=False).apply({}, x), x)
    train = make_dropout(0.5, train=True)
    a, b, c = (train.apply({}, x, rngs={"dropout": jax.random.key(k)}) for k in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Models with dropout: see the fit and train-step tests below (evaluation there
    # runs with train=False and no key at all).


# ---------------------------------------------------------------- batch norm


def test_batch_norm_training_statistics_and_running_average_update():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[3.0, -1.0, 0.0], scale=[2.0, 0.5, 5.0], size=(64, 3)).astype(np.float32)
    momentum, eps = 0.8, 1e-5
    layer = make_batch_norm(train=True, momentum=momentum, epsilon=eps)
    variables = layer.init(jax.random.key(0), jnp.asarray(x))
    old = jax.tree.map(np.asarray, variables["batch_stats"])
    np.testing.assert_array_equal(old["mean"], 0.0)
    np.testing.assert_array_equal(old["var"], 1.0)
    y, updates = layer.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
    y = np.asarray(y, np.float64)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=0), 1.0, rtol=1e-3)
    # Flax uses the BIASED batch variance (1/m)·Σ(x − μ)², for normalizing and for
    # the running average (PyTorch keeps the unbiased one in its running average).
    new = updates["batch_stats"]
    np.testing.assert_allclose(new["mean"], momentum * old["mean"]
                               + (1 - momentum) * x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(new["var"], momentum * old["var"]
                               + (1 - momentum) * x.var(axis=0, ddof=0), rtol=1e-5)
    assert not np.allclose(new["var"], momentum + (1 - momentum) * x.var(axis=0, ddof=1),
                           rtol=1e-4)
    # Evaluation normalizes with the running statistics (and γ, β), not the batch's.
    params = {"scale": jnp.asarray([1.5, 1.0, 0.5]), "bias": jnp.asarray([0.0, 1.0, -2.0])}
    evaluation = make_batch_norm(train=False, momentum=momentum, epsilon=eps)
    z = evaluation.apply({"params": params, "batch_stats": new}, jnp.asarray(x[:5]))
    expected = (np.asarray(params["scale"]) * (x[:5] - np.asarray(new["mean"]))
                / np.sqrt(np.asarray(new["var"]) + eps) + np.asarray(params["bias"]))
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_on_images_normalizes_per_channel():
    x = np.random.default_rng(1).normal(loc=2.0, size=(4, 3, 3, 2)).astype(np.float32)
    layer = make_batch_norm(train=True)
    variables = layer.init(jax.random.key(0), jnp.asarray(x))
    _, updates = layer.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
    np.testing.assert_allclose(updates["batch_stats"]["mean"],
                               (1 - regularizers.BATCH_NORM_MOMENTUM) * x.mean(axis=(0, 1, 2)), rtol=1e-5)


def test_synchronized_batch_norm_uses_the_global_batch_under_pmap():
    """With axis_name, each device normalizes with the global batch's statistics (NumPy reference)."""
    devices = jax.local_device_count()
    x = np.random.default_rng(2).normal(loc=[1.0, -3.0], scale=[2.0, 0.5],
                                        size=(devices, 3, 2)).astype(np.float32)
    x[0] += 4.0  # shards with different statistics, so a per-device rule would differ
    momentum, eps = 0.8, 1e-5
    layer = make_batch_norm(train=True, momentum=momentum, epsilon=eps, axis_name="data")
    variables = layer.init(jax.random.key(0), jnp.asarray(x[0]))  # init outside pmap: no axis needed
    y, updates = jax.pmap(lambda xs: layer.apply(variables, xs, mutable=["batch_stats"]),
                          axis_name="data")(jnp.asarray(x))
    whole = x.reshape(-1, 2).astype(np.float64)
    expected = (whole - whole.mean(axis=0)) / np.sqrt(whole.var(axis=0) + eps)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 2), expected, rtol=1e-5, atol=1e-5)
    for device in range(devices):  # every device stores the same, global, running average
        np.testing.assert_allclose(updates["batch_stats"]["mean"][device],
                                   (1 - momentum) * whole.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(updates["batch_stats"]["var"][device],
                                   momentum + (1 - momentum) * whole.var(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match=r"^axis_name: got 3; allowed: None or a non-empty string"):
        make_batch_norm(train=True, axis_name=3)


def test_cnn_with_batch_norm_axis_name_under_pmap_matches_one_device():
    """pmap over a split batch with batch_norm_axis_name = one device on the whole batch."""
    devices = jax.local_device_count()
    x = np.random.default_rng(3).normal(size=(devices * 4, 6, 6, 1)).astype(np.float32)
    x[:4] += 2.0  # the first device's shard differs, so per-device statistics would not match
    plain = CNN(output_dim=3, channels=(2,), dense=(4,), batch_norm=True)
    synced = plain.clone(batch_norm_axis_name="data")
    variables = plain.init({"params": jax.random.key(0)}, jnp.asarray(x))
    # The field changes no parameter or collection name or shape.
    assert jax.tree.map(jnp.shape, synced.init({"params": jax.random.key(0)}, jnp.asarray(x))) \
        == jax.tree.map(jnp.shape, variables)

    def train_apply(model):
        return lambda xs: model.apply(variables, xs, train=True, mutable=["batch_stats"])

    y_one, stats_one = train_apply(plain)(jnp.asarray(x))
    shards = jnp.asarray(x.reshape(devices, 4, *x.shape[1:]))
    y_sync, stats_sync = jax.pmap(train_apply(synced), axis_name="data")(shards)
    np.testing.assert_allclose(np.asarray(y_sync).reshape(y_one.shape), y_one, rtol=1e-5, atol=1e-6)
    for device in range(devices):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[device], b, rtol=1e-5, atol=1e-7),
                     stats_sync, stats_one)
    # Without the axis name each device uses its own shard's statistics: different outputs.
    y_local, _ = jax.pmap(train_apply(plain), axis_name="data")(shards)
    assert not np.allclose(np.asarray(y_local).reshape(y_one.shape), y_one, rtol=1e-3, atol=1e-3)


def _small_digits(n_train=256):
    data = jn.data.load("digits", image=True)
    return jn.data.Dataset(x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                           x_val=data.x_val, y_val=data.y_val, x_test=data.x_test[:100],
                           y_test=data.y_test[:100], task="multiclass", num_classes=10,
                           name="digits_small")


def test_fit_trains_a_model_with_batch_norm_and_dropout():
    data = _small_digits()
    model = CNN(output_dim=10, channels=(4,), dense=(16,), batch_norm=True, dropout_rate=0.2)
    tx = jn.optim.create("adam", 1e-2)
    result = jn.fit(model, data, tx, jn.TrainConfig(epochs=8, batch_size=64, eval_every=8))
    after = result.state.model_state["batch_stats"]
    assert sorted(after) == ["conv_bn_0", "dense_bn_0"]
    for stats in after.values():  # Flax starts every running mean at 0 and variance at 1
        assert np.all(np.asarray(stats["mean"]) != 0) and np.all(np.asarray(stats["var"]) != 1)
    # 256 training images, 32 steps: it learns (chance is 0.1; measured 0.945 and 0.77).
    assert result.final["train_accuracy"] > 0.9 and result.final["test_accuracy"] > 0.6


def test_dropout_masks_change_with_the_step_and_repeat_on_rerun():
    data = _small_digits(32)
    model = CNN(output_dim=10, channels=(4,), dense=(16,), dropout_rate=0.5, batch_norm=True)
    state = jn.create_state(model, jn.optim.create("sgd", 0.1), data.x_train)
    step = jax.jit(jn.make_train_step(jn.objective_for("multiclass")))
    batch = {"x": jnp.asarray(data.x_train), "y": jnp.asarray(data.y_train),
             "mask": jnp.ones(32, jnp.float32)}
    runs = {t: step(state.replace(step=jnp.int32(t)), batch) for t in (0, 1)}
    loss = {t: float(sums["loss"]) for t, (_, sums) in runs.items()}
    assert loss[0] != loss[1]  # the key of step t is fold_in(dropout_key, t)
    # Re-running step 0 from the same state repeats its mask, loss and update exactly.
    new_state, sums = step(state, batch)
    assert float(sums["loss"]) == loss[0]
    assert params_sha256(new_state.params) == params_sha256(runs[0][0].params)
    assert params_sha256(new_state.model_state) == params_sha256(runs[0][0].model_state)


# ---------------------------------------------------------------- parameter counts


def _count(model, shape):
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x),
                               jnp.ones((1, *shape)))
    return count_params(variables["params"])


PARAM_CASES = [
    # 6x6x1 -> conv 3x3 1->2, pool 3x3 -> conv (2,1) 2->4, pool 1x1 -> 4 -> dense 5 -> 3
    (CNN(output_dim=3, channels=(2, 4), kernel_size=(3, (2, 1)), dense=(5,)), (6, 6, 1),
     (9 * 1 * 2 + 2) + (2 * 1 * 2 * 4 + 4) + (4 * 5 + 5) + (5 * 3 + 3)),
    # batch norm: no conv/dense bias, γ and β per channel
    (CNN(output_dim=3, channels=(2, 4), kernel_size=(3, (2, 1)), dense=(5,), batch_norm=True),
     (6, 6, 1), (9 * 2 + 2 * 2) + (2 * 2 * 4 + 2 * 4) + (4 * 5 + 2 * 5) + (5 * 3 + 3)),
    # strided VALID conv, no pool, global average pooling: 9x9x2 -> 4x4x3 -> 3
    (CNN(output_dim=2, channels=(3,), strides=2, padding="VALID", pool=None, global_pool=True,
         dense=()), (9, 9, 2), (9 * 2 * 3 + 3) + (3 * 2 + 2)),
    # flat signals get a channel axis: 40 -> conv 32, pool 20 -> conv 64, pool 10 -> 640
    (CNN(output_dim=10), (40,),
     (3 * 32 + 32) + (3 * 32 * 64 + 64) + (640 * 256 + 256) + (256 * 10 + 10)),
    # LeNet on 8x8 digits: SAME convs, 8 -> 4 -> 4 -> 2, 2·2·16 = 64 features
    (LeNet(output_dim=10), (8, 8, 1),
     (25 * 6 + 6) + (25 * 6 * 16 + 16) + (64 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)),
    # the 1998 layout on 28x28: 28 -> 14 -> 10 -> 5, 5·5·16 = 400 features: 61,706
    (LeNet(output_dim=10, padding=(2, "VALID")), (28, 28, 1), 61_706),
    # MNIST-1D's CNN: 40 -> 19 -> 10 -> 5 (padding 1, stride 2), 5·25 = 125 features
    (CNN1D(output_dim=10), (40,), (5 * 25 + 25) + 2 * (3 * 25 * 25 + 25) + (125 * 10 + 10)),
    # input_shape turns flat 64-vectors into 8x8 images
    (CNN(output_dim=10, channels=(4,), dense=(), input_shape=(8, 8, 1)), (64,),
     (9 * 4 + 4) + (4 * 4 * 4 * 10 + 10)),
]


@pytest.mark.parametrize("model, shape, expected", PARAM_CASES,
                         ids=[f"{type(m).__name__}-{i}" for i, (m, _, _) in enumerate(PARAM_CASES)])
def test_exact_parameter_counts(model, shape, expected):
    assert _count(model, shape) == model.param_count(shape) == expected


def test_cnn1d_is_the_mnist1d_papers_5210_parameter_model():
    model = CNN1D(output_dim=10)
    assert (5 * 1 * 25 + 25) + 2 * (3 * 25 * 25 + 25) + (5 * 25 + 1) * 10 == 5_210
    assert _count(model, (40,)) == 5_210
    assert model.block_shapes((40,)) == [(40, 1), (19, 25), (10, 25), (5, 25)]
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x),
                               jnp.ones((1, 40)))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes["conv_0"]["kernel"] == (5, 1, 25) and shapes["output"]["kernel"] == (125, 10)


# ---------------------------------------------------------------- models, registry, errors


def test_input_shape_reshapes_flat_examples():
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    flat = get_model("cnn", output_dim=10, channels=(4,), dense=(8,), input_shape=(8, 8, 1))
    images = CNN(output_dim=10, channels=(4,), dense=(8,))

    @jax.jit
    def both(a):
        variables = flat.init({"params": jax.random.key(0)}, a)
        return flat.apply(variables, a), images.apply(variables, a.reshape(3, 8, 8, 1))

    from_flat, from_images = both(jnp.asarray(x))
    np.testing.assert_array_equal(from_flat, from_images)


def test_registered_models_build_with_defaults():
    for name, shape in (("cnn", (8, 8, 1)), ("lenet", (8, 8, 1)), ("cnn1d", (40,)),
                        ("cnn", (40,))):
        model = get_model(name, output_dim=10)
        variables = jax.eval_shape(lambda x, m=model: m.init({"params": jax.random.key(0)}, x),
                                   jnp.ones((2, *shape)))
        out = jax.eval_shape(lambda v, x, m=model: m.apply(v, x), variables, jnp.ones((2, *shape)))
        assert out.shape == (2, 10)
    assert get_model("cnn1d", output_dim=10, channels=8).channels == (8, 8, 8)
    for name in ("cnn", "lenet", "cnn1d"):  # the one switch reaches the model from the registry
        assert get_model(name, output_dim=10, conv_impl="xla").conv_impl == "xla"


def test_cli_trains_a_cnn_on_digits_images(tmp_path, capsys):
    from jaxnets.cli import main

    status = main(["train", "--dataset", "digits", "--model", "cnn", "--model-opt",
                   "input_shape=8,8,1", "--model-opt", "channels=4", "--model-opt", "dense=16",
                   "--model-opt", "conv_impl=xla",
                   "--epochs", "1", "--batch-size", "256", "--no-progress",
                   "--out", str(tmp_path / "run")])
    assert status == 0
    assert "test_accuracy" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert saved["module"]["fields"]["conv_impl"] == "xla"  # --model-opt conv_impl=xla reaches the model


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=(0,)), r"^channels: got \(0,\); allowed"),
    (dict(kernel_size=(3, 3, 3)), r"^kernel_size: got \(3, 3, 3\); allowed"),
    (dict(padding="full"), r"^padding: got 'full'; allowed: SAME, VALID"),
    (dict(pool="min"), r"^pool: got 'min'; allowed: max, avg, None"),
    (dict(dropout_rate=1.0), r"^dropout_rate: got 1.0; allowed: 0 <= rate < 1"),
    (dict(conv_impl="cudnn"), r"^conv_impl: got 'cudnn'; allowed: auto, xla, patches"),
    (dict(activation="swish"), r"^activation: got 'swish'; allowed"),
    (dict(bn_momentum=1.0), r"^momentum: got 1.0; allowed"),
    (dict(batch_norm_axis_name=""), r"^batch_norm_axis_name: got ''; allowed: None or a non-empty string"),
])
def test_bad_fields_raise_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        CNN(output_dim=10, **kwargs)
    assert "\n" not in str(info.value)


def test_too_small_inputs_and_bad_shapes_raise_one_line():
    model = CNN(output_dim=2, channels=(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"^x: got examples of shape \(8, 8, 1\); allowed: a "
                                         r"size that stays >= 1 through conv_3"):
        model.init({"params": jax.random.key(0)}, jnp.ones((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"^input_shape: got \(8, 8, 1\)"):
        CNN(output_dim=2, input_shape=(8, 8, 1)).param_count((40,))
    with pytest.raises(ValueError, match=r"^x, kernel: got shapes"):
        convolve(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"^impl: got 'fft'"):
        Conv(features=2, impl="fft")


def test_digits_images_cnn_reaches_97_percent():
    data = jn.data.load("digits", image=True)
    model = CNN(output_dim=10, channels=(16, 32), dense=(64,))
    result = jn.fit(model, data, jn.optim.create("adam", 3e-3),
                    jn.TrainConfig(epochs=15, batch_size=64, seed=0, eval_train=False,
                                   eval_every=15))
    assert result.final["test_accuracy"] >= 0.97


# ---------------------------------------------------------------- docs and doctests


@pytest.mark.parametrize("module", [kernels, select, windows, conv, pooling, fused, winograd, conv_layer, regularizers,
                                    cnn],
                         ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def _documented_output(block: str) -> list[str]:
    """The "# ..." comment lines that directly follow a print(...) line: what it shows."""
    expected, after_print = [], False
    for line in block.splitlines():
        if line.lstrip().startswith("print("):
            after_print = True
        elif after_print and line.startswith("# "):
            expected.append(line[2:])
        else:
            after_print = False
    return expected


@pytest.mark.parametrize("page", ["cnn.md", "regularization.md"])
def test_docs_page_examples_run_and_print_what_they_say(page, capsys):
    text = (ROOT / "docs" / "architectures" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    namespace = {}
    for block in blocks:  # later blocks reuse the names of earlier ones, as a reader would
        exec(compile(block, f"docs/architectures/{page}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [line for block in blocks for line in _documented_output(block)]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity", "gelu", "tanh"])
def test_cnn_blocks_are_conv_bias_activation_pool_on_both_paths(activation):
    """The CNN equals conv → bias → activation → max pool written out with XLA, whatever it reorders inside."""
    from jaxnets.models.activations import get_activation

    commuting = conv_layer.POOL_COMMUTING_ACTIVATIONS
    assert (activation in commuting) == (activation in ("relu", "leaky_relu", "identity"))
    with jax.enable_x64(True):
        models = {impl: CNN(output_dim=3, channels=(4, 5), dense=(), activation=activation, dtype=jnp.float64,
                            param_dtype=jnp.float64, conv_impl=impl) for impl in ("xla", "patches")}
        # Integer-valued inputs and kernels: many exact ties inside pooling windows.
        x = jnp.asarray(np.random.default_rng(0).integers(-1, 2, size=(3, 8, 8, 1)), jnp.float64)
        params = jax.tree.map(lambda p: jnp.round(4 * p) / 4, models["xla"].init(jax.random.key(0), x)["params"])
        g = get_activation(activation)

        def reference(p):
            h = x
            for layer in ("conv_0", "conv_1"):
                h = lax_conv(h, p[layer]["kernel"]) + p[layer]["bias"]
                h = jax.lax.reduce_window(g(h), -np.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            return h.reshape(len(h), -1) @ p["output"]["kernel"] + p["output"]["bias"]

        probe = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3)))
        theirs = jax.value_and_grad(lambda p: jnp.sum(reference(p) * probe))(params)
        for model in models.values():
            ours = jax.value_and_grad(lambda p, m=model: jnp.sum(m.apply({"params": p}, x) * probe))(params)
            np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
            for got, want in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(theirs[1])):
                np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


# ---------------------------------------------------------------- the CPU seam


def test_only_the_kernels_package_defines_custom_differentiation_rules():
    """custom_vjp / custom_jvp appear under jaxnets/kernels/ only; the models hold no implementation switch."""
    package = ROOT / "jaxnets"
    users = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                   if re.search(r"custom_(vjp|jvp)", path.read_text()))
    assert users and all(name.startswith("kernels/") for name in users), users
    for path in (package / "models").glob("*.py"):
        text = path.read_text()
        for switch in ("resolve(", "default_backend", "pool_impl", "max_pool_window", "pool_first"):
            assert switch not in text, (path.name, switch)
        assert not re.search(r"[=!]= *[\"'](xla|patches)", text), path.name  # no branch on the implementation


SEAM_MODELS = [  # model, example shape
    (CNN(output_dim=3, channels=(4, 5), dense=(6,)), (9, 8, 1)),
    (CNN(output_dim=3, channels=(4,), dense=(6,), batch_norm=True), (8, 8, 2)),
    (CNN(output_dim=3, channels=(3,), dense=(), pool="avg", activation="tanh", strides=2), (9, 9, 1)),
    (LeNet(output_dim=3), (8, 8, 1)),
    (CNN1D(output_dim=3), (40,)),
]


@pytest.mark.parametrize("model, shape", SEAM_MODELS, ids=[f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(SEAM_MODELS)])
def test_variables_of_one_implementation_run_unchanged_on_the_other_float64(model, shape):
    """Same variable names, shapes and initial values on both paths; outputs equal in float64."""
    with jax.enable_x64(True):
        models = {impl: model.clone(conv_impl=impl, dtype=jnp.float64, param_dtype=jnp.float64)
                  for impl in ("patches", "xla")}
        x = jnp.asarray(np.random.default_rng(0).normal(size=(5, *shape)))
        inits = {impl: m.init({"params": jax.random.key(0)}, x) for impl, m in models.items()}
        assert jax.tree.map(jnp.shape, inits["patches"]) == jax.tree.map(jnp.shape, inits["xla"])
        assert params_sha256(inits["patches"]) == params_sha256(inits["xla"])
        variables = inits["patches"]
        outputs = {impl: m.apply(variables, x) for impl, m in models.items()}
        np.testing.assert_allclose(outputs["xla"], outputs["patches"], rtol=1e-12, atol=1e-12)
        if "batch_stats" in variables:  # training mode too: batch statistics and their update
            trained = {impl: m.apply(variables, x, train=True, mutable=["batch_stats"]) for impl, m in models.items()}
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12),
                         trained["patches"], trained["xla"])


def test_a_model_saved_with_the_patches_path_loads_and_predicts_with_xla(tmp_path):
    data = _small_digits(64)
    trained_with = CNN(output_dim=10, channels=(4, 6), dense=(8,), conv_impl="patches")
    result = jn.fit(trained_with, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(epochs=1, batch_size=32))
    jn.save_model(tmp_path / "model", result.state, trained_with, feature_shape=data.x_train.shape[1:])
    loaded = jn.load_model(tmp_path / "model", model=trained_with.clone(conv_impl="xla"))
    assert loaded.model.conv_impl == "xla"
    x = np.asarray(data.x_test[:20])
    np.testing.assert_allclose(jn.predict(loaded, x), jn.predict(result.state, x), rtol=1e-5, atol=1e-6)
    # And the other way round: the saved module (patches) runs what an XLA-built state holds.
    rebuilt = jn.load_model(tmp_path / "model")
    assert rebuilt.model.conv_impl == "patches"
    np.testing.assert_allclose(jn.predict(rebuilt, x), jn.predict(loaded, x), rtol=1e-5, atol=1e-6)
