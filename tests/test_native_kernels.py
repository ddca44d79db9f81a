"""The C++ kernels of a first layer (jaxnets.kernels.native): values and gradients against XLA, float64."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from jaxnets.kernels import fused, native
from jaxnets.kernels.conv import convolve
from jaxnets.kernels.pooling import max_pool

needs_library = pytest.mark.skipif(not native.AVAILABLE, reason=f"C++ kernels not built: {native.UNAVAILABLE}")
HANDLERS = ("ConvPoolForward", "ConvPoolKernelGradient", "ConvPoolInputGradient")


def test_the_library_is_built_where_ci_installs_jaxnets():
    """pip install -e . must compile conv_pool.cc on CI's machine; elsewhere a failed build only falls back."""
    if os.environ.get("CI") != "true":
        pytest.skip("checked on CI, where the build must succeed")
    assert native.AVAILABLE, native.UNAVAILABLE


NATIVE_CASES = [  # x shape, kernel window, C_out, padding
    ((5, 9, 11, 1), (3, 3), 16, "SAME"),     # odd sizes: a last row and column of the convolution are dropped
    ((4, 8, 8, 3), (3, 3), 8, "VALID"),      # RGB, 6x6 output
    ((3, 10, 9, 2), (5, 5), 32, 2),          # integer padding, 5x5 kernel
    ((2, 7, 8, 1), (2, 4), 64, "SAME"),      # even kernel sides: SAME pads unevenly
    ((1, 5, 5, 3), (3, 3), 16, 1),           # one example, a 2x2 pooled map
]


def _reference(padding):
    return lambda a, b: max_pool(convolve(a, b, 1, padding, "xla"), 2, impl="xla")


def _native_path(padding):
    return lambda a, b: fused.convolve_max_pool(a, b, 2, 1, padding, "patches")


def _assert_equals_xla_float64(shape, window, c_out, padding, handlers, applies):
    """Exact values on integers (many ties: the first maximum wins), gradients to 1e-12, and ``handlers`` ran."""
    rng = np.random.default_rng(sum(shape) + c_out)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.integers(-1, 2, size=shape).astype(np.float64))
        w = jnp.asarray(rng.integers(-1, 2, size=(*window, shape[-1], c_out)).astype(np.float64))
        if not applies(x, w):
            pytest.skip(f"channels {shape[-1]}, {c_out}: not taken by this build ({native.VECTOR_BYTES}-byte vectors)")
        y_ref, pull_ref = jax.vjp(_reference(padding), x, w)
        y_got, pull_got = jax.jit(lambda a, b: jax.vjp(_native_path(padding), a, b))(x, w)
        probe = jnp.asarray(rng.normal(size=y_ref.shape))
        np.testing.assert_array_equal(np.asarray(y_got), np.asarray(y_ref))
        for got, want in zip(pull_got(probe), pull_ref(probe)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
        compiled = jax.jit(jax.grad(lambda a, b: jnp.vdot(_native_path(padding)(a, b), probe), argnums=(0, 1))
                           ).lower(x, w).compile().as_text()
        for handler in handlers:
            assert f"jaxnets_{handler}F64" in compiled


@needs_library
@pytest.mark.parametrize("shape, window, c_out, padding", NATIVE_CASES)
def test_native_conv_pool_equals_xla_values_and_gradients_float64(shape, window, c_out, padding):
    _assert_equals_xla_float64(shape, window, c_out, padding, HANDLERS,
                               lambda x, w: native.first_layer_applies(x.shape, w.shape, x.dtype, (1, 1), (2, 2)))


@needs_library
def test_native_float32_stays_within_float32_rounding_of_xla():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 28, 28, 1)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 32)) / 3, jnp.float32)
    y_ref, pull_ref = jax.vjp(_reference("SAME"), x, w)
    y_got, pull_got = jax.vjp(_native_path("SAME"), x, w)
    probe = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    np.testing.assert_allclose(np.asarray(y_got), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    for got, want in zip(pull_got(probe), pull_ref(probe)):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5 * scale)


@needs_library
def test_the_input_gradient_runs_only_where_something_reads_it():
    """A first layer's ∂x is never used: XLA drops that call, and keeps it when ∂x is asked for."""
    x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 16))

    def compiled(argnums):
        loss = lambda a, b: _native_path("SAME")(a, b).sum()  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=argnums)).lower(x, w).compile().as_text()

    assert "ConvPoolInputGradient" not in compiled(1) and "ConvPoolKernelGradient" in compiled(1)
    assert "ConvPoolInputGradient" in compiled(0)


