"""The vanishing-gradients experiment in a tiny setting, checked against NumPy backprop."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets as jn
from experiments import vanishing_gradients as vg


def _numpy_kernel_grad_norms(params, x, y, depth, activation):
    """Backpropagation by hand in float64: ‖∂L/∂W_l‖ for the mean softmax cross-entropy."""
    g = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0)}[activation]
    dg = {"sigmoid": lambda z: g(z) * (1 - g(z)), "relu": lambda z: (z > 0).astype(float)}[activation]
    names = vg.layer_names(depth)
    w = [np.asarray(params[n]["kernel"], np.float64) for n in names]
    b = [np.asarray(params[n]["bias"], np.float64) for n in names]
    hs, zs = [np.asarray(x, np.float64)], []
    for l in range(depth):
        zs.append(hs[-1] @ w[l] + b[l])
        hs.append(g(zs[-1]))
    logits = hs[-1] @ w[-1] + b[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(logits.shape[1])[np.asarray(y)]) / len(y)
    norms = [np.linalg.norm(hs[-1].T @ delta)]
    back = delta @ w[-1].T
    for l in reversed(range(depth)):
        delta = back * dg(zs[l])
        norms.append(np.linalg.norm(hs[l].T @ delta))
        back = delta @ w[l].T
    return norms[::-1]


def test_grad_norms_match_numpy_backprop_and_create_state():
    data = jn.data.load("digits")
    x, y = jnp.asarray(data.x_train[:64]), jnp.asarray(data.y_train[:64])
    for activation, init in [("sigmoid", "normal-0.01"), ("relu", "matched")]:
        _check_against_numpy(activation, init, x, y, compare_state=activation == "relu")


def _check_against_numpy(activation, init, x, y, compare_state):
    kernel_init, scale = vg.kernel_init_for(init, activation)
    model = jn.models.get_model("mlp", output_dim=10, hidden=(16, 16, 16), activation=activation,
                                kernel_init=kernel_init, init_scale=scale)
    params = vg.initial_params(model, x, seed=3)
    if compare_state:  # the eager draw is the one create_state makes
        state = jn.create_state(model, jn.optim.create("sgd", 0.1), x, seed=3)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    ours = vg.kernel_grad_norms(vg.make_grad_fn(model)(params, x, y), 3)
    np.testing.assert_allclose(ours, _numpy_kernel_grad_norms(params, x, y, 3, activation), rtol=2e-3)


def test_run_small_sigmoid_vanishes_relu_he_does_not(tmp_path):
    results = vg.run(quick=True, out=tmp_path, depths=(2, 5), width=32, batch=128,
                     train_depths=(2,), train_steps=10, activations=("sigmoid", "relu"),
                     inits=("normal-0.01", "matched"))
    assert json.loads((tmp_path / "results.json").read_text())["depths"] == [2, 5]
    assert (tmp_path / "grad_norms_init.png").stat().st_size > 0
    assert (tmp_path / "grad_norms_trained.png").stat().st_size > 0
    ratio = {(r["activation"], r["depth"], r["init"]): r["ratio_init"] for r in results["records"]}
    # Sigmoid with N(0, 0.01²) weights: each layer multiplies the backward signal by
    # about 0.25·0.01·√width ≪ 1, so the input-side gradient is orders of magnitude smaller.
    assert ratio["sigmoid", 2, "normal-0.01"] < 0.05
    assert ratio["sigmoid", 5, "normal-0.01"] < 1e-4
    assert ratio["sigmoid", 5, "normal-0.01"] < ratio["sigmoid", 2, "normal-0.01"]
    # ReLU with He: the first and output layers stay within an order of magnitude.
    for depth in (2, 5):
        assert 0.1 < ratio["relu", depth, "matched"] < 10
    assert "| sigmoid | 5 | normal-0.01 |" in vg.summary(results)


def test_bad_input_is_one_line_value_error(tmp_path):
    with pytest.raises(ValueError, match="activation"):
        vg.run(out=tmp_path, depths=(2,), train_depths=(), activations=("swish-ish",))
    with pytest.raises(ValueError, match="train_depths"):
        vg.run(out=tmp_path, depths=(2,), train_depths=(3,))
