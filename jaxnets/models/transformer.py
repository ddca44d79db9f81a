"""Transformer blocks (Vaswani et al., "Attention is all you need", 2017) and two models.

Row-vector convention: a sequence is a (T, d) matrix X whose row t is token t's
vector. Scaled dot-product attention of queries Q (T, d_k) over keys K (S, d_k)
and values V (S, d_v), with a boolean mask M (T, S):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + B) V
    B_ts = 0 where M_ts, −∞ (in practice the most negative float) elsewhere

the softmax taken over s (each row of weights sums to 1). Multi-head attention with
h heads, d_k = d / h, runs h attentions on learned projections and mixes them:

    head_i = Attention(X_q W_i^Q + b_i^Q, X_kv W_i^K + b_i^K, X_kv W_i^V + b_i^V)
    MHA(X_q, X_kv) = Σ_i head_i W_i^O + b^O           (= concat(head_1..head_h) W^O + b^O)

(``nn.MultiHeadDotProductAttention``: parameters ``query``/``key``/``value`` with
kernels (d, h, d_k) and biases (h, d_k), ``out`` with kernel (h, d_k, d) and bias (d)).
Self-attention has X_q = X_kv = X; cross-attention takes keys and values from an
encoder's output ("memory"). A causal mask M_ts = [s ≤ t] lets position t see only
positions up to t; a padding mask M_ts = [token s is not padding] hides padding.

Blocks are pre-LN: each sublayer reads a layer-normalized copy of the stream and
adds its output back (residual connection),

    X ← X + Dropout(MHA(LN(X)))          X ← X + Dropout(FFN(LN(X)))
    LN(x) = γ ⊙ (x − mean(x)) / √(var(x) + ε) + β    (over one token's d features, ε = 1e-6)
    FFN(x) = g(x W_1 + b_1) W_2 + b_2                  (per token; g = GELU by default)

and a final LN follows the last block. The original Transformer is post-LN,
X ← LN(X + Sublayer(X)); pre-LN keeps an identity path from input to output, so
gradients reach every layer undamped and training is stable without a learning-rate
warm-up (Xiong et al. 2020); it is what GPT-2 and most later models use.

Positions: attention itself is blind to order (permuting the tokens permutes the
outputs), so a position vector P_t is added to each token vector: "learned"
(an ``nn.Embed(max_len, d)`` table) or "sinusoidal" (fixed, not a parameter):

    P_{t,2i} = sin(t / 10000^{2i/d}),   P_{t,2i+1} = cos(t / 10000^{2i/d})

Parameter counts, for width d, feed-forward width f, memory width m:
LN 2d; self-attention 4d² + 4d; cross-attention 2d² + 2md + 4d; FFN 2df + f + d;
encoder block (and decoder block without memory) 4d² + 2df + 9d + f;
decoder block with memory 6d² + 2md + 2df + 15d + f.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.models.registry import compute_dtype, register_model
from jaxnets.models.activations import ACTIVATIONS, get_activation

#: Position encodings: a learned table or the fixed sinusoids.
POSITIONS = ("learned", "sinusoidal")
#: ε of every layer norm.
LAYER_NORM_EPS = 1e-6
#: Token ids the registered "transformer" classifier accepts by default (0 .. 255):
#: bytes, characters and the built-in corpora fit; pass vocab_size=None for float inputs.
DEFAULT_VOCAB_SIZE = 256


# ---------------------------------------------------------------- validation helpers

def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(field: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ValueError(f"{field}: got {value!r}; allowed: an int >= {low}")


def _check_rate(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"dropout_rate: got {value!r}; allowed: 0 <= rate < 1")


def _check_activation(value: Any) -> None:
    if value not in ACTIVATIONS:
        raise ValueError(f"activation: got {value!r}; allowed: {', '.join(ACTIVATIONS)}")


def _check_heads(d_model: int, num_heads: int) -> None:
    if d_model % num_heads:
        raise ValueError(f"num_heads: got {num_heads!r}; allowed: a divisor of the width "
                         f"d_model = {d_model}")


def _check_model_fields(module: Any) -> None:
    for field in ("d_model", "num_heads", "num_layers", "mlp_dim", "max_len"):
        _check_int(field, getattr(module, field), 1)
    _check_heads(module.d_model, module.num_heads)
    _check_rate(module.dropout_rate)
    _check_activation(module.activation)
    if module.positions not in POSITIONS:
        raise ValueError(f"positions: got {module.positions!r}; allowed: {', '.join(POSITIONS)}")


# ---------------------------------------------------------------- masks and positions

def sinusoidal_positions(length: int, d_model: int, dtype: Any = jnp.float32) -> jax.Array:
    """The fixed position vectors P (length, d_model) of the original Transformer.

        P_{t,2i} = sin(t·ω_i),  P_{t,2i+1} = cos(t·ω_i),  ω_i = 10000^(−2i/d_model)

    Wavelengths run geometrically from 2π to 10000·2π, and P_{t+k} is a fixed
    rotation of P_t for every t, which makes relative offsets easy to read.
    Computed in float64 NumPy, then cast; a constant, not a parameter.

    Args:
      length: number of positions T (>= 1).
      d_model: width d (>= 1; an odd width drops the last cosine).
      dtype: dtype of the result.

    Returns:
      (length, d_model) array.

    >>> np.asarray(sinusoidal_positions(3, 4), np.float64).round(3).tolist()
    [[0.0, 1.0, 0.0, 1.0], [0.841, 0.54, 0.01, 1.0], [0.909, -0.416, 0.02, 1.0]]
    """
    _check_int("length", length, 1)
    _check_int("d_model", d_model, 1)
    t = np.arange(length, dtype=np.float64)[:, None]
    omega = 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.zeros((length, d_model), np.float64)
    table[:, 0::2] = np.sin(t * omega)
    table[:, 1::2] = np.cos(t * omega[: d_model // 2])
    return jnp.asarray(table, dtype)


def causal_mask(length: int) -> jax.Array:
    """M_ts = [s ≤ t]: position t attends to positions 0..t only, shape (1, 1, T, T).

    Args:
      length: T (>= 1).

    Returns:
      a boolean mask broadcastable to (batch, heads, T, T).

    >>> causal_mask(3)[0, 0].astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    _check_int("length", length, 1)
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def padding_mask(valid: jax.Array) -> jax.Array:
    """M_ts = valid_s: every query ignores the padded keys; (batch, T) -> (batch, 1, 1, T).

    Padded query rows still attend to the real keys (their outputs are simply
    not used), so no row of weights is empty.

    Args:
      valid: (batch, T) booleans, True for real tokens.

    Returns:
      a boolean mask broadcastable to (batch, heads, T, T).

    >>> padding_mask(jnp.array([[True, False]])).shape
    (1, 1, 1, 2)
    """
    return jnp.asarray(valid, bool)[:, None, None, :]


