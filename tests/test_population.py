"""Populations: P members in one compiled program equal P separate fits."""
import jax
import numpy as np
import pytest

import jaxnets as jn
from jaxnets.models import MLP
from jaxnets.population import create_population, fit_population
from tests.helpers import problems


def blobs():
    return problems.blobs(n=60, scale=2.0, n_val=10, n_test=10)


SEEDS = [0, 1, 2, 0]
LRS = [0.01, 0.01, 0.03, 0.1]


@pytest.fixture(scope="module")
def population():
    data = blobs()
    model = MLP(hidden=(16,), output_dim=3)
    config = jn.TrainConfig(epochs=3, batch_size=16)
    result = fit_population(model, data, jn.optim.create("momentum", 0.01), config, seeds=SEEDS,
                            hyperparams={"learning_rate": LRS})
    separate = [jn.fit(model, data, jn.optim.create("momentum", lr), jn.TrainConfig(epochs=3, batch_size=16, seed=s))
                for s, lr in zip(SEEDS, LRS)]
    return result, separate


def test_population_compiles_the_step_once(population):
    result, _ = population
    assert result.traces["train_step"] == 1 and result.traces["eval_step"] == 1


def test_each_member_equals_its_separate_run(population):
    """Tolerance 1e-5: vmap batches each member's matrix products, which may round differently."""
    result, separate = population
    for i, run in enumerate(separate):
        member = result.member_state(i)
        for a, b in zip(jax.tree_util.tree_leaves(member.params), jax.tree_util.tree_leaves(run.state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        for key in ("train_loss", "test_accuracy", "val_loss", "epoch_loss"):
            assert result.history[-1][key][i] == pytest.approx(run.history[-1][key], rel=1e-4, abs=1e-5)


def test_members_record_their_settings_and_metric_arrays(population):
    result, _ = population
    assert result.members == [{"seed": s, "learning_rate": pytest.approx(lr)} for s, lr in zip(SEEDS, LRS)]
    assert result.metric("test_accuracy").shape == (3, 4)
    assert result.num_params == 4 * 16 + 16 + 16 * 3 + 3
    # same seed, same lr would be identical; same seed, different lr is not
    assert not np.array_equal(np.asarray(result.member_state(0).params["output"]["kernel"]),
                              np.asarray(result.member_state(3).params["output"]["kernel"]))


def test_learning_rate_is_traced_not_compiled_in():
    data = blobs()
    model = MLP(hidden=(4,), output_dim=3)
    tx = jn.optim.create("sgd", 0.1)
    state = create_population(model, tx, data.x_train, [0, 0], {"learning_rate": [0.1, 0.2]})
    lr = np.asarray(jn.optim.get_hyperparam(state.opt_state, "learning_rate"))
    np.testing.assert_allclose(lr, [0.1, 0.2])


def test_a_diverging_member_does_not_disturb_the_others():
    data = blobs()
    model = MLP(hidden=(8,), output_dim=3)
    result = fit_population(model, data, jn.optim.create("sgd", 0.1), jn.TrainConfig(epochs=2, batch_size=20),
                            seeds=[0, 0], hyperparams={"learning_rate": [0.1, 1e8]})
    alone = jn.fit(model, data, jn.optim.create("sgd", 0.1), jn.TrainConfig(epochs=2, batch_size=20, seed=0))
    assert not np.isfinite(result.history[-1]["train_loss"][1])
    assert result.history[-1]["train_loss"][0] == pytest.approx(alone.history[-1]["train_loss"], rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": []}, "seeds: got shape (0,)"),
    ({"seeds": [0, 1], "hyperparams": {"learning_rate": [0.1]}}, "hyperparams['learning_rate']: got 1 values"),
])
def test_population_input_errors(kwargs, message):
    with pytest.raises(ValueError) as info:
        fit_population(MLP(hidden=(4,), output_dim=3), blobs(), jn.optim.create("sgd", 0.1),
                       jn.TrainConfig(epochs=1), **kwargs)
    assert message in str(info.value)


# ------------------------------------------------------------ members split over devices

def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def split_population():
    """10 members on the 4 simulated devices (3 each: 2 filling members) and on one device."""
    assert jax.local_device_count() == 4
    data = blobs()
    model = jn.models.MLP(hidden=(16,), output_dim=3, dropout_rate=0.2)
    seeds = list(range(10))
    lrs = list(np.linspace(0.01, 0.1, 10))
    config = jn.TrainConfig(epochs=3, batch_size=16)
    runs = {n: fit_population(model, data, jn.optim.create("momentum", 0.01), config, seeds=seeds,
                              hyperparams={"learning_rate": lrs}, devices=n) for n in (4, 1)}
    return runs


def test_ten_members_on_four_devices_equal_one_device(split_population):
    split, one = split_population[4], split_population[1]
    assert (split.num_devices, one.num_devices) == (4, 1)
    assert max_diff(split.state.params, one.state.params) < 1e-5
    assert max_diff(split.state.opt_state, one.state.opt_state) < 1e-5
    for key in ("train_loss", "val_accuracy", "epoch_loss"):
        np.testing.assert_allclose(split.metric(key), one.metric(key), rtol=1e-5, atol=1e-5)


def test_split_population_compiles_once_and_returns_no_filling_member(split_population):
    split = split_population[4]
    assert split.traces["train_step"] == 1 and split.traces["epoch"] == 1 and split.traces["eval_step"] == 1
    assert {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(split.state)} == {10}
    assert all(len(entry["train_loss"]) == 10 for entry in split.history)
    assert [m["seed"] for m in split.members] == list(range(10))


def test_auto_uses_every_device_but_one_per_member_at_most():
    from jaxnets.population import population_devices
    assert len(population_devices("auto", 10)) == 4
    assert len(population_devices("auto", 3)) == 3
    assert len(population_devices("auto", 1)) == 1
    assert population_devices(jax.devices()[1:3], 5) == jax.devices()[1:3]


@pytest.mark.parametrize("devices", [0, 5, "all", [], True])
def test_bad_devices_are_refused_in_one_line(devices):
    with pytest.raises(ValueError, match=r"^devices: got .*; allowed: 'auto', an int from 1 to 4"):
        fit_population(MLP(hidden=(4,), output_dim=3), blobs(), jn.optim.create("sgd", 0.1),
                       jn.TrainConfig(epochs=1), seeds=[0, 1], devices=devices)


def test_member_placement_donates_the_state():
    """The population's compiled epoch reuses the state's buffers (donation) on every device."""
    from jaxnets.parallel import MemberPlacement
    placement = MemberPlacement(jax.devices())
    state = placement.put_members(np.ones((4, 3), np.float32))
    step = placement.compile(lambda s, x: (s + x,), (True, False))
    (new,) = step(state, placement.put_shared(np.float32(1.0)))
    assert state.is_deleted() and np.all(np.asarray(new) == 2.0)
    assert new.sharding.spec == jax.sharding.PartitionSpec("members")
