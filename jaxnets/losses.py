"""Per-example losses, their registry, and weight penalties.

Every loss maps (outputs, targets) of a batch to a vector of shape (batch,); the
training objective averages it over the (unpadded) examples and adds penalties:

    total = (1/n) Σ_i ℓ(ŷ_i, y_i) + l1·Σ|w| + l2·½Σw²

over WEIGHT leaves only (kernels, embeddings; biases are not penalized). With the
½, ∂/∂w of the l2 term is l2·w: plain SGD on it is weight decay with coefficient l2,
the same as PyTorch's ``SGD(weight_decay=l2)``.

Losses "from logits" (``binary_cross_entropy``, ``cross_entropy``) take the raw
last-layer values and are exact for any logit; the ``*_probs`` losses take
probabilities (a model with a sigmoid/softmax head) and must clip them, so they lose
precision when the model is confident: prefer the logit forms for training.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxnets.checks import TASKS
from jaxnets.tree import is_weight_path

Array = jax.Array


#: Default clipping for the losses on probabilities: p is kept in [eps, 1 − eps].
DEFAULT_EPS = 1e-7


def _as_float(x: Any) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _match(name: str, outputs: Array, targets: Array) -> Array:
    """``targets`` reshaped to ``outputs``' shape when only trailing 1s differ."""
    if targets.shape == outputs.shape:
        return targets
    if targets.size == outputs.size and targets.shape[:1] == outputs.shape[:1] \
            and targets.ndim <= 2 and outputs.ndim <= 2:
        return targets.reshape(outputs.shape)
    raise ValueError(f"{name}: got shapes {outputs.shape} and {targets.shape}; allowed: "
                     "equal shapes, or (batch,) against (batch, 1)")


def _mean_per_example(values: Array) -> Array:
    """Mean over every axis but the first: (batch, ...) -> (batch,)."""
    if values.ndim <= 1:
        return values
    return values.reshape(values.shape[0], -1).mean(axis=1)


def mse(pred: Array, target: Array) -> Array:
    """Squared error averaged over output dims: ℓ_i = (1/k) Σ_j (ŷ_ij − y_ij)².

    Args:
      pred: (batch,) or (batch, k) predictions.
      target: targets of the same shape ((batch,) against (batch, 1) is allowed).

    Returns:
      (batch,) losses.

    >>> mse(jnp.array([[3.0], [0.0]]), jnp.array([6.0, 1.0])).tolist()
    [9.0, 1.0]
    """
    pred = _as_float(pred)
    target = _match("mse", pred, _as_float(target))
    return _mean_per_example(jnp.square(pred - target))


def half_mse(pred: Array, target: Array) -> Array:
    """Half the squared error: ℓ_i = ½·(1/k) Σ_j (y_ij − ŷ_ij)², so ∂ℓ/∂ŷ = ŷ − y.

    The slides' L = ½(y − ŷ)² for one output.

    Args:
      pred: (batch,) or (batch, k) predictions.
      target: targets of the same shape.

    Returns:
      (batch,) losses.

    >>> half_mse(jnp.array([0.5]), jnp.array([1.0])).tolist()
    [0.125]
    """
    return 0.5 * mse(pred, target)


def binary_cross_entropy_with_logits(logits: Array, labels: Array) -> Array:
    """Binary cross-entropy of σ(z) against y ∈ {0, 1} (or a probability), from logits.

    ℓ = −[y·log σ(z) + (1 − y)·log(1 − σ(z))] = softplus(z) − z·y
      = max(z, 0) − z·y + log(1 + e^(−|z|)),

    finite and exact for every z. softplus(z) = log(1 + e^z) is computed as
    ``logaddexp(z, 0)``, which equals the max/abs form but whose derivative is
    σ(z) everywhere (autodiff of max and |·| would split the kink at z = 0 and give
    −y there instead of ½ − y). ∂ℓ/∂z = σ(z) − y. With several logits per example
    (multi-label) the per-logit losses are averaged.

    Args:
      logits: (batch,) or (batch, 1) (or (batch, m) for m independent labels).
      labels: 0/1 labels (int or float) matching ``logits`` in size.

    Returns:
      (batch,) losses.

    >>> [round(v, 4) for v in binary_cross_entropy_with_logits(
    ...     jnp.array([0.0, 1000.0, -1000.0]), jnp.array([1, 1, 1])).tolist()]
    [0.6931, 0.0, 1000.0]
    """
    logits = _as_float(logits)
    labels = _match("binary_cross_entropy", logits, _as_float(labels)).astype(logits.dtype)
    values = jnp.logaddexp(logits, 0.0) - logits * labels
    return _mean_per_example(values)


