"""Augmentation: the pure functions against NumPy, and TrainConfig.augment inside the train step."""
from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets as jn
from jaxnets import augment, steps
from jaxnets.objective import objective_for
from jaxnets.population import fit_population
from jaxnets.resume import ResumeMismatch
from jaxnets.state import create_state
from jaxnets.tree import params_sha256


def _images(n: int, size: int = 6, channels: int = 2, seed: int = 0) -> np.ndarray:
    # Values in [1, 2): no pixel equals a padding zero, so every crop offset is recoverable.
    return (1.0 + np.random.default_rng(seed).random((n, size, size, channels))).astype(np.float32)


def _recover_offsets(x: np.ndarray, out: np.ndarray, padding: int) -> list[tuple[int, int]]:
    """Each example's (a, b): the one window of the NumPy-padded image equal to the output."""
    size = x.shape[1]
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    found = []
    for n in range(len(x)):
        matches = [(a, b) for a in range(2 * padding + 1) for b in range(2 * padding + 1)
                   if np.array_equal(padded[n, a:a + size, b:b + size], out[n])]
        assert len(matches) == 1, f"example {n}: {len(matches)} windows match"
        found.append(matches[0])
    return found


def test_random_crop_is_a_window_of_the_zero_padded_image():
    x = _images(64)
    out = np.asarray(augment.random_crop(jax.random.key(3), jnp.asarray(x), padding=4))
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = _recover_offsets(x, out, 4)
    assert len(set(offsets)) > 20  # per-example draws, not one offset for the batch


def test_random_flip_mirrors_only_the_width_axis():
    x = _images(64, size=5)
    out = np.asarray(augment.random_flip(jax.random.key(4), jnp.asarray(x)))
    flipped = [np.array_equal(out[n], x[n, :, ::-1, :]) for n in range(len(x))]
    kept = [np.array_equal(out[n], x[n]) for n in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # each example is exactly one of the two
    assert 0 < sum(flipped) < len(x)


def test_draws_are_spread_as_documented():
    x = _images(2000, size=5, channels=1, seed=1)  # size > padding: every window shows part of the image
    offsets = _recover_offsets(x, np.asarray(augment.random_crop(jax.random.key(5), jnp.asarray(x))), 4)
    rows, cols = zip(*offsets)
    assert set(rows) == set(range(9)) and set(cols) == set(range(9))
    flips = np.asarray(augment.random_flip(jax.random.key(6), jnp.asarray(x)))
    share = np.mean([not np.array_equal(flips[n], x[n]) for n in range(len(x))])
    assert abs(share - 0.5) < 0.05  # 4.5 standard deviations of a Binomial(2000, ½) share


def test_crop_flip_is_crop_then_flip_and_jit_vmap_safe():
    x = jnp.asarray(_images(16))
    key = jax.random.key(7)
    crop_key, flip_key = jax.random.split(key)
    expected = augment.random_flip(flip_key, augment.random_crop(crop_key, x, padding=4))
    np.testing.assert_array_equal(augment.crop_flip(key, x), expected)
    np.testing.assert_array_equal(jax.jit(augment.crop_flip)(key, x), expected)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(augment.crop_flip, in_axes=(0, None))(keys, x)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], augment.crop_flip(keys[i], x))


@pytest.mark.parametrize("bad", ["mixup", 3, ["crop_flip"]])
def test_config_refuses_other_settings_in_one_line(bad):
    with pytest.raises(ValueError) as error:
        jn.TrainConfig(augment=bad)
    assert str(error.value) == f"augment: got {bad!r}; allowed: None, 'crop_flip' or a callable (key, x) -> x"


def test_doctests():
    assert doctest.testmod(augment).failed == 0


# ----------------------------------------------------------------------------- inside the step


def _image_data(n: int = 24, seed: int = 0) -> jn.data.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, n).astype(np.int32)
    return jn.data.Dataset(x_train=x, y_train=y, x_val=x[:6], y_val=y[:6], x_test=x[:6], y_test=y[:6],
                           task="multiclass", num_classes=3, name="images")


def _cnn():
    # A linear classifier of the pixels: the cheapest model to compile that sees where each pixel went.
    return jn.models.get_model("logistic", output_dim=3)


def test_default_step_traces_no_augmentation_code():
    """augment=None compiles the same program as before the option existed: no random draw in it.

    (Checked once against the code before the option, on the development machine: fit's
    parameters after 2 epochs of a batch-norm CNN with dropout, single device and pmap,
    had the same params_sha256 on both.)
    """
    data = _image_data()
    objective = objective_for("multiclass")
    state = create_state(_cnn(), optax.sgd(0.1), data.x_train, 0)
    batch = {"x": data.x_train[:8], "y": data.y_train[:8], "mask": np.ones(8, np.float32)}
    program = lambda **options: str(jax.make_jaxpr(steps.make_train_step(objective, **options))(state, batch))  # noqa: E731
    assert program() == program(augment=None)
    assert "random_bits" not in program() and "random_bits" in program(augment="crop_flip")
    stepped, _ = jax.jit(steps.make_train_step(objective))(state, batch)
    again, _ = jax.jit(steps.make_train_step(objective, augment=None))(state, batch)
    assert params_sha256(stepped.params) == params_sha256(again.params)


