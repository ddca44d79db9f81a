"""experiments/regressions.py: jaxnets GD reproduces OLS (lstsq) and the logit MLE (IRLS, scikit-learn)."""
import json

import numpy as np
import pytest

from experiments import regressions

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_ols_and_logit_match_their_references(tmp_path):
    results = regressions.run(quick=True, out=tmp_path, steps=6000)
    assert (tmp_path / "coefficients.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["ols"]["tolerance"] == 1e-4

    ols = results["ols"]
    nesterov = np.array(ols["fits"]["nesterov_gd"]["coefficients"])
    np.testing.assert_allclose(nesterov, ols["lstsq"], rtol=0, atol=regressions.OLS_TOLERANCE)
    # The independent reference itself: the normal equations hold for lstsq's solution.
    from sklearn.datasets import load_diabetes
    bunch = load_diabetes(scaled=False)
    a = np.c_[np.ones(len(bunch.data)), bunch.data]
    np.testing.assert_allclose(a.T @ (a @ ols["lstsq"] - bunch.target), 0.0, atol=1e-6)

    logit = results["logit"]
    np.testing.assert_allclose(logit["sklearn"], logit["irls"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logit["jaxnets"], logit["irls"], rtol=0, atol=regressions.LOGIT_TOLERANCE)
    assert logit["loglik"]["jaxnets"] == pytest.approx(logit["loglik"]["irls"], abs=1e-6)
    assert "| max abs diff |" in regressions.summary(results)
