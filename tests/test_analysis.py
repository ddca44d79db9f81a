"""Tail index and sharpness estimators against cases with known answers."""
import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnets import analysis


@pytest.mark.parametrize("alpha", [2.0, 1.5, 1.0])
def test_tail_index_of_symmetric_stable_samples(alpha):
    rng = np.random.default_rng(1)
    if alpha == 2.0:
        x = rng.standard_normal(250_000)
    elif alpha == 1.0:
        x = rng.standard_cauchy(250_000)
    else:
        x = scipy_stats.levy_stable.rvs(alpha, 0.0, size=250_000, random_state=rng)
    assert analysis.tail_index(x) == pytest.approx(alpha, abs=0.08)


def test_tail_index_is_scale_free_and_ignores_zeros():
    x = np.random.default_rng(2).standard_normal(10_000)
    assert analysis.tail_index(7.5 * x, block_size=100) == pytest.approx(analysis.tail_index(x, block_size=100),
                                                                         rel=1e-12)
    padded = np.concatenate([x, np.zeros(500)])
    assert analysis.tail_index(padded, block_size=100) == analysis.tail_index(x, block_size=100)
    assert np.isnan(analysis.tail_index(x[:3], block_size=2))
    with pytest.raises(ValueError, match=r"^block_size: got 1; allowed: an integer >= 2 \(or None\)$"):
        analysis.tail_index(x, block_size=1)


def test_minibatch_gradients_and_their_noise():
    # linear least squares: ∇ mean((xw − y)²) = 2 xᵀ(xw − y)/b, computed by hand in NumPy
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(4, 8, 3)).astype(np.float32)
    ys = rng.normal(size=(4, 8)).astype(np.float32)
    w = np.array([0.5, -1.0, 2.0], np.float32)
    params = {"w": jnp.asarray(w), "b": jnp.zeros(())}
    loss = lambda p, x, y: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
    grads = np.asarray(analysis.minibatch_gradients(loss, params, xs, ys))
    residual = np.einsum("bnd,d->bn", xs, w) - ys
    expected_w = 2 * np.einsum("bnd,bn->bd", xs, residual) / 8
    expected_b = 2 * residual.mean(axis=1)
    np.testing.assert_allclose(grads, np.column_stack([expected_b, expected_w]), rtol=1e-5, atol=1e-5)
    noise = analysis.gradient_noise(grads).reshape(4, 4)
    np.testing.assert_allclose(noise.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(noise, grads - grads.mean(axis=0), atol=1e-6)


def _quadratic(seed=0, eigenvalues=(6.0, 2.5, 1.0, 0.5, 0.1, 0.0)):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = q @ np.diag(eigenvalues) @ q.T
    # parameters as a pytree of two leaves whose ravel is the 6-vector
    params = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}

    def loss(p):
        v = jnp.concatenate([p["a"], p["b"].ravel()])
        return 0.5 * v @ jnp.asarray(a) @ v

    return a, params, loss


def test_hessian_vector_product_and_top_eigenvalue_of_a_quadratic():
    with jax.enable_x64(True):
        a, params, loss = _quadratic()
        v = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([[0.0, 2.0], [0.0, -1.0]])}
        hv = analysis.hessian_vector_product(loss, params, v)
        flat = np.concatenate([np.asarray(hv["a"]), np.asarray(hv["b"]).ravel()])
        np.testing.assert_allclose(flat, a @ np.array([1.0, 0.0, 0.0, 2.0, 0.0, -1.0]), atol=1e-12)
        top = analysis.top_hessian_eigenvalue(loss, params, jax.random.key(0), iterations=500, tolerance=1e-12)
    assert top["eigenvalue"] == pytest.approx(np.linalg.eigvalsh(a)[-1], rel=1e-8)
    assert top["residual"] < 1e-4


def test_random_direction_sharpness():
    with jax.enable_x64(True):
        iso = lambda w: 0.5 * 4.0 * jnp.sum(w ** 2)
        exact = analysis.random_direction_sharpness(iso, jnp.zeros(10), jax.random.key(1), radius=0.5, directions=5)
        assert exact["mean"] == pytest.approx(4.0 * 0.25 / 2, rel=1e-12) and exact["std"] < 1e-12
        a, params, loss = _quadratic()
        mc = analysis.random_direction_sharpness(loss, params, jax.random.key(2), radius=1.0, directions=4000)
    # E[dᵀAd] = tr(A)/D for d uniform on the unit sphere
    assert mc["mean"] == pytest.approx(np.trace(a) / 6 / 2, rel=0.05)
    with pytest.raises(ValueError, match="^radius: got 0; allowed: a number > 0$"):
        analysis.random_direction_sharpness(loss, params, jax.random.key(0), radius=0)


def test_doctests():
    result = doctest.testmod(analysis)
    assert result.failed == 0 and result.attempted > 0


def test_released_variant_keeps_zeros_with_an_epsilon_and_divides_n_exactly():
    """The released-code estimator (Simsekli et al. 2019): log(|x| + spacing(1)) over every sample,
    m the largest divisor of N at most √N; checked against a direct NumPy transcription."""
    rng = np.random.default_rng(3)
    x = rng.standard_t(3, size=10_000)
    x[rng.random(x.size) < 0.12] = 0.0  # dead ReLU coordinates: exact zeros
    m = 100  # 10_000 = 100 x 100
    eps = np.spacing(1)
    blocks = x.reshape(-1, m).sum(axis=1)
    expected = 1 / ((np.mean(np.log(np.abs(blocks) + eps)) - np.mean(np.log(np.abs(x) + eps))) / np.log(m))
    assert analysis.tail_index(x, variant="released") == pytest.approx(expected, rel=1e-12)
    # The zeros move the released estimate away from ours (which drops them).
    assert analysis.tail_index(x, variant="released") != pytest.approx(analysis.tail_index(x), rel=0.05)
    assert analysis.largest_divisor_at_most(10_000, 100) == 100
    with pytest.raises(ValueError, match="variant: got 'other'"):
        analysis.tail_index(x, variant="other")
