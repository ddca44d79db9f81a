"""The universal-approximation experiment: wider single hidden layers fit better (sup norm)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets as jn
from experiments import universal_approximation as ua


def test_sup_error_matches_numpy_forward_pass():
    model = jn.models.get_model("mlp", output_dim=1, hidden=(5,), activation="sigmoid")
    stacked = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 1)))["params"])(
        jax.random.split(jax.random.PRNGKey(3), 2))
    x = np.linspace(-np.pi, np.pi, 101, dtype=np.float32)[:, None]
    y = np.sin(x)
    got = ua.sup_errors(model, stacked, x, y)
    for i in range(2):
        p = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf[i], np.float64), stacked)
        h = 1.0 / (1.0 + np.exp(-(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])))
        pred = h @ p["output"]["kernel"] + p["output"]["bias"]
        np.testing.assert_allclose(got[i], np.abs(pred - y).max(), rtol=1e-5)


def test_loglog_slope_of_a_power_law():
    widths = [1, 2, 4, 8]
    assert ua.loglog_slope(widths, [3.0 * w ** -1.5 for w in widths]) == pytest.approx(-1.5)


def test_sup_error_falls_with_width(tmp_path):
    results = ua.run(quick=True, out=tmp_path, widths=[1, 16], seeds=2, epochs=500, n_train=64, n_grid=401,
                     learning_rate=0.1, functions=["sine"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "sup_error.png").stat().st_size > 0 and (tmp_path / "fits.png").stat().st_size > 0
    for activation in ("sigmoid", "relu"):
        rows = saved["runs"][f"sine/{activation}"]["rows"]
        assert [r["width"] for r in rows] == [1, 16]
        for r in rows:
            assert r["best"] == min(r["sup_error"]) <= r["median"]
        # Width 1 cannot follow one period of sin (sup-error above 0.5); width 16 comes well below.
        assert rows[0]["best"] > 0.5
        assert rows[-1]["best"] < 0.5 * rows[0]["best"], (activation, rows)
    assert results["runs"]["sine/relu"]["slope_best"] < 0


def test_bad_widths_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="widths"):
        ua.run(quick=True, out=tmp_path, widths=[4])
