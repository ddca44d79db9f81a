"""A researcher's own parts, end to end (issue "Open core").

The script does what a research script would: it makes its own arrays with NumPy,
wraps them with ``jaxnets.data.from_arrays``, defines a plain Flax Linen module whose
``__call__(self, x)`` has no ``train`` argument, a per-example loss and a metrics
callable of its own, an ``optax.chain``, and then trains, stops from a callback, logs
per-step losses in both loops, predicts, saves, loads, runs on 4 simulated devices and
as a 4-member population. Every number is checked against an independent
computation (NumPy in float64, or plain jax + optax steps written here).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets as jn
import jaxnets.train
from jaxnets.population import fit_population

CENTERS = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], np.float32)


def three_blobs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (CENTERS[y] + 0.8 * rng.standard_normal((n, 2))).astype(np.float32)
    return x, y


X_TRAIN, Y_TRAIN = three_blobs(120, 0)
X_TEST, Y_TEST = three_blobs(30, 1)
# 96 training rows: batches of 40 give 3 steps per epoch, the last one padded (16 real rows).
DATA = jn.data.from_arrays(X_TRAIN, Y_TRAIN, x_test=X_TEST, y_test=Y_TEST, validation=0.2)
BATCH = 40


class Net(nn.Module):
    """A plain Linen module: no ``train`` argument, nothing from jaxnets."""

    features: int = 16
    classes: int = 3

    @nn.compact
    def __call__(self, x):
        hidden = nn.tanh(nn.Dense(self.features)(x))
        return nn.Dense(self.classes)(hidden)


def loss(outputs, targets):
    """Per-example softmax cross-entropy, (B, K) logits and (B,) labels -> (B,)."""
    log_p = jax.nn.log_softmax(outputs)
    return -jnp.take_along_axis(log_p, targets[:, None].astype(jnp.int32), axis=1)[:, 0]


def margin(outputs, targets):
    """Per-example gap between the largest and the second largest logit."""
    top2 = jnp.sort(outputs, axis=-1)[:, -2:]
    return {"margin": top2[:, 1] - top2[:, 0]}


def optimizer():
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))


def config(**changes) -> jn.TrainConfig:
    return jn.TrainConfig(**{"epochs": 3, "batch_size": BATCH, "loss": loss, "metrics": margin, **changes})


def np_cross_entropy(logits, labels) -> np.ndarray:
    """float64 per-example cross-entropy: the reference for ``loss``."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), np.asarray(labels)]


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


