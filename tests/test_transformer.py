"""Transformer blocks and models: parameter counts, attention against NumPy, masks, gradients,
learning.

References are independent of the code under test: parameter counts from formulas written
here, forward passes re-implemented in NumPy (float64) from the modules' own parameters,
float64 finite differences, and the unigram entropy of the training tokens computed here.
"""
import doctest
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads
from scipy.special import erf

from jaxnets import data, models
from jaxnets.models import transformer
from jaxnets.models.transformer import (DecoderBlock, EncoderBlock, Embedding,
                                        TransformerClassifier, TransformerLM, causal_mask,
                                        multi_head_attention, sinusoidal_positions)
from jaxnets.tree import count_params

ROOT = Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)


def _shapes(module, *args, **kwargs):
    """Variable shapes, traced without running (or compiling) the initializers."""
    return jax.eval_shape(lambda *a: module.init(KEY, *a, **kwargs), *args)


def _count(module, *args, **kwargs):
    return count_params(jax.tree.map(lambda s: np.zeros(s.shape), _shapes(module, *args, **kwargs)))


def _random_params(module, *args, seed=0, dtype=np.float64, **kwargs):
    """Parameters of the right shapes drawn by NumPy: N(0, 0.5²), layer-norm scales 1 + N(0, 0.2²)."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = str(path[-1].key)
        if name == "scale":
            return jnp.asarray(1.0 + 0.2 * rng.normal(size=s.shape), dtype)
        return jnp.asarray(0.5 * rng.normal(size=s.shape), dtype)

    return jax.tree_util.tree_map_with_path(draw, _shapes(module, *args, **kwargs))


# ---------------------------------------------------------------- parameter counts

def _ln(d):
    return 2 * d                                   # scale γ and bias β


def _mha(d, m=None):
    m = d if m is None else m
    return (d * d + d) + 2 * (m * d + d) + (d * d + d)   # query; key, value; out


def _ffn(d, f):
    return (d * f + f) + (f * d + d)


def test_block_parameter_counts():
    d, f, m = 8, 16, 6
    x, memory = jnp.ones((2, 5, d)), jnp.ones((2, 7, m))
    encoder = EncoderBlock(num_heads=2, mlp_dim=f)
    expected = 2 * _ln(d) + _mha(d) + _ffn(d, f)
    assert expected == 600 == 4 * d * d + 2 * d * f + 9 * d + f
    assert _count(encoder, x) == expected == encoder.param_count(d)

    decoder = DecoderBlock(num_heads=4, mlp_dim=f)
    expected = 3 * _ln(d) + _mha(d) + _mha(d, m) + _ffn(d, f)
    assert _count(decoder, x, memory) == expected == decoder.param_count(d, memory_dim=m) == 872
    # Without a memory there is no cross-attention: the encoder block's count.
    assert _count(decoder, x) == 600 == decoder.param_count(d)
    # Heads split d, they do not add parameters.
    assert _count(EncoderBlock(num_heads=8, mlp_dim=f), x) == 600


def test_attention_parameter_tree():
    shapes = jax.tree.map(jnp.shape, _shapes(multi_head_attention(2), jnp.ones((1, 3, 8)),
                                             jnp.ones((1, 4, 6)))["params"])
    assert shapes == {
        "query": {"kernel": (8, 2, 4), "bias": (2, 4)},
        "key": {"kernel": (6, 2, 4), "bias": (2, 4)},
        "value": {"kernel": (6, 2, 4), "bias": (2, 4)},
        "out": {"kernel": (2, 4, 8), "bias": (8,)},
    }
    assert transformer.attention_param_count(8, memory_dim=6) == _mha(8, 6)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_model_parameter_counts(positions):
    V, d, f, L, T_max, k = 20, 8, 16, 2, 10, 3
    block = 2 * _ln(d) + _mha(d) + _ffn(d, f)
    pos = T_max * d if positions == "learned" else 0
    common = dict(d_model=d, num_heads=2, num_layers=L, mlp_dim=f, max_len=T_max,
                  positions=positions)

    clf = TransformerClassifier(output_dim=k, vocab_size=V, **common)
    expected = V * d + pos + L * block + _ln(d) + (d * k + k)
    assert _count(clf, jnp.ones((2, 6))) == expected == clf.param_count()

    floats = TransformerClassifier(output_dim=k, vocab_size=None, **common)
    expected = (3 * d + d) + pos + L * block + _ln(d) + (d * k + k)
    assert _count(floats, jnp.ones((2, 6, 3))) == expected == floats.param_count(3)

    lm = TransformerLM(vocab_size=V, **common)
    expected = V * d + pos + L * block + _ln(d) + (d * V + V)
    assert _count(lm, jnp.ones((2, 6), jnp.int32)) == expected == lm.param_count()


# ---------------------------------------------------------------- NumPy references

def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_layer_norm(x, p, eps=1e-6):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_attention(p, xq, xkv, mask=None):
    """Σ_i softmax(Q_i K_iᵀ / √d_k) V_i W_i^O + b^O, one head at a time."""
    heads = p["query"]["kernel"].shape[1]
    out = np.zeros(xq.shape[:-1] + (p["out"]["kernel"].shape[-1],))
    for i in range(heads):
        q = xq @ p["query"]["kernel"][:, i] + p["query"]["bias"][i]
        k = xkv @ p["key"]["kernel"][:, i] + p["key"]["bias"][i]
        v = xkv @ p["value"]["kernel"][:, i] + p["value"]["bias"][i]
        scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        out += (_np_softmax(scores) @ v) @ p["out"]["kernel"][i]
    return out + p["out"]["bias"]


def _np_ffn(p, x):
    h = x @ p["hidden"]["kernel"] + p["hidden"]["bias"]
    h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))                   # exact GELU
    return h @ p["output"]["kernel"] + p["output"]["bias"]


def _np_encoder_block(p, x, mask=None):
    x = x + _np_attention(p["attention"], *(2 * [_np_layer_norm(x, p["norm_attention"])]), mask)
    return x + _np_ffn(p["mlp"], _np_layer_norm(x, p["norm_mlp"]))


def _np_decoder_block(p, x, memory=None):
    t = x.shape[-2]
    causal = np.tril(np.ones((t, t), bool))
    h = _np_layer_norm(x, p["norm_self_attention"])
    x = x + _np_attention(p["self_attention"], h, h, causal)
    if memory is not None:
        x = x + _np_attention(p["cross_attention"], _np_layer_norm(x, p["norm_cross_attention"]),
                              memory)
    return x + _np_ffn(p["mlp"], _np_layer_norm(x, p["norm_mlp"]))


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_matches_numpy(heads):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        xq, xkv = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 6))
        mha = multi_head_attention(heads, dtype=jnp.float64, param_dtype=jnp.float64)
        variables = _random_params(mha, xq, xkv)
        np.testing.assert_allclose(mha.apply(variables, xq, xkv),
                                   _np_attention(_np(variables["params"]), xq, xkv), rtol=1e-10,
                                   atol=1e-10)
        # Self-attention with a causal mask (the decoder's): row t sees keys 0..t.
        mask = np.tril(np.ones((3, 3), bool))
        variables = _random_params(mha, xq, seed=1)
        np.testing.assert_allclose(mha.apply(variables, xq, mask=mask),
                                   _np_attention(_np(variables["params"]), xq, xq, mask),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads", [1, 2])
def test_blocks_match_numpy(heads):
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x, memory = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 3, 5))
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)

        encoder = EncoderBlock(num_heads=heads, mlp_dim=7, **f64)
        valid = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)           # padding at the end
        variables = _random_params(encoder, x, valid[:, None, None, :])
        np.testing.assert_allclose(encoder.apply(variables, x, valid[:, None, None, :]),
                                   _np_encoder_block(_np(variables["params"]), x,
                                                     valid[:, None, :]),
                                   rtol=1e-10, atol=1e-10)

        decoder = DecoderBlock(num_heads=heads, mlp_dim=7, **f64)
        variables = _random_params(decoder, x, memory, seed=3)
        np.testing.assert_allclose(decoder.apply(variables, x, memory),
                                   _np_decoder_block(_np(variables["params"]), x, memory),
                                   rtol=1e-10, atol=1e-10)
        variables = _random_params(decoder, x, seed=4)
        np.testing.assert_allclose(decoder.apply(variables, x),
                                   _np_decoder_block(_np(variables["params"]), x),
                                   rtol=1e-10, atol=1e-10)


def test_sinusoidal_positions_formula():
    d = 7
    table = np.asarray(sinusoidal_positions(5, d, jnp.float32))
    for t in range(5):
        for j in range(d):
            angle = t / 10000 ** ((j - j % 2) / d)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(table[t, j] - expected) < 1e-6
    # Fixed, not a parameter: a sinusoidal embedding has only the token table.
    emb = Embedding(d_model=4, vocab_size=9, positions="sinusoidal")
    assert set(_shapes(emb, jnp.ones((1, 3)))["params"]) == {"tokens"}


# ---------------------------------------------------------------- masks

def test_lm_is_causal():
    lm = TransformerLM(vocab_size=13, d_model=16, num_heads=2, num_layers=2, mlp_dim=32,
                       max_len=8)
    tokens = np.random.default_rng(0).integers(0, 13, size=(2, 8))
    variables = _random_params(lm, tokens, dtype=np.float32)
    apply = jax.jit(lm.apply)
    base = np.asarray(apply(variables, tokens))
    assert base.shape == (2, 8, 13)
    for t in (0, 3, 6):
        later = tokens.copy()
        later[:, t + 1:] = (later[:, t + 1:] + 5) % 13          # change every token after t
        out = np.asarray(apply(variables, later))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(out[:, t + 1:] - base[:, t + 1:]).max(axis=-1) > 1e-4)
    earlier = tokens.copy()
    earlier[:, 2] = (earlier[:, 2] + 1) % 13                      # change one earlier token
    out = np.asarray(apply(variables, earlier))
    np.testing.assert_allclose(out[:, :2], base[:, :2], rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(out[:, 2:] - base[:, 2:]).max(axis=-1) > 1e-4)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_classifier_ignores_padding(positions):
    model = TransformerClassifier(output_dim=3, vocab_size=20, d_model=16, num_heads=4,
                                  num_layers=2, mlp_dim=32, max_len=12, positions=positions)
    short = np.array([[5, 6, 7, 8, 0, 0], [9, 3, 0, 0, 0, 0]], np.float32)
    long = np.concatenate([short, np.zeros((2, 5), np.float32)], axis=1)   # more padding
    variables = _random_params(model, short, dtype=np.float32)
    apply = jax.jit(model.apply)
    out_short = np.asarray(apply(variables, short))
    np.testing.assert_allclose(apply(variables, long), out_short, rtol=1e-5, atol=1e-6)
    # The first row on its own, unpadded, gives the same output as in the padded batch.
    np.testing.assert_allclose(apply(variables, short[:1, :4])[0], out_short[0], rtol=1e-5,
                               atol=1e-6)
    # A real token changes the output (the comparisons above are not vacuous).
    changed = short.copy()
    changed[1, 1] = 4
    assert np.abs(np.asarray(apply(variables, changed))[1] - out_short[1]).max() > 1e-4


def test_float_inputs_with_mask_ignore_masked_values():
    model = TransformerClassifier(output_dim=2, vocab_size=None, d_model=8, num_heads=2,
                                  num_layers=1, mlp_dim=16, positions="sinusoidal")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    mask = np.arange(6)[None, :] < np.array([[6], [3], [1]])
    variables = _random_params(model, x, dtype=np.float32)
    out = np.asarray(model.apply(variables, x, mask=mask))
    scrambled = np.where(mask[..., None], x, rng.normal(size=x.shape) * 100).astype(np.float32)
    np.testing.assert_allclose(model.apply(variables, scrambled, mask=mask), out, rtol=1e-5,
                               atol=1e-6)
    # (batch, T) floats are one feature per step.
    assert jax.eval_shape(model.init, KEY, x[..., 0])["params"]["embedding"]["projection"][
        "kernel"].shape == (1, 8)


def test_causal_mask_shape():
    np.testing.assert_array_equal(causal_mask(4)[0, 0], np.tril(np.ones((4, 4), bool)))


# ---------------------------------------------------------------- gradients

def test_attention_and_encoder_block_gradients():
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x, memory = jnp.asarray(rng.normal(size=(2, 3, 4))), jnp.asarray(rng.normal(size=(2, 2, 4)))
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        mha = multi_head_attention(2, **f64)
        params = _random_params(mha, x, memory)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
        check_grads(jax.jit(mha.apply), (params, x, memory), order=1, modes=("rev",))

        block = EncoderBlock(num_heads=2, mlp_dim=5, **f64)
        mask = jnp.asarray([[1, 1, 0], [1, 1, 1]], bool)[:, None, None, :]
        params = _random_params(block, x, mask, seed=6)
        check_grads(jax.jit(lambda p, h: block.apply(p, h, mask)), (params, x), order=1,
                    modes=("rev",))


# ---------------------------------------------------------------- learning

def _fit(model, x, y, loss, *, steps, lr, batch, seed=0):
    """Plain Adam on random minibatches (Optax only, independent of jaxnets.train)."""
    params = jax.jit(model.init)(jax.random.key(seed), x[:1])
    tx = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, xb, yb):
        grads = jax.grad(lambda p: loss(model.apply(p, xb), yb))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.integers(0, len(x), batch)
        params, opt_state = step(params, opt_state, x[rows], y[rows])
    return params


def test_lm_beats_the_unigram_entropy():
    ds = data.load("grammar_lm", n_sentences=1000)
    counts = np.bincount(ds.y_train.ravel(), minlength=ds.num_classes)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())                     # nats per token
    lm = TransformerLM(vocab_size=ds.num_classes, d_model=32, num_heads=2, num_layers=1,
                       mlp_dim=64, max_len=ds.x_train.shape[1], positions="sinusoidal")

    def loss(logits, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    params = _fit(lm, ds.x_train, ds.y_train, loss, steps=150, lr=1e-2, batch=32)
    test_loss = float(loss(jax.jit(lm.apply)(params, ds.x_test), ds.y_test))
    assert unigram > 2.9
    assert test_loss < 0.65 * unigram, (test_loss, unigram)


def test_classifier_learns_word_order():
    ds = data.load("reviews", n_train=1000, n_test=300)
    model = TransformerClassifier(output_dim=1, vocab_size=len(data.text.REVIEW_VOCAB),
                                  d_model=32, num_heads=2, num_layers=1, mlp_dim=64,
                                  max_len=ds.x_train.shape[1])

    def loss(logits, y):
        return optax.sigmoid_binary_cross_entropy(logits[:, 0], y).mean()

    params = _fit(model, ds.x_train, ds.y_train, loss, steps=200, lr=3e-3, batch=32)
    predicted = np.asarray(jax.jit(model.apply)(params, ds.x_test))[:, 0] > 0
    accuracy = float(np.mean(predicted == ds.y_test))
    assert accuracy > 0.95, accuracy


# ---------------------------------------------------------------- registry, checks, dtypes, docs

def test_registry_defaults_build_and_run():
    clf = models.get_model("transformer", output_dim=1)
    assert (clf.vocab_size, clf.pad_id, clf.positions) == (transformer.DEFAULT_VOCAB_SIZE, 0,
                                                           "sinusoidal")
    assert _shapes(clf, jnp.ones((2, 12)))["params"]["head"]["kernel"].shape == (64, 1)
    lm = models.get_model("transformer_lm", output_dim=37, num_layers=1)
    assert lm.vocab_size == lm.output_dim == 37
    assert models.get_model("transformer", output_dim=2, vocab_size=None).vocab_size is None
    assert "transformer" in models.describe("transformer")


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_heads=3), "num_heads: got 3; allowed: a divisor of the width d_model = 64"),
    (dict(positions="rotary"), "positions: got 'rotary'; allowed: learned, sinusoidal"),
    (dict(dropout_rate=1.0), "dropout_rate: got 1.0; allowed: 0 <= rate < 1"),
    (dict(activation="swish"), "activation: got 'swish'; allowed: "),
    (dict(pad_id=300), "pad_id: got 300; allowed: None or 0 .. 255"),
    (dict(num_layers=0), "num_layers: got 0; allowed: an int >= 1"),
])
def test_bad_options_raise_one_line(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        models.get_model("transformer", output_dim=1, **kwargs)


def test_inputs_longer_than_max_len_and_bad_ids():
    model = TransformerClassifier(output_dim=1, vocab_size=5, d_model=4, num_heads=1,
                                  num_layers=1, mlp_dim=4, max_len=3, positions="learned")
    with pytest.raises(ValueError, match=re.escape("x.shape: got 4 positions; allowed: at most "
                                                   "max_len = 3")):
        _shapes(model, jnp.ones((1, 4)))
    variables = _random_params(model, jnp.ones((1, 3)), dtype=np.float32)
    # Ids outside the vocabulary (or not integers) are loud: NaN, never a silent wrong row.
    out = np.asarray(model.apply(variables, jnp.array([[1.0, 2.0, 3.0], [1.0, 7.0, 0.0],
                                                       [1.0, 2.5, 0.0]])))
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()


def test_dropout_only_when_training():
    model = TransformerLM(vocab_size=9, d_model=8, num_heads=2, num_layers=1, mlp_dim=8,
                          max_len=5, dropout_rate=0.5)
    tokens = jnp.array([[1, 2, 3, 4, 5]])
    variables = _random_params(model, tokens, dtype=np.float32)
    apply = jax.jit(model.apply, static_argnames="train")
    np.testing.assert_array_equal(apply(variables, tokens), apply(variables, tokens))
    a = apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    b = apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(2)})
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_dtype_fields_reach_every_layer():
    model = TransformerClassifier(output_dim=2, vocab_size=9, d_model=8, num_heads=2,
                                  num_layers=1, mlp_dim=8, max_len=4, dtype=jnp.bfloat16)
    x = jnp.array([[1.0, 2.0, 0.0]])
    assert {leaf.dtype for leaf in jax.tree.leaves(_shapes(model, x))} == {jnp.dtype(jnp.float32)}
    variables = _random_params(model, x, dtype=np.float32)
    assert jax.eval_shape(model.apply, variables, x).dtype == jnp.bfloat16


def test_doctests():
    result = doctest.testmod(transformer)
    assert result.failed == 0 and result.attempted > 10


def test_docs_example_runs(capsys):
    text = (ROOT / "docs" / "architectures" / "transformer.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/architectures/transformer.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "causal: True" in out and "padding ignored: True" in out
