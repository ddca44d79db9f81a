"""The gradient-descent experiment: the slides' y_hat = a + x example and batch vs stochastic vs minibatch."""
import json

import numpy as np
import pytest

from experiments import gradient_descent as gd


def test_slide_numbers_and_closed_form():
    small, right, full, too_big = (gd.descend(lr, 20) for lr in (0.1, 0.5, 1.0, 1.1))
    assert small["grad"][0] == pytest.approx(-6.0, abs=0)  # -2 (y - y_hat) = -2 (6 - 3)
    assert small["a1"] == pytest.approx(2.6, abs=1e-6)  # 2 - 0.1 * (-6)
    assert full["a1"] == 8.0  # 2 - 1 * (-6): overshoots the true a = 5
    assert right["a1"] == 5.0 and right["final_loss"] == 0.0
    # a_t = 5 + (1 - 2 lr)^t (a0 - 5)
    for r in (small, full, too_big):
        t = np.arange(21)
        np.testing.assert_allclose(r["a"], 5 + (1 - 2 * r["learning_rate"]) ** t * (2 - 5), rtol=1e-5)
    assert full["a"][:4] == [2.0, 8.0, 2.0, 8.0] and full["status"] == "not converged"
    assert too_big["diverged"] and too_big["status"] == "diverged"
    assert small["converged"] and not small["diverged"]
    assert gd.descend(0.01, 20)["status"] == "not converged"


def test_descend_rejects_bad_input():
    with pytest.raises(ValueError, match="learning_rate"):
        gd.descend(0.0, 3)
    with pytest.raises(ValueError, match="steps"):
        gd.descend(0.1, 0)


def test_all_variants_reach_the_ols_loss(tmp_path):
    results = gd.run(quick=True, out=tmp_path, steps=5, epochs=150, learning_rates=(0.1, 1.0, 1.1))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "learning_rates.png").stat().st_size > 0
    assert (tmp_path / "batch_sizes.png").stat().st_size > 0
    assert saved["slide_example"]["runs"]["0.1"]["a1"] == pytest.approx(2.6, abs=1e-6)
    batch = results["batch_sizes"]
    # NumPy OLS against the closed form of the normal equations.
    from jaxnets.data import load
    data = load("house_prices")
    design = np.hstack([np.ones((data.num_train, 1)), data.x_train.astype(np.float64)])
    coef = np.linalg.solve(design.T @ design, design.T @ data.y_train.astype(np.float64))
    assert batch["ols_train_loss"] == pytest.approx(float(np.mean((design @ coef - data.y_train) ** 2)), rel=1e-9)
    steps = {label: r["steps_per_epoch"] for label, r in batch["runs"].items()}
    assert steps == {"batch": 1, "stochastic": data.num_train, "minibatch 32": -(-data.num_train // 32)}
    for label, r in batch["runs"].items():
        assert len(r["train_loss"]) == 150
        assert batch["ols_train_loss"] <= r["final_train_loss"] * (1 + 1e-5)
        assert r["final_train_loss"] < 1.05 * batch["ols_train_loss"], label
