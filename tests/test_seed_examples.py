"""The course slides' worked examples, computed through jaxnets.

Each example runs the jaxnets model (``apply`` with parameters set by hand),
``jax.grad`` of a jaxnets loss and, where the slide takes a step, the optimizer
from ``jaxnets.optim``. Results are compared twice: with the slide's own rounding
(e.g. ±5e-4 on a number printed with 3 decimals) and against the exact closed form
with a tight tolerance (float64 where exactness matters).

Flax stores a dense kernel as (inputs, outputs), so a slide's weight matrix W
acting as W·x (rows = units) is stored transposed: kernel = Wᵀ.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import losses, optim
from jaxnets.models import MLP, LinearRegression, LogisticRegression


def _dense(kernel, bias, dtype=jnp.float32):
    return {"kernel": jnp.asarray(kernel, dtype), "bias": jnp.asarray(bias, dtype)}


def _sgd_step(params, grads, learning_rate):
    tx = optim.create("sgd", learning_rate)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


def _rounded(value, decimals):
    """The slide's printed number must be ``value`` rounded to ``decimals`` places."""
    return pytest.approx(float(value), abs=0.5 * 10.0 ** -decimals + 1e-12)


# ------------------------------------------------------------------------------------
# 1. Gradient descent on y = a + x (001, AI x ECON): data from y = 5 + x, a0 = 2.
#    c = (y − ŷ)², dc/da = −2ε = −6; a1 = 2 − 0.1·(−6) = 2.6, and 8 with no learning rate.
# ------------------------------------------------------------------------------------

MODEL_A_PLUS_X = LinearRegression(output_dim=1)


def _loss_of_a(a, x, y):
    # ŷ = a + x: LinearRegression with its slope fixed at 1 and the intercept a learned.
    variables = {"params": {"output": _dense([[1.0]], [0.0], a.dtype)
                            | {"bias": jnp.reshape(a, (1,))}}}
    return jnp.mean(losses.mse(MODEL_A_PLUS_X.apply(variables, x), y))


@pytest.mark.parametrize("xs", [[1.0], [-1.0, 0.0, 1.0, 2.5]])
def test_gradient_descent_on_the_intercept(xs):
    x = jnp.asarray(xs)[:, None]
    y = 5.0 + x  # the slide's data-generating process (x = 1, y = 6)
    a0 = jnp.asarray(2.0)
    # ε = y − ŷ = 3 at every point, so the loss is 9 and its derivative −2ε = −6.
    assert float(_loss_of_a(a0, x, y)) == 9.0
    grad = jax.grad(_loss_of_a)(a0, x, y)
    assert float(grad) == -6.0

    a1 = _sgd_step({"a": a0}, {"a": grad}, 0.1)["a"]
    assert float(a1) == _rounded(2.6, 1)
    assert float(a1) == pytest.approx(2.6, abs=1e-6)
    overshoot = _sgd_step({"a": a0}, {"a": grad}, 1.0)["a"]
    assert float(overshoot) == 8.0  # > 5 = the true α

    with jax.enable_x64(True):
        a64 = jnp.asarray(2.0, jnp.float64)
        g64 = jax.grad(_loss_of_a)(a64, x.astype(jnp.float64), y.astype(jnp.float64))
        assert float(_sgd_step({"a": a64}, {"a": g64}, 0.1)["a"]) == pytest.approx(2.6, abs=1e-14)


def test_gradient_descent_converges_or_bounces():
    """5 − a_{t+1} = (1 − 2γ)(5 − a_t): γ = 0.1 converges, γ = 1 bounces 2, 8, 2, 8."""
    x = jnp.array([[1.0]])
    y = x + 5.0
    for rate, steps in ((0.1, 30), (1.0, 4)):
        a = jnp.asarray(2.0)
        path = [float(a)]
        for _ in range(steps):
            a = _sgd_step({"a": a}, {"a": jax.grad(_loss_of_a)(a, x, y)}, rate)["a"]
            path.append(float(a))
        exact = [5.0 - 3.0 * (1.0 - 2.0 * rate) ** t for t in range(steps + 1)]
        np.testing.assert_allclose(path, exact, atol=1e-5)
    assert path == [2.0, 8.0, 2.0, 8.0, 2.0]


# ------------------------------------------------------------------------------------
# 2. One sigmoid neuron (003, Econ 425): x = 2, y = 1, w = 0.5, b = 0, γ = 0.1,
#    L = ½(y − ŷ)²: ŷ = 0.731, L = 0.036, ∂L/∂w = −0.106, w_new = 0.51.
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [MLP(hidden=(), output_dim=1, head="sigmoid"),
                                   LogisticRegression(num_classes=2, head="sigmoid")],
                         ids=["mlp", "logistic"])
