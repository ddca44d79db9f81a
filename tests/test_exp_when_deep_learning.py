"""experiments.when_deep_learning, tiny: every model scored on every dataset; linear matches closed-form OLS."""
from pathlib import Path

import numpy as np
import pytest

from experiments import when_deep_learning as wdl


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("when_deep_learning")
    return out, wdl.run(quick=True, out=out, tabular=("diabetes",), seeds=(0,), tabular_epochs=5,
                        spatial_epochs=5, linear_epochs=300, spatial_n_train=300, hgb_max_iter=10)


def test_table_has_every_model_for_every_dataset(results):
    out, res = results
    assert set(res["datasets"]) == {"diabetes", "mnist1d"}
    table = wdl.summary(res)
    for name, entry in res["datasets"].items():
        expected = wdl.TABULAR_MODELS if entry["kind"] == "tabular" else wdl.SPATIAL_MODELS
        assert set(entry["scores"]) == set(expected)
        for model in expected:
            assert len(entry["scores"][model]) == 1 and np.isfinite(entry["scores"][model][0])
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.count(" ± ") == len(expected)   # one mean ± std per model (one seed: no s.e.)
        assert entry["best"] in expected
    accuracy = res["datasets"]["mnist1d"]["scores"]
    assert all(0.0 <= v[0] <= 1.0 for v in accuracy.values())
    assert (out / "results.json").exists() and (out / "scores.png").stat().st_size > 0


def test_linear_regression_matches_closed_form_least_squares(results):
    _, res = results
    entry = res["datasets"]["diabetes"]
    assert entry["scores"]["linear"][0] == pytest.approx(entry["ols_closed_form"][0], abs=0.02)


def test_hgb_matches_scikit_learn_directly():
    import jaxnets as jn
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = jn.data.load("wine", seed=1, validation=0.2)
    reference = HistGradientBoostingClassifier(max_iter=10, random_state=1).fit(data.x_train, data.y_train)
    expected = float(np.mean(reference.predict(data.x_test) == data.y_test))
    assert wdl.score_hgb(data, seed=1, max_iter=10) == pytest.approx(expected)


def test_r2_and_bad_input():
    y = np.array([1.0, 2.0, 3.0])
    assert wdl.r2(y, y) == 1.0 and wdl.r2(y, np.full(3, 2.0)) == 0.0
    with pytest.raises(ValueError, match="seeds: got none"):
        wdl.run(quick=True, out=Path("unused"), seeds=())