@needs_library
def test_native_pooling_propagates_nan_like_the_jax_kernels():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(jnp.nan)
    w = jnp.ones((1, 1, 1, 8))
    got = np.asarray(_native_path("VALID")(x, w))[0, :, :, 0]
    want = np.asarray(_reference("VALID")(x, w))[0, :, :, 0]
    np.testing.assert_array_equal(np.isnan(got), [[True, False], [False, False]])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@needs_library
def test_native_path_under_vmap_equals_each_call():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 1)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 8)), jnp.float32)
    mapped = jax.vmap(_native_path("SAME"), in_axes=(0, None))(x, w)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(mapped[i]), np.asarray(_native_path("SAME")(x[i], w)))


@pytest.mark.parametrize("platform", ["cuda", "rocm", "tpu"])
def test_lowered_for_an_accelerator_the_patches_path_runs_its_jax_kernels(platform):
    """lax.platform_dependent: the C++ call is lowered for the CPU only; elsewhere the same function in JAX."""
    x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 16))
    step = jax.jit(jax.grad(lambda a, b: _native_path("SAME")(a, b).sum(), argnums=(0, 1)))
    assert "jaxnets_ConvPool" not in export.export(step, platforms=[platform])(x, w).mlir_module()


@pytest.mark.parametrize("x_shape, kernel_shape, dtype, strides, window, expected", [
    ((2, 8, 8, 1), (3, 3, 1, 32), jnp.float32, (1, 1), (2, 2), True),
    ((2, 8, 8, 3), (5, 5, 3, 64), jnp.float64, (1, 1), (2, 2), True),
    ((2, 8, 8, 4), (3, 3, 4, 32), jnp.float32, (1, 1), (2, 2), False),   # more than 3 input channels
    ((2, 8, 8, 1), (3, 3, 1, 6), jnp.float32, (1, 1), (2, 2), False),    # 6 output channels: not compiled
    ((2, 8, 8, 1), (3, 3, 1, 32), jnp.bfloat16, (1, 1), (2, 2), False),  # bfloat16
    ((2, 8, 8, 1), (3, 3, 1, 32), jnp.float32, (2, 2), (2, 2), False),   # strided convolution
    ((2, 9, 9, 1), (3, 3, 1, 32), jnp.float32, (1, 1), (3, 3), False),   # 3x3 pooling
    ((2, 20, 20, 1), (9, 9, 1, 32), jnp.float32, (1, 1), (2, 2), False),  # kernel larger than 7
    ((2, 8, 1), (3, 1, 32), jnp.float32, (1,), (2,), False),             # 1-D
])
def test_native_kernels_apply_only_to_first_layers_they_were_built_for(x_shape, kernel_shape, dtype, strides,
                                                                      window, expected):
    assert native.first_layer_applies(x_shape, kernel_shape, dtype, strides, window) is (expected and native.AVAILABLE)


def test_without_the_library_the_patches_path_runs_its_jax_kernels(monkeypatch):
    """Where conv_pool.cc could not be built, the same call runs the JAX kernels with the same values."""
    monkeypatch.setattr(native, "AVAILABLE", False)
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.integers(-1, 2, size=(3, 8, 9, 1)).astype(np.float64))
        w = jnp.asarray(rng.integers(-1, 2, size=(3, 3, 1, 16)).astype(np.float64))
        assert "jaxnets_ConvPool" not in jax.jit(_native_path("SAME")).lower(x, w).as_text()
        np.testing.assert_array_equal(np.asarray(_native_path("SAME")(x, w)), np.asarray(_reference("SAME")(x, w)))