def attention_param_count(d_model: int, memory_dim: int | None = None) -> int:
    """Parameters of one multi-head attention with qkv and output width d_model.

    Self-attention (``memory_dim=None``): W^Q, W^K, W^V, W^O are d×d, with biases:
    4d² + 4d. Cross-attention over a memory of width m: keys and values map m -> d,
    so d² + 2md + d² + 4d. The number of heads does not change the count.

    Args:
      d_model: width d.
      memory_dim: width m of the attended memory, or None for self-attention.

    Returns:
      the count.

    >>> attention_param_count(8), attention_param_count(8, memory_dim=4)
    (288, 224)
    """
    m = d_model if memory_dim is None else memory_dim
    return 2 * d_model * d_model + 2 * m * d_model + 4 * d_model


def _block_count(d: int, f: int) -> int:
    # Two layer norms 4d, self-attention 4d² + 4d, FFN 2df + f + d.
    return 4 * d * d + 2 * d * f + 9 * d + f


def _embedding_count(d: int, vocab_size: int | None, max_len: int, positions: str,
                     input_dim: int) -> int:
    total = vocab_size * d if vocab_size is not None else (input_dim + 1) * d
    return total + (max_len * d if positions == "learned" else 0)


def multi_head_attention(num_heads: int, *, dropout_rate: float = 0.0,
                         dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                         name: str | None = None) -> nn.MultiHeadDotProductAttention:
    """The multi-head attention every block uses: Flax's, configured as in the module docstring.

    ``MHA(X_q, X_kv) = Σ_i softmax(Q_i K_iᵀ / √d_k + B) V_i W_i^O + b^O`` with
    Q_i = X_q W_i^Q + b_i^Q, K_i = X_kv W_i^K + b_i^K, V_i = X_kv W_i^V + b_i^V and
    d_k = d / h; qkv and output width d = the query width. Call it as
    ``mha(x_q, x_kv, mask=M, deterministic=not train)`` (``x_kv`` defaults to
    ``x_q``: self-attention). Dropout, when training, acts on the attention weights.

    Args:
      num_heads: h (>= 1, must divide d).
      dropout_rate: dropout on the attention weights, 0 <= rate < 1.
      dtype, param_dtype: computation and parameter dtypes.
      name: submodule name (inside a parent module).

    Returns:
      an unbound ``nn.MultiHeadDotProductAttention``.

    >>> mha = multi_head_attention(2)
    >>> shapes = jax.eval_shape(mha.init, jax.random.key(0), jnp.ones((2, 4, 8)))["params"]
    >>> {name: leaf["kernel"].shape for name, leaf in sorted(shapes.items())}
    {'key': (8, 2, 4), 'out': (2, 4, 8), 'query': (8, 2, 4), 'value': (8, 2, 4)}
    """
    _check_int("num_heads", num_heads, 1)
    _check_rate(dropout_rate)
    return nn.MultiHeadDotProductAttention(
        num_heads=num_heads, dropout_rate=dropout_rate, dtype=dtype, param_dtype=param_dtype,
        name=name)


