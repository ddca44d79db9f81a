"""Losses, penalties and metrics against NumPy formulas, sklearn and float64 gradients."""
import doctest
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics
from jax.test_util import check_grads

from jaxnets import losses, metrics

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------- regression losses


def test_mse_and_half_mse_match_numpy():
    pred = RNG.normal(size=(6, 3))
    target = RNG.normal(size=(6, 3))
    expected = np.mean((pred - target) ** 2, axis=1)
    with jax.enable_x64(True):
        np.testing.assert_allclose(losses.mse(pred, target), expected, rtol=1e-12)
        np.testing.assert_allclose(losses.half_mse(pred, target), 0.5 * expected, rtol=1e-12)
        # One output: (batch, 1) predictions against (batch,) targets, no broadcasting.
        got = losses.mse(pred[:, :1], target[:, 0])
        assert got.shape == (6,)
        np.testing.assert_allclose(got, (pred[:, 0] - target[:, 0]) ** 2, rtol=1e-12)


def test_mse_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"^mse: got shapes \(4, 2\) and \(4,\); allowed: "):
        losses.mse(jnp.zeros((4, 2)), jnp.zeros((4,)))


# ---------------------------------------------------------------- binary cross-entropy


def _np_bce(p, y):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("shape", [(8,), (8, 1)])
def test_binary_cross_entropy_with_logits_matches_numpy(shape):
    z = RNG.normal(scale=3.0, size=8)
    y = RNG.integers(0, 2, size=8)
    with jax.enable_x64(True):
        got = losses.binary_cross_entropy_with_logits(z.reshape(shape), y)
        assert got.shape == (8,)
        np.testing.assert_allclose(got, _np_bce(_np_sigmoid(z), y), rtol=1e-10)
        # Float labels and (batch, 1) labels give the same numbers.
        again = losses.binary_cross_entropy_with_logits(z.reshape(shape),
                                                        y.astype(float).reshape(8, 1))
        np.testing.assert_allclose(again, got, rtol=1e-15)


def test_binary_cross_entropy_is_stable_at_extreme_logits():
    z = jnp.array([1000.0, 1000.0, -1000.0, -1000.0, 0.0])
    y = jnp.array([1, 0, 1, 0, 1])
    loss = losses.binary_cross_entropy_with_logits(z, y)
    np.testing.assert_allclose(loss, [0.0, 1000.0, 1000.0, 0.0, math.log(2)], rtol=1e-6)
    # d loss / dz = σ(z) − y, finite everywhere.
    grad = jax.grad(lambda logits: jnp.sum(losses.binary_cross_entropy_with_logits(logits, y)))(z)
    np.testing.assert_allclose(grad, [0.0, 1.0, -1.0, 0.0, -0.5], atol=1e-6)


def test_binary_cross_entropy_gradient_at_zero_logit():
    # A zero-initialized logistic regression starts at z = 0: ∂ℓ/∂z = ½ − y exactly.
    grad = jax.vmap(jax.grad(lambda z, y: losses.binary_cross_entropy_with_logits(
        z[None], y[None])[0]))(jnp.zeros(3), jnp.array([0.0, 1.0, 0.25]))
    np.testing.assert_allclose(grad, [0.5, -0.5, 0.25], rtol=1e-7)


def test_binary_cross_entropy_on_probabilities():
    p = RNG.uniform(0.05, 0.95, size=7)
    y = RNG.integers(0, 2, size=7)
    with jax.enable_x64(True):
        np.testing.assert_allclose(losses.binary_cross_entropy(p, y), _np_bce(p, y), rtol=1e-10)
        np.testing.assert_allclose(losses.binary_cross_entropy(p[:, None], y), _np_bce(p, y),
                                   rtol=1e-10)
    # Saturated probabilities are clipped to [eps, 1 − eps] (1 − eps rounded to float32):
    # finite, about −log(eps) at worst.
    eps = 1e-7
    worst = losses.binary_cross_entropy(jnp.array([0.0, 1.0]), jnp.array([1, 0]), eps=eps)
    top = float(np.float32(1.0) - np.float32(eps))
    np.testing.assert_allclose(worst, [-math.log(eps), -math.log(1.0 - top)], rtol=1e-5)


# ---------------------------------------------------------------- softmax cross-entropy


def test_softmax_cross_entropy_matches_numpy_and_label_forms_agree():
    z = RNG.normal(scale=2.0, size=(9, 4))
    labels = RNG.integers(0, 4, size=9)
    one_hot = np.eye(4)[labels]
    expected = -_np_log_softmax(z)[np.arange(9), labels]
    with jax.enable_x64(True):
        from_int = losses.softmax_cross_entropy(z, labels)
        from_one_hot = losses.softmax_cross_entropy(z, one_hot)
        np.testing.assert_allclose(from_int, expected, rtol=1e-12)
        np.testing.assert_allclose(from_one_hot, expected, rtol=1e-12)
        # Soft targets: −Σ_k q_k log softmax(z)_k.
        q = RNG.dirichlet(np.ones(4), size=9)
        np.testing.assert_allclose(losses.softmax_cross_entropy(z, q),
                                   -(q * _np_log_softmax(z)).sum(axis=1), rtol=1e-12)


