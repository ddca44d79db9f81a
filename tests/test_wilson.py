"""Wilson et al. (2017) construction: the identities behind it, and the optimizers' test errors, at small size."""
import doctest
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import wilson  # noqa: E402

N_TRAIN, N_TEST, P = 12, 40, 0.6


@pytest.fixture(scope="module")
def problem():
    return wilson.make_problem(N_TRAIN, N_TEST, P, seed=3)


def test_construction_matches_the_paper(problem):
    x = np.concatenate([problem["x_train"], problem["x_test"]])
    y = np.concatenate([problem["y_train"], problem["y_test"]])
    n = N_TRAIN + N_TEST
    assert x.shape == (n, 3 + 5 * n)
    np.testing.assert_array_equal(x[:, 0], y)
    np.testing.assert_array_equal(x[:, 1:3], 1.0)
    for i in range(n):
        private = np.flatnonzero(x[i, 3:]) + 3
        block = 3 + 5 * i                       # 0-based column of feature 4 + 5(i − 1)
        expected = [block] if y[i] > 0 else list(range(block, block + 5))
        assert private.tolist() == expected
    assert problem["y_train"].sum() > 0


def test_sign_identity_on_training_points(problem):
    x, y = problem["x_train"], problem["y_train"]
    s = np.sign(x.T @ y)
    np.testing.assert_array_equal(x @ s, 4 * y)


def test_redraws_until_more_positive_labels():
    # p just above 1/2 and 2 training points: some seeds need redraws; every result has Σ y_train > 0
    draws = [wilson.make_problem(2, 3, 0.51, seed=s) for s in range(8)]
    assert all(d["y_train"].sum() > 0 for d in draws) and any(d["redraws"] > 0 for d in draws)


@pytest.fixture(scope="module")
def trained(problem):
    x, y = problem["x_train"], problem["y_train"]
    lipschitz = np.linalg.eigvalsh(x.T @ x / len(y))[-1]      # independent of the module's helper
    out = {}
    with jax.enable_x64(True):
        for name in ("gd", "heavy_ball", "adagrad", "rmsprop", "adam"):
            rate = 1.0 / lipschitz if wilson.OPTIMIZERS[name][1] == "1/L" else wilson.OPTIMIZERS[name][1]
            run = jax.jit(lambda a, b, name=name, rate=rate: wilson.train(name, a, b, 3000, rate))
            w, losses = run(jnp.asarray(x), jnp.asarray(y))
            out[name] = (np.asarray(w), np.asarray(losses))
    return out


@pytest.mark.parametrize("name", ["gd", "heavy_ball"])
def test_gradient_descent_reaches_the_minimum_norm_interpolant(problem, trained, name):
    x, y = problem["x_train"], problem["y_train"]
    w, losses = trained[name]
    min_norm = np.linalg.pinv(x) @ y
    np.testing.assert_allclose(w, min_norm, atol=1e-6)
    assert losses[-1] < 1e-10 and losses[0] == pytest.approx(0.5)   # f(0) = ‖y‖²/(2n) = 1/2
    predictions = np.sign(problem["x_test"] @ w)
    np.testing.assert_array_equal(predictions, problem["y_test"])      # test error 0


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam"])
def test_adaptive_iterates_stay_along_the_sign_vector(problem, trained, name):
    x, y = problem["x_train"], problem["y_train"]
    w, losses = trained[name]
    s = np.sign(x.T @ y)
    cosine = w @ s / (np.linalg.norm(w) * np.linalg.norm(s))
    assert cosine == pytest.approx(1.0, abs=1e-9)
    lam = (w @ s) / (s @ s)
    np.testing.assert_allclose(w, lam * s, atol=1e-9)
    assert lam > 0 and losses[-1] < losses[0]
    # every new point is labelled +1: test error = share of −1 test labels
    predictions = np.where(problem["x_test"] @ w > 0, 1.0, -1.0)
    assert np.all(predictions == 1.0)
    assert np.mean(predictions != problem["y_test"]) == pytest.approx(np.mean(problem["y_test"] < 0))


def test_cell_and_report(tmp_path):
    results = wilson.sweep(tmp_path, n_train=(10,), probabilities=(0.75,), draws=2, steps=1500, n_test=30)
    cell = results["cells"][0]
    for name in ("gd", "heavy_ball"):
        assert cell["optimizers"][name]["test_error"] == [0.0, 0.0]
    for name in ("adagrad", "rmsprop", "adam"):
        np.testing.assert_allclose(cell["optimizers"][name]["test_error"], cell["negative_test_fraction"])
    assert max(cell["identity_residual"]) == 0.0
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["cells"][0]["n_train"] == 10
    text = (tmp_path / "report.md").read_text()
    assert "| 10 | 0.75 | 0.25 |" in text and "`adam`" in text


def test_bad_probability_is_one_line():
    with pytest.raises(ValueError) as info:
        wilson.make_problem(5, 5, 0.4, seed=0)
    assert str(info.value) == "p: got 0.4; allowed: 1/2 < p < 1"


def test_doctests():
    result = doctest.testmod(wilson)
    assert result.failed == 0 and result.attempted > 0


def test_unconditioned_draws_are_reported_outside_the_lemma():
    problems = [wilson.make_problem(4, 6, 0.55, seed=s, condition=False) for s in range(20)]
    assert all(pr["redraws"] == 0 for pr in problems)
    assert any(pr["y_train"].sum() <= 0 for pr in problems)          # such draws are kept
    with jax.enable_x64(True):
        cell = wilson.evaluate_cell(4, 0.55, n_test=6, draws=8, steps=50, optimizers=("gd", "adam"),
                                    condition=False)
    outside = [i for i, total in enumerate(cell["sum_y_train"]) if total <= 0]
    assert outside and cell["condition"] is False and sum(cell["redraws"]) == 0
    results = {"optimizers": ["gd", "adam"], "unconditioned": [cell]}
    lines = wilson.unconditioned_table(results)
    assert lines[0] == "## Outside the lemma's assumption Σy_train > 0 (unconditioned draws)"
    row = lines[-1].split(" | ")
    assert row[2] == f"{len(outside)} of 8"
    adam = cell["optimizers"]["adam"]
    expected = np.mean([adam["test_error"][i] for i in outside])
    assert row[-1].split(" / ")[0] == f"{expected:.3f}"
    assert all(0.0 <= v <= 1.0 for v in adam["labelled_positive"])