def _attention(block: Any, name: str) -> nn.MultiHeadDotProductAttention:
    return multi_head_attention(block.num_heads, dropout_rate=block.dropout_rate,
                                dtype=block.dtype, param_dtype=block.param_dtype, name=name)


def _layer_norm(block: Any, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=block.dtype,
                        param_dtype=block.param_dtype, name=name)


# ---------------------------------------------------------------- blocks

class FeedForward(nn.Module):
    """Position-wise MLP: FFN(x) = g(x W_1 + b_1) W_2 + b_2, the same for every token.

    Layers ``hidden`` (d -> mlp_dim) and ``output`` (mlp_dim -> d); 2·d·f + f + d
    parameters. Dropout (when training) follows g.

    Attributes:
      mlp_dim: hidden width f (>= 1).
      activation: g, a key of ``ACTIVATIONS``.
      dropout_rate: dropout after g, 0 <= rate < 1.
      dtype, param_dtype: computation and parameter dtypes.

    >>> ffn = FeedForward(mlp_dim=16)
    >>> shapes = jax.eval_shape(ffn.init, jax.random.key(0), jnp.ones((2, 4, 8)))
    >>> jax.tree.map(lambda leaf: leaf.shape, shapes["params"])
    {'hidden': {'bias': (16,), 'kernel': (8, 16)}, 'output': {'bias': (8,), 'kernel': (16, 8)}}
    """

    mlp_dim: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_int("mlp_dim", self.mlp_dim, 1)
        _check_activation(self.activation)
        _check_rate(self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Map (..., d) to (..., d)."""
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = get_activation(self.activation)(nn.Dense(self.mlp_dim, name="hidden", **dense)(x))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return nn.Dense(x.shape[-1], name="output", **dense)(h)


class _PreLNBlock(nn.Module):
    """Fields, checks and pre-LN sublayers shared by ``EncoderBlock`` and ``DecoderBlock``.

    Each sublayer is X ← X + Dropout(Sublayer(LN(X))); the submodule names
    (``norm_<name>``, ``<name>``, ``norm_mlp``, ``mlp``) are the parameter tree's keys.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    activation: str = "gelu"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_int("num_heads", self.num_heads, 1)
        _check_int("mlp_dim", self.mlp_dim, 1)
        _check_rate(self.dropout_rate)
        _check_activation(self.activation)
        super().__post_init__()

    # The helpers below are called from the subclasses' @nn.compact __call__, so the
    # submodules they create belong to the block.

    def _dropout(self, train: bool) -> nn.Dropout:
        return nn.Dropout(self.dropout_rate, deterministic=not train)

    def _attention_sublayer(self, x: jax.Array, name: str, drop: nn.Dropout, *,
                            memory: jax.Array | None = None, mask: jax.Array | None = None,
                            train: bool = False) -> jax.Array:
        """X + Dropout(MHA(LN(X), memory; mask)); memory=None: self-attention."""
        h = _layer_norm(self, f"norm_{name}")(x)
        return x + drop(_attention(self, name)(h, memory, mask=mask, deterministic=not train))

    def _mlp_sublayer(self, x: jax.Array, drop: nn.Dropout, train: bool) -> jax.Array:
        """X + Dropout(FFN(LN(X)))."""
        h = FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype,
                        self.param_dtype, name="mlp")(_layer_norm(self, "norm_mlp")(x), train)
        return x + drop(h)


