"""The device check on 4 simulated CPU devices (tiny setting), and buffer donation in every runner."""
import json

import jax
import numpy as np
import pytest

import jaxnets as jn
from experiments import device_check
from jaxnets.epochs import batch_geometry
from jaxnets.parallel import make_runner
from jaxnets.steps import make_train_step
from tests.helpers.problems import blobs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    status = device_check.main(["--tiny", "--out", str(out)])
    return status, out


def test_tiny_device_check_passes_and_writes_json_and_table(tiny_run):
    status, out = tiny_run
    assert status == 0
    results = json.loads((out / "cpu.json").read_text())
    env = results["environment"]
    assert (env["backend"], env["device_count"], env["jax"]) == ("cpu", 4, jax.__version__)
    assert results["ok"] and {(c["model"], c["mode"]) for c in results["equality"]} == {
        ("mlp, dropout 0.3", "sharded"), ("mlp, no dropout", "pmap"), ("cnn, batch norm", "pmap"),
        ("cnn, batch norm", "sharded")}
    assert all(c["max_abs_diff"] <= 1e-5 for c in results["equality"])
    for row in results["speed"]:
        assert row["steps_per_s"] > 0 and row["flops_per_step"] > 0
        # MFU is achieved GFLOP/s over the measured peak of the row's dtype
        assert row["mfu"] == pytest.approx(row["gflops_per_s"] / results["peak_gflops"][row["dtype"]])
    assert {(r["model"], r["dtype"]) for r in results["speed"]} >= {("mlp", "float32"), ("mlp", "bfloat16")}
    population = next(r for r in results["speed"] if r["model"].startswith("population"))
    assert population["devices"] == 4
    assert results["comparison_population"]["runs_per_s"] > 0
    table = (out / "cpu.md").read_text()
    assert "| cnn, batch norm | pmap | 4 |" in table and "runs/s" in table


def test_a_failed_equality_check_exits_nonzero(monkeypatch, tmp_path):
    """Exit status 1 when any mode disagrees (the check itself is replaced by a failing one)."""
    monkeypatch.setattr(device_check, "equality_checks", lambda size: [
        {"model": "mlp", "mode": "pmap", "devices": 4, "max_abs_diff": 1.0, "tolerance": 1e-5, "ok": False}])
    monkeypatch.setattr(device_check, "speed_rows", lambda size, peaks: [])
    monkeypatch.setattr(device_check, "comparison_population", lambda epochs, points: {
        "members": 2, "epochs": 1, "devices": 2, "wall_time_s": 1.0, "runs_per_s": 2.0, "member_epochs_per_s": 2.0})
    assert device_check.main(["--tiny", "--out", str(tmp_path)]) == 1
    assert not json.loads((tmp_path / "cpu.json").read_text())["ok"]


@pytest.mark.parametrize("mode", ["none", "pmap", "sharded"])
@pytest.mark.parametrize("loop", ["scan", "python"])
def test_every_runner_donates_the_state(mode, loop):
    """Each compiled step reuses the state's buffers: the state passed in is deleted after the call."""
    data = blobs()
    objective = jn.objective_for("multiclass")
    runner = make_runner(mode, lambda axis: make_train_step(objective, axis_name=axis,
                                                            sharded_batch=mode == "sharded"),
                         batch_geometry(50, 16), loop=loop, traces={})
    state = runner.put_state(jn.create_state(jn.models.MLP(hidden=(8,), output_dim=3), jn.optim.create("sgd", 0.1),
                                             data.x_train))
    xs, ys = runner.put_data(data.x_train), runner.put_data(data.y_train)
    new, _ = runner.run_epochs(state, xs, ys, runner.put_data(jax.random.key(0)), 0)
    assert all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state.params))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(new.params))
