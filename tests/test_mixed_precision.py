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