def test_keys_differ_per_step_member_and_device_and_repeat_per_seed():
    state = create_state(_cnn(), optax.sgd(0.1), _image_data().x_train, 0)
    data = lambda key: tuple(np.asarray(jax.random.key_data(key)).ravel())  # noqa: E731
    at = lambda s, seed=0: steps.augment_key(s.replace(dropout_key=jn.state.run_keys(seed).dropout))  # noqa: E731
    assert data(at(state)) == data(at(state))
    assert data(at(state)) != data(at(state, seed=1))
    assert data(at(state)) != data(steps.augment_key(state.replace(step=jnp.int32(1))))
    assert data(at(state)) != data(jax.random.fold_in(state.dropout_key, state.step))  # not the dropout key
    devices = jax.local_device_count()
    per_device = jax.pmap(lambda s, _: steps.augment_key(s, "data"), axis_name="data", in_axes=(None, 0))(
        state, jnp.arange(devices))
    assert len({data(k) for k in per_device}) == devices == 4


def _shift(key, x):
    """A user's augmentation: a large constant shift, so that any use of it at evaluation shows."""
    return x + 100.0 + 0.0 * jax.random.uniform(key)


def test_fit_augments_training_only_deterministically_and_per_member():
    data, tx = _image_data(), optax.sgd(0.05)
    config = jn.TrainConfig(epochs=2, batch_size=8, augment="crop_flip")
    first, again = jn.fit(_cnn(), data, tx, config), jn.fit(_cnn(), data, tx, config)
    plain = jn.fit(_cnn(), data, tx, jn.TrainConfig(epochs=2, batch_size=8))
    assert params_sha256(first.state.params) == params_sha256(again.state.params)
    assert params_sha256(first.state.params) != params_sha256(plain.state.params)
    shifted = jn.fit(_cnn(), data, tx, jn.TrainConfig(epochs=1, batch_size=8, augment=_shift))
    val = jn.evaluate(shifted.state, data.x_val, data.y_val, objective_for("multiclass"), prefix="val_")
    assert shifted.history[-1]["val_loss"] == pytest.approx(val["val_loss"], rel=1e-6)
    population = fit_population(_cnn(), data, jn.optim.create("sgd", 0.05), config, seeds=[0, 0, 1])
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(population.state.params)]
    assert all(np.array_equal(leaf[0], leaf[1]) for leaf in leaves)
    assert any(not np.array_equal(leaf[0], leaf[2]) for leaf in leaves)


def test_sharded_and_pmap_runs_augment_each_shard_independently():
    data, tx = _image_data(), optax.sgd(0.05)
    for mode in ("pmap", "sharded"):
        config = jn.TrainConfig(epochs=1, batch_size=8, parallel=mode, augment="crop_flip")
        result = jn.fit(_cnn(), data, tx, config)
        plain = jn.fit(_cnn(), data, tx, jn.TrainConfig(epochs=1, batch_size=8, parallel=mode))
        assert np.isfinite(result.history[-1]["train_loss"])
        assert params_sha256(result.state.params) != params_sha256(plain.state.params)


def test_resume_refuses_a_different_augment(tmp_path):
    data, tx = _image_data(), optax.sgd(0.05)
    checkpoint = jn.CheckpointConfig(str(tmp_path / "ck"))
    jn.fit(_cnn(), data, tx, jn.TrainConfig(epochs=1, batch_size=8, augment="crop_flip"), checkpoint=checkpoint)
    resume = jn.CheckpointConfig(str(tmp_path / "ck"), resume=True)
    for other, shown in ((None, "None"), (_shift, "'tests.test_augment._shift'")):
        with pytest.raises(ResumeMismatch, match=f"^augment: got {shown}; the checkpoint being resumed has 'crop_flip'"):
            jn.fit(_cnn(), data, tx, jn.TrainConfig(epochs=2, batch_size=8, augment=other), checkpoint=resume)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_cli_takes_augment_and_refuses_unknown_names_in_one_line(command, tmp_path, capsys):
    from jaxnets.cli import main

    args = [command, "--dataset", "iris", "--out", str(tmp_path / "out"), "--augment", "mixup"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert "augment: got 'mixup'; allowed: None, 'crop_flip' or a callable (key, x) -> x" in error
    assert "\n" not in error and not (tmp_path / "out").exists()
    assert "--augment" in main_help(command, capsys)


def main_help(command: str, capsys) -> str:
    from jaxnets.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out
