"""Recurrent networks: Elman RNN, LSTM and GRU layers run over time with ``nn.scan``.

A recurrent layer applies the same cell at every time step t = 1..T, carrying a
state from one step to the next; ``nn.RNN`` turns the cell into one ``lax.scan``
(no Python loop over time). Row-vector convention (x_t is a row, ``kernel`` has
shape (in, out)), σ the logistic sigmoid, ⊙ the elementwise product, and the
names in brackets the Flax parameter names inside the cell:

Elman RNN (``nn.SimpleCell``)::

    h_t = tanh(x_t W_i + b_i + h_{t−1} W_h)                 [i: kernel+bias, h: kernel]

LSTM (``nn.OptimizedLSTMCell``; the same parameters and equations as ``nn.LSTMCell``)::

    i_t = σ(x_t W_ii + h_{t−1} W_hi + b_hi)                 input gate
    f_t = σ(x_t W_if + h_{t−1} W_hf + b_hf)                 forget gate
    g_t = tanh(x_t W_ig + h_{t−1} W_hg + b_hg)              candidate (the slides' C̃_t)
    o_t = σ(x_t W_io + h_{t−1} W_ho + b_ho)                 output gate
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t                         cell state
    h_t = o_t ⊙ tanh(c_t)                                   hidden state

    [ii, if, ig, io: kernel only; hi, hf, hg, ho: kernel+bias; all biases start at 0]

GRU (``nn.GRUCell``)::

    r_t = σ(x_t W_ir + b_ir + h_{t−1} W_hr)                 reset gate
    z_t = σ(x_t W_iz + b_iz + h_{t−1} W_hz)                 update gate
    n_t = tanh(x_t W_in + b_in + r_t ⊙ (h_{t−1} W_hn + b_hn))   candidate
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}

    [ir, iz, in: kernel+bias; hr, hz: kernel only; hn: kernel+bias]

The reset gate multiplies h_{t−1} W_hn + b_hn *after* the matrix product (the
cuDNN convention), and z_t ≈ 1 keeps the old state. All states start at zero.

Parameters per direction of one layer with d inputs and h units:
rnn h(d + h) + h, lstm 4(h(d + h) + h), gru 3(h(d + h) + h) + h.

Variable length. Sequences are right-padded: example b's valid steps are
t < L_b. ``L`` comes from ``seq_lengths`` passed to ``__call__``, or, when the
model has a ``pad_id``, from the inputs themselves: with x of shape (batch, T)
(token ids or one scalar per step), L_b = #{t : x_{b,t} ≠ pad_id}. Then

* many-to-one (``output="last"``) reads h at t = L_b − 1, the state after the
  last valid step (the backward direction of a bidirectional layer: its state
  after reading all L_b steps, found at t = 0), so padding never changes the
  prediction;
* many-to-many (``output="sequence"``) returns outputs (batch, T, output_dim)
  with the padded positions set to 0.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.models.registry import compute_dtype, register_model
from jaxnets.models.activations import HEADS, get_head

#: Cell names and the Flax cells behind them.
CELLS: dict[str, Callable[..., nn.RNNCellBase]] = {
    "rnn": nn.SimpleCell,
    "lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
}
#: What the network returns: one prediction per sequence, or one per step.
OUTPUTS = ("last", "sequence")
#: Hidden units of ``get_model("rnn"|"lstm"|"gru")`` when none are given.
DEFAULT_HIDDEN_SIZE = 64


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def cell_param_count(cell: str, input_dim: int, hidden_size: int) -> int:
    """Parameters of one Flax cell (one direction of one layer).

    rnn: h(d + h) + h;  lstm: 4(h(d + h) + h);  gru: 3(h(d + h) + h) + h,
    with d = ``input_dim`` and h = ``hidden_size`` (see the module docstring for
    which of the cell's dense maps carry a bias).

    Args:
      cell: a key of ``CELLS``.
      input_dim: features per step entering the cell, d >= 1.
      hidden_size: units h >= 1.

    Returns:
      The number of scalars in the cell's parameters.

    >>> [cell_param_count(c, 3, 4) for c in ("rnn", "lstm", "gru")]
    [32, 128, 100]
    """
    if cell not in CELLS:
        raise ValueError(f"cell: got {cell!r}; allowed: {', '.join(CELLS)}")
    h, d = hidden_size, input_dim
    block = h * (d + h) + h
    return {"rnn": block, "lstm": 4 * block, "gru": 3 * block + h}[cell]


def last_valid(outputs: jax.Array, lengths: jax.Array | None, hidden_size: int,
               bidirectional: bool) -> jax.Array:
    """The many-to-one summary of per-step outputs: the state after the last valid step.

    Forward direction: outputs[b, L_b − 1]. Backward direction (the second
    ``hidden_size`` features of a bidirectional layer, which has read the valid
    steps from L_b − 1 down to 0): outputs[b, 0]. Without lengths L_b = T. A
    length of 0 (an all-padding row, e.g. batch padding) reads step 0.

    Args:
      outputs: (batch, T, features) per-step outputs of the top layer.
      lengths: (batch,) integer lengths, or None for full length.
      hidden_size: units per direction.
      bidirectional: whether the features are [forward, backward].

    Returns:
      (batch, features).

    >>> out = jnp.arange(6.0).reshape(1, 3, 2)   # steps (0, 1), (2, 3), (4, 5)
    >>> last_valid(out, jnp.array([2]), 1, bidirectional=True).tolist()
    [[2.0, 1.0]]
    """
    batch, steps = outputs.shape[:2]
    if lengths is None:
        index = jnp.full((batch,), steps - 1)
    else:
        index = jnp.clip(lengths - 1, 0, steps - 1)
    forward = outputs[jnp.arange(batch), index]
    if not bidirectional:
        return forward
    return jnp.concatenate([forward[:, :hidden_size], outputs[:, 0, hidden_size:]], axis=-1)


class RecurrentNet(nn.Module):
    """Stacked (optionally bidirectional) RNN/LSTM/GRU with a linear readout.

    Inputs are float sequences (batch, T, features) — (batch, T) gets a feature
    axis of 1 — or, with ``embedding`` set, token ids (batch, T) (any dtype
    holding integers, e.g. the float32 of a ``Dataset``), looked up in an
    ``nn.Embed(vocab_size, embedding)`` table. Layer l reads the per-step outputs
    of layer l − 1 ([forward, backward] concatenated when bidirectional). The
    readout ``output`` is a Dense map to ``output_dim`` followed by ``head``:

        ŷ = head(h_{L} W_out + b_out)        (output="last", shape (batch, output_dim))
        ŷ_t = head(h_t W_out + b_out)        (output="sequence", (batch, T, output_dim))

    See the module docstring for the cell equations and the padding convention.
    Parameters: Σ_layers dirs·cell(d_l, h) + vocab_size·embedding + (dirs·h + 1)·output_dim,
    with d_0 the input features (or ``embedding``), d_l = dirs·h above.

    Attributes:
      output_dim: outputs per example (or per step), >= 1 (required).
      cell: "rnn", "lstm" or "gru".
      hidden_size: units per direction in every layer.
      num_layers: stacked recurrent layers, >= 1.
      bidirectional: also run each layer from the last valid step backwards.
      output: "last" (many-to-one) or "sequence" (many-to-many).
      embedding: width of the token embedding, or None for float inputs.
      vocab_size: number of token ids (required with ``embedding``).
      pad_id: the input value marking padding (mask derived from x), or None.
      head: output function, a key of ``HEADS``.
      dtype: computation dtype of the cells, embedding and readout (``jnp.bfloat16``
        or ``jnp.float16`` for mixed precision; the registry builders take the name).
      param_dtype: dtype of the parameters.

    >>> model = RecurrentNet(output_dim=2, cell="gru", hidden_size=4)
    >>> x = jnp.ones((3, 5, 2))
    >>> variables = model.init({"params": jax.random.key(0)}, x)
    >>> sorted(variables["params"]), model.apply(variables, x).shape
    (['layer_0', 'output'], (3, 2))
    >>> model.param_count(2) == sum(p.size for p in jax.tree.leaves(variables))
    True
    """

    output_dim: int
    cell: str = "lstm"
    hidden_size: int = DEFAULT_HIDDEN_SIZE
    num_layers: int = 1
    bidirectional: bool = False
    output: str = "last"
    embedding: int | None = None
    vocab_size: int | None = None
    pad_id: int | None = None
    head: str = "logits"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if not _is_int(self.output_dim) or self.output_dim < 1:
            raise ValueError(f"output_dim: got {self.output_dim!r}; allowed: an int >= 1")
        if self.cell not in CELLS:
            raise ValueError(f"cell: got {self.cell!r}; allowed: {', '.join(CELLS)}")
        for field in ("hidden_size", "num_layers"):
            value = getattr(self, field)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional: got {self.bidirectional!r}; allowed: True, False")
        if self.output not in OUTPUTS:
            raise ValueError(f"output: got {self.output!r}; allowed: {', '.join(OUTPUTS)}")
        if self.embedding is not None and (not _is_int(self.embedding) or self.embedding < 1):
            raise ValueError(f"embedding: got {self.embedding!r}; allowed: None or an int >= 1")
        if self.embedding is None and self.vocab_size is not None:
            raise ValueError(f"vocab_size: got {self.vocab_size!r}; allowed: None without "
                             "embedding (set embedding=WIDTH to use token ids)")
        if self.embedding is not None and (not _is_int(self.vocab_size) or self.vocab_size < 1):
            raise ValueError(f"vocab_size: got {self.vocab_size!r}; allowed: an int >= 1 "
                             "(required with embedding)")
        if self.pad_id is not None:
            if not _is_int(self.pad_id):
                raise ValueError(f"pad_id: got {self.pad_id!r}; allowed: None or an int")
            if self.embedding is not None and not 0 <= self.pad_id < self.vocab_size:
                raise ValueError(f"pad_id: got {self.pad_id!r}; allowed: None or "
                                 f"0 .. {self.vocab_size - 1} (a token id)")
        if self.head not in HEADS:
            raise ValueError(f"head: got {self.head!r}; allowed: {', '.join(HEADS)}")
        super().__post_init__()

    @property
    def directions(self) -> int:
        """2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    def param_count(self, input_dim: int = 1) -> int:
        """Σ_l dirs·cell(d_l, h) + vocab_size·embedding + (dirs·h + 1)·output_dim.

        Args:
          input_dim: features per step of float inputs (ignored with an embedding,
            where d_0 = ``embedding``).

        Returns:
          The number of scalars in the parameter tree.

        >>> RecurrentNet(output_dim=1, cell="lstm", hidden_size=2).param_count(1)  # 4·(2·3+2) + 3
        35
        """
        width = self.embedding if self.embedding is not None else input_dim
        total = self.vocab_size * self.embedding if self.embedding is not None else 0
        for _ in range(self.num_layers):
            total += self.directions * cell_param_count(self.cell, width, self.hidden_size)
            width = self.directions * self.hidden_size
        return total + (width + 1) * self.output_dim

    def lengths_from(self, x: jax.Array) -> jax.Array:
        """L_b = #{t : x_{b,t} ≠ pad_id}, the valid lengths of right-padded (batch, T) inputs.

        Args:
          x: (batch, T) token ids or scalars.

        Returns:
          (batch,) int32 lengths.

        >>> RecurrentNet(output_dim=1, pad_id=0).lengths_from(jnp.array([[2, 1, 0, 0]])).tolist()
        [2]
        """
        if self.pad_id is None:
            raise ValueError("pad_id: got None; allowed: an int (or pass seq_lengths)")
        if x.ndim != 2:
            raise ValueError(f"x.shape: got {tuple(x.shape)!r}; allowed: (batch, T) when the "
                             "mask comes from pad_id (pass seq_lengths for feature inputs)")
        return jnp.sum(x != self.pad_id, axis=1).astype(jnp.int32)

    def _cell(self, name: str) -> nn.RNNCellBase:
        return CELLS[self.cell](features=self.hidden_size, dtype=self.dtype,
                                param_dtype=self.param_dtype, name=name)

    def _initial_carry(self, batch: int) -> Any:
        # A scan needs the same carry dtype in and out. Flax makes the zero state in
        # param_dtype; the Elman cell returns its new state in the compute dtype, so its
        # zero state is made in that dtype instead (identical when both are float32).
        # LSTM and GRU states are products with the previous, param_dtype state, which
        # promotes them back to param_dtype, so Flax's default fits them.
        if self.cell != "rnn":
            return None
        zeros = jnp.zeros((batch, self.hidden_size), self.dtype or self.param_dtype)
        return (zeros, zeros) if self.bidirectional else zeros

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 seq_lengths: jax.Array | None = None) -> jax.Array:
        """Map (batch, T[, features]) to (batch, output_dim) or (batch, T, output_dim).

        Args:
          x: the input sequences (see the class docstring).
          train: unused (no dropout); accepted for the training loop's signature.
          seq_lengths: optional (batch,) valid lengths; overrides ``pad_id``.

        Returns:
          (batch, output_dim) for ``output="last"``, else (batch, T, output_dim).
        """
        if seq_lengths is not None:
            lengths = jnp.asarray(seq_lengths).astype(jnp.int32)
        elif self.pad_id is not None:
            lengths = self.lengths_from(x)
        else:
            lengths = None
        if self.embedding is not None:
            if x.ndim != 2:
                raise ValueError(f"x.shape: got {tuple(x.shape)!r}; allowed: (batch, T) token "
                                 "ids with an embedding")
            h = nn.Embed(self.vocab_size, self.embedding, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="embed")(x.astype(jnp.int32))
        else:
            if x.ndim == 2:
                x = x[..., None]
            if x.ndim != 3:
                raise ValueError(f"x.shape: got {tuple(x.shape)!r}; allowed: (batch, T, "
                                 "features) or (batch, T)")
            h = x.astype(self.dtype or self.param_dtype)
        for layer in range(self.num_layers):
            # The cells are owned by this module, so their parameters sit at the top
            # of the tree ("layer_0", or "layer_0_fwd" / "layer_0_bwd"); nn.RNN only
            # scans them over time and holds no parameters itself.
            if self.bidirectional:
                rnn = nn.Bidirectional(nn.RNN(self._cell(f"layer_{layer}_fwd")),
                                       nn.RNN(self._cell(f"layer_{layer}_bwd")))
            else:
                rnn = nn.RNN(self._cell(f"layer_{layer}"))
            # With lengths, the backward pass flips only the valid prefix (padding
            # stays at the end), so valid outputs never see padding in either direction.
            h = rnn(h, seq_lengths=lengths, initial_carry=self._initial_carry(h.shape[0]))
        readout = nn.Dense(self.output_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="output")
        if self.output == "last":
            return get_head(self.head)(readout(last_valid(h, lengths, self.hidden_size,
                                                          self.bidirectional)))
        y = get_head(self.head)(readout(h))
        if lengths is not None:
            valid = jnp.arange(y.shape[1])[None, :] < lengths[:, None]
            y = jnp.where(valid[..., None], y, jnp.zeros((), y.dtype))
        return y


def _builder(cell: str) -> Callable[..., nn.Module]:
    def build(output_dim: int, hidden_size: int = DEFAULT_HIDDEN_SIZE, num_layers: int = 1,
              bidirectional: bool = False, output: str = "last", embedding: int | None = None,
              vocab_size: int | None = None, pad_id: int | None = None,
              head: str = "logits", dtype: str = "float32") -> nn.Module:
        return RecurrentNet(output_dim=output_dim, cell=cell, hidden_size=hidden_size,
                            num_layers=num_layers, bidirectional=bidirectional, output=output,
                            embedding=embedding, vocab_size=vocab_size, pad_id=pad_id, head=head,
                            dtype=compute_dtype(dtype))

    build.__name__ = f"_build_{cell}"
    return build


register_model("rnn", _builder("rnn"),
               "Elman RNN, h_t = tanh(x_t W_i + b_i + h_{t-1} W_h), stacked, readout of the last "
               "valid state (or every step)")
register_model("lstm", _builder("lstm"),
               "LSTM (input/forget/output gates, cell state), stacked, readout of the last valid "
               "state (or every step)")
register_model("gru", _builder("gru"),
               "GRU (reset/update gates), stacked, readout of the last valid state (or every step)")
