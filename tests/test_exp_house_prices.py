"""experiments/house_prices.py: the slides' 9-parameter sigmoid net beats linear regression."""
import numpy as np

import jaxnets as jn
from experiments import house_prices


def test_two_sigmoid_units_beat_the_closed_form_linear_fit(tmp_path):
    results = house_prices.run(quick=True, out=tmp_path, seeds=4, epochs=800)
    assert (tmp_path / "house_prices.png").stat().st_size > 0 and (tmp_path / "results.json").exists()
    assert results["num_params"] == 9

    # Independent reference: scikit-learn's LinearRegression on the same split.
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_squared_error, r2_score
    data = jn.data.load("house_prices")
    ols = LinearRegression().fit(data.x_train, data.y_train[:, 0])
    pred = ols.predict(data.x_test)
    assert abs(results["linear"]["test"]["rmse"] - np.sqrt(mean_squared_error(data.y_test[:, 0], pred))) < 1e-3
    assert abs(results["linear"]["test"]["r2"] - r2_score(data.y_test[:, 0], pred)) < 1e-5

    net = results["net_best"]["test"]
    assert net["rmse"] < 0.75 * results["linear"]["test"]["rmse"]
    assert net["r2"] > results["linear"]["test"]["r2"]
    # Nothing beats the noise: the noise-free formula's RMSE is a floor (up to sampling).
    assert net["rmse"] > 0.9 * results["noise_free_formula"]["test"]["rmse"]
    assert "linear regression" in house_prices.summary(results)