def test_sigmoid_neuron_gradient_step(model):
    x, y = jnp.array([[2.0]]), jnp.array([[1.0]])
    params = {"output": _dense([[0.5]], [0.0])}

    def loss(p):
        return jnp.mean(losses.half_mse(model.apply({"params": p}, x), y))

    y_hat = float(model.apply({"params": params}, x)[0, 0])
    value, grads = jax.value_and_grad(loss)(params)
    dw = float(grads["output"]["kernel"][0, 0])
    w_new = float(_sgd_step(params, grads, 0.1)["output"]["kernel"][0, 0])

    # As printed on the slide.
    assert y_hat == _rounded(0.731, 3)
    assert float(value) == _rounded(0.036, 3)
    assert dw == _rounded(-0.106, 3)
    assert w_new == _rounded(0.51, 2)
    # Closed forms: ŷ = σ(1), ∂L/∂w = −(y − ŷ)·ŷ(1 − ŷ)·x.
    s = 1.0 / (1.0 + math.exp(-1.0))
    exact_dw = -(1.0 - s) * s * (1.0 - s) * 2.0
    assert y_hat == pytest.approx(s, rel=1e-6)
    assert float(value) == pytest.approx(0.5 * (1.0 - s) ** 2, rel=1e-5)
    assert dw == pytest.approx(exact_dw, rel=1e-5)
    assert w_new == pytest.approx(0.5 - 0.1 * exact_dw, rel=1e-6)
    # The bias gets the same chain without the factor x (the slide keeps b fixed).
    assert float(grads["output"]["bias"][0]) == pytest.approx(exact_dw / 2.0, rel=1e-5)


# ------------------------------------------------------------------------------------
# 3. A ReLU network (003): x = (20, 3); w1..w6 = −0.2, 1, −0.5, 0.3, −1, 0;
#    b1, b2, b3 = 1, −0.2, 0.5; ReLU on the hidden AND the output: h = (0, 0), y = 0.5.
# ------------------------------------------------------------------------------------


def test_relu_network_forward_pass():
    model = MLP(hidden=(2,), output_dim=1, activation="relu", head="relu")
    w1 = np.array([[-0.2, 1.0], [-0.5, 0.3]])  # slide's W1 (row j = hidden unit j)
    w2 = np.array([[-1.0], [0.0]])             # slide's W2 = (w5, w6)ᵀ
    for dtype, tol in ((jnp.float32, 1e-6), (jnp.float64, 1e-15)):
        with jax.enable_x64(dtype == jnp.float64):
            params = {"hidden_0": _dense(w1.T, [1.0, -0.2], dtype),
                      "output": _dense(w2, [0.5], dtype)}
            x = jnp.array([[20.0, 3.0]], dtype)
            y, state = model.apply({"params": params}, x, mutable=["intermediates"])
            h = np.asarray(state["intermediates"]["hidden_0_output"][0])
            # h1 = ReLU(20·(−0.2) + 3·1 + 1) = ReLU(0), h2 = ReLU(−10 + 0.9 − 0.2) = 0.
            np.testing.assert_allclose(h, [[0.0, 0.0]], atol=tol * 10)
            assert float(y[0, 0]) == pytest.approx(0.5, abs=tol * 10)
            assert float(y[0, 0]) == _rounded(0.5, 1)


# ------------------------------------------------------------------------------------
# 4. XOR (004): f(x) = max(0, xW + c)·w + b with W = [[1,1],[1,1]], c = (0, −1),
#    w = (1, −2), b = 0 fits exactly (MSE 0); the best linear model predicts ½.
# ------------------------------------------------------------------------------------

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def test_xor_relu_network_is_exact():
    model = MLP(hidden=(2,), output_dim=1, activation="relu", head="identity")
    params = {"hidden_0": _dense([[1.0, 1.0], [1.0, 1.0]], [0.0, -1.0]),
              "output": _dense([[1.0], [-2.0]], [0.0])}
    out, state = model.apply({"params": params}, jnp.asarray(XOR_X), mutable=["intermediates"])
    # The slide's intermediate table max(0, xW + c) and the outputs, exactly.
    np.testing.assert_array_equal(state["intermediates"]["hidden_0_output"][0],
                                  [[0, 0], [1, 0], [1, 0], [2, 1]])
    np.testing.assert_array_equal(out, XOR_Y)
    assert float(jnp.mean(losses.mse(out, jnp.asarray(XOR_Y)))) == 0.0


