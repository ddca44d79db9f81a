"""The double-descent experiment in a tiny setting: the random-features curve peaks at p = n."""
import json

import numpy as np
import pytest

from experiments import double_descent as dd


def test_label_noise_flips_exactly_the_share_asked_to_another_class():
    labels = np.arange(200) % 10
    noisy = dd.inject_label_noise(labels, 0.15, 10, seed=0)
    assert int(np.sum(noisy != labels)) == 30
    assert noisy.min() >= 0 and noisy.max() < 10
    np.testing.assert_array_equal(noisy, dd.inject_label_noise(labels, 0.15, 10, seed=0))
    with pytest.raises(ValueError, match="label_noise"):
        dd.inject_label_noise(labels, 1.5, 10, seed=0)


def test_random_features_fit_is_the_min_norm_solution():
    rng = np.random.default_rng(1)
    x_tr, x_te = rng.normal(size=(30, 5)), rng.normal(size=(20, 5))
    y_tr, y_te = rng.integers(0, 3, 30), rng.integers(0, 3, 20)
    fit = dd.random_features_fit(x_tr, y_tr, x_te, y_te, 80, 3, seed=4)
    # Reference: the pseudo-inverse solution, with the same feature draw.
    w = np.random.default_rng(4).normal(0.0, 1.0 / np.sqrt(5), size=(5, 80))
    phi_tr, phi_te = np.maximum(x_tr @ w, 0), np.maximum(x_te @ w, 0)
    beta = np.linalg.pinv(phi_tr) @ np.eye(3)[y_tr]
    assert fit["coef_norm"] == pytest.approx(np.linalg.norm(beta), rel=1e-6)
    assert fit["test_mse"] == pytest.approx(np.mean((phi_te @ beta - np.eye(3)[y_te]) ** 2), rel=1e-6)
    assert fit["train_mse"] < 1e-20  # p > n: it interpolates


def test_run_small_random_features_curve_peaks_at_threshold(tmp_path):
    results = dd.run(quick=True, out=tmp_path, n_train=100, n_test=400,
                     rf_widths=(10, 50, 100, 200, 1000), rf_seeds=(0, 1), nn_widths=())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["random_features"]["threshold_p"] == 100 and saved["noisy_labels"] == 15
    assert (tmp_path / "double_descent.png").stat().st_size > 0
    mse = {r["width"]: r["test_mse"] for r in results["random_features"]["rows"]}
    assert mse[100] > mse[10] and mse[100] > mse[1000]
    assert max(mse, key=mse.get) == 100
    assert results["random_features"]["peak_test_mse"]["peak"]
    train = {r["width"]: r["train_mse"] for r in results["random_features"]["rows"]}
    assert train[200] < 1e-12 and train[1000] < 1e-12 and train[10] > 1e-3
    assert "Random features, test MSE: a peak appears" in dd.summary(results)