def test_softmax_cross_entropy_is_stable_at_extreme_logits():
    z = jnp.array([[1000.0, -1000.0, 0.0]] * 3)
    loss = losses.softmax_cross_entropy(z, jnp.array([0, 1, 2]))
    np.testing.assert_allclose(loss, [0.0, 2000.0, 1000.0], rtol=1e-6)
    grad = jax.grad(lambda logits: jnp.sum(losses.softmax_cross_entropy(logits, jnp.array(
        [0, 1, 2]))))(z)
    assert np.all(np.isfinite(grad))
    # d loss / dz = softmax(z) − onehot(y).
    np.testing.assert_allclose(grad[1], [1.0, -1.0, 0.0], atol=1e-6)


def test_categorical_cross_entropy_on_probabilities():
    z = RNG.normal(size=(5, 3))
    p = np.exp(_np_log_softmax(z))
    labels = RNG.integers(0, 3, size=5)
    with jax.enable_x64(True):
        got = losses.categorical_cross_entropy(p, labels)
        np.testing.assert_allclose(got, -np.log(p[np.arange(5), labels]), rtol=1e-10)
        np.testing.assert_allclose(losses.categorical_cross_entropy(p, np.eye(3)[labels]), got,
                                   rtol=1e-12)
        # Same numbers as the logit form for a softmax head.
        np.testing.assert_allclose(got, losses.softmax_cross_entropy(z, labels), rtol=1e-10)
    clipped = losses.categorical_cross_entropy(jnp.array([[1.0, 0.0]]), jnp.array([1]), eps=1e-7)
    np.testing.assert_allclose(clipped, [-math.log(1e-7)], rtol=1e-5)


def test_cross_entropy_refuses_bad_label_shapes():
    with pytest.raises(ValueError, match=r"^cross_entropy: got shapes \(2, 3\) and \(2, 4\)"):
        losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


# ---------------------------------------------------------------- registry


def test_loss_registry():
    assert set(losses.LOSSES) == {"mse", "half_mse", "binary_cross_entropy", "cross_entropy",
                                  "binary_cross_entropy_probs", "cross_entropy_probs"}
    assert losses.get_loss("binary_cross_entropy") is losses.binary_cross_entropy_with_logits
    assert losses.get_loss("cross_entropy_probs") is losses.categorical_cross_entropy
    assert [losses.default_loss(t) for t in ("regression", "binary", "multiclass")] == [
        "mse", "binary_cross_entropy", "cross_entropy"]
    with pytest.raises(ValueError, match=r"^loss: got 'hinge'; allowed: mse, half_mse, "):
        losses.get_loss("hinge")
    with pytest.raises(ValueError, match=r"^task: got 'ranking'; allowed: regression, binary, "
                                         r"multiclass$"):
        losses.default_loss("ranking")


# ---------------------------------------------------------------- penalties


def test_penalties_use_weights_only():
    params = {
        "hidden_0": {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]]),
                     "bias": jnp.array([7.0, -9.0])},
        "embed": {"embedding": jnp.array([[-1.0, 2.0]])},
        "norm": {"scale": jnp.array([4.0]), "bias": jnp.array([1.0])},
    }
    weights = np.array([1.0, -2.0, 3.0, 0.5, -1.0, 2.0])
    assert float(losses.l1_penalty(params)) == pytest.approx(np.abs(weights).sum())
    assert float(losses.l2_penalty(params)) == pytest.approx(0.5 * np.square(weights).sum())
    # ∂(½Σw²)/∂w = w on weights, 0 on everything else (the weight-decay gradient).
    grad = jax.grad(losses.l2_penalty)(params)
    np.testing.assert_array_equal(grad["hidden_0"]["kernel"], params["hidden_0"]["kernel"])
    np.testing.assert_array_equal(grad["embed"]["embedding"], params["embed"]["embedding"])
    for leaf in (grad["hidden_0"]["bias"], grad["norm"]["scale"], grad["norm"]["bias"]):
        np.testing.assert_array_equal(leaf, 0.0)
    assert float(losses.l1_penalty({"bias": jnp.ones(3)})) == 0.0


# ---------------------------------------------------------------- gradients (float64)


def _float64_cases():
    z = RNG.normal(size=(4, 3))
    p = np.exp(_np_log_softmax(z))
    return [
        ("mse", z, RNG.normal(size=(4, 3))),
        ("half_mse", z, RNG.normal(size=(4, 3))),
        ("binary_cross_entropy", z[:, :1] * 3, RNG.integers(0, 2, size=4)),
        ("cross_entropy", z, RNG.integers(0, 3, size=4)),
        ("cross_entropy", z, RNG.dirichlet(np.ones(3), size=4)),
        ("binary_cross_entropy_probs", p[:, :1], RNG.integers(0, 2, size=4)),
        ("cross_entropy_probs", p, RNG.integers(0, 3, size=4)),
    ]