@needs_library
@pytest.mark.parametrize("c_in, handler", [(1, "ConvPoolKernelGradient"), (16, "WinogradBackward")])
def test_under_a_sharded_jit_every_device_runs_the_layer_on_the_gathered_batch(c_in, handler):
    """cnn.md: XLA cannot split the custom call by rows; it gathers the batch, and the values stay the same."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:2])
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in, 16)), jnp.float32)
    grad = jax.jit(jax.grad(lambda b, a: jnp.sum(_native_path("SAME")(a, b) ** 2)))
    rows, whole = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    xs, ws = jax.device_put(x, rows), jax.device_put(w, whole)
    compiled = grad.lower(ws, xs).compile().as_text()
    assert "all-gather" in compiled and f"jaxnets_{handler}F32" in compiled
    np.testing.assert_allclose(np.asarray(grad(ws, xs)), np.asarray(grad(w, x)), rtol=1e-6, atol=1e-6)


def test_setup_builds_the_library_as_an_optional_extension():
    """docs/index.md: without a C++20 compiler pip still installs jaxnets (setuptools' optional extension)."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parents[1] / "setup.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Extension"]
    assert len(calls) == 1
    keywords = {k.arg: k.value for k in calls[0].keywords}
    assert isinstance(keywords.get("optional"), ast.Constant) and keywords["optional"].value is True
    assert calls[0].args[1].elts[0].value == "jaxnets/kernels/conv_pool.cc"


WINOGRAD_NATIVE_CASES = [  # x shape, C_out, padding (float64: channels of 8, 16, 32 or 64)
    ((5, 9, 11, 8), 16, "SAME"),    # odd sizes: a last row and column of the convolution are dropped
    ((3, 8, 8, 16), 8, "VALID"),    # 6x6 output
    ((2, 7, 10, 8), 64, 1),         # integer padding, many output channels
    ((1, 4, 4, 32), 32, "SAME"),    # one example, one 2x2 pooled map
    ((3, 30, 30, 8), 8, "SAME"),    # 225 tiles per example: several groups of tiles, the last one partial
]


@needs_library
@pytest.mark.parametrize("shape, c_out, padding", WINOGRAD_NATIVE_CASES)
def test_winograd_in_cpp_equals_xla_values_and_gradients_float64(shape, c_out, padding):
    _assert_equals_xla_float64(shape, (3, 3), c_out, padding, ("WinogradForward", "WinogradBackward"),
                               lambda x, w: native.winograd_applies(x.shape, c_out, x.dtype))


@needs_library
def test_winograd_in_cpp_float32_stays_within_float32_rounding_of_xla():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(8, 14, 14, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 64)) / 10, jnp.float32)
    y_ref, pull_ref = jax.vjp(_reference("SAME"), x, w)
    y_got, pull_got = jax.vjp(_native_path("SAME"), x, w)
    assert "jaxnets_WinogradForwardF32" in jax.jit(_native_path("SAME")).lower(x, w).as_text()
    probe = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    np.testing.assert_allclose(np.asarray(y_got), np.asarray(y_ref), rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(y_ref))))
    for got, want in zip(pull_got(probe), pull_ref(probe)):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5 * scale)


@needs_library
def test_winograd_in_cpp_propagates_nan():
    x = jnp.zeros((1, 4, 4, 16)).at[0, 0, 0, 0].set(jnp.nan)
    w = jnp.zeros((3, 3, 16, 16)).at[1, 1, 0, 0].set(1.0)
    got = np.asarray(_native_path("SAME")(x, w))
    want = np.asarray(_reference("SAME")(x, w))
    assert np.isnan(got[0, 0, 0, 0])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@needs_library
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_winograd_in_cpp_takes_1_2_4_8_or_16_whole_vectors_of_channels(dtype):
    lanes = native.VECTOR_BYTES // jnp.dtype(dtype).itemsize
    assert [native.whole_vectors(k * lanes, dtype) for k in (1, 2, 3, 4, 8, 16, 32)] == [
        True, True, False, True, True, True, False]
    assert not native.whole_vectors(lanes + 1, dtype) and not native.whole_vectors(lanes // 2, dtype)
    assert native.winograd_applies((2, 8, 8, lanes), 2 * lanes, dtype)
    assert not native.winograd_applies((2, 8, 8, lanes), 3 * lanes, dtype)


@pytest.mark.parametrize("vector_bytes, flags, missing", [
    (64, "fpu sse2 avx avx2 avx512f", None), (64, "fpu sse2 avx avx2", "avx512f"), (32, "fpu sse2 avx", None),
    (32, "fpu sse2", "avx"), (16, "fpu", None)])
def test_a_library_built_for_wider_vectors_than_the_cpu_has_is_not_loaded(tmp_path, vector_bytes, flags, missing):
    """A copy built on another machine (a shared disk) is refused with the reason, not run into an illegal instruction."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert native.missing_vector_feature(vector_bytes, cpuinfo) == missing
    assert native.missing_vector_feature(vector_bytes, tmp_path / "absent") is None


def test_winograd_without_the_library_runs_in_jax(monkeypatch):
    monkeypatch.setattr(native, "AVAILABLE", False)
    x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    text = jax.jit(_native_path("SAME")).lower(x, w).as_text()
    assert "jaxnets_Winograd" not in text
    np.testing.assert_allclose(np.asarray(_native_path("SAME")(x, w)), np.asarray(_reference("SAME")(x, w)), rtol=1e-6)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_lowered_for_an_accelerator_winograd_runs_in_jax(platform):
    x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    step = jax.jit(jax.grad(lambda a, b: _native_path("SAME")(a, b).sum(), argnums=(0, 1)))
    assert "jaxnets_Winograd" not in export.export(step, platforms=[platform])(x, w).mlir_module()