def _targets_as_distribution(name: str, scores: Array, labels: Array) -> Array:
    """Integer labels (batch,) -> one-hot (batch, K); (batch, K) labels pass through."""
    labels = jnp.asarray(labels)
    if labels.ndim == scores.ndim - 1 and labels.shape == scores.shape[:-1]:
        return jax.nn.one_hot(labels.astype(jnp.int32), scores.shape[-1], dtype=scores.dtype)
    if labels.shape == scores.shape:
        return labels.astype(scores.dtype)
    raise ValueError(f"{name}: got shapes {scores.shape} and {labels.shape}; allowed: "
                     "(batch, K) against int labels (batch,) or one-hot (batch, K)")


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """Cross-entropy of softmax(z) against a class or a distribution, from logits.

    ℓ = −Σ_k y_k·log softmax(z)_k = −Σ_k y_k·(z_k − logsumexp(z)); for an integer
    label c this is logsumexp(z) − z_c. Computed with ``log_softmax`` (stable for
    any logits). Integer labels outside [0, K) give a loss of 0: check them first.

    Args:
      logits: (batch, K).
      labels: int class indices (batch,), or one-hot / probabilities (batch, K).

    Returns:
      (batch,) losses.

    >>> z = jnp.array([[0.0, 0.0, 0.0, 0.0]])
    >>> round(float(softmax_cross_entropy(z, jnp.array([2]))[0]), 4)  # log 4
    1.3863
    """
    logits = _as_float(logits)
    targets = _targets_as_distribution("cross_entropy", logits, labels)
    return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def binary_cross_entropy(probs: Array, labels: Array, eps: float = DEFAULT_EPS) -> Array:
    """Binary cross-entropy on PROBABILITIES (a sigmoid head), with clipping.

    ℓ = −[y·log p̃ + (1 − y)·log(1 − p̃)], p̃ = clip(p, eps, 1 − eps). The slides'
    cross-entropy. Less stable than ``binary_cross_entropy_with_logits``: once
    σ(z) rounds to 0 or 1 the loss saturates at −log(eps) and its gradient vanishes.

    Args:
      probs: (batch,) or (batch, 1) probabilities of class 1.
      labels: 0/1 labels matching ``probs`` in size.
      eps: clipping margin (> 0).

    Returns:
      (batch,) losses.

    >>> [round(v, 4) for v in binary_cross_entropy(jnp.array([0.5, 0.9]),
    ...                                             jnp.array([1, 0])).tolist()]
    [0.6931, 2.3026]
    """
    probs = _as_float(probs)
    labels = _match("binary_cross_entropy_probs", probs, _as_float(labels)).astype(probs.dtype)
    p = jnp.clip(probs, eps, 1.0 - eps)
    return _mean_per_example(-(labels * jnp.log(p) + (1.0 - labels) * jnp.log1p(-p)))


def categorical_cross_entropy(probs: Array, labels: Array, eps: float = DEFAULT_EPS) -> Array:
    """Cross-entropy on PROBABILITIES (a softmax head), with clipping.

    ℓ = −Σ_k y_k·log max(p_k, eps). Less stable than ``softmax_cross_entropy``
    (saturates at −log(eps) when a probability underflows).

    Args:
      probs: (batch, K) probabilities (rows summing to 1).
      labels: int class indices (batch,), or one-hot / probabilities (batch, K).
      eps: smallest probability used inside the log (> 0).

    Returns:
      (batch,) losses.

    >>> round(float(categorical_cross_entropy(jnp.array([[0.25, 0.75]]),
    ...                                       jnp.array([1]))[0]), 4)
    0.2877
    """
    probs = _as_float(probs)
    targets = _targets_as_distribution("cross_entropy_probs", probs, labels)
    return -jnp.sum(targets * jnp.log(jnp.clip(probs, eps, 1.0)), axis=-1)