@pytest.mark.parametrize("name, outputs, targets", _float64_cases(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_loss_gradients_float64(name, outputs, targets):
    loss = losses.get_loss(name)
    with jax.enable_x64(True):
        weights = jnp.arange(1.0, 5.0)  # distinct weights catch per-example mix-ups

        def f(out):
            return jnp.sum(weights * loss(out, jnp.asarray(targets)))

        check_grads(jax.jit(f), (jnp.asarray(outputs, jnp.float64),), order=2, modes=("rev",))


# ---------------------------------------------------------------- metrics


def test_correct_binary_thresholds_by_head():
    z = np.array([2.0, -1.0, 0.5, -0.2, 3.0])
    y = np.array([1, 1, 0, 0, 1])
    expected = ((z > 0) == (y == 1)).astype(float)
    np.testing.assert_array_equal(metrics.correct(z, y, "binary"), expected)
    np.testing.assert_array_equal(metrics.correct(z[:, None], y[:, None], "binary", "identity"),
                                  expected)
    p = _np_sigmoid(z)
    np.testing.assert_array_equal(metrics.correct(p, y, "binary", head="sigmoid"), expected)
    r = np.array([0.9, 0.2, 0.7, 0.0, 0.5])  # ReLU outputs: class 1 above ½
    np.testing.assert_array_equal(metrics.correct(r, y, "binary", head="relu"),
                                  ((r > 0.5) == (y == 1)).astype(float))
    with pytest.raises(ValueError, match=r"^head: got 'softmax' for a binary task; allowed: "):
        metrics.correct(z, y, "binary", head="softmax")
    with pytest.raises(ValueError, match=r"^task: got 'regression'; allowed: binary, multiclass$"):
        metrics.correct(z, y, "regression")
    with pytest.raises(ValueError, match=r"^correct: got outputs of shape \(5, 2\); allowed: "):
        metrics.correct(np.zeros((5, 2)), y, "binary")


def test_correct_and_accuracy_multiclass_match_sklearn():
    z = RNG.normal(size=(50, 4))
    labels = RNG.integers(0, 4, size=50)
    predicted = z.argmax(axis=1)
    expected = (predicted == labels).astype(float)
    np.testing.assert_array_equal(metrics.correct(z, labels, "multiclass"), expected)
    np.testing.assert_array_equal(metrics.correct(z, np.eye(4)[labels], "multiclass"), expected)
    assert float(metrics.accuracy(z, labels, "multiclass")) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predicted))
    assert metrics.correct(z, labels, "multiclass").dtype == jnp.float32


def test_regression_metrics_match_sklearn():
    target = RNG.normal(size=(40, 3))
    pred = target + RNG.normal(scale=0.5, size=(40, 3))
    with jax.enable_x64(True):
        np.testing.assert_allclose(metrics.squared_error(pred, target),
                                   ((pred - target) ** 2).sum(axis=1), rtol=1e-12)
        assert float(metrics.rmse(pred, target)) == pytest.approx(
            math.sqrt(sklearn.metrics.mean_squared_error(target, pred)), rel=1e-12)
        assert float(metrics.r2(pred, target)) == pytest.approx(
            sklearn.metrics.r2_score(target, pred), rel=1e-12)
        assert float(metrics.r2(pred[:, 0], target[:, 0])) == pytest.approx(
            sklearn.metrics.r2_score(target[:, 0], pred[:, 0]), rel=1e-12)
        # A constant target column: 1 if predicted exactly, else 0 (sklearn's convention).
        const = np.column_stack([target[:, 0], np.full(40, 2.0)])
        for guess in (np.column_stack([pred[:, 0], np.full(40, 2.0)]),
                      np.column_stack([pred[:, 0], np.full(40, 2.5)])):
            assert float(metrics.r2(guess, const)) == pytest.approx(
                sklearn.metrics.r2_score(const, guess), rel=1e-12)


def test_probabilities():
    z = RNG.normal(size=(6, 3))
    with jax.enable_x64(True):
        np.testing.assert_allclose(metrics.probabilities(z, "multiclass"),
                                   np.exp(_np_log_softmax(z)), rtol=1e-12)
        np.testing.assert_allclose(metrics.probabilities(z[:, :1], "binary"),
                                   _np_sigmoid(z[:, :1]), rtol=1e-12)
    with pytest.raises(ValueError, match=r"^task: got 'regression'; allowed: "):
        metrics.probabilities(z, "regression")


# ---------------------------------------------------------------- docs and doctests


@pytest.mark.parametrize("module", [losses, metrics], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_docs_page_examples_run(capsys):
    text = (ROOT / "docs" / "losses.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/losses.md", "exec"), namespace)
    out = capsys.readouterr().out
    for line in ("[1000.0, 1000.0, 0.6931]", "[15.94, 16.12, 0.69]",
                 "[0.1698, 1.0986] [0.1698, 1.0986]", "3.0 2.5", "[1.0, 0.0, 0.0]",
                 "[0.881, 0.269, 0.622]", "0.7857"):
        assert line in out.splitlines()