class EncoderBlock(_PreLNBlock):
    """Pre-LN Transformer encoder block: self-attention and an FFN, each with a residual.

        X ← X + Dropout(MHA(LN_1(X), LN_1(X); mask))
        X ← X + Dropout(FFN(LN_2(X)))

    The width d is read from the input. Self-attention is the only place where
    tokens interact; layer norm and FFN act on each token separately.
    Parameters 4d² + 2d·f + 9d + f (``param_count``); submodules ``norm_attention``,
    ``attention``, ``norm_mlp``, ``mlp``.

    Attributes:
      num_heads: h (>= 1, must divide d).
      mlp_dim: FFN hidden width f (>= 1).
      dropout_rate: dropout on attention weights and on each sublayer's output.
      activation: FFN activation, a key of ``ACTIVATIONS``.
      dtype, param_dtype: computation and parameter dtypes.

    >>> block = EncoderBlock(num_heads=2, mlp_dim=16)
    >>> x = jnp.ones((2, 4, 8))
    >>> variables = block.init(jax.random.key(0), x)
    >>> block.apply(variables, x).shape, block.param_count(8)
    ((2, 4, 8), 600)
    """

    def param_count(self, d_model: int) -> int:
        """4d² + 2d·f + 9d + f: attention 4d² + 4d, FFN 2df + f + d, two layer norms 4d.

        Args:
          d_model: width d of the inputs.

        Returns:
          the number of scalars in the block's parameter tree.

        >>> EncoderBlock(num_heads=1, mlp_dim=1).param_count(1)  # 4 + 2 + 9 + 1
        16
        """
        return _block_count(d_model, self.mlp_dim)

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        """Map (batch, T, d) to (batch, T, d); ``mask`` broadcastable to (batch, h, T, T)."""
        _check_heads(x.shape[-1], self.num_heads)
        # One Dropout module per sublayer (Dropout_0, Dropout_1): their names fix the
        # dropout masks for a given rng, so keep them for reproducible training.
        x = self._attention_sublayer(x, "attention", self._dropout(train), mask=mask,
                                     train=train)
        return self._mlp_sublayer(x, self._dropout(train), train)


