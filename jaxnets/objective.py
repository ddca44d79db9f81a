"""What a training run minimizes and reports, derived from the task.

An :class:`Objective` ties a task ("regression", "binary", "multiclass") to a
per-example loss and to the per-example quantities whose sums give the reported
metrics. Everything is summed with a mask, so a padded batch gives exactly the
same numbers as an unpadded one:

    loss  = Σ_i m_i ℓ(f(x_i), y_i) / Σ_i m_i   (+ l1·Σ|w| + l2·½Σw² on weights)

where m_i ∈ {0, 1} marks real (1) versus padding (0) rows.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

from jaxnets import losses, metrics

TASKS = ("regression", "binary", "multiclass")
HEADS = ("logits", "identity", "sigmoid", "softmax", "relu")


@dataclasses.dataclass(frozen=True)
class Objective:
    """Loss and metric sums for one task.

    Attributes:
      task: one of TASKS.
      loss: name of a per-example loss in ``jaxnets.losses.LOSSES``.
      head: the model's output function; accuracy thresholds depend on it
        (a logit is positive where a probability exceeds one half).
      l1, l2: penalty coefficients on weight leaves (not biases).
    """

    task: str
    loss: str
    head: str = "logits"
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: got {self.task!r}; allowed: {', '.join(TASKS)}")
        if self.loss not in losses.LOSSES:
            raise ValueError(f"loss: got {self.loss!r}; allowed: {', '.join(losses.LOSSES)}")
        if self.head not in HEADS:
            raise ValueError(f"head: got {self.head!r}; allowed: {', '.join(HEADS)}")
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: got {value!r}; allowed: a number >= 0")

    @property
    def loss_fn(self) -> Callable:
        return losses.get_loss(self.loss)

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    def penalty(self, params) -> jnp.ndarray:
        """l1·Σ|w| + l2·½Σw² over weight leaves; exactly 0.0 when both are off."""
        total = jnp.zeros((), jnp.float32)
        if self.l1:
            total = total + self.l1 * losses.l1_penalty(params)
        if self.l2:
            total = total + self.l2 * losses.l2_penalty(params)
        return total

    def sums(self, outputs, targets, mask) -> dict[str, jnp.ndarray]:
        """Masked sums over a batch: ``count``, ``loss`` and the task's metric sums.

        For outputs with a time axis, e.g. logits (B, T, K) and labels (B, T), each
        example's loss and accuracy are means over its T positions.

        Regression adds ``sq_error`` (Σ‖ŷ−y‖², for RMSE and R²); classification adds
        ``correct`` (number of right predictions).
        """
        mask = mask.astype(jnp.float32)
        # Losses and metrics in float32 even when the model computes in bfloat16/float16.
        if jnp.issubdtype(outputs.dtype, jnp.floating):
            outputs = outputs.astype(jnp.float32)
        per_example = _per_example(self.loss_fn(outputs, targets))
        out = {"count": jnp.sum(mask), "loss": jnp.sum(mask * per_example)}
        if self.is_classification:
            hit = _per_example(metrics.correct(outputs, targets, self.task, head=self.head))
            out["correct"] = jnp.sum(mask * hit)
        else:
            out["sq_error"] = jnp.sum(mask * metrics.squared_error(outputs, targets))
        return out


def _per_example(values: jnp.ndarray) -> jnp.ndarray:
    """(batch, ...) -> (batch,): sequence models (many-to-many, language models) give a
    value per position; an example's value is their mean over positions."""
    values = values.astype(jnp.float32)
    return values if values.ndim == 1 else values.reshape(values.shape[0], -1).mean(axis=1)


def objective_for(task: str, *, loss: str | None = None, head: str = "logits",
                  l1: float = 0.0, l2: float = 0.0) -> Objective:
    """The Objective for a task, with the task's default loss unless one is named."""
    if task not in TASKS:
        raise ValueError(f"task: got {task!r}; allowed: {', '.join(TASKS)}")
    return Objective(task=task, loss=loss or losses.default_loss(task), head=head, l1=l1, l2=l2)


def summarize(sums: dict, *, prefix: str = "", target_ss_total: float | None = None,
              num_outputs: int = 1) -> dict[str, float]:
    """Turn accumulated sums into means: loss, accuracy or (rmse, r2).

    ``target_ss_total`` is Σ(y − ȳ)² of the split's targets (computed on the host in
    float64), needed for R² = 1 − SSE / SS_tot.
    """
    count = float(sums["count"])
    out = {f"{prefix}loss": float(sums["loss"]) / count}
    if "correct" in sums:
        out[f"{prefix}accuracy"] = float(sums["correct"]) / count
    if "sq_error" in sums:
        sse = float(sums["sq_error"])
        # RMSE over all output values; R² pooled over outputs.
        out[f"{prefix}rmse"] = (sse / (count * num_outputs)) ** 0.5
        if target_ss_total is not None and target_ss_total > 0:
            out[f"{prefix}r2"] = 1.0 - sse / target_ss_total
    return out
