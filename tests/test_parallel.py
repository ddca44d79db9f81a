"""Data parallelism on 4 simulated CPU devices: pmap == sharded == one device, one trace each."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets as jn
from jaxnets.models import MLP
from jaxnets.epochs import Geometry, batch_geometry
from jaxnets.parallel import PmapRunner, data_mesh, make_runner
from jaxnets.steps import make_train_step
from tests.helpers.problems import blobs

assert jax.device_count() == 4, "tests/conftest.py simulates 4 CPU devices"


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def runs():
    """Every mode x loop on the same problem: 50 rows, batch 16 (a masked partial batch of 2)."""
    data = blobs()
    model = MLP(hidden=(16,), output_dim=3)
    out = {}
    for mode in ("none", "pmap", "sharded"):
        for loop in ("scan", "python"):
            config = jn.TrainConfig(epochs=3, batch_size=16, parallel=mode, loop=loop)
            out[mode, loop] = jn.fit(model, data, jn.optim.create("adam", 1e-2), config)
    return out


@pytest.mark.parametrize("mode", ["none", "pmap", "sharded"])
@pytest.mark.parametrize("loop", ["scan", "python"])
def test_each_mode_traces_the_step_once_over_three_epochs(runs, mode, loop):
    result = runs[mode, loop]
    assert result.traces["train_step"] == 1
    assert result.traces["eval_step"] == 1
    assert result.traces.get("step_sums", 0) == (1 if loop == "python" else 0)
    assert int(result.state.step) == 3 * 4


def test_pmap_and_sharded_agree_with_one_device(runs):
    """pmap and sharded sum the same per-device partial sums: bitwise equal to each other here.
    One device sums all rows in one reduction, so it differs by float32 rounding only."""
    base = runs["none", "scan"].state.params
    for mode in ("pmap", "sharded"):
        for loop in ("scan", "python"):
            assert max_diff(base, runs[mode, loop].state.params) < 1e-5
    assert jn.tree.params_sha256(runs["pmap", "scan"].state.params) == \
        jn.tree.params_sha256(runs["sharded", "scan"].state.params)
    assert jn.tree.params_sha256(runs["pmap", "scan"].state.params) == \
        jn.tree.params_sha256(runs["pmap", "python"].state.params)


def test_metrics_agree_across_modes(runs):
    base = runs["none", "scan"].history[-1]
    for mode in ("pmap", "sharded"):
        entry = runs[mode, "scan"].history[-1]
        assert entry["test_accuracy"] == base["test_accuracy"]
        assert abs(entry["train_loss"] - base["train_loss"]) < 1e-5
        assert abs(entry["epoch_loss"] - base["epoch_loss"]) < 1e-5


def test_pmap_replicas_stay_identical_with_dropout():
    data = blobs()
    model = MLP(hidden=(16,), output_dim=3, dropout_rate=0.3)
    traces = {}
    geometry = Geometry(50, 16, 4, True, False)
    objective = jn.objective_for("multiclass")
    runner = make_runner("pmap", lambda axis: make_train_step(objective, axis_name=axis), geometry,
                         loop="scan", traces=traces)
    assert isinstance(runner, PmapRunner)
    state = jn.create_state(model, jn.optim.create("sgd", 0.1), data.x_train)
    state = runner.put_state(state)
    xs, ys = runner.put_data(data.x_train), runner.put_data(data.y_train)
    for epoch in range(2):
        state, _ = runner.run_epochs(state, xs, ys, jax.random.key(0), epoch)
    for leaf in jax.tree_util.tree_leaves(state.params):
        leaf = np.asarray(leaf)
        assert all(np.array_equal(leaf[0], leaf[i]) for i in range(1, 4))


def test_pmap_step_gives_each_device_its_own_dropout_key():
    """Reference: device i drops with fold_in(fold_in(key, step), i); the update is the sum of
    the per-device gradients of (local loss sum / global count). Same keys would differ."""
    import flax.linen as nn

    class DropLinear(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(1)(nn.Dropout(0.5, deterministic=not train)(x))

    model = DropLinear()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    state = jn.create_state(model, jn.optim.create("sgd", 1.0), x)
    objective = jn.objective_for("regression")
    step = jax.pmap(make_train_step(objective, axis_name="data"), axis_name="data")
    batch = {"x": x.reshape(4, 2, 6), "y": y.reshape(4, 2, 1), "mask": np.ones((4, 2), np.float32)}
    replicated = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (4, *jnp.shape(a))), state)
    new_state, _ = step(replicated, batch)

    def local_grad(params, key, xb, yb):
        def loss(p):
            out = model.apply({"params": p}, xb, train=True, rngs={"dropout": key})
            return jnp.sum((out - yb) ** 2) / 8.0
        return jax.grad(loss)(params)

    base = jax.random.fold_in(state.dropout_key, 0)
    keys = [jax.random.fold_in(base, i) for i in range(4)]
    grads = [local_grad(state.params, k, x[2 * i:2 * i + 2], y[2 * i:2 * i + 2]) for i, k in enumerate(keys)]
    expected = jax.tree_util.tree_map(lambda p, *g: p - sum(g), state.params, *grads)
    got = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], new_state.params)
    assert max_diff(got, expected) < 1e-6
    same = [local_grad(state.params, keys[0], x[2 * i:2 * i + 2], y[2 * i:2 * i + 2]) for i in range(4)]
    same_keys = jax.tree_util.tree_map(lambda p, *g: p - sum(g), state.params, *same)
    assert max_diff(got, same_keys) > 1e-3


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_batch_size_must_divide_over_devices(mode):
    with pytest.raises(ValueError, match=r"batch_size: got 10; allowed: a multiple of the 4 devices"):
        jn.fit(MLP(hidden=(4,), output_dim=3), blobs(), jn.optim.create("sgd", 0.1),
               jn.TrainConfig(epochs=1, batch_size=10, parallel=mode))


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_full_batch_is_padded_to_a_multiple_of_the_devices(mode):
    data = blobs(n=50)  # 50 rows, 4 devices: padded to 52, two rows masked
    config = jn.TrainConfig(epochs=5, batch_size=None, parallel=mode)
    result = jn.fit(MLP(hidden=(8,), output_dim=3), data, jn.optim.create("sgd", 0.1), config)
    single = jn.fit(MLP(hidden=(8,), output_dim=3), data, jn.optim.create("sgd", 0.1),
                    jn.TrainConfig(epochs=5, batch_size=None))
    assert int(result.state.step) == 5
    assert max_diff(result.state.params, single.state.params) < 1e-5


class BNNet(nn.Module):
    """A researcher's own batch-norm module; ``batch_norm_axis_name`` lets fit synchronize it under pmap."""
    batch_norm_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5, axis_name=self.batch_norm_axis_name)(x)
        return nn.Dense(3)(nn.relu(x))


