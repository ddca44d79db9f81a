"""The training loop: trace counts, loop equivalence, masking, references for GD and OLS."""
import jax
import numpy as np
import optax
import pytest

import jaxnets as jn
from jaxnets.data import Dataset
from jaxnets.models import MLP, LinearRegression
from jaxnets.epochs import epoch_plan, num_batches_per_epoch, steps_for
from jaxnets.steps import make_train_step
from tests.helpers import problems


def regression_data(n=37, d=3, seed=0, noise=0.1, n_test=11):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, 1))
    x = rng.normal(size=(n + n_test, d)).astype(np.float32)
    y = (x @ w + 0.5 + noise * rng.normal(size=(n + n_test, 1))).astype(np.float32)
    empty_x, empty_y = np.zeros((0, d), np.float32), np.zeros((0, 1), np.float32)
    return Dataset(x_train=x[:n], y_train=y[:n], x_val=empty_x, y_val=empty_y, x_test=x[n:], y_test=y[n:],
                   task="regression", name="toy")


def classification_data(n=50, d=4, k=3, seed=0):
    return problems.blobs(n, d, k, seed, n_val=10, n_test=10)


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_train_step_traced_once_over_three_epochs_with_partial_batch(loop):
    data = classification_data(n=50)
    assert data.num_train % 16 != 0
    config = jn.TrainConfig(epochs=3, batch_size=16, loop=loop)
    result = jn.fit(MLP(hidden=(8,), output_dim=3), data, jn.optim.create("sgd", 0.1), config)
    assert result.traces["train_step"] == 1
    assert result.traces["eval_step"] == 1
    assert int(result.state.step) == 3 * 4
    assert len(result.history) == 3


def test_scan_and_python_loops_give_identical_parameters():
    data = classification_data(n=50)
    model = MLP(hidden=(8,), output_dim=3)
    results = [jn.fit(model, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(epochs=3, batch_size=16, loop=loop))
               for loop in ("scan", "python")]
    assert leaves_equal(results[0].state.params, results[1].state.params)
    assert results[0].history[-1]["train_loss"] == results[1].history[-1]["train_loss"]


def test_same_seed_same_run_and_different_seed_different_run():
    data = classification_data()
    model = MLP(hidden=(8,), output_dim=3)

    def run(seed):
        config = jn.TrainConfig(epochs=2, batch_size=16, seed=seed)
        return jn.tree.params_sha256(jn.fit(model, data, jn.optim.create("sgd", 0.1), config).state.params)

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_epoch_plan_covers_every_row_once_and_masks_padding():
    idx, mask = epoch_plan(jax.random.key(3), 2, 10, 4)
    idx, mask = np.asarray(idx), np.asarray(mask)
    assert idx.shape == mask.shape == (3, 4)
    real = idx[mask == 1]
    assert sorted(real.tolist()) == list(range(10))
    assert mask.sum() == 10
    other, _ = epoch_plan(jax.random.key(3), 3, 10, 4)
    assert not np.array_equal(np.asarray(other), idx)  # a new order every epoch
    again, _ = epoch_plan(jax.random.key(3), 2, 10, 4)
    assert np.array_equal(np.asarray(again), idx)  # a pure function of (key, epoch)
    dropped, dmask = epoch_plan(jax.random.key(3), 2, 10, 4, drop_remainder=True)
    assert dropped.shape == (2, 4) and float(dmask.sum()) == 8


