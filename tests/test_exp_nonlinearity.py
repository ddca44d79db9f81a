"""experiments/nonlinearity.py: identity nets collapse to the least-squares line; ReLU fits XOR."""
import numpy as np

from experiments import nonlinearity


def test_identity_nets_are_linear_and_relu_learns_xor(tmp_path):
    results = nonlinearity.run(quick=True, out=tmp_path, seeds=16, epochs=300, widths=(8,), lr=0.05)
    assert (tmp_path / "xor.png").stat().st_size > 0 and (tmp_path / "results.json").exists()

    # Independent reference: the least-squares line through the XOR points (NumPy).
    a = np.array([[1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]], float)
    y = np.array([0, 1, 1, 0], float)
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    np.testing.assert_allclose(coef, [0.5, 0.0, 0.0], atol=1e-12)
    best_linear_mse = np.mean((a @ coef - y) ** 2)
    assert best_linear_mse == 0.25

    assert results["collapse_max_abs_diff_at_init"] < 1e-5
    deep = results["deep_linear"]
    assert min(deep["mse"]) >= best_linear_mse - 1e-6
    assert deep["max_abs_coef_diff_vs_lstsq"] < 1e-2

    assert results["slide_relu"]["predictions"] == [0.0, 1.0, 1.0, 0.0]
    assert results["slide_relu"]["mse"] == 0.0

    relu = results["relu"]
    assert relu["8"]["success"] >= 15  # of 16 seeds
    assert "ReLU 8" in nonlinearity.summary(results)