def test_batch_norm_uses_global_batch_statistics_in_every_mode():
    """One device, pmap and sharded jit normalize with the same (global-batch) statistics."""
    data = blobs(n=48)
    config = dict(epochs=2, batch_size=16, shuffle=False)
    results = {mode: jn.fit(BNNet(), data, jn.optim.create("sgd", 0.05), jn.TrainConfig(parallel=mode, **config))
               for mode in ("none", "pmap", "sharded")}
    for mode in ("pmap", "sharded"):
        stats = results[mode].state.model_state["batch_stats"]
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(stats))
        assert max_diff(results[mode].state.params, results["none"].state.params) < 1e-5
        assert max_diff(results[mode].state.model_state, results["none"].state.model_state) < 1e-5
        assert abs(results[mode].final["test_loss"] / results["none"].final["test_loss"] - 1) < 1e-5


def test_pmap_refuses_batch_norm_it_cannot_synchronize():
    class Unsynchronized(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3)(nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x)))

    with pytest.raises(ValueError, match="^parallel: got 'pmap'; allowed: 'sharded' for Unsynchronized") as info:
        jn.fit(Unsynchronized(), blobs(n=48), jn.optim.create("sgd", 0.05),
               jn.TrainConfig(epochs=1, batch_size=16, parallel="pmap"))
    assert "\n" not in str(info.value)


def test_data_mesh_uses_auto_axes():
    mesh = data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == 4
    assert str(mesh.axis_types[0]).endswith("Auto")


def test_cli_parallel_option(tmp_path, capsys):
    from jaxnets.cli import main
    out = tmp_path / "run"
    status = main(["train", "--dataset", "iris", "--model", "mlp", "--hidden", "8", "--epochs", "2",
                   "--batch-size", "16", "--parallel", "sharded", "--no-progress", "--out", str(out)])
    assert status == 0
    status = main(["train", "--dataset", "iris", "--batch-size", "10", "--parallel", "pmap", "--no-progress"])
    assert status == 2
    assert "a multiple of the 4 devices" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_several_epochs_per_call_under_each_mode(runs, mode):
    config = jn.TrainConfig(epochs=3, batch_size=16, parallel=mode, eval_every=2)
    result = jn.fit(MLP(hidden=(16,), output_dim=3), blobs(), jn.optim.create("adam", 1e-2), config)
    assert result.traces["train_step"] == 1
    assert jn.tree.params_sha256(result.state.params) == jn.tree.params_sha256(runs[mode, "scan"].state.params)