def test_masked_padded_batch_gives_the_gradient_of_the_real_rows():
    """A padded batch's update equals plain GD on the real rows (NumPy reference)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2)).astype(np.float32)
    y = rng.normal(size=(5, 1)).astype(np.float32)
    model = LinearRegression(output_dim=1)
    tx = jn.optim.create("sgd", 0.1)
    state = jn.create_state(model, tx, x)
    kernel_path = next(iter(state.params))
    w0 = np.asarray(state.params[kernel_path]["kernel"], np.float64)
    b0 = np.asarray(state.params[kernel_path]["bias"], np.float64)
    objective = jn.objective_for("regression")
    step = jax.jit(make_train_step(objective))
    # 3 real rows + 2 padding rows (copies of real rows, mask 0)
    batch = {"x": x[[0, 1, 2, 0, 1]], "y": y[[0, 1, 2, 0, 1]], "mask": np.array([1, 1, 1, 0, 0], np.float32)}
    new_state, sums = step(state, batch)
    xr, yr = x[:3].astype(np.float64), y[:3].astype(np.float64)
    residual = xr @ w0 + b0 - yr
    grad_w = 2 * xr.T @ residual / 3
    grad_b = 2 * residual.sum(0) / 3
    np.testing.assert_allclose(new_state.params[kernel_path]["kernel"], w0 - 0.1 * grad_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.params[kernel_path]["bias"], b0 - 0.1 * grad_b, rtol=1e-5, atol=1e-6)
    assert float(sums["count"]) == 3
    np.testing.assert_allclose(float(sums["loss"]), float(np.sum(residual ** 2)), rtol=1e-5)


def test_full_batch_gradient_descent_matches_numpy_iterations():
    data = regression_data(n=20, d=2)
    model = LinearRegression(output_dim=1)
    eta, epochs = 0.05, 30
    result = jn.fit(model, data, jn.optim.create("sgd", eta),
                    jn.TrainConfig(epochs=epochs, batch_size=None, eval_every=epochs))
    assert int(result.state.step) == epochs  # one step per epoch: batch gradient descent
    start = jn.create_state(model, jn.optim.create("sgd", eta), data.x_train)  # same seed, same init
    layer = next(iter(start.params))
    w = np.asarray(start.params[layer]["kernel"], np.float64)
    b = np.asarray(start.params[layer]["bias"], np.float64)
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    for _ in range(epochs):
        r = x @ w + b - y
        w, b = w - eta * 2 * x.T @ r / len(x), b - eta * 2 * r.sum(0) / len(x)
    np.testing.assert_allclose(result.state.params[layer]["kernel"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.state.params[layer]["bias"], b, rtol=1e-4, atol=1e-5)


def test_linear_regression_reaches_the_ols_solution():
    data = regression_data(n=200, d=3)
    result = jn.fit(LinearRegression(output_dim=1), data, jn.optim.create("sgd", 0.1),
                    jn.TrainConfig(epochs=500, batch_size=None, eval_every=500))
    x1 = np.hstack([data.x_train, np.ones((data.num_train, 1))]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(x1, data.y_train.astype(np.float64), rcond=None)
    layer = next(iter(result.state.params))
    np.testing.assert_allclose(result.state.params[layer]["kernel"], coef[:3], atol=1e-4)
    np.testing.assert_allclose(result.state.params[layer]["bias"], coef[3], atol=1e-4)
    # the reported R² agrees with NumPy's on the test split
    pred = np.hstack([data.x_test, np.ones((data.num_test, 1))]) @ coef
    ss_res = np.sum((data.y_test - pred) ** 2)
    ss_tot = np.sum((data.y_test - data.y_test.mean()) ** 2)
    assert abs(result.final["test_r2"] - (1 - ss_res / ss_tot)) < 1e-4


@pytest.mark.parametrize("batch_size, expected_steps", [(None, 1), (1, 50), (16, 4), (50, 1), (500, 1)])
def test_batch_stochastic_and_minibatch_step_counts(batch_size, expected_steps):
    data = classification_data(n=50)
    result = jn.fit(MLP(hidden=(4,), output_dim=3), data, jn.optim.create("sgd", 0.01),
                    jn.TrainConfig(epochs=2, batch_size=batch_size))
    assert int(result.state.step) == 2 * expected_steps == steps_for(50, batch_size, 2)


def test_evaluate_matches_numpy_on_model_outputs():
    data = classification_data(n=50)
    model = MLP(hidden=(8,), output_dim=3)
    state = jn.create_state(model, optax.sgd(0.1), data.x_train, seed=4)
    logits = np.asarray(model.apply({"params": state.params}, data.x_test), np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected_loss = -log_probs[np.arange(len(data.y_test)), data.y_test].mean()
    expected_acc = (logits.argmax(1) == data.y_test).mean()
    for batch_size in (1, 3, 7, 100):  # padded last batches must not change anything
        metrics = jn.evaluate(state, data.x_test, data.y_test, jn.objective_for("multiclass"), batch_size=batch_size)
        assert abs(metrics["loss"] - expected_loss) < 1e-5
        assert metrics["accuracy"] == pytest.approx(expected_acc)


def test_early_stopping_stops_and_restores_the_best_epoch():
    data = classification_data(n=50)
    config = jn.TrainConfig(epochs=200, batch_size=10, early_stopping_patience=3, monitor="val_loss")
    result = jn.fit(MLP(hidden=(32,), output_dim=3), data, jn.optim.create("adam", 0.05), config)
    epochs_run = result.history[-1]["epoch"] + 1
    assert epochs_run < 200
    best = min(result.history, key=lambda e: e["val_loss"])
    assert result.best_epoch == best["epoch"]
    assert result.history[-1]["epoch"] == best["epoch"] + 3
    again = jn.evaluate(result.state, data.x_val, data.y_val, jn.objective_for("multiclass"))
    assert again["loss"] == pytest.approx(best["val_loss"], rel=1e-6)


def test_l2_penalty_enters_the_gradient_on_weights_only():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 2)).astype(np.float32)
    y = rng.normal(size=(4, 1)).astype(np.float32)
    model = LinearRegression(output_dim=1)
    tx = jn.optim.create("sgd", 1.0)
    state = jn.create_state(model, tx, x)
    batch = {"x": x, "y": y, "mask": np.ones(4, np.float32)}
    plain, _ = jax.jit(make_train_step(jn.objective_for("regression")))(state, batch)
    state = jn.create_state(model, tx, x)
    ridge, _ = jax.jit(make_train_step(jn.objective_for("regression", l2=0.5)))(state, batch)
    state = jn.create_state(model, tx, x)
    layer = next(iter(state.params))
    w0 = np.asarray(state.params[layer]["kernel"])
    np.testing.assert_allclose(plain.params[layer]["kernel"] - ridge.params[layer]["kernel"], 0.5 * w0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(plain.params[layer]["bias"], ridge.params[layer]["bias"])


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs: got 0; allowed: an integer >= 1"),
    ({"batch_size": 0}, "batch_size: got 0; allowed: an integer >= 1"),
    ({"batch_size": 2.5}, "batch_size: got 2.5"),
    ({"loop": "while"}, "loop: got 'while'; allowed: scan, python"),
    ({"monitor": "loss"}, "monitor: got 'loss'"),
    ({"l2": -1.0}, "l2: got -1.0; allowed: a number >= 0"),
    ({"early_stopping_patience": 0}, "early_stopping_patience: got 0"),
])
def test_train_config_rejects_bad_values_with_one_line(kwargs, message):
    with pytest.raises(ValueError) as info:
        jn.TrainConfig(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_fit_checks_arrays_before_compiling():
    data = regression_data()
    bad = Dataset.__new__(Dataset)
    object.__setattr__(bad, "__dict__", dict(data.__dict__))
    object.__setattr__(bad, "x_train", np.full_like(data.x_train, np.nan))
    with pytest.raises(ValueError, match="x_train: got non-finite values"):
        jn.fit(LinearRegression(output_dim=1), bad, jn.optim.create("sgd", 0.1), jn.TrainConfig(epochs=1))


def test_num_batches_per_epoch():
    assert num_batches_per_epoch(10, 4) == 3
    assert num_batches_per_epoch(10, 4, drop_remainder=True) == 2
    assert num_batches_per_epoch(8, 4) == 2


def test_history_keys_and_metrics_are_finite():
    data = classification_data()
    result = jn.fit(MLP(hidden=(8,), output_dim=3), data, jn.optim.create("momentum", 0.05),
                    jn.TrainConfig(epochs=2, batch_size=8))
    entry = result.history[-1]
    for key in ("epoch", "step", "epoch_loss", "train_loss", "train_accuracy", "val_loss",
                "val_accuracy", "test_loss", "test_accuracy", "time_s"):
        assert key in entry and np.isfinite(entry[key])
    assert result.num_params == 4 * 8 + 8 + 8 * 3 + 3
    assert result.steps_per_s > 0


def test_several_epochs_per_call_match_one_epoch_per_call():
    """eval_every=k runs k epochs in one compiled call (a fori_loop around the epoch scan)."""
    data = classification_data(n=50)
    model = MLP(hidden=(8,), output_dim=3)
    one = jn.fit(model, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(epochs=7, batch_size=16))
    many = jn.fit(model, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(epochs=7, batch_size=16, eval_every=3))
    assert leaves_equal(one.state.params, many.state.params)
    assert [e["epoch"] for e in many.history] == [2, 5, 6]
    assert many.traces["train_step"] == 1 and many.traces["epoch"] == 1
    assert many.history[-1]["train_loss"] == one.history[-1]["train_loss"]
