"""experiments/regressions.py: jaxnets GD reproduces OLS (lstsq, statsmodels) and the logit MLE (IRLS, statsmodels)
on the economics tables statsmodels ships."""
import json

import numpy as np
import pytest

from experiments import regressions

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("regressions")
    return out, regressions.run(quick=True, out=out, steps=6000)


def test_outputs_are_written(results):
    out, measured = results
    assert (out / "coefficients.png").stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert [o["case"] for o in saved["ols"]] == ["consumption", "investment"]
    assert [g["case"] for g in saved["logit"]] == ["spector", "fair"]
    assert "| max abs diff vs lstsq |" in regressions.summary(measured)


@pytest.mark.parametrize("index", [0, 1])
def test_gradient_descent_matches_ols(results, index):
    ols = results[1]["ols"][index]
    assert ols["tolerance"] == 1e-4
    for fit in ("nesterov_gd", "gd"):
        np.testing.assert_allclose(ols["fits"][fit]["coefficients"], ols["lstsq"], rtol=0, atol=regressions.OLS_TOLERANCE)
    # The reference itself: the normal equations hold for lstsq's solution, and statsmodels agrees.
    x, y = regressions.OLS_CASES[index].load()
    a = np.c_[np.ones(len(x)), x]
    residual = a @ np.asarray(ols["lstsq"]) - y
    assert np.max(np.abs(a.T @ residual)) < 1e-8 * np.max(np.abs(a.T @ y))
    np.testing.assert_allclose(ols["statsmodels"], ols["lstsq"], rtol=1e-10)


@pytest.mark.parametrize("index", [0, 1])
def test_gradient_descent_matches_the_logit_mle(results, index):
    logit = results[1]["logit"][index]
    np.testing.assert_allclose(logit["jaxnets"], logit["irls"], rtol=0, atol=regressions.LOGIT_TOLERANCE)
    np.testing.assert_allclose(logit["statsmodels"], logit["irls"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(logit["sklearn"], logit["irls"], rtol=0, atol=1e-4)
    assert logit["loglik"]["jaxnets"] == pytest.approx(logit["loglik"]["irls"], abs=1e-6)
    # The MLE's score equations: Aᵀ(y − p) = 0 at the IRLS solution.
    x, y = regressions.LOGIT_CASES[index].load()
    a = np.c_[np.ones(len(x)), x]
    p = 1.0 / (1.0 + np.exp(-a @ np.asarray(logit["irls"])))
    assert np.max(np.abs(a.T @ (y - p))) < 1e-8 * len(y)
