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
from jaxnets.checks import TASKS, check_choice, check_number, fail
from jaxnets.models.activations import HEADS



@dataclasses.dataclass(frozen=True)
class Objective:
    """Loss and metric sums for one task.

    Attributes:
      task: one of TASKS.
      loss: name of a per-example loss in ``jaxnets.losses.LOSSES``, or a callable
        ``loss(outputs, targets) -> (batch,)`` (your own loss: no task check is made).
      head: the model's output function; accuracy thresholds depend on it
        (a logit is positive where a probability exceeds one half).
      l1, l2: penalty coefficients on weight leaves (not biases).
      metrics: None, or a callable ``(outputs, targets) -> {name: (batch,) values}``
        whose values are averaged like the loss.
    """

    task: str
    loss: str | Callable
    head: str = "logits"
    l1: float = 0.0
    l2: float = 0.0
    metrics: Callable | None = None

    def __post_init__(self):
        check_choice("task", self.task, TASKS)
        check_choice("head", self.head, tuple(HEADS))
        if not callable(self.loss):
            check_choice("loss", self.loss, tuple(losses.LOSSES))
            _check_loss_fits(self.loss, self.task, self.head)
        for name in ("l1", "l2"):
            check_number(name, getattr(self, name), minimum=0)

    @property
    def loss_fn(self) -> Callable:
        return self.loss if callable(self.loss) else losses.get_loss(self.loss)

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
        ``correct`` (number of right predictions); a metrics callable adds
        ``metric_<name>`` for each value it returns.
        """
        mask = mask.astype(jnp.float32)
        # Losses and metrics in float32 even when the model computes in bfloat16/float16.
        if jnp.issubdtype(outputs.dtype, jnp.floating):
            outputs = outputs.astype(jnp.float32)
        per_example = _per_example(self.loss_fn(outputs, targets), "loss", outputs.shape[0])
        out = {"count": jnp.sum(mask), "loss": jnp.sum(mask * per_example)}
        if self.is_classification:
            hit = _per_example(metrics.correct(outputs, targets, self.task, head=self.head))
            out["correct"] = jnp.sum(mask * hit)
        else:
            out["sq_error"] = jnp.sum(mask * metrics.squared_error(outputs, targets))
        if self.metrics is not None:
            for name, values in self.metrics(outputs, targets).items():
                out[METRIC_PREFIX + name] = jnp.sum(mask * _per_example(values, f"metrics[{name!r}]",
                                                                         outputs.shape[0]))
        return out


#: Sums of a user's metrics callable are stored under this prefix.
METRIC_PREFIX = "metric_"


def _check_loss_fits(loss: str, task: str, head: str) -> None:
    """Refuse a built-in loss that cannot train this task or head (before anything compiles)."""
    if task not in losses.LOSS_TASKS[loss]:
        fitting = [name for name, tasks in losses.LOSS_TASKS.items() if task in tasks]
        raise fail("loss", loss, f"a loss for a {task} task: {', '.join(fitting)}")
    wanted = losses.PROBABILITY_LOSSES.get(loss)
    if wanted is not None and head != wanted:
        raise fail("head", head, f"{wanted!r} with loss {loss!r} (it takes probabilities)")
    if loss in ("binary_cross_entropy", "cross_entropy") and head not in ("logits", "identity"):
        raise fail("head", head, f"'logits' with loss {loss!r} (it takes logits; use "
                                 f"{loss + '_probs'!r} for a {head} head)")


def _per_example(values: jnp.ndarray, what: str = "values", batch: int | None = None) -> jnp.ndarray:
    """(batch, ...) -> (batch,): sequence models (many-to-many, language models) give a
    value per position; an example's value is their mean over positions."""
    values = jnp.asarray(values).astype(jnp.float32)
    if batch is not None and (values.ndim == 0 or values.shape[0] != batch):
        raise fail(what, f"shape {values.shape}", f"one value per example, shape ({batch},) "
                   "(a loss or metric callable returns per-example values, not their mean)")
    return values if values.ndim == 1 else values.reshape(values.shape[0], -1).mean(axis=1)


def objective_for(task: str, *, loss: str | Callable | None = None, head: str = "logits",
                  l1: float = 0.0, l2: float = 0.0, metrics: Callable | None = None) -> Objective:
    """The Objective for a task, with the task's default loss unless one is given."""
    check_choice("task", task, TASKS)
    return Objective(task=task, loss=loss or losses.default_loss(task), head=head, l1=l1, l2=l2,
                     metrics=metrics)


def summarize(sums: dict, *, prefix: str = "", target_ss_total: float | None = None,
              num_outputs: int = 1) -> dict[str, float]:
    """Turn accumulated sums into means: loss, accuracy or (rmse, r2).

    ``target_ss_total`` is Σ(y − ȳ)² of the split's targets (computed on the host in
    float64), needed for R² = 1 − SSE / SS_tot.
    """
    count = float(sums["count"])
    out = {f"{prefix}loss": float(sums["loss"]) / count}
    for key in sums:
        if key.startswith(METRIC_PREFIX):
            out[prefix + key[len(METRIC_PREFIX):]] = float(sums[key]) / count
    if "correct" in sums:
        out[f"{prefix}accuracy"] = float(sums["correct"]) / count
    if "sq_error" in sums:
        sse = float(sums["sq_error"])
        # RMSE over all output values; R² pooled over outputs.
        out[f"{prefix}rmse"] = (sse / (count * num_outputs)) ** 0.5
        if target_ss_total is not None and target_ss_total > 0:
            out[f"{prefix}r2"] = 1.0 - sse / target_ss_total
    return out