def test_xor_best_linear_model_predicts_one_half():
    model = LinearRegression(output_dim=1)
    x, y = jnp.asarray(XOR_X, jnp.float32), jnp.asarray(XOR_Y, jnp.float32)
    params = model.init({"params": jax.random.key(0)}, x)["params"]
    tx = optim.create("sgd", 0.5)

    def loss(p):
        return jnp.mean(losses.mse(model.apply({"params": p}, x), y))

    @jax.jit
    def train(p):
        def step(carry, _):
            p, state = carry
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=400)
        return p

    fitted = train(params)
    # Least squares on [1, q, p]: β0 = ½, β1 = β2 = 0 (NumPy's lstsq as the reference).
    design = np.column_stack([np.ones(4), XOR_X])
    beta = np.linalg.lstsq(design, XOR_Y, rcond=None)[0][:, 0]
    np.testing.assert_allclose(beta, [0.5, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(fitted["output"]["bias"], [beta[0]], atol=1e-5)
    np.testing.assert_allclose(fitted["output"]["kernel"][:, 0], beta[1:], atol=1e-5)
    pred = model.apply({"params": fitted}, x)
    np.testing.assert_allclose(pred, np.full((4, 1), 0.5), atol=1e-5)
    # MSE = (1/N)Σ(y − ŷ)² = ¼. The slide prints "MSE = 1", which is the sum of squared
    # errors Σ(y − ŷ)² = 4·¼ (its own formula has the 1/N).
    per_example = losses.mse(pred, y)
    assert float(jnp.mean(per_example)) == pytest.approx(0.25, abs=1e-6)
    assert float(jnp.sum(per_example)) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------
# 5. Without non-linear activations a hidden layer adds nothing (000/001): an MLP with
#    identity activations is the linear model W = W1·W2·W3, b = (b1·W2 + b2)·W3 + b3.
# ------------------------------------------------------------------------------------


def test_identity_mlp_collapses_to_linear_model():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        mlp = MLP(hidden=(4, 3), output_dim=2, activation="identity", head="identity")
        shapes = [(5, 4), (4, 3), (3, 2)]
        layers = [(rng.normal(size=s), rng.normal(size=s[1])) for s in shapes]
        params = {name: _dense(k, b, jnp.float64)
                  for name, (k, b) in zip(("hidden_0", "hidden_1", "output"), layers)}
        (k1, b1), (k2, b2), (k3, b3) = layers
        kernel = k1 @ k2 @ k3
        bias = (b1 @ k2 + b2) @ k3 + b3
        linear = LinearRegression(output_dim=2)
        x = jnp.asarray(rng.normal(size=(7, 5)))
        np.testing.assert_allclose(mlp.apply({"params": params}, x),
                                   linear.apply({"params": {"output": _dense(kernel, bias,
                                                                             jnp.float64)}}, x),
                                   rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------
# 6. Backpropagation by the chain rule (000): for h1 = F1(α1 + xβ1), h2 = F2(α2 + h1β2)
#    and c = (y − h2)², ∂c/∂β1^(1,2) = −2(y − h2)·F2'(·)·β2^(1)·F1'(α1 + xβ1^(1))·x2.
# ------------------------------------------------------------------------------------


def test_backpropagation_matches_the_chain_rule():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        model = MLP(hidden=(3,), output_dim=1, activation="tanh", head="sigmoid")
        k1, b1 = rng.normal(size=(2, 3)), rng.normal(size=3)
        k2, b2 = rng.normal(size=(3, 1)), rng.normal(size=1)
        params = {"hidden_0": _dense(k1, b1, jnp.float64), "output": _dense(k2, b2, jnp.float64)}
        x, y = np.array([0.7, -1.3]), 0.4

        def cost(p):
            return jnp.sum(losses.mse(model.apply({"params": p}, jnp.asarray(x[None])),
                                      jnp.array([[y]])))

        grad = jax.grad(cost)(params)["hidden_0"]["kernel"]
        # Hand chain rule for the weight from input 2 to hidden unit 1 (kernel[1, 0]).
        a1 = x @ k1 + b1
        h1 = np.tanh(a1)
        a2 = h1 @ k2[:, 0] + b2[0]
        h2 = 1.0 / (1.0 + np.exp(-a2))
        by_hand = -2.0 * (y - h2) * h2 * (1.0 - h2) * k2[0, 0] * (1.0 - h1[0] ** 2) * x[1]
        assert float(grad[1, 0]) == pytest.approx(by_hand, rel=1e-12)
