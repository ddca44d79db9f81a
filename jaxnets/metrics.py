"""Metrics: per-example quantities (to be summed over batches) and array aggregates.

Per example, shape (batch,): ``correct`` (1.0 for a right class, else 0.0) and
``squared_error`` (‖ŷ_i − y_i‖², summed over output dims). Summing them over a
dataset and dividing gives accuracy and MSE whatever the batching.

Aggregates over whole arrays: ``accuracy``, ``rmse``, ``r2``; and ``probabilities``
turns a model's logits into class probabilities.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets.losses import TASKS
from jaxnets.models.activations import HEADS

Array = jax.Array

# Where a binary output counts as class 1: logits above 0, probabilities above ½.
# A ReLU output is never negative, so it is read like a probability (a 0/1 target).
_BINARY_THRESHOLDS = {"logits": 0.0, "identity": 0.0, "sigmoid": 0.5, "relu": 0.5}


def _check_task(task: str, allowed: tuple[str, ...] = TASKS) -> None:
    if task not in allowed:
        raise ValueError(f"task: got {task!r}; allowed: {', '.join(allowed)}")


def _one_per_example(name: str, outputs: Array) -> Array:
    if outputs.ndim == 1:
        return outputs
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    raise ValueError(f"{name}: got outputs of shape {outputs.shape}; allowed: (batch,) or "
                     "(batch, 1) for a binary task")


def correct(outputs: Array, labels: Array, task: str, head: str = "logits") -> Array:
    """1.0 where the predicted class equals the label, else 0.0.

    Binary: one output per example, class 1 when it exceeds 0 (head "logits" or
    "identity", σ(z) > ½ ⇔ z > 0) or ½ (head "sigmoid" or "relu").
    Multiclass: class argmax_k ŷ_k (any monotone head gives the same class).

    Args:
      outputs: (batch,) or (batch, 1) for binary; (batch, K) for multiclass.
      labels: binary 0/1 labels; multiclass int labels (batch,) or one-hot (batch, K).
      task: "binary" or "multiclass".
      head: the model's output function (a key of ``HEADS``).

    Returns:
      (batch,) float32 of 0.0 / 1.0.

    >>> correct(jnp.array([[2.0], [-1.0], [0.5]]), jnp.array([1, 1, 0]), "binary").tolist()
    [1.0, 0.0, 0.0]
    >>> correct(jnp.array([[0.1, 0.7, 0.2]]), jnp.array([1]), "multiclass").tolist()
    [1.0]
    """
    _check_task(task, ("binary", "multiclass"))
    if head not in HEADS:
        raise ValueError(f"head: got {head!r}; allowed: {', '.join(HEADS)}")
    outputs = jnp.asarray(outputs)
    labels = jnp.asarray(labels)
    if task == "binary":
        if head not in _BINARY_THRESHOLDS:
            raise ValueError(f"head: got {head!r} for a binary task; allowed: "
                             f"{', '.join(_BINARY_THRESHOLDS)}")
        predicted = _one_per_example("correct", outputs) > _BINARY_THRESHOLDS[head]
        truth = _one_per_example("correct", labels) > 0.5
    else:
        if outputs.ndim < 2:
            raise ValueError(f"correct: got outputs of shape {outputs.shape}; allowed: "
                             "(batch, K), or (batch, T, K) per position, for a multiclass task")
        predicted = jnp.argmax(outputs, axis=-1)
        truth = jnp.argmax(labels, axis=-1) if labels.shape == outputs.shape else labels
        if truth.shape != predicted.shape:
            raise ValueError(f"correct: got labels of shape {labels.shape}; allowed: "
                             f"{predicted.shape} or {outputs.shape}")
    return (predicted == truth).astype(jnp.float32)


def squared_error(pred: Array, target: Array) -> Array:
    """‖ŷ_i − y_i‖² per example: the squared differences summed over output dims.

    Args:
      pred: (batch,) or (batch, k).
      target: the same shape ((batch,) against (batch, 1) is allowed).

    Returns:
      (batch,) squared errors.

    >>> squared_error(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]])).tolist()
    [5.0]
    """
    pred = jnp.asarray(pred)
    target = jnp.asarray(target)
    if pred.ndim == 1:
        pred = pred[:, None]
    if target.ndim == 1:
        target = target[:, None]
    if pred.shape != target.shape:
        raise ValueError(f"squared_error: got shapes {pred.shape} and {target.shape}; "
                         "allowed: equal shapes")
    diff = (pred - target).reshape(pred.shape[0], -1)
    return jnp.sum(jnp.square(diff), axis=1)


def accuracy(outputs: Array, labels: Array, task: str, head: str = "logits") -> Array:
    """Fraction of examples classified correctly: mean of ``correct``.

    Args:
      outputs, labels, task, head: as in ``correct``.

    Returns:
      A scalar in [0, 1].

    >>> float(accuracy(jnp.array([1.0, -1.0, 3.0, -2.0]), jnp.array([1, 1, 1, 0]), "binary"))
    0.75
    """
    return jnp.mean(correct(outputs, labels, task, head))


def rmse(pred: Array, target: Array) -> Array:
    """Root mean squared error over every example and output: √((1/(n·k)) Σ_ij (ŷ_ij − y_ij)²).

    Args:
      pred: (n,) or (n, k).
      target: the same shape.

    Returns:
      A scalar.

    >>> round(float(rmse(jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0]))), 4)  # √5
    2.2361
    """
    errors = squared_error(pred, target)
    outputs_per_example = jnp.asarray(pred).size // max(jnp.asarray(pred).shape[0], 1)
    return jnp.sqrt(jnp.sum(errors) / (errors.shape[0] * outputs_per_example))


def r2(pred: Array, target: Array) -> Array:
    """Coefficient of determination, per output then averaged (sklearn's default).

    R²_j = 1 − SS_res,j / SS_tot,j with SS_res,j = Σ_i (y_ij − ŷ_ij)² and
    SS_tot,j = Σ_i (y_ij − ȳ_j)²; a constant target column scores 1.0 if predicted
    exactly and 0.0 otherwise (as ``sklearn.metrics.r2_score`` does).

    Args:
      pred: (n,) or (n, k).
      target: the same shape.

    Returns:
      A scalar, at most 1 (0 for predicting the mean; negative when worse).

    >>> round(float(r2(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 2.0, 4.0]))), 4)
    0.7857
    """
    pred = jnp.asarray(pred)
    target = jnp.asarray(target)
    if pred.ndim == 1:
        pred = pred[:, None]
    if target.ndim == 1:
        target = target[:, None]
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"r2: got shapes {pred.shape} and {target.shape}; allowed: equal "
                         "shapes (n,) or (n, k)")
    ss_res = jnp.sum(jnp.square(target - pred), axis=0)
    ss_tot = jnp.sum(jnp.square(target - jnp.mean(target, axis=0)), axis=0)
    safe_tot = jnp.where(ss_tot > 0, ss_tot, 1.0)
    per_output = jnp.where(ss_tot > 0, 1.0 - ss_res / safe_tot,
                           jnp.where(ss_res == 0, 1.0, 0.0))
    return jnp.mean(per_output)


def probabilities(outputs: Array, task: str) -> Array:
    """Class probabilities from logits: σ(z) for binary, softmax(z) for multiclass.

    Args:
      outputs: logits, (batch,) or (batch, 1) for binary, (batch, K) for multiclass.
      task: "binary" or "multiclass".

    Returns:
      An array of the shape of ``outputs``: P(y = 1) for binary, a distribution
      over the last axis for multiclass.

    >>> [round(p, 3) for p in probabilities(jnp.array([0.0, 1.0]), "binary").tolist()]
    [0.5, 0.731]
    """
    _check_task(task, ("binary", "multiclass"))
    outputs = jnp.asarray(outputs)
    if task == "binary":
        return jax.nn.sigmoid(outputs)
    return jax.nn.softmax(outputs, axis=-1)