class StopAtEpoch:
    """A callback that records its calls and stops training after ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch, self.calls = epoch, []

    def __call__(self, epoch, metrics, state):
        self.calls.append((epoch, dict(metrics), state))
        return f"reached epoch {epoch}" if epoch == self.epoch else None


@pytest.fixture(scope="module")
def runs():
    """The same run in both loops, stopped by a callback after epoch 3 of 8."""
    out = {}
    for loop in ("scan", "python"):
        stop = StopAtEpoch(3)
        result = jn.fit(Net(), DATA, optimizer(), config(epochs=8, log_every_steps=2, loop=loop), callbacks=[stop])
        out[loop] = (result, stop)
    return out


def test_from_arrays_makes_the_dataset_the_script_describes():
    assert (DATA.task, DATA.output_dim, DATA.num_train, DATA.num_val, DATA.num_test) == ("multiclass", 3, 96, 24, 30)
    assert DATA.x_train.dtype == np.float32


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_a_callback_stops_training_and_the_result_says_why(runs, loop):
    result, stop = runs[loop]
    assert result.stop_reason == "reached epoch 3"
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2, 3]
    assert int(result.state.step) == 4 * 3  # 4 epochs of 3 steps: nothing ran after the stop
    assert [epoch for epoch, _, _ in stop.calls] == [0, 1, 2, 3]
    epoch, metrics, state = stop.calls[-1]
    assert metrics == result.history[-1]
    assert isinstance(state, jn.TrainState) and int(state.step) == 12
    assert not stop.calls[0][2].train_arg  # the module's __call__ has no train argument


def test_the_metrics_callable_is_averaged_over_each_split(runs):
    result, _ = runs["scan"]
    entry = result.history[-1]
    assert {"train_margin", "val_margin", "test_margin", "test_loss", "test_accuracy"} <= set(entry)
    logits = np.asarray(Net().apply({"params": result.state.params}, X_TEST), np.float64)
    top2 = np.sort(logits, axis=1)[:, -2:]
    np.testing.assert_allclose(entry["test_margin"], (top2[:, 1] - top2[:, 0]).mean(), rtol=1e-5)
    np.testing.assert_allclose(entry["test_loss"], np_cross_entropy(logits, Y_TEST).mean(), rtol=1e-5)
    assert entry["test_accuracy"] == np.mean(logits.argmax(axis=1) == Y_TEST)


def test_per_step_losses_are_the_same_in_both_loops(runs):
    scan, python = runs["scan"][0].step_history, runs["python"][0].step_history
    assert [(h["step"], h["epoch"]) for h in scan] == [(2, 0), (4, 1), (6, 1), (8, 2), (10, 3), (12, 3)]
    assert [(h["step"], h["epoch"]) for h in python] == [(h["step"], h["epoch"]) for h in scan]
    np.testing.assert_array_equal([h["loss"] for h in python], [h["loss"] for h in scan])


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_each_logged_loss_is_the_loss_of_that_steps_batch(loop):
    """Unshuffled batches are rows [40j, 40j+40): redo every step with jax + optax here and
    compare its batch loss (NumPy, float64, real rows only) with ``step_history``."""
    tx = optimizer()
    result = jn.fit(Net(), DATA, tx, config(epochs=2, shuffle=False, log_every_steps=1, loop=loop))
    params = jn.create_state(Net(), tx, DATA.x_train, seed=0).params  # fit's initialization (same seed)
    opt_state = tx.init(params)
    expected = []
    for step in range(6):
        start = (step % 3) * BATCH
        xb, yb = DATA.x_train[start:start + BATCH], DATA.y_train[start:start + BATCH]
        logits = Net().apply({"params": params}, xb)
        expected.append(np_cross_entropy(logits, yb).mean())
        grads = jax.grad(lambda p: loss(Net().apply({"params": p}, xb), yb).mean())(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    assert [h["step"] for h in result.step_history] == [1, 2, 3, 4, 5, 6]
    assert len(DATA.x_train[2 * BATCH:3 * BATCH]) == 16  # the padded last batch counts its real rows only
    np.testing.assert_allclose([h["loss"] for h in result.step_history], expected, rtol=2e-5)
    for ours, theirs in zip(jax.tree_util.tree_leaves(result.state.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_predict_save_load_predict_is_bitwise_equal(runs, tmp_path):
    state = runs["scan"][0].state
    outputs = jn.predict(state, X_TEST)
    assert outputs.shape == (30, 3) and outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, Net().apply({"params": state.params}, X_TEST), rtol=1e-6)
    path = jn.save_model(tmp_path / "net", state, Net())  # the input shape comes from the state
    loaded = jn.load_model(path, model=Net())
    assert loaded.spec["feature_shape"] == [2]
    assert np.array_equal(jn.predict(loaded, X_TEST), outputs)
    assert np.array_equal(jn.predict(loaded, X_TEST, batch_size=7), jn.predict(state, X_TEST, batch_size=7))
    with pytest.raises(ValueError) as excinfo:
        jn.load_model(path)  # a module of the script's own is not imported by name
    message = one_line_error(excinfo)
    assert message.startswith(f"model: got None, and {str(path)!r} holds your own ") and "Net" in message
    assert message.endswith(f"allowed: the module itself, load_model({str(path)!r}, model=Net(...))")


def test_a_registry_model_is_rebuilt_from_its_directory(tmp_path):
    model = jn.models.MLP(hidden=(8,), output_dim=3)
    state = jn.fit(model, DATA, optimizer(), config(epochs=1)).state
    path = jn.save_model(tmp_path / "mlp", state, model, task=DATA.task)
    loaded = jn.load_model(path)  # model=None: rebuilt from model.json
    assert type(loaded.model) is jn.models.MLP and loaded.model == model
    assert np.array_equal(jn.predict(loaded, X_TEST), jn.predict(state, X_TEST))


def test_loading_another_models_directory_names_the_first_differing_parameter(runs, tmp_path):
    path = jn.save_model(tmp_path / "net", runs["scan"][0].state, Net())
    with pytest.raises(ValueError) as excinfo:
        jn.load_model(path, model=Net(features=8))
    message = one_line_error(excinfo)
    assert message.startswith("parameter params/Dense_0/bias: got \"shape (16,)")
    assert message.endswith("allowed: shape (8,) for this model")


@pytest.mark.parametrize("mode", ["sharded", "pmap"])
def test_the_module_runs_on_four_devices_like_on_one(mode):
    """One device divides the batch loss first; four sum, all-reduce, then divide: the
    two differ by float32 rounding only, which Adam's normalized steps keep small."""
    assert jax.device_count() == 4
    one = jn.fit(Net(), DATA, optimizer(), config(log_every_steps=1))
    four = jn.fit(Net(), DATA, optimizer(), config(log_every_steps=1, parallel=mode))
    assert np.shape(four.state.step) == ()  # fit hands back one copy of the state, whatever the mode
    for a, b in zip(jax.tree_util.tree_leaves(one.state.params), jax.tree_util.tree_leaves(four.state.params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([h["loss"] for h in four.step_history], [h["loss"] for h in one.step_history],
                               rtol=1e-5)
    np.testing.assert_allclose(four.history[-1]["test_margin"], one.history[-1]["test_margin"], rtol=1e-4)
    np.testing.assert_allclose(jn.predict(four.state, X_TEST), jn.predict(one.state, X_TEST), rtol=1e-4, atol=1e-5)


def test_the_module_trains_as_a_four_member_population():
    seeds = [0, 1, 2, 3]
    result = fit_population(Net(), DATA, optimizer(), config(epochs=2), seeds=seeds)
    assert len(result.history[-1]["train_loss"]) == 4 and len(result.history[-1]["test_margin"]) == 4
    for seed in (0, 3):  # each member computes what fit with its seed computes
        alone = jn.fit(Net(), DATA, optimizer(), config(epochs=2, seed=seed))
        member = result.member_state(seed)
        for a, b in zip(jax.tree_util.tree_leaves(alone.state.params), jax.tree_util.tree_leaves(member.params)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.history[-1]["test_loss"][seed], alone.history[-1]["test_loss"], rtol=1e-5)


def test_a_population_sweep_needs_the_optimizers_traced_hyperparameters():
    with pytest.raises(ValueError) as excinfo:
        fit_population(Net(), DATA, optimizer(), config(epochs=1), seeds=[0, 1],
                       hyperparams={"learning_rate": [1e-2, 1e-3]})
    assert "jaxnets.optim.create" in one_line_error(excinfo)


def test_a_module_with_the_wrong_output_shape_is_refused_naming_the_expected_one(monkeypatch):
    monkeypatch.setattr(jaxnets.train, "make_runner", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ValueError) as excinfo:
        jn.fit(Net(classes=4), DATA, optimizer(), jn.TrainConfig(epochs=1, batch_size=BATCH))
    assert "got 'outputs of shape (batch, 4)'; allowed: (batch, 3)" in one_line_error(excinfo)


def test_a_registry_mlp_with_too_few_outputs_is_refused_before_training(monkeypatch):
    monkeypatch.setattr(jaxnets.train, "create_state", lambda *a, **k: pytest.fail("state created"))
    monkeypatch.setattr(jaxnets.train, "make_runner", lambda *a, **k: pytest.fail("training started"))
    rng = np.random.default_rng(2)
    ten = jn.data.from_arrays(rng.standard_normal((50, 4)), np.arange(50) % 10)
    with pytest.raises(ValueError) as excinfo:
        jn.fit(jn.models.MLP(hidden=(8,), output_dim=3), ten, optimizer(), jn.TrainConfig(epochs=1))
    assert "allowed: (batch, 10)" in one_line_error(excinfo)


@pytest.mark.parametrize("args, field, says", [
    (lambda: (Net(), (X_TRAIN, Y_TRAIN), optimizer(), config()), "data", "jaxnets.data.from_arrays("),
    (lambda: (Net(), X_TRAIN, optimizer(), config()), "data", "jaxnets.data.from_arrays("),
    (lambda: (Net(), DATA, optimizer(), {"epochs": 1}), "config", "TrainConfig(**d)"),
    (lambda: (Net(), DATA, "adam", config()), "tx", "jaxnets.optim.create('adam', 1e-3)"),
    (lambda: (Net, DATA, optimizer(), config()), "model", "nn.Module"),
], ids=["tuple", "array", "dict-config", "optimizer-name", "module-class"])
def test_arguments_of_the_wrong_kind_say_what_to_pass(args, field, says):
    with pytest.raises(ValueError) as excinfo:
        jn.fit(*args())
    message = one_line_error(excinfo)
    assert message.startswith(f"{field}: got ") and says in message


class BatchNormDropoutNet(nn.Module):
    """The script's own module with batch statistics and dropout (it takes ``train``)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(nn.Dense(16)(x))
        h = nn.Dropout(0.3, deterministic=not train)(nn.relu(h))
        return nn.Dense(3)(h)


def test_a_module_with_batch_stats_and_dropout_trains():
    model = BatchNormDropoutNet()
    initial = jn.create_state(model, optimizer(), DATA.x_train)
    result = jn.fit(model, DATA, optimizer(), jn.TrainConfig(epochs=6, batch_size=BATCH, log_every_steps=1))
    assert result.state.train_arg and sorted(result.state.model_state) == ["batch_stats"]
    mean = result.state.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(mean, initial.model_state["batch_stats"]["BatchNorm_0"]["mean"])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # Evaluation mode uses the running statistics and no dropout: predictions are a function.
    variables = {"params": result.state.params, **result.state.model_state}
    np.testing.assert_allclose(jn.predict(result.state, X_TEST), model.apply(variables, X_TEST), rtol=1e-6)
    # Training mode draws dropout: two keys give two outputs.
    train_out = [model.apply(variables, X_TEST, train=True, rngs={"dropout": jax.random.key(k)},
                             mutable=["batch_stats"])[0] for k in (0, 1)]
    assert not np.allclose(*train_out)


def test_flops_per_step_matches_a_hand_count_of_the_matrix_products():
    """MLP d -> h -> k on a batch B. XLA counts a (B, m) @ (m, n) product as 2·B·m·n flops.
    One step has the forward products, the weight gradients (the same count again) and
    the input gradient of the second layer only (nothing needs the input's):
        hand = 2B(dh + hk) · 2 + 2B·hk.
    The rest (bias, ReLU, softmax, the optimizer's per-parameter update) is O(B(h + k) +
    parameters), under 25 % of the products for these sizes, so hand <= flops <= 1.25·hand;
    and doubling B doubles flops to within the per-parameter part."""
    d, h, k = 16, 64, 3
    rng = np.random.default_rng(3)
    data = jn.data.from_arrays(rng.standard_normal((128, d)), np.arange(128) % k,
                               x_test=rng.standard_normal((4, d)), y_test=np.arange(4) % k)
    flops = {}
    for batch in (32, 64):
        result = jn.fit(jn.models.MLP(hidden=(h,), output_dim=k), data, optax.sgd(0.1),
                        jn.TrainConfig(epochs=1, batch_size=batch))
        hand = 2 * batch * (d * h + h * k) * 2 + 2 * batch * h * k
        flops[batch] = result.flops_per_step
        assert np.isfinite(result.flops_per_step) and hand <= result.flops_per_step <= 1.25 * hand
        assert np.isfinite(result.gflops_per_s) and result.gflops_per_s > 0
    assert 1.9 <= flops[64] / flops[32] <= 2.05
