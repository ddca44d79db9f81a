"""The comparison protocol: validation-only selection, grid bracketing, joint search; the runner end to end
and the report are in test_report.py."""
import dataclasses
import doctest
import math

import numpy as np
import pytest

import jaxnets as jn
from jaxnets import compare, report
from jaxnets.data import Dataset
from jaxnets.models import MLP
from jaxnets.population import fit_population

def blobs(n=120, n_val=40, n_test=60, d=4, k=3, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(k, d))
    total = n + n_val + n_test
    y = rng.integers(0, k, size=total).astype(np.int32)
    x = (centers[y] + spread * rng.normal(size=(total, d))).astype(np.float32)
    return Dataset(x_train=x[:n], y_train=y[:n], x_val=x[n:n + n_val], y_val=y[n:n + n_val],
                   x_test=x[n + n_val:], y_test=y[n + n_val:], task="multiclass", num_classes=k, name="blobs")


MODEL = MLP(hidden=(8,), output_dim=3)
GRID = (1e-4, 1e-2, 0.3, 30.0)


def adversarial(data: Dataset) -> Dataset:
    """Test = the validation inputs with every label shifted by one class: the better a model is on
    validation, the worse it is on this test set."""
    return dataclasses.replace(data, x_test=data.x_val.copy(), y_test=(data.y_val + 1) % data.num_classes)


# ------------------------------------------------------------------ grid


def test_default_grid_is_log_spaced_around_the_centre():
    grid = compare.lr_grid("sgd")
    assert len(grid) == 7
    ratios = np.array(grid[1:]) / np.array(grid[:-1])
    np.testing.assert_allclose(ratios, 10 ** 0.5, rtol=2e-3)
    assert grid[3] == pytest.approx(compare.DEFAULT_LR_CENTRES["sgd"])
    assert math.log10(grid[-1] / grid[0]) == pytest.approx(3.0, abs=1e-2)   # 3 decades
    assert set(compare.DEFAULT_LR_CENTRES) == set(jn.optim.OPTIMIZERS)