class DecoderBlock(_PreLNBlock):
    """Pre-LN Transformer decoder block: causal self-attention, cross-attention, FFN.

        X ← X + Dropout(MHA(LN_1(X), LN_1(X); causal ∧ mask))
        X ← X + Dropout(MHA(LN_2(X), memory; memory_mask))      (only when memory is given)
        X ← X + Dropout(FFN(LN_3(X)))

    Masked self-attention lets position t see positions ≤ t only, so the block can
    be trained on whole sequences to predict each next token. Cross-attention is
    NOT self-attention: its queries come from X, its keys and values from the
    encoder's output. Without ``memory`` the block is a decoder-only
    (GPT-style) block with the encoder block's parameter count.
    Parameters 6d² + 2md + 2d·f + 15d + f with a memory of width m, else
    4d² + 2d·f + 9d + f (``param_count``).

    Attributes:
      num_heads, mlp_dim, dropout_rate, activation, dtype, param_dtype: as in ``EncoderBlock``.

    >>> block = DecoderBlock(num_heads=2, mlp_dim=16)
    >>> x, memory = jnp.ones((2, 4, 8)), jnp.ones((2, 6, 8))
    >>> variables = block.init(jax.random.key(0), x, memory)
    >>> block.apply(variables, x, memory).shape, block.param_count(8, memory_dim=8)
    ((2, 4, 8), 904)
    """

    def param_count(self, d_model: int, memory_dim: int | None = None) -> int:
        """6d² + 2md + 2d·f + 15d + f with a memory of width m, else 4d² + 2d·f + 9d + f.

        Args:
          d_model: width d of the inputs.
          memory_dim: width m of the memory, or None for a block without cross-attention.

        Returns:
          the number of scalars in the block's parameter tree.

        >>> DecoderBlock(num_heads=1, mlp_dim=1).param_count(1, memory_dim=1)  # 6+2+2+15+1
        26
        """
        d = d_model
        total = _block_count(d, self.mlp_dim)
        if memory_dim is not None:
            total += attention_param_count(d, memory_dim) + 2 * d
        return total

    @nn.compact
    def __call__(self, x: jax.Array, memory: jax.Array | None = None, *,
                 mask: jax.Array | None = None, memory_mask: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        """Map (batch, T, d) to (batch, T, d).

        Args:
          x: the decoder stream (batch, T, d).
          memory: encoder outputs (batch, S, m), or None (no cross-attention).
          mask: extra self-attention mask (e.g. padding), combined with the causal one.
          memory_mask: cross-attention mask broadcastable to (batch, h, T, S).
          train: enable dropout.

        Returns:
          (batch, T, d).
        """
        _check_heads(x.shape[-1], self.num_heads)
        # One Dropout module (Dropout_0) shared by all sublayers: unlike the encoder
        # block's, and kept so that the dropout masks for a given rng do not change.
        drop = self._dropout(train)
        self_mask = nn.combine_masks(causal_mask(x.shape[-2]), mask)
        x = self._attention_sublayer(x, "self_attention", drop, mask=self_mask, train=train)
        if memory is not None:
            x = self._attention_sublayer(x, "cross_attention", drop, memory=memory,
                                         mask=memory_mask, train=train)
        return self._mlp_sublayer(x, drop, train)


class Embedding(nn.Module):
    """Token (or feature) vectors plus position vectors: (batch, T[, F]) -> (batch, T, d).

    With ``vocab_size`` set, inputs are token ids (any dtype holding integers, e.g.
    the float32 of a ``Dataset``) looked up in ``tokens`` (``nn.Embed(vocab_size, d)``).
    An id that is not an integer in 0..vocab_size−1 gives a NaN vector, so a wrong
    vocabulary shows up as a NaN loss instead of silently reusing rows. With
    ``vocab_size=None``, inputs are floats (batch, T, F) — (batch, T) counts as
    F = 1 — projected by ``projection`` (Dense F -> d). Then
    ``positions`` are added: the fixed sinusoids (default) or "learned"
    (``nn.Embed(max_len, d)``, T <= max_len).

    Attributes:
      d_model: width d (>= 1).
      vocab_size: number of token ids, or None for float inputs.
      max_len: longest sequence with learned positions (>= 1).
      positions: "sinusoidal" (fixed) or "learned".
      dtype, param_dtype: computation and parameter dtypes.

    >>> emb = Embedding(d_model=8, vocab_size=20, max_len=10, positions="learned")
    >>> shapes = jax.eval_shape(emb.init, jax.random.key(0), jnp.array([[1.0, 2.0, 3.0, 0.0]]))
    >>> jax.tree.map(lambda leaf: leaf.shape, shapes["params"])
    {'positions': {'embedding': (10, 8)}, 'tokens': {'embedding': (20, 8)}}
    """

    d_model: int
    vocab_size: int | None = None
    max_len: int = 128
    positions: str = "sinusoidal"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_int("d_model", self.d_model, 1)
        _check_int("max_len", self.max_len, 1)
        if self.vocab_size is not None:
            _check_int("vocab_size", self.vocab_size, 1)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions: got {self.positions!r}; allowed: {', '.join(POSITIONS)}")
        super().__post_init__()

    def param_count(self, input_dim: int = 1) -> int:
        """V·d (tokens) or (F + 1)·d (projection), plus max_len·d for learned positions.

        Args:
          input_dim: features F per step of float inputs (ignored for tokens).

        Returns:
          the count.

        >>> Embedding(d_model=4, vocab_size=10, max_len=6, positions="learned").param_count()
        64
        """
        return _embedding_count(self.d_model, self.vocab_size, self.max_len, self.positions,
                                input_dim)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Map ids (batch, T) or floats (batch, T[, F]) to (batch, T, d)."""
        if self.vocab_size is not None:
            if x.ndim != 2:
                raise ValueError(f"x.shape: got {x.shape!r}; allowed: (batch, T) token ids")
            ids, ok = _token_ids(x, self.vocab_size)
            h = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="tokens")(ids)
            h = jnp.where(ok[..., None], h, jnp.asarray(jnp.nan, h.dtype))
        else:
            if x.ndim == 2:
                x = x[..., None]
            if x.ndim != 3:
                raise ValueError(f"x.shape: got {x.shape!r}; allowed: (batch, T) or "
                                 "(batch, T, features)")
            h = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="projection")(jnp.asarray(x, self.dtype))
        length = h.shape[1]
        if self.positions == "learned":
            if length > self.max_len:
                raise ValueError(f"x.shape: got {length} positions; allowed: at most "
                                 f"max_len = {self.max_len} (raise max_len)")
            p = nn.Embed(self.max_len, self.d_model, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="positions")(jnp.arange(length))
        else:
            p = sinusoidal_positions(length, self.d_model, h.dtype)
        return h + p[None]


def _token_ids(x: jax.Array, vocab_size: int) -> tuple[jax.Array, jax.Array]:
    """Integer ids clipped into range, and where the input really was a valid id."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        ok = (x >= 0) & (x < vocab_size)
    else:
        ok = (x == jnp.round(x)) & (x >= 0) & (x < vocab_size)
    ids = jnp.clip(jnp.where(ok, x, 0), 0, vocab_size - 1).astype(jnp.int32)
    return ids, ok


# ---------------------------------------------------------------- models

class TransformerClassifier(nn.Module):
    """Encoder-only Transformer with masked mean pooling: (batch, T[, F]) -> (batch, output_dim).

        H_0 = Embedding(x) (tokens + positions), dropout
        H_l = EncoderBlock_l(H_{l−1}; padding mask)        l = 1..num_layers
        z   = Σ_t m_t LN(H_L)_t / max(Σ_t m_t, 1)        m_t = 1 for real tokens, 0 for padding
        ŷ   = z W + b                                        (logits)

    Padding never changes the output: padded keys get zero attention weight and
    padded positions are left out of the mean. The mask comes from the token ids
    (``pad_id``) and/or the ``mask`` argument (needed for float inputs). Parameters
    (``param_count``): embedding + num_layers·(4d² + 2d·f + 9d + f) + 2d + (d + 1)·output_dim.

    Attributes:
      output_dim: logits per example (1 for binary) (>= 1).
      vocab_size: number of token ids; None for float inputs (batch, T[, F]).
      d_model: width d; num_heads: h (divides d); num_layers: blocks;
      mlp_dim: FFN width f; max_len: longest input with learned positions.
      positions: "sinusoidal" (fixed, the default) or "learned" (a table of max_len rows).
      dropout_rate: dropout on embeddings, attention weights and sublayer outputs.
      activation: FFN activation.
      pad_id: the padding token id (masked out), or None; used with token inputs only.
      dtype, param_dtype: computation and parameter dtypes.

    >>> model = TransformerClassifier(output_dim=3, vocab_size=20, d_model=8, num_heads=2,
    ...                               num_layers=1, mlp_dim=16, max_len=10, positions="learned")
    >>> x = jnp.array([[5.0, 6.0, 7.0, 0.0], [8.0, 9.0, 0.0, 0.0]])  # 0 = <pad>
    >>> variables = model.init(jax.random.key(0), x)
    >>> model.apply(variables, x).shape, model.param_count()
    ((2, 3), 883)
    """

    output_dim: int
    vocab_size: int | None = None
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_dim: int = 256
    max_len: int = 128
    positions: str = "sinusoidal"
    dropout_rate: float = 0.0
    activation: str = "gelu"
    pad_id: int | None = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_int("output_dim", self.output_dim, 1)
        if self.vocab_size is not None:
            _check_int("vocab_size", self.vocab_size, 1)
        _check_model_fields(self)
        if self.pad_id is not None and (not _is_int(self.pad_id) or (
                self.vocab_size is not None and not 0 <= self.pad_id < self.vocab_size)):
            top = "an int" if self.vocab_size is None else f"0 .. {self.vocab_size - 1}"
            raise ValueError(f"pad_id: got {self.pad_id!r}; allowed: None or {top}")
        super().__post_init__()

    def param_count(self, input_dim: int = 1) -> int:
        """Embedding + L·(4d² + 2d·f + 9d + f) + 2d + (d + 1)·output_dim.

        Args:
          input_dim: features F per step of float inputs (ignored for tokens).

        Returns:
          the number of scalars in the parameter tree.

        >>> TransformerClassifier(output_dim=1, vocab_size=3, d_model=2, num_heads=1, num_layers=1,
        ...                       mlp_dim=2, max_len=4, positions="learned").param_count()
        65

        (6 token + 8 position + 44 block + 4 final norm + 3 head parameters.)
        """
        d = self.d_model
        embedding = _embedding_count(d, self.vocab_size, self.max_len, self.positions, input_dim)
        return (embedding + self.num_layers * _block_count(d, self.mlp_dim) + 2 * d
                + (d + 1) * self.output_dim)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 mask: jax.Array | None = None) -> jax.Array:
        """Map (batch, T) ids or (batch, T[, F]) floats to logits (batch, output_dim).

        Args:
          x: the inputs.
          train: enable dropout.
          mask: optional (batch, T) booleans, True for real positions (combined
            with the ``pad_id`` mask of token inputs).

        Returns:
          (batch, output_dim) logits.
        """
        valid = None
        if self.vocab_size is not None and self.pad_id is not None:
            valid = x != self.pad_id
        if mask is not None:
            mask = jnp.asarray(mask, bool)
            valid = mask if valid is None else valid & mask
        h = Embedding(self.d_model, self.vocab_size, self.max_len, self.positions, self.dtype,
                      self.param_dtype, name="embedding")(x)
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        attention_mask = None if valid is None else padding_mask(valid)
        for layer in range(self.num_layers):
            h = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.activation,
                             self.dtype, self.param_dtype, name=f"block_{layer}")(
                h, attention_mask, train)
        h = _layer_norm(self, "final_norm")(h)
        if valid is None:
            pooled = jnp.mean(h, axis=1)
        else:
            weights = valid.astype(h.dtype)[..., None]
            pooled = jnp.sum(h * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return nn.Dense(self.output_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="head")(pooled)


class TransformerLM(nn.Module):
    """Decoder-only (GPT-style) language model: token ids (batch, T) -> logits (batch, T, V).

        H_0 = Embedding(tokens) (tokens + positions), dropout
        H_l = DecoderBlock_l(H_{l−1})   (causal self-attention + FFN, no cross-attention)
        logits_t = LN(H_L)_t W + b      (one score per vocabulary entry)

    The logits at position t depend on tokens 0..t only (causal mask), so training
    on labels y_t = x_{t+1} (see ``jaxnets.data.text.lm_windows``) with the
    softmax cross-entropy fits p(x_{t+1} | x_0..x_t) at every position at once.
    The output layer is separate from the token table (no weight tying).
    Parameters (``param_count``): V·d (+ max_len·d learned positions)
    + L·(4d² + 2d·f + 9d + f) + 2d + (d + 1)·V.

    Attributes:
      vocab_size: V, the number of token ids and of logits per position (>= 2).
      d_model, num_heads, num_layers, mlp_dim, max_len, positions, dropout_rate,
      activation, dtype, param_dtype: as in ``TransformerClassifier``.

    >>> lm = TransformerLM(vocab_size=20, d_model=8, num_heads=2, num_layers=1, mlp_dim=16,
    ...                    max_len=10, positions="learned")
    >>> tokens = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    >>> variables = lm.init(jax.random.key(0), tokens)
    >>> lm.apply(variables, tokens).shape, lm.param_count(), lm.output_dim
    ((2, 4, 20), 1036, 20)
    """

    vocab_size: int
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_dim: int = 256
    max_len: int = 128
    positions: str = "sinusoidal"
    dropout_rate: float = 0.0
    activation: str = "gelu"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, 2)
        _check_model_fields(self)
        super().__post_init__()

    @property
    def output_dim(self) -> int:
        """Logits per position: the vocabulary size V."""
        return self.vocab_size

    def param_count(self) -> int:
        """V·d (+ max_len·d) + L·(4d² + 2d·f + 9d + f) + 2d + (d + 1)·V.

        Returns:
          the number of scalars in the parameter tree.

        >>> TransformerLM(vocab_size=3, d_model=2, num_heads=1, num_layers=1, mlp_dim=2,
        ...               max_len=4, positions="sinusoidal").param_count()  # 6 + 0 + 44 + 4 + 9
        63
        """
        d = self.d_model
        embedding = _embedding_count(d, self.vocab_size, self.max_len, self.positions, 1)
        return (embedding + self.num_layers * _block_count(d, self.mlp_dim) + 2 * d
                + (d + 1) * self.vocab_size)

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        """Map token ids (batch, T) to next-token logits (batch, T, vocab_size)."""
        h = Embedding(self.d_model, self.vocab_size, self.max_len, self.positions, self.dtype,
                      self.param_dtype, name="embedding")(tokens)
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        for layer in range(self.num_layers):
            h = DecoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.activation,
                             self.dtype, self.param_dtype, name=f"block_{layer}")(h, train=train)
        h = _layer_norm(self, "final_norm")(h)
        return nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="head")(h)


