"""Mixed precision: bfloat16/float16 computation, float32 parameters, optimizer state and loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets as jn
from jaxnets.models import get_model


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_compute_trains_close_to_float32(dtype):
    data = jn.data.load("digits")
    config = jn.TrainConfig(epochs=8, batch_size=128)
    results = {}
    for name in ("float32", dtype):
        model = get_model("mlp", output_dim=10, hidden=(64,), dtype=name)
        results[name] = jn.fit(model, data, jn.optim.create("adam", 1e-3), config)
    low = results[dtype]
    for leaf in jax.tree_util.tree_leaves(low.state.params) + jax.tree_util.tree_leaves(low.state.opt_state):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            assert jnp.asarray(leaf).dtype == jnp.float32  # storage stays float32
    full, reduced = results["float32"].final, low.final
    assert abs(reduced["train_loss"] - full["train_loss"]) < 0.05 * full["train_loss"] + 0.01
    assert abs(reduced["test_accuracy"] - full["test_accuracy"]) < 0.03


def test_low_precision_forward_really_computes_in_that_dtype():
    model = get_model("mlp", output_dim=3, hidden=(8,), dtype="bfloat16")
    x = jnp.ones((2, 4))
    variables = model.init({"params": jax.random.key(0)}, x)
    assert model.apply(variables, x).dtype == jnp.bfloat16
    assert variables["params"]["hidden_0"]["kernel"].dtype == jnp.float32


def test_unknown_compute_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype: got 'float8'; allowed: float32, bfloat16, float16"):
        get_model("mlp", output_dim=3, dtype="float8")


def test_cli_compute_dtype(tmp_path, capsys):
    from jaxnets.cli import main
    status = main(["train", "--dataset", "iris", "--hidden", "8", "--epochs", "2", "--compute-dtype", "bfloat16",
                   "--no-progress", "--out", str(tmp_path / "run")])
    assert status == 0
    assert main(["train", "--compute-dtype", "int8", "--no-progress"]) == 2
    assert "--compute-dtype: got 'int8'" in capsys.readouterr().err


# ------------------------------------------------------------ every registry model in bfloat16

def _table(x, y, task, num_classes=None):
    """A tiny Dataset: the first 16 rows train, the last 8 test."""
    return jn.data.Dataset(x_train=x[:16], y_train=y[:16], x_val=x[:0], y_val=y[:0], x_test=x[16:],
                           y_test=y[16:], task=task, num_classes=num_classes, name="tiny")


def _data(kind):
    rng = np.random.default_rng(0)
    n = 24
    if kind == "tokens":  # ids 1..7 with 0 = padding at the end of some rows
        ids = rng.integers(1, 8, (n, 6))
        ids[::3, 4:] = 0
        return _table(ids.astype(np.float32), (ids[:, 0] > 3).astype(np.int32), "binary", 2)
    if kind == "lm":  # every position labelled with the next token
        ids = rng.integers(0, 8, (n, 7))
        return _table(ids[:, :-1].astype(np.float32), ids[:, 1:].astype(np.int32), "multiclass", 8)
    shape = {"table": (4,), "sequence": (5, 2), "image": (8, 8, 1), "signal": (40,)}[kind]
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    if kind == "sequence":
        return _table(x, x.sum(axis=(1, 2))[:, None].astype(np.float32), "regression")
    return _table(x, rng.integers(0, 3, n).astype(np.int32), "multiclass", 3)


_SMALL_TRANSFORMER = dict(d_model=16, num_heads=2, num_layers=1, mlp_dim=32, max_len=8)
#: name -> (options, input kind). Every registry model must appear (checked below).
_REGISTRY_CASES = {
    "linear": ({}, "table"),
    "logistic": ({}, "table"),
    "mlp": (dict(hidden=(8,)), "table"),
    "rnn": (dict(hidden_size=8), "sequence"),
    "lstm": (dict(hidden_size=8), "sequence"),
    "gru": (dict(hidden_size=8), "sequence"),
    "transformer": (dict(vocab_size=8, **_SMALL_TRANSFORMER), "tokens"),
    "transformer_lm": (_SMALL_TRANSFORMER, "lm"),
    "cnn": (dict(channels=(4,), dense=(8,), batch_norm=True), "image"),
    "lenet": ({}, "image"),
    "cnn1d": (dict(channels=4), "signal"),
    "vgg": (dict(channels=(4,), convs=1, dense=(8,)), "image"),
}


def _product_input_dtypes(jaxpr):
    """Dtypes of the operands of every matrix product and convolution in ``jaxpr``, nested ones included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            yield from (v.aval.dtype for v in eqn.invars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _product_input_dtypes(sub)


def test_registry_cases_cover_every_model():
    assert set(_REGISTRY_CASES) == set(jn.models.MODELS)


@pytest.mark.parametrize("name", sorted(_REGISTRY_CASES))
def test_every_registry_model_computes_in_bfloat16_with_float32_parameters(name):
    options, kind = _REGISTRY_CASES[name]
    data = _data(kind)
    model = get_model(name, output_dim=data.output_dim, dtype="bfloat16", **options)
    x = jnp.asarray(data.x_train[:4])
    # Shapes and dtypes only (no eager computation): fit below runs the real thing.
    variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, x)
    float_leaves = [leaf for leaf in jax.tree_util.tree_leaves(variables)
                    if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert float_leaves and all(leaf.dtype == jnp.float32 for leaf in float_leaves)
    assert jax.eval_shape(model.apply, variables, x).dtype == jnp.bfloat16
    # Not only the last layer: every matrix product and convolution, forward and in
    # the training step's gradient, takes bfloat16 operands.
    def loss(params, others):
        out = model.apply({**others, "params": params}, x, train=True, mutable=["batch_stats"])[0]
        return jnp.sum(out.astype(jnp.float32))
    others = {key: value for key, value in variables.items() if key != "params"}
    jaxpr = jax.make_jaxpr(jax.grad(loss))(variables["params"], others).jaxpr
    products = list(_product_input_dtypes(jaxpr))
    assert products and set(products) == {jnp.dtype(jnp.bfloat16)}

    result = jn.fit(model, data, jn.optim.create("adam", 1e-3), jn.TrainConfig(epochs=1, batch_size=8))
    params = jax.tree_util.tree_leaves(result.state.params)
    assert all(leaf.dtype == jnp.float32 for leaf in params)
    assert np.isfinite(result.final["train_loss"])


#: Every registry model from the command line: a built-in dataset it fits, and small options.
_CLI_CASES = {
    "linear": ("diabetes", []),
    "logistic": ("breast_cancer", []),
    "mlp": ("iris", ["--hidden", "8"]),
    "rnn": ("adding", ["--model-opt", "hidden_size=8"]),
    "lstm": ("adding", ["--model-opt", "hidden_size=8"]),
    "gru": ("adding", ["--model-opt", "hidden_size=8"]),
    "transformer": ("reviews", ["--model-opt", "d_model=16", "--model-opt", "num_heads=2", "--model-opt",
                                "num_layers=1", "--model-opt", "mlp_dim=32"]),
    "transformer_lm": ("grammar_lm", ["--model-opt", "d_model=16", "--model-opt", "num_heads=2", "--model-opt",
                                      "num_layers=1", "--model-opt", "mlp_dim=32"]),
    "cnn": ("digits", ["--model-opt", "channels=4", "--model-opt", "dense=8", "--model-opt", "batch_norm=True"]),
    "lenet": ("digits", []),
    "cnn1d": ("digits", ["--model-opt", "channels=4"]),
    "vgg": ("digits", ["--model-opt", "channels=4", "--model-opt", "convs=1", "--model-opt", "dense=8",
                       "--model-opt", "input_shape=8,8,1"]),
}


@pytest.mark.parametrize("name", sorted(_CLI_CASES))
def test_cli_trains_every_registry_model_in_bfloat16(name, tmp_path):
    """docs/execution.md: every registry model takes --compute-dtype bfloat16 from the CLI."""
    import json

    from jaxnets.cli import main
    assert set(_CLI_CASES) == set(jn.models.MODELS)
    dataset, options = _CLI_CASES[name]
    out = tmp_path / "run"
    assert main(["train", "--dataset", dataset, "--model", name, *options, "--compute-dtype", "bfloat16",
                 "--epochs", "1", "--batch-size", "256", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["compute_dtype"] == "bfloat16" and summary["status"] == "done"
    assert all(np.isfinite(summary[key]) for key in ("train_loss", "test_loss"))


# ------------------------------------------------------------ float16 with loss scaling

def _finite(state) -> bool:
    """Every float of the parameters, optimizer state and model state is finite."""
    leaves = jax.tree_util.tree_leaves((state.params, state.opt_state, state.model_state))
    return all(bool(np.all(np.isfinite(np.asarray(leaf, np.float64)))) for leaf in leaves)


def test_dynamic_loss_scale_survives_forced_overflows_with_every_checkpoint_finite(tmp_path):
    """A scale of 2^40 overflows float16's backward pass (max 65504): those steps are skipped and
    the scale halved until the gradients fit; training then proceeds and never writes a NaN."""
    from jaxnets.checkpoint import CheckpointManager
    data = jn.data.load("digits")
    model = get_model("mlp", output_dim=10, hidden=(64,), dtype="float16")
    config = jn.TrainConfig(epochs=4, batch_size=64, loss_scale="dynamic", loss_scale_init=2.0 ** 40)
    result = jn.fit(model, data, jn.optim.create("adam", 1e-3), config,
                    checkpoint=jn.CheckpointConfig(str(tmp_path), every_epochs=1, keep=10))
    scaler = result.state.opt_state
    skipped = int(scaler.skipped)
    assert 1 <= skipped < result.history[-1]["step"] // 2
    # no growth within the 2000-step period: every skip halved the scale exactly once
    assert float(scaler.scale) == 2.0 ** (40 - skipped)
    assert _finite(result.state)
    losses = [entry["train_loss"] for entry in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    manager = CheckpointManager(tmp_path, keep=10)
    assert len(manager.steps()) == 4
    for step in manager.steps():
        restored, _ = manager.restore(result.state, step)
        assert _finite(restored)
        assert float(restored.opt_state.scale) <= 2.0 ** 40  # the scale is checkpointed with the state


def test_dynamic_loss_scale_doubles_after_each_period_of_finite_steps():
    data = jn.data.load("iris")
    config = jn.TrainConfig(epochs=4, batch_size=30, loss_scale="dynamic", loss_scale_init=1.0, loss_scale_period=5)
    result = jn.fit(get_model("mlp", output_dim=3, hidden=(8,)), data, jn.optim.create("sgd", 0.1), config)
    scaler, steps = result.state.opt_state, result.history[-1]["step"]
    assert steps >= 10
    assert (float(scaler.scale), int(scaler.good_steps), int(scaler.skipped)) == (2.0 ** (steps // 5), steps % 5, 0)


def test_a_static_power_of_two_scale_changes_no_float32_result():
    """Scaling by 2^10 and unscaling is exact in float32 (no overflow): same parameters as unscaled."""
    data = jn.data.load("iris")
    runs = [jn.fit(get_model("mlp", output_dim=3, hidden=(8,)), data, jn.optim.create("adam", 1e-2),
                   jn.TrainConfig(epochs=3, batch_size=30, loss_scale=scale)) for scale in (None, 1024.0)]
    for a, b in zip(jax.tree_util.tree_leaves(runs[0].state.params), jax.tree_util.tree_leaves(runs[1].state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert float(runs[1].state.opt_state.scale) == 1024.0


def test_an_overflowed_step_leaves_parameters_and_optimizer_state_unchanged():
    import optax
    from jaxnets.steps import loss_scaling
    tx = loss_scaling(optax.adam(0.1), 16.0, period=3)
    params = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    updates, after = tx.update({"w": jnp.array([np.nan, 1.0])}, state, params)
    assert np.all(np.asarray(updates["w"]) == 0.0)
    assert (float(after.scale), int(after.skipped), int(after.good_steps)) == (8.0, 1, 0)
    for a, b in zip(jax.tree_util.tree_leaves(after.inner), jax.tree_util.tree_leaves(state.inner)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # three finite steps double the scale; adam's first step moves each weight by the learning rate
    for _ in range(3):
        updates, after = tx.update({"w": jnp.array([0.5, -0.5])}, after, params)
    assert float(after.scale) == 16.0
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1, 0.1], rtol=1e-5)


@pytest.mark.parametrize("value", ["auto", 0.0, -2.0, float("inf"), [2.0]])
def test_bad_loss_scale_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match=r"^loss_scale: got .*; allowed: None, 'dynamic' or a finite number > 0$"):
        jn.TrainConfig(loss_scale=value)