#: Per-example losses by name: (outputs, targets) -> (batch,).
LOSSES: dict[str, Callable[[Array, Array], Array]] = {
    "mse": mse,
    "half_mse": half_mse,
    "binary_cross_entropy": binary_cross_entropy_with_logits,
    "cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy_probs": binary_cross_entropy,
    "cross_entropy_probs": categorical_cross_entropy,
}

#: The tasks each built-in loss is meaningful for (anything else is refused before
#: training: e.g. softmax cross-entropy over one output is 0 whatever the weights).
LOSS_TASKS: dict[str, tuple[str, ...]] = {
    "mse": ("regression", "binary"),
    "half_mse": ("regression", "binary"),
    "binary_cross_entropy": ("binary",),
    "cross_entropy": ("multiclass",),
    "binary_cross_entropy_probs": ("binary",),
    "cross_entropy_probs": ("multiclass",),
}
#: The losses on probabilities, and the heads that produce them.
PROBABILITY_LOSSES = {"binary_cross_entropy_probs": "sigmoid", "cross_entropy_probs": "softmax"}

_DEFAULT_LOSSES = {"regression": "mse", "binary": "binary_cross_entropy",
                   "multiclass": "cross_entropy"}


def get_loss(name: str) -> Callable[[Array, Array], Array]:
    """The per-example loss called ``name``.

    Args:
      name: a key of ``LOSSES``.

    Returns:
      A function (outputs, targets) -> (batch,) losses.

    Raises:
      ValueError: unknown name.

    >>> get_loss("mse") is mse
    True
    """
    if name not in LOSSES:
        raise ValueError(f"loss: got {name!r}; allowed: {', '.join(LOSSES)}")
    return LOSSES[name]


def default_loss(task: str) -> str:
    """The loss to train a task with (on a model with a "logits" head).

    regression -> "mse", binary -> "binary_cross_entropy" (one logit),
    multiclass -> "cross_entropy" (K logits).

    Args:
      task: one of ``TASKS``.

    Returns:
      A key of ``LOSSES``.

    >>> default_loss("multiclass")
    'cross_entropy'
    """
    if task not in _DEFAULT_LOSSES:
        raise ValueError(f"task: got {task!r}; allowed: {', '.join(TASKS)}")
    return _DEFAULT_LOSSES[task]


def _weight_leaves(params: Any) -> list[Array]:
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if is_weight_path(path)]


def l1_penalty(params: Any) -> Array:
    """Σ|w| over weight leaves (see ``jaxnets.tree.WEIGHT_LEAF_NAMES``); biases excluded.

    Args:
      params: a parameter pytree.

    Returns:
      A scalar (0.0 when there is no weight leaf).

    >>> float(l1_penalty({"output": {"kernel": jnp.array([[1.0], [-2.0]]),
    ...                              "bias": jnp.array([5.0])}}))
    3.0
    """
    terms = [jnp.sum(jnp.abs(w)) for w in _weight_leaves(params)]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros((), jnp.float32)


def l2_penalty(params: Any) -> Array:
    """½·Σw² over weight leaves; biases excluded. Its gradient is w itself.

    Args:
      params: a parameter pytree.

    Returns:
      A scalar (0.0 when there is no weight leaf).

    >>> float(l2_penalty({"output": {"kernel": jnp.array([[1.0], [-2.0]]),
    ...                              "bias": jnp.array([5.0])}}))
    2.5
    """
    terms = [jnp.sum(jnp.square(w)) for w in _weight_leaves(params)]
    return 0.5 * (sum(terms[1:], terms[0]) if terms else jnp.zeros((), jnp.float32))
