"""Synthetic sequence tasks for recurrent networks, generated deterministically with NumPy.

Two classic probes of memory over time:

* :func:`adding` — the adding problem (Hochreiter & Schmidhuber 1997; the variant
  of Le, Jaitly & Hinton 2015). Each step carries a value ``v_t ~ U[0, 1]`` and a
  marker ``m_t ∈ {0, 1}``; exactly two markers are 1, one in the first half of
  the sequence and one in the second. The target is ``y = Σ_t m_t v_t``, the
  sum of the two marked values. Predicting the mean ``E[y] = 1`` everywhere gives
  the baseline MSE ``Var(y) = 2/12 = 1/6 ≈ 0.167``.
* :func:`parity` — bits ``b_t ~ Bernoulli(1/2)``; the label is
  ``(Σ_t b_t) mod k`` (``k = 2``: parity; larger ``k``: counting mod k). Chance
  accuracy is 1/k.

Token convention of :func:`parity` (shared with ``RecurrentNet(pad_id=0)``):
``x_t = 1 + b_t`` for valid steps (token 1 is bit 0, token 2 is bit 1) and
``x_t = PAD_ID = 0`` for padding. Sequences are right-padded: a sequence of
length L occupies steps 0 .. L−1. The mask is therefore ``x != 0`` and the
lengths are ``(x != 0).sum(axis=1)`` (:func:`lengths`); inputs are stored as
float32 like every :class:`~jaxnets.data.Dataset` and are read as token ids by a
model with an embedding (``vocab_size = VOCAB_SIZE = 3``) or as one scalar per
step by a model without one.

Randomness: each generator draws from ``np.random.default_rng(data_seed)`` only,
train rows first, then test rows, so the data never depend on anything else.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jaxnets.data.dataset import Dataset

#: Padding token of :func:`parity` (and the ``pad_id`` a model should use).
PAD_ID = 0
#: Token ids of :func:`parity`: 0 = padding, 1 = bit 0, 2 = bit 1.
VOCAB_SIZE = 3
#: MSE of predicting E[y] = 1 on the adding problem: Var(v_1 + v_2) = 2/12.
ADDING_BASELINE_MSE = 2.0 / 12.0


def _check_int(field: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{field}: got {value!r}; allowed: an integer >= {low}")
    return int(value)


def _splits(name: str, task: str, x: np.ndarray, y: np.ndarray, n_train: int,
            **fields: Any) -> Dataset:
    return Dataset(
        x_train=x[:n_train], y_train=y[:n_train],
        x_val=np.zeros((0, *x.shape[1:]), x.dtype), y_val=np.zeros((0, *y.shape[1:]), y.dtype),
        x_test=x[n_train:], y_test=y[n_train:], task=task, name=name, **fields,
    )


def adding(*, length: int = 30, n_train: int = 4000, n_test: int = 1000,
           data_seed: int = 0) -> Dataset:
    """The adding problem: report the sum of the two marked values of a sequence.

    For each of ``n = n_train + n_test`` sequences of ``T = length`` steps:
    ``v ~ U[0, 1]^T``, then the first marker position ``p ~ U{0 .. ⌊T/2⌋ − 1}``
    and the second ``q ~ U{⌊T/2⌋ .. T − 1}`` (drawn in that order, all from
    ``np.random.default_rng(data_seed)``); ``m_p = m_q = 1``, every other
    ``m_t = 0``; ``y = v_p + v_q``. The first ``n_train`` sequences are the
    training split. Predicting the constant 1 has MSE 1/6
    (:data:`ADDING_BASELINE_MSE`).

    Args:
      length: steps per sequence, T >= 2.
      n_train: training sequences (>= 1).
      n_test: test sequences (>= 1).
      data_seed: seed of the draw.

    Returns:
      a regression :class:`Dataset`: x ``(n, T, 2)`` with channels (value, marker),
      y ``(n, 1)``.

    >>> ds = adding(length=6, n_train=3, n_test=2)
    >>> ds.x_train.shape, ds.y_train.shape, ds.x_train[..., 1].sum(axis=1).tolist()
    ((3, 6, 2), (3, 1), [2.0, 2.0, 2.0])
    >>> x = ds.x_test[0]
    >>> bool(np.isclose(ds.y_test[0, 0], (x[:, 0] * x[:, 1]).sum()))
    True
    """
    steps = _check_int("length", length, 2)
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    rng = np.random.default_rng(_check_int("data_seed", data_seed, 0))
    n, half = n_train + n_test, steps // 2
    values = rng.uniform(0.0, 1.0, size=(n, steps))
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    markers = np.zeros((n, steps))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return _splits("adding", "regression", x, y, n_train)


def parity(*, length: int = 12, modulus: int = 2, min_length: int | None = None,
           n_train: int = 4000, n_test: int = 1000, data_seed: int = 0) -> Dataset:
    """Parity (or count mod k) of a bit sequence, with optional variable length.

    For each of ``n = n_train + n_test`` sequences: its length ``L`` is ``length``,
    or ``L ~ U{min_length .. length}`` when ``min_length`` is given (drawn first,
    for all rows); then bits ``b ~ Bernoulli(1/2)^length`` (one draw of shape
    ``(n, length)``; steps ``t >= L`` are discarded). Inputs are tokens
    ``x_t = 1 + b_t`` for ``t < L`` and :data:`PAD_ID` = 0 after; the label is
    ``(Σ_{t<L} b_t) mod modulus``. All draws come from
    ``np.random.default_rng(data_seed)``; the first ``n_train`` rows are training.

    Args:
      length: steps per sequence (the padded width T), >= 1.
      modulus: k >= 2; 2 gives the binary parity task, k > 2 a k-class task.
      min_length: None for fixed length, else the shortest length, 1 .. length.
      n_train: training sequences (>= 1).
      n_test: test sequences (>= 1).
      data_seed: seed of the draw.

    Returns:
      a binary (k = 2) or multiclass :class:`Dataset`, x ``(n, T)`` float32 tokens
      in {0, 1, 2}, y ``(n,)`` int32 in ``0 .. k − 1``.

    >>> ds = parity(length=5, min_length=2, n_train=4, n_test=1)
    >>> ds.x_train.astype(int).tolist(), ds.y_train.tolist()
    ([[1, 1, 1, 1, 2], [2, 2, 2, 2, 0], [2, 2, 2, 2, 0], [1, 2, 2, 0, 0]], [1, 0, 0, 0])
    """
    steps = _check_int("length", length, 1)
    modulus = _check_int("modulus", modulus, 2)
    if min_length is not None and (isinstance(min_length, bool) or not isinstance(
            min_length, (int, np.integer)) or not 1 <= min_length <= steps):
        raise ValueError(f"min_length: got {min_length!r}; allowed: None or 1 .. {steps}")
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    rng = np.random.default_rng(_check_int("data_seed", data_seed, 0))
    n = n_train + n_test
    if min_length is None:
        lengths_ = np.full(n, steps)
    else:
        lengths_ = rng.integers(int(min_length), steps + 1, size=n)
    bits = rng.integers(0, 2, size=(n, steps))
    valid = np.arange(steps)[None, :] < lengths_[:, None]
    bits = np.where(valid, bits, 0)
    x = np.where(valid, bits + 1, PAD_ID).astype(np.float32)
    y = (bits.sum(axis=1) % modulus).astype(np.int32)
    task = "binary" if modulus == 2 else "multiclass"
    return _splits("parity", task, x, y, n_train, num_classes=modulus,
                   class_names=tuple(str(k) for k in range(modulus)))


def lengths(x: np.ndarray, pad_id: int = PAD_ID) -> np.ndarray:
    """Valid lengths of right-padded token rows: ``L_b = #{t : x_{b,t} ≠ pad_id}``.

    Args:
      x: (n, T) tokens.
      pad_id: the padding token.

    Returns:
      (n,) int64 lengths.

    >>> lengths(np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 2.0]])).tolist()
    [2, 3]
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x.shape: got {x.shape!r}; allowed: (n, T) tokens")
    return (x != pad_id).sum(axis=1)