@pytest.mark.parametrize("penalty", [{"l2": 0.05}, {"l1": 0.01}])
def test_penalties_count_once_across_devices(penalty):
    """The penalty gradient is added once after the all-reduce, not once per replica."""
    data = blobs()
    model = MLP(hidden=(16,), output_dim=3)
    params = {}
    for mode in ("none", "pmap", "sharded"):
        config = jn.TrainConfig(epochs=3, batch_size=16, parallel=mode, **penalty)
        params[mode] = jn.fit(model, data, jn.optim.create("sgd", 0.1), config).state.params
    unpenalized = jn.fit(model, data, jn.optim.create("sgd", 0.1),
                         jn.TrainConfig(epochs=3, batch_size=16, parallel="pmap")).state.params
    for mode in ("pmap", "sharded"):
        assert max_diff(params["none"], params[mode]) < 1e-5
    assert max_diff(params["pmap"], unpenalized) > 1e-3  # the penalty did act


def test_one_all_reduce_per_data_parallel_step():
    """Gradients, metric sums and example counts travel together: no extra synchronization point."""
    data = blobs()
    objective = jn.objective_for("multiclass")
    step = jax.pmap(make_train_step(objective, axis_name="d"), axis_name="d")
    state = jn.create_state(MLP(hidden=(16,), output_dim=3), jn.optim.create("adam", 1e-2), data.x_train)
    state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (4, *jnp.shape(a))), state)
    batch = {"x": jnp.asarray(data.x_train[:16]).reshape(4, 4, -1), "y": jnp.asarray(data.y_train[:16]).reshape(4, 4),
             "mask": jnp.ones((4, 4))}
    text = step.lower(state, batch).compile().as_text()
    assert text.count(" all-reduce(") + text.count(" all-reduce-start(") == 1


def test_one_all_reduce_in_the_sharded_step_too():
    data = blobs()
    objective = jn.objective_for("multiclass")
    config = jn.TrainConfig(epochs=1, batch_size=16, shuffle=False)
    geometry = batch_geometry(len(data.x_train), config.batch_size, shuffle=config.shuffle, drop_remainder=config.drop_remainder)
    runner = make_runner("sharded", lambda axis: make_train_step(objective, axis_name=axis, sharded_batch=True),
                         geometry, loop="python", traces={})
    state = runner.put_state(jn.create_state(MLP(hidden=(16,), output_dim=3), jn.optim.create("adam", 1e-2),
                                             data.x_train))
    xs, ys = runner.put_data(data.x_train), runner.put_data(data.y_train)
    text = runner.compiled_step_text(state, xs, ys, jax.random.key(0))
    assert text.count(" all-reduce(") + text.count(" all-reduce-start(") == 1


@pytest.mark.parametrize("mode", ["none", "pmap", "sharded"])
def test_a_finished_fit_frees_its_runner_without_the_garbage_collector(monkeypatch, mode):
    """No reference cycle through the compiled functions: the runner (its compiled steps
    and placed arrays) goes when fit returns, not at the next garbage collection."""
    import gc
    import weakref

    import jaxnets.train as train_module

    made = []

    def recording(*args, **kwargs):
        runner = make_runner(*args, **kwargs)
        made.append(weakref.ref(runner))
        return runner

    monkeypatch.setattr(train_module, "make_runner", recording)
    gc.disable()
    try:
        result = jn.fit(MLP(hidden=(4,), output_dim=3), blobs(), jn.optim.create("sgd", 0.1),
                        jn.TrainConfig(epochs=2, batch_size=16, parallel=mode, loop="python"))
        del result
        assert len(made) == 1 and made[0]() is None
    finally:
        gc.enable()


def test_cnn_with_batch_norm_gives_the_same_test_loss_in_every_mode():
    """Issue 13.3: a registry CNN with batch norm on 4 simulated devices: one device, pmap (fit
    sets batch_norm_axis_name) and sharded jit agree to relative 1e-5 on the test loss."""
    data = jn.data.load("digits")
    model = jn.models.get_model("cnn", output_dim=data.output_dim, channels=(4,), dense=(8,), batch_norm=True)
    losses = {}
    for mode in ("none", "pmap", "sharded"):
        result = jn.fit(model, data, jn.optim.create("sgd", 0.05),
                        jn.TrainConfig(epochs=1, batch_size=64, parallel=mode, eval_train=False))
        losses[mode] = result.final["test_loss"]
    for mode in ("pmap", "sharded"):
        assert abs(losses[mode] / losses["none"] - 1) < 1e-5, losses
