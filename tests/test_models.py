"""Models: parameter counts, shapes, activations, initializers, registry, gradients.

References are independent: hand-counted parameters, NumPy forward passes and
formulas, closed-form variances and float64 finite differences.
"""
import doctest
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxnets import models
from jaxnets.models import activations, initializers, linear, mlp
from jaxnets.models import (ACTIVATIONS, HEADS, INITIALIZERS, MLP, LinearRegression,
                            LogisticRegression, get_activation, get_head, get_initializer,
                            get_model)
from jaxnets.tree import count_params

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}


def _init(model, x):
    """Real initialization (jitted: one compilation instead of one per primitive)."""
    return jax.jit(lambda inputs: model.init(KEYS, inputs, train=False))(x)


def _shapes(model, x):
    """The variables' shapes, traced without running (or compiling) the initializers."""
    return jax.eval_shape(lambda inputs: model.init(KEYS, inputs, train=False), x)


def _random_variables(model, x, seed=0, dtype=np.float32):
    """Variables of the right shapes drawn from N(0, 0.5²) by NumPy (initializers are
    tested apart)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), dtype),
                        _shapes(model, x))


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("model, input_dim, expected", [
    (MLP(hidden=(4, 5), output_dim=2), 3, 3 * 4 + 4 + 4 * 5 + 5 + 5 * 2 + 2),
    # The house-price net of the slides: 2 inputs, 2 sigmoid units, 1 output: 9.
    (MLP(hidden=(2,), output_dim=1, activation="sigmoid", head="identity"), 2, 9),
    (MLP(hidden=(), output_dim=3), 7, 7 * 3 + 3),
    (MLP(hidden=(8, 8, 8), output_dim=1), 1, (1 * 8 + 8) + 2 * (8 * 8 + 8) + (8 + 1)),
    (LinearRegression(output_dim=2), 3, 3 * 2 + 2),
    (LogisticRegression(num_classes=2), 5, 5 + 1),
    (LogisticRegression(num_classes=4), 5, 5 * 4 + 4),
])
def test_exact_parameter_counts(model, input_dim, expected):
    variables = _shapes(model, jnp.ones((2, input_dim)))
    assert set(variables) == {"params"}
    assert count_params(jax.tree.map(lambda s: np.zeros(s.shape), variables)) == expected
    assert model.param_count(input_dim) == expected


def test_parameter_tree_is_readable():
    variables = _shapes(MLP(hidden=(4, 5), output_dim=2), jnp.ones((1, 3)))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes == {
        "hidden_0": {"kernel": (3, 4), "bias": (4,)},
        "hidden_1": {"kernel": (4, 5), "bias": (5,)},
        "output": {"kernel": (5, 2), "bias": (2,)},
    }
    # Linear and logistic regression share the tree of an MLP with no hidden layer.
    for model in (LinearRegression(output_dim=1), LogisticRegression(),
                  MLP(hidden=(), output_dim=1)):
        shapes = jax.tree.map(jnp.shape, _shapes(model, jnp.ones((1, 3)))["params"])
        assert shapes == {"output": {"kernel": (3, 1), "bias": (1,)}}


# ---------------------------------------------------------------- shapes and forward passes


def _numpy_mlp(params, x, g, head):
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    layers = sorted(k for k in params if k.startswith("hidden_"))
    for name in layers:
        h = g(h @ np.asarray(params[name]["kernel"], np.float64)
              + np.asarray(params[name]["bias"], np.float64))
    z = h @ np.asarray(params["output"]["kernel"], np.float64) + np.asarray(
        params["output"]["bias"], np.float64)
    return head(z)


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_mlp_matches_numpy_forward_pass():
    x = jax.random.normal(jax.random.key(3), (6, 5))
    model = MLP(hidden=(7, 4), output_dim=3, activation="tanh", head="softmax")
    variables = _random_variables(model, x)
    out = model.apply(variables, x)
    expected = _numpy_mlp(variables["params"], x, np.tanh, _np_softmax)
    assert out.shape == (6, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-6)


def test_images_are_flattened():
    x = jax.random.normal(jax.random.key(4), (3, 4, 4, 2))
    for model in (MLP(hidden=(5,), output_dim=10), LinearRegression(output_dim=2),
                  LogisticRegression(num_classes=10)):
        variables = _random_variables(model, x)
        out = model.apply(variables, x)
        assert out.shape == (3, model.output_dim)
        # Same result as feeding the flattened features (row-major order).
        np.testing.assert_allclose(out, model.apply(variables, x.reshape(3, 32)), rtol=1e-6)
        first = jax.tree_util.tree_leaves_with_path(variables["params"])
        kernels = [leaf for path, leaf in first if "kernel" in jax.tree_util.keystr(path)]
        assert kernels[0].shape[0] == 4 * 4 * 2


def test_linear_and_logistic_match_numpy():
    x = jax.random.normal(jax.random.key(5), (8, 3))
    lin = LinearRegression(output_dim=2)
    v = _random_variables(lin, x, seed=1)
    w, b = np.asarray(v["params"]["output"]["kernel"]), np.asarray(v["params"]["output"]["bias"])
    np.testing.assert_allclose(lin.apply(v, x), np.asarray(x) @ w + b, rtol=1e-5, atol=1e-6)

    binary = LogisticRegression(num_classes=2, head="sigmoid")
    v = _random_variables(binary, x, seed=2)
    w, b = np.asarray(v["params"]["output"]["kernel"]), np.asarray(v["params"]["output"]["bias"])
    assert binary.output_dim == 1
    np.testing.assert_allclose(binary.apply(v, x), _np_sigmoid(np.asarray(x) @ w + b),
                               rtol=1e-5)
    logits = LogisticRegression(num_classes=2).apply(v, x)
    np.testing.assert_allclose(logits, np.asarray(x) @ w + b, rtol=1e-5, atol=1e-6)

    multi = LogisticRegression(num_classes=4, head="softmax")
    v = _random_variables(multi, x, seed=3)
    w, b = np.asarray(v["params"]["output"]["kernel"]), np.asarray(v["params"]["output"]["bias"])
    assert multi.output_dim == 4
    np.testing.assert_allclose(multi.apply(v, x), _np_softmax(np.asarray(x) @ w + b),
                               rtol=1e-5)


def test_train_flag_and_jit():
    x = jnp.ones((4, 3))
    model = MLP(hidden=(5,), output_dim=2)
    variables = _random_variables(model, x)
    eager = model.apply(variables, x, train=True)
    jitted = jax.jit(model.apply, static_argnames="train")(variables, x, train=False)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)


def test_dropout_is_inverted_and_off_at_eval():
    n, rate = 20000, 0.25
    x = jnp.ones((1, 4))
    model = MLP(hidden=(n,), output_dim=1, activation="sigmoid", dropout_rate=rate,
                kernel_init="normal", init_scale=1.0)
    variables = _random_variables(model, x, seed=5)
    # An output layer of ones and no bias sums the (dropped, rescaled) hidden units.
    variables["params"]["output"] = {"kernel": jnp.ones((n, 1)), "bias": jnp.zeros((1,))}
    w = np.asarray(variables["params"]["hidden_0"]["kernel"], np.float64)
    b = np.asarray(variables["params"]["hidden_0"]["bias"], np.float64)
    h = _np_sigmoid(np.ones((1, 4)) @ w + b)[0]
    # Evaluation: no dropout at all.
    np.testing.assert_allclose(model.apply(variables, x, train=False)[0, 0], h.sum(), rtol=1e-5)
    # Training: Σ_j h_j·m_j/(1 − p), m_j ~ Bernoulli(1 − p): mean Σh, variance
    # Σh²·p/(1 − p); the draw must be within 4 standard deviations and not equal Σh.
    outs = [float(model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(k)})[0, 0])
            for k in (21, 22)]
    spread = math.sqrt(np.sum(h ** 2) * rate / (1 - rate))
    for out in outs:
        assert abs(out - h.sum()) < 4 * spread
        assert abs(out - h.sum()) > 1e-3 * spread
    assert outs[0] != outs[1]


def test_hidden_activations_are_sown():
    x = jnp.array([[1.0, -2.0]])
    model = MLP(hidden=(3, 2), output_dim=1, activation="relu")
    variables = _random_variables(model, x)
    _, state = model.apply(variables, x, mutable=["intermediates"])
    layer = variables["params"]["hidden_0"]
    h0 = np.maximum(np.asarray(x) @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]), 0)
    np.testing.assert_allclose(state["intermediates"]["hidden_0_output"][0], h0, rtol=1e-6)
    assert state["intermediates"]["hidden_1_output"][0].shape == (1, 2)


# ---------------------------------------------------------------- activations and heads


def _np_gelu(z):
    erf = np.vectorize(math.erf)
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


NUMPY_ACTIVATIONS = {
    "identity": lambda z: z,
    "sigmoid": _np_sigmoid,
    "tanh": lambda z: (np.exp(z) - np.exp(-z)) / (np.exp(z) + np.exp(-z)),
    "relu": lambda z: np.where(z > 0, z, 0.0),
    "leaky_relu": lambda z: np.where(z >= 0, z, 0.01 * z),
    "gelu": _np_gelu,
    "softplus": lambda z: np.log(1.0 + np.exp(z)),
}


def test_activation_names():
    assert set(ACTIVATIONS) == set(NUMPY_ACTIVATIONS)
    assert set(HEADS) == {"logits", "identity", "sigmoid", "softmax", "relu"}


@pytest.mark.parametrize("name", sorted(NUMPY_ACTIVATIONS))
def test_activation_matches_numpy(name):
    z = np.linspace(-6.0, 6.0, 241)
    with jax.enable_x64(True):
        got = np.asarray(get_activation(name)(jnp.asarray(z, jnp.float64)))
    np.testing.assert_allclose(got, NUMPY_ACTIVATIONS[name](z), rtol=1e-12, atol=1e-14)


def test_heads_match_numpy():
    z = np.array([[-3.0, 0.0, 2.5], [100.0, -100.0, 0.5]])
    with jax.enable_x64(True):
        z64 = jnp.asarray(z)
        np.testing.assert_allclose(get_head("softmax")(z64), _np_softmax(z), rtol=1e-12)
        np.testing.assert_allclose(get_head("sigmoid")(z64), _np_sigmoid(z), rtol=1e-12)
        np.testing.assert_allclose(get_head("relu")(z64), np.maximum(z, 0), rtol=1e-12)
        for name in ("logits", "identity"):
            np.testing.assert_array_equal(get_head(name)(z64), z)


def test_head_and_activation_errors():
    with pytest.raises(ValueError, match=r"^activation: got 'swish'; allowed: identity, "):
        get_activation("swish")
    with pytest.raises(ValueError, match=r"^head: got 'tanh'; allowed: logits, identity, "):
        get_head("tanh")


# ---------------------------------------------------------------- initializers


FAN_IN, FAN_OUT = 1000, 400


@pytest.mark.parametrize("name, scale, variance", [
    ("normal", None, 0.01 ** 2),
    ("normal", 0.2, 0.2 ** 2),
    ("lecun", None, 1.0 / FAN_IN),
    ("lecun", 3.0, 3.0 / FAN_IN),
    ("glorot", None, 2.0 / (FAN_IN + FAN_OUT)),
    ("he", None, 2.0 / FAN_IN),
    ("he", 0.5, 1.0 / FAN_IN),
])
def test_initializer_variance(name, scale, variance):
    w = np.asarray(get_initializer(name, scale)(jax.random.key(7), (FAN_IN, FAN_OUT)),
                   np.float64)
    # 400k draws: the sample variance is within ~0.5% of the truth (3 sigma).
    assert abs(w.mean()) < 5 * math.sqrt(variance / w.size)
    assert w.var() == pytest.approx(variance, rel=0.02)
    if name == "glorot":  # uniform on [−a, a], a = √(6/(in+out))
        bound = math.sqrt(6.0 / (FAN_IN + FAN_OUT))
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.99 * bound
    if name in ("lecun", "he"):  # truncated at two standard deviations (before rescaling)
        assert np.abs(w).max() <= 2.0 * math.sqrt(variance) / 0.8796256610342398 + 1e-6


def test_mlp_uses_initializer_and_bias_init():
    model = MLP(hidden=(500,), output_dim=1, kernel_init="he", bias_init=0.3)
    params = _init(model, jnp.ones((1, 800)))["params"]
    kernel = np.asarray(params["hidden_0"]["kernel"], np.float64)
    assert kernel.var() == pytest.approx(2.0 / 800, rel=0.02)
    np.testing.assert_array_equal(params["hidden_0"]["bias"], np.float32(0.3))
    np.testing.assert_array_equal(params["output"]["bias"], np.float32(0.3))


def test_initializer_errors():
    assert set(INITIALIZERS) == {"normal", "lecun", "glorot", "he"}
    with pytest.raises(ValueError, match=r"^kernel_init: got 'xavier'; allowed: normal, lecun"):
        get_initializer("xavier")
    with pytest.raises(ValueError, match=r"^init_scale: got -1.0; allowed: None or a number > 0$"):
        get_initializer("he", -1.0)


# ---------------------------------------------------------------- registry and validation


def test_registry_names_and_builds():
    assert {"linear", "logistic", "mlp"} <= set(models.MODELS)
    assert isinstance(get_model("linear", output_dim=2), LinearRegression)
    binary = get_model("logistic", output_dim=1)
    assert isinstance(binary, LogisticRegression) and binary.num_classes == 2
    assert get_model("logistic", output_dim=5).output_dim == 5
    mlp = get_model("mlp", output_dim=3, hidden=[16, 8], activation="gelu")
    assert isinstance(mlp, MLP) and mlp.hidden == (16, 8)
    hash(mlp)  # hashable, so it can be a static argument of jit
    assert get_model("mlp", output_dim=1).hidden == models.DEFAULT_MLP_HIDDEN == (100,)
    assert "hidden=(100,)" in models.describe("mlp")
    assert models.describe("logistic").startswith("logistic: ")


def test_registry_errors_are_one_line():
    models.register_model("test_required", lambda output_dim, *, width: MLP(
        hidden=(width,), output_dim=output_dim), "a model with a required option")
    try:
        names = ", ".join(models.MODELS)  # later model files add their names here
        assert names.startswith("linear, logistic, mlp, ")
        cases = [
            (lambda: get_model("resnet", output_dim=1), f"model: got 'resnet'; allowed: {names}"),
            (lambda: get_model("mlp", output_dim=1, hidden=(2,), depth=3),
             "mlp option: got 'depth'; allowed: hidden, activation, head, kernel_init, "
             "init_scale, bias_init, dropout_rate, dtype"),
            (lambda: get_model("linear", output_dim=1, hidden=(2,)),
             "linear option: got 'hidden'; allowed: head, kernel_init, init_scale, bias_init, dtype"),
            (lambda: get_model("test_required", output_dim=1),
             "test_required option width: got nothing; allowed: it is required"),
            (lambda: get_model("logistic", output_dim=2),
             "output_dim: got 2; allowed: 1 (binary, one logit) or >= 3 (K classes, K logits)"),
            (lambda: models.describe("cnn9"), f"model: got 'cnn9'; allowed: {names}"),
        ]
        for build, message in cases:
            with pytest.raises(ValueError) as info:
                build()
            assert str(info.value) == message
            assert "\n" not in str(info.value)
    finally:
        models.MODELS.pop("test_required")


@pytest.mark.parametrize("kwargs, field", [
    ({"hidden": (4, 0)}, "hidden"),
    ({"hidden": "4"}, "hidden"),
    ({"hidden": (4,), "output_dim": 0}, "output_dim"),
    ({"hidden": (4,), "activation": "swish"}, "activation"),
    ({"hidden": (4,), "head": "tanh"}, "head"),
    ({"hidden": (4,), "head": "softmax"}, "head"),  # softmax of one output is always 1
    ({"hidden": (4,), "kernel_init": "zeros"}, "kernel_init"),
    ({"hidden": (4,), "init_scale": 0.0}, "init_scale"),
    ({"hidden": (4,), "dropout_rate": 1.0}, "dropout_rate"),
])
def test_mlp_field_validation(kwargs, field):
    kwargs = {"output_dim": 1, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}: got "):
        MLP(**kwargs)


def test_logistic_head_validation():
    with pytest.raises(ValueError, match=r"^head: got 'softmax'; allowed for num_classes=2"):
        LogisticRegression(num_classes=2, head="softmax")
    with pytest.raises(ValueError, match=r"^head: got 'sigmoid'; allowed for num_classes=3"):
        LogisticRegression(num_classes=3, head="sigmoid")
    with pytest.raises(ValueError, match=r"^num_classes: got 1; allowed: an int >= 2$"):
        LogisticRegression(num_classes=1)


def test_register_model_adds_and_refuses_duplicates():
    def build(output_dim, width=3):
        return MLP(hidden=(width,), output_dim=output_dim)

    try:
        models.register_model("test_tiny", build, "a test model")
        model = get_model("test_tiny", output_dim=2, width=5)
        assert model.hidden == (5,)
        with pytest.raises(ValueError, match=r"^name: got 'test_tiny'; allowed: a name not "):
            models.register_model("test_tiny", build, "again")
        with pytest.raises(ValueError, match=r"^builder: got "):
            models.register_model("test_kwargs", lambda output_dim, **kw: None, "bad")
    finally:
        models.MODELS.pop("test_tiny", None)
    assert "test_tiny" not in models.MODELS


# ---------------------------------------------------------------- gradients (float64)


GRAD_MODELS = [
    (LinearRegression(output_dim=2), 2),
    (LogisticRegression(num_classes=2), 2),
    (LogisticRegression(num_classes=2, head="sigmoid"), 2),
    (LogisticRegression(num_classes=3, head="softmax"), 2),
    (MLP(hidden=(3, 2), output_dim=2, activation="identity"), 2),
    (MLP(hidden=(3, 2), output_dim=2, activation="sigmoid", head="sigmoid"), 2),
    (MLP(hidden=(3, 2), output_dim=2, activation="tanh", head="softmax"), 2),
    (MLP(hidden=(3, 2), output_dim=2, activation="gelu"), 2),
    (MLP(hidden=(3, 2), output_dim=2, activation="softplus"), 2),
    # Piecewise linear: first order only (random inputs stay away from the kinks).
    (MLP(hidden=(3, 2), output_dim=2, activation="relu"), 1),
    (MLP(hidden=(3, 2), output_dim=2, activation="leaky_relu", head="relu"), 1),
]


@pytest.mark.parametrize("model, order", GRAD_MODELS,
                         ids=[f"{type(m).__name__}-{getattr(m, 'activation', '')}-{m.head}"
                              for m, _ in GRAD_MODELS])
def test_gradients_float64(model, order):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(11), (3, 2, 2), jnp.float64)
        params = _random_variables(model, x, seed=4, dtype=np.float64)["params"]

        def f(p, inputs):
            return jnp.sum(jnp.sin(model.apply({"params": p}, inputs)))

        check_grads(jax.jit(f), (params, x), order=order, modes=("rev",))


# ---------------------------------------------------------------- docs and doctests


@pytest.mark.parametrize("module", [models, activations, initializers, linear, mlp],
                         ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_docs_page_examples_run(capsys):
    text = (ROOT / "docs" / "models.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    namespace = {}
    for block in blocks:  # later blocks reuse the names of earlier ones, as a reader would
        exec(compile(block, "docs/models.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "mlp option: got 'hiden'" in out and "0.731" in out and "[[0.0, 0.0]] 0.5" in out