# ---------------------------------------------------------------- registry

def _build_transformer(output_dim: int, vocab_size: int | None = DEFAULT_VOCAB_SIZE,
                       d_model: int = 64, num_heads: int = 4, num_layers: int = 2,
                       mlp_dim: int = 256, max_len: int = 128, positions: str = "sinusoidal",
                       dropout_rate: float = 0.0, activation: str = "gelu",
                       pad_id: int | None = 0, dtype: str = "float32") -> nn.Module:
    return TransformerClassifier(output_dim=output_dim, vocab_size=vocab_size, d_model=d_model,
                                 num_heads=num_heads, num_layers=num_layers, mlp_dim=mlp_dim,
                                 max_len=max_len, positions=positions, dropout_rate=dropout_rate,
                                 activation=activation, pad_id=pad_id, dtype=compute_dtype(dtype))


def _build_transformer_lm(output_dim: int, d_model: int = 64, num_heads: int = 4,
                          num_layers: int = 2, mlp_dim: int = 256, max_len: int = 128,
                          positions: str = "sinusoidal", dropout_rate: float = 0.0,
                          activation: str = "gelu", dtype: str = "float32") -> nn.Module:
    # A language model predicts one of its own tokens: output_dim is the vocabulary size.
    return TransformerLM(vocab_size=output_dim, d_model=d_model, num_heads=num_heads,
                         num_layers=num_layers, mlp_dim=mlp_dim, max_len=max_len,
                         positions=positions, dropout_rate=dropout_rate, activation=activation,
                         dtype=compute_dtype(dtype))


register_model("transformer", _build_transformer,
               "Transformer encoder classifier: token ids (< vocab_size; None for float "
               "sequences) + positions, pre-LN blocks, masked mean pooling, linear head")
register_model("transformer_lm", _build_transformer_lm,
               "decoder-only Transformer language model: causal pre-LN blocks, logits over "
               "the vocabulary (= output_dim) at every position")