@pytest.mark.parametrize("call, message", [
    (lambda: compare.Arm("x", "lamb"), "optimizer: got 'lamb'; allowed: sgd, momentum, nesterov, rmsprop, adam, "
                                       "adamw, adagrad"),
    (lambda: compare.Arm("x", "sgd", lr_grid=(0.1, -1.0)), "lr_grid: got (0.1, -1.0); allowed: distinct finite "
                                                           "numbers > 0"),
    (lambda: compare.ComparisonConfig(seeds=0), "seeds: got 0; allowed: an integer >= 1"),
    (lambda: compare.ComparisonConfig(schedule="linear"), "schedule: got 'linear'; allowed: constant, step, "
                                                         "exponential, cosine"),
])
def test_bad_settings_fail_in_one_line(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


# ------------------------------------------------------------------ selection


@pytest.fixture(scope="module")
def adversarial_selection():
    data = blobs()
    config = compare.ComparisonConfig(epochs=6, batch_size=30, seeds=2, max_extensions=0, selection_seeds=1)
    fooled = compare.select_learning_rate(MODEL, adversarial(data), compare.Arm("sgd", "sgd", lr_grid=GRID), config)
    return data, config, fooled


def test_selection_never_looks_at_test_data(adversarial_selection):
    """Reference: the grid trained directly (fit_population, one member per rate, the selection seed)
    and read off by hand. The chosen rate must be the validation-best one while the adversarial test set
    prefers another, so a selection that used test metrics would fail here."""
    data, config, fooled = adversarial_selection
    rates = [p["learning_rate"] for p in fooled["grid"]]        # the coarse grid and the refined points
    assert set(GRID) < set(rates) and any(p["refined"] for p in fooled["grid"])
    reference = fit_population(MODEL, adversarial(data), jn.optim.create("sgd", 1.0),
                               dataclasses.replace(config.train_config(), eval_every=config.epochs),
                               seeds=[compare.SELECTION_SEED_OFFSET] * len(rates),
                               hyperparams={"learning_rate": rates})
    final = reference.history[-1]
    finite = [math.isfinite(v) and v < 5.0 for v in final["train_loss"]]
    val_acc = {lr: final["val_accuracy"][i] if finite[i] else -1.0 for i, lr in enumerate(rates)}
    test_acc = {lr: final["test_accuracy"][i] if finite[i] else -1.0 for i, lr in enumerate(rates)}
    bad = {p["learning_rate"]: p["diverged"] or p["collapsed"] for p in fooled["grid"]}
    stable = [lr for k, lr in enumerate(rates) if not bad[lr] and not any(bad[n] for n in rates[max(k - 1, 0):k + 2])]
    val_loss = {lr: final["val_loss"][i] for i, lr in enumerate(rates)}
    val_best = max(stable, key=lambda lr: (val_acc[lr], -val_loss[lr]))   # ties go to the lower validation loss
    test_best = max(rates, key=lambda lr: test_acc[lr])
    assert test_best != val_best            # the trap is armed
    assert fooled["chosen"]["learning_rate"] == val_best and fooled["stable"]
    for point in fooled["grid"]:
        if not point["diverged"]:
            assert point["score"] == pytest.approx(val_acc[point["learning_rate"]], abs=1e-6)


def test_selection_curves_hold_no_test_numbers(adversarial_selection):
    *_, fooled = adversarial_selection
    keys = set(fooled["rounds"][0]["curves"])
    assert "val_accuracy" in keys and not any(key.startswith("test_") for key in keys)


def test_diverging_rate_is_flagged_and_never_chosen(adversarial_selection):
    *_, fooled = adversarial_selection
    by_lr = {p["learning_rate"]: p for p in fooled["grid"]}
    assert by_lr[30.0]["diverged"] and by_lr[1e-4]["diverged"] is False
    assert fooled["position"] == "interior" and fooled["chosen"]["learning_rate"] != 30.0


def test_grid_is_extended_until_the_optimum_is_bracketed():
    data = blobs()
    config = compare.ComparisonConfig(epochs=4, batch_size=30, seeds=2, extension_factor=10.0,
                                      extension_points=2, max_extensions=3, selection_seeds=1, refine=False)
    events = []
    selection = compare.select_learning_rate(MODEL, data, compare.Arm("sgd", "sgd", lr_grid=(1e-2, 3e-2)), config,
                                             on_event=events.append)
    grid = {p["learning_rate"]: p for p in selection["grid"]}
    # round 0: the best rate is the largest; round 1 adds x10 and x100 above it; 3.0 no longer trains
    assert list(grid) == pytest.approx([0.01, 0.03, 0.3, 3.0]) and len(selection["rounds"]) == 2
    assert "extending to 0.3, 3" in events[1]
    assert grid[3.0]["diverged"] and not grid[0.3]["diverged"]
    assert grid[3.0]["final_train_loss"] >= min(selection["start_train_loss"])
    # Issue 16 changed the choice: 0.3 scores best but its upper neighbour diverges, so the best rate
    # whose neighbours both train is chosen (before: 0.3, flagged "next diverges").
    assert grid[0.3]["score"] >= grid[0.03]["score"]
    assert selection["chosen"] == {"learning_rate": 0.03} and selection["stable"]
    assert selection["position"] == "interior" and not selection["upper_neighbour_diverged"]


def test_second_hyperparameter_is_searched_jointly_and_edges_are_reported():
    data = blobs()
    config = compare.ComparisonConfig(epochs=2, batch_size=30, seeds=2, max_extensions=0, selection_seeds=1,
                                      refine=False)
    arm = compare.Arm("adam_eps", "adam", lr_grid=(1e-6, 1e-5), search={"eps": (1e-8, 1.0)})
    selection = compare.select_learning_rate(MODEL, data, arm, config)
    assert len(selection["grid"]) == 4 and len(selection["rounds"]) == 1   # one population
    assert len(selection["rounds"][0]["member_seeds"]) == 4
    assert set(selection["chosen"]) == {"learning_rate", "eps"}
    assert selection["position"] == "high_edge"   # rates far too small, no extension allowed
    assert "HIGH EDGE" in report.selection_table({"arms": [{"label": "adam_eps", "selection": selection}]})
    with pytest.raises(ValueError, match="search"):
        compare.select_learning_rate(MODEL, data, compare.Arm("x", "sgd", search={"eps": (1.0,)}), config)


# ------------------------------------------------------------------ doctests


@pytest.mark.parametrize("module", [compare])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------ the primary family


def test_primary_family_is_every_arm_against_sgd_with_holm_and_permutation():
    """Reference: scipy's paired t-test per arm, Holm by hand, and the sign-flip p by enumeration."""
    from scipy import stats as scipy_stats

    seeds = [0, 1, 2, 3, 4]
    values = {"sgd": [0.60, 0.62, 0.61, 0.63, 0.60], "adam": [0.55, 0.58, 0.57, 0.56, 0.55],
              "momentum": [0.61, 0.60, 0.64, 0.62, 0.63], "adagrad": [0.70, 0.66, 0.68, 0.69, 0.71]}
    arms = [{"label": k, "runs": {"seeds": seeds, "per_seed": {"final_test_accuracy": v}}} for k, v in values.items()]
    family = compare.primary_comparisons(arms, "multiclass")
    assert family["family_size"] == 3 and [r["a"] for r in family["rows"]] == ["adam", "momentum", "adagrad"]
    raw = {r["a"]: scipy_stats.ttest_rel(values[r["a"]], values["sgd"]).pvalue for r in family["rows"]}
    order = sorted(raw, key=raw.get)
    expected, running = {}, 0.0
    for rank, label in enumerate(order):                 # Holm by hand: (m − rank)·p, running maximum
        running = max(running, min(1.0, (3 - rank) * raw[label]))
        expected[label] = running
    for row in family["rows"]:
        assert row["b"] == "sgd" and row["p_value"] == pytest.approx(raw[row["a"]], rel=1e-9)
        assert row["holm_p"] == pytest.approx(expected[row["a"]], rel=1e-9)
        assert row["adjusted_interval"]["low"] < row["difference"]["low"]   # the simultaneous interval is wider
    adam = family["rows"][0]
    assert adam["permutation_p"] == 0.0625 and family["min_permutation_p"] == 0.0625   # all 5 differences < 0
    assert adam["holm_permutation_p"] == pytest.approx(min(1.0, 3 * 0.0625))
    assert compare.primary_comparisons(arms[1:], "multiclass") is None   # no sgd arm, no family


def test_refinement_adds_factor_two_steps_between_the_neighbours_and_skips_collapsing_neighbours():
    data = blobs()
    config = compare.ComparisonConfig(epochs=4, batch_size=30, seeds=2, max_extensions=0, selection_seeds=3)
    selection = compare.select_learning_rate(MODEL, data, compare.Arm("sgd", "sgd", lr_grid=(0.01, 0.1, 1.0, 100.0)),
                                             config)
    assert selection["seeds"] == [compare.SELECTION_SEED_OFFSET + i for i in range(3)]
    coarse = [p["learning_rate"] for p in selection["grid"] if not p["refined"]]
    refined = sorted(p["learning_rate"] for p in selection["grid"] if p["refined"])
    assert coarse == [0.01, 0.1, 1.0, 100.0] and refined
    rates = sorted(coarse + refined)
    ratios = np.array(rates[1:]) / np.array(rates[:-1])
    assert ratios.max() <= 10.0 + 1e-9 and any(r == pytest.approx(2.0) for r in ratios)
    by_lr = {p["learning_rate"]: p for p in selection["grid"]}
    assert by_lr[100.0]["collapsed"]
    chosen = rates.index(selection["chosen"]["learning_rate"])
    for neighbour in rates[max(chosen - 1, 0):chosen + 2]:
        assert not by_lr[neighbour]["collapsed"]
