"""The VGG-style model: shapes, parameter count by hand, and both conv_impl paths in float64."""
from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.models import get_model
from jaxnets.models import vgg


def _count(variables) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"]))


def test_shapes_and_parameter_count_by_hand():
    model = get_model("vgg", output_dim=10, channels=(4, 8), convs=(1, 2), dense=(16,))
    x = jnp.ones((3, 16, 16, 3))
    variables = model.init({"params": jax.random.key(0)}, x)
    assert model.apply(variables, x).shape == (3, 10)
    assert set(variables["batch_stats"]) == {"stage_0_bn_0", "stage_1_bn_0", "stage_1_bn_1", "dense_bn_0"}
    # conv 3x3x3x4 + BN 8; conv 3x3x4x8 + 16; conv 3x3x8x8 + 16; 16x16 -> 4x4 after two pools:
    # dense 4·4·8·16 + BN 32; output (16 + 1)·10.
    hand = (108 + 8) + (288 + 16) + (576 + 16) + (2048 + 32) + 170
    assert _count(variables) == model.param_count((16, 16, 3)) == hand == 3262


def test_default_is_three_stages_of_two_convs():
    model = get_model("vgg", output_dim=10)
    assert model.channels == (64, 128, 256) and model.convs_per_stage() == (2, 2, 2) and model.dense == (256,)
    shapes = jax.eval_shape(model.init, {"params": jax.random.key(0)}, jnp.ones((1, 32, 32, 3)))
    assert _count(shapes) == model.param_count((32, 32, 3)) == 2_197_962


def test_conv_impl_paths_agree_in_float64():
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3))
    outputs = {}
    with jax.enable_x64(True):
        for impl in ("xla", "patches"):
            model = get_model("vgg", output_dim=5, channels=(3, 4), dense=(6,), conv_impl=impl, dtype="float32")
            model = model.clone(dtype=jnp.float64, param_dtype=jnp.float64)
            variables = model.init({"params": jax.random.key(1)}, jnp.asarray(x))
            out, _ = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
            assert out.dtype == jnp.float64
            outputs[impl] = np.asarray(out)
    np.testing.assert_allclose(outputs["xla"], outputs["patches"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options, message", [
    ({"channels": ()}, "channels: got (); allowed: an int >= 1 or a tuple of them"),
    ({"convs": (2,)}, "convs: got (2,); allowed: an int >= 1 or 3 of them (one per stage)"),
])
def test_bad_options_fail_in_one_line(options, message):
    with pytest.raises(ValueError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        get_model("vgg", output_dim=10, **options)


def test_doctests():
    assert doctest.testmod(vgg).failed == 0


def test_flat_rows_become_images_with_input_shape_as_in_cnn():
    VGG = vgg.VGG  # noqa: N806
    flat = VGG(output_dim=3, channels=4, convs=1, dense=(), input_shape=(8, 8, 1))
    images = VGG(output_dim=3, channels=(4,), convs=1, dense=())
    x = jax.random.normal(jax.random.key(0), (2, 64))
    variables = images.init(jax.random.key(1), x.reshape(2, 8, 8, 1))
    assert jnp.array_equal(flat.apply(variables, x), images.apply(variables, x.reshape(2, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"^input_shape: got \(64,\); allowed: \(H, W, C\) of one image$"):
        VGG(output_dim=3, input_shape=(64,))
