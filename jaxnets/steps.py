"""The pure training and evaluation steps.

``train_step(state, batch) -> (state, sums)`` and ``eval_step(state, batch) -> sums``
are plain functions of their arguments: they are compiled (and, in
``jaxnets.parallel``, distributed) where they are called, never inside.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnets.augment import get_augmentation
from jaxnets.objective import Objective
from jaxnets.state import TrainState, forward

NONFINITE_POLICIES = ("halt", "skip", "ignore")
_NO_STEP = jnp.iinfo(jnp.int32).max
#: Folded into the run's dropout key to start the augmentation stream, so that the
#: augmentation and dropout keys of a step are independent draws.
AUGMENT_STREAM = 0x617567


def augment_key(state: TrainState, axis_name: str | None = None) -> jax.Array:
    """The augmentation key of the state's current step (and device, under ``pmap``).

    ``fold_in(fold_in(fold_in(dropout_key, AUGMENT_STREAM), step), device index)``:
    a function of the seed and the step only (so a resumed run draws the same
    augmentations), different for every step, population member (each has its own
    ``dropout_key``) and device of a ``pmap`` axis (each shard gets its own draws).

    >>> from jaxnets.state import run_keys
    >>> state = TrainState(step=jnp.int32(3), params={}, opt_state=(), model_state={},
    ...                    dropout_key=run_keys(0).dropout, apply_fn=None, tx=None)
    >>> bool((jax.random.key_data(augment_key(state)) != jax.random.key_data(
    ...     augment_key(state.replace(step=jnp.int32(4))))).any())
    True
    """
    key = jax.random.fold_in(jax.random.fold_in(state.dropout_key, AUGMENT_STREAM), state.step)
    return key if axis_name is None else jax.random.fold_in(key, jax.lax.axis_index(axis_name))


def tree_finite(tree) -> jnp.ndarray:
    """True when every element of every leaf is finite (a traced bool)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.bool_(True)
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]).all()


# ----------------------------------------------------------------------------- loss scaling
class LossScaleState(NamedTuple):
    """The optimizer state of a loss-scaled optimizer (see ``loss_scaling``).

    Attributes:
      scale: the current loss scale S (float32).
      good_steps: finite steps since the scale last changed (int32).
      skipped: steps skipped so far because their gradients overflowed (int32).
      inner: the wrapped optimizer's state.
    """

    scale: jnp.ndarray
    good_steps: jnp.ndarray
    skipped: jnp.ndarray
    inner: Any


class StaticLossScale(optax.GradientTransformation):
    """A ``loss_scaling`` optimizer with a fixed scale (its type tells the step which kind)."""


class DynamicLossScale(optax.GradientTransformation):
    """A ``loss_scaling`` optimizer whose scale adapts to overflows."""


def loss_scaling(inner: optax.GradientTransformation, scale: float = 2.0 ** 15, *, dynamic: bool = True,
                 period: int = 2000) -> optax.GradientTransformation:
    """Wrap an optimizer so the training step scales the loss by S before differentiating.

    The step (``make_train_step``) reads S from this optimizer's state, differentiates
    S·L (so small float16 gradients do not flush to zero) and divides the gradients by S
    before calling ``update``. With ``dynamic=True``, ``update`` then checks them: if any
    is not finite (the scaled backward pass overflowed) the step is skipped (zero
    update, inner state unchanged) and S ← max(S/2, 1); after ``period`` finite steps in a
    row S ← 2S. The scale lives in the optimizer state, so checkpoints keep it.

    >>> tx = loss_scaling(optax.sgd(1.0), 8.0, period=2)
    >>> state = tx.init({"w": jnp.zeros(2)})
    >>> _, state = tx.update({"w": jnp.array([jnp.inf, 0.0])}, state)
    >>> float(state.scale), int(state.skipped)
    (4.0, 1)
    """
    def init(params):
        return LossScaleState(jnp.float32(scale), jnp.int32(0), jnp.int32(0), inner.init(params))

    def update(grads, state: LossScaleState, params=None):
        if not dynamic:
            updates, inner_state = inner.update(grads, state.inner, params)
            return updates, state._replace(inner=inner_state)
        finite = tree_finite(grads)
        # Zeros in place of the overflowed gradients keep NaNs out of the discarded branch.
        safe = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
        updates, inner_state = inner.update(safe, state.inner, params)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        updates = jax.tree_util.tree_map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner_state = jax.tree_util.tree_map(keep, inner_state, state.inner)
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= period
        new_scale = jnp.where(finite, jnp.where(grow, state.scale * 2.0, state.scale),
                              jnp.maximum(state.scale / 2.0, 1.0))
        return updates, LossScaleState(new_scale.astype(jnp.float32), jnp.where(grow, 0, good).astype(jnp.int32),
                                       state.skipped + (~finite).astype(jnp.int32), inner_state)

    kind = DynamicLossScale if dynamic else StaticLossScale
    return kind(init, update)


def with_loss_scale(tx: optax.GradientTransformation, config: Any) -> optax.GradientTransformation:
    """``tx`` wrapped as ``config.loss_scale`` says ("dynamic", a number, or None: unchanged).

    ``config`` is a ``TrainConfig`` (read for ``loss_scale``, ``loss_scale_init`` and
    ``loss_scale_period``); an optimizer that is already loss-scaled is returned as is.
    """
    kind = getattr(config, "loss_scale", None)
    if kind is None or isinstance(tx, (StaticLossScale, DynamicLossScale)):
        return tx
    if kind == "dynamic":
        return loss_scaling(tx, config.loss_scale_init, dynamic=True, period=config.loss_scale_period)
    return loss_scaling(tx, float(kind), dynamic=False)


def loss_scale_of(opt_state) -> jnp.ndarray | None:
    """The current loss scale in an optimizer state, or None if the optimizer is not loss-scaled."""
    return opt_state.scale if isinstance(opt_state, LossScaleState) else None


def _gradients(objective: Objective, state: TrainState, batch: dict, dropout_key, axis_name, sharded_batch):
    """(grads, sums, new model state) of the global-batch loss (see ``make_train_step``)."""
    count = jnp.sum(batch["mask"].astype(jnp.float32))
    divide_first = axis_name is None and not sharded_batch
    scale = loss_scale_of(state.opt_state)

    def loss_fn(params):
        outputs, new_model_state = forward(state, params, batch["x"], train=True, dropout_key=dropout_key)
        sums = objective.sums(outputs, batch["y"], batch["mask"])
        value = sums["loss"] / jnp.maximum(count, 1.0) + objective.penalty(params) if divide_first else sums["loss"]
        return value if scale is None else value * scale, (sums, new_model_state)

    grads, (sums, new_model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    if scale is not None:  # back to the gradient of the unscaled loss (an overflow stays non-finite)
        grads = jax.tree_util.tree_map(lambda g: g / scale, grads)
    if divide_first:
        return grads, sums, new_model_state
    # Data parallel: each replica differentiated the SUM of its examples' losses; one
    # all-reduce adds gradients, metric sums, counts and batch statistics of every
    # replica, and the mean is taken after it (dividing by the global count first would
    # need a second all-reduce before the forward pass). Under sharded jit the compiler
    # inserts the same all-reduce at this point.
    if axis_name is not None:
        grads, sums, count, model_state_sum = jax.lax.psum((grads, sums, count, new_model_state), axis_name)
        new_model_state = jax.tree_util.tree_map(lambda v: v / jax.lax.psum(1, axis_name), model_state_sum)
    count = jnp.maximum(count, 1.0)
    # The penalty is a function of the (replicated) parameters: every replica has it whole.
    grads = jax.tree_util.tree_map(lambda g, p: g / count + p, grads, jax.grad(objective.penalty)(state.params))
    return grads, sums, new_model_state


def make_train_step(objective: Objective, axis_name: str | None = None, nonfinite: str = "ignore", *,
                    sharded_batch: bool = False, augment: str | Callable | None = None) -> Callable:
    """The pure step ``(state, batch) -> (state, sums)`` for an objective.

    ``batch`` is ``{"x": (B, ...), "y": (B, ...), "mask": (B,)}``; the gradient is that of

        L(θ) = Σ_i m_i ℓ(f_θ(x_i), y_i) / Σ_i m_i + penalty(θ)

    and ``sums`` holds the masked sums of the batch (see ``Objective.sums``), so that
    epoch means are exact whatever the padding. With ``axis_name`` (data parallel
    under ``pmap``), each replica differentiates the sum of its examples' losses and
    ONE all-reduce adds gradients, sums, counts and batch statistics over that axis
    before the division, so every replica gets the gradient of the global-batch loss.
    ``sharded_batch=True`` (``jit`` with the batch split over devices) takes the same
    sum-then-divide order and lets the compiler insert that all-reduce. The single
    device step divides first: the two orders differ by float32 rounding only.

    ``nonfinite`` guards against a loss, gradient or update that is not finite:
    with "halt" or "skip" such a step leaves params, optimizer and model state
    unchanged (only ``step`` advances, so data order and dropout keys stay aligned)
    and is counted in ``sums`` (``nonfinite_loss``/``_gradients``/``_updates`` and
    ``first_nonfinite_step``); "halt" then makes ``fit`` raise ``NonFiniteError``.
    The check is a select inside the compiled step: no host round trip per step.

    ``augment`` (None, a name of ``jaxnets.augment.AUGMENTATIONS`` or a callable
    ``(key, x) -> x``) replaces ``batch["x"]`` by ``augment(augment_key(state), x)``
    before the forward pass; None leaves the step exactly as without the option.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite: got {nonfinite!r}; allowed: {', '.join(NONFINITE_POLICIES)}")
    augmentation = get_augmentation(augment)

    def train_step(state: TrainState, batch: dict):
        if augmentation is not None:
            batch = dict(batch, x=augmentation(augment_key(state, axis_name), batch["x"]))
        dropout_key = jax.random.fold_in(state.dropout_key, state.step)
        if axis_name is not None:
            dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
        grads, sums, new_model_state = _gradients(objective, state, batch, dropout_key, axis_name, sharded_batch)
        if nonfinite == "ignore":
            return state.apply_gradients(grads, new_model_state), sums

        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        loss_ok = jnp.isfinite(sums["loss"])
        # Under dynamic loss scaling an overflowed gradient is the scaler's to skip, not an error.
        grads_ok = jnp.bool_(True) if isinstance(state.tx, DynamicLossScale) else tree_finite(grads)
        updates_ok = tree_finite(updates)
        ok = loss_ok & grads_ok & updates_ok
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        new_state = state.replace(
            step=state.step + 1,
            params=keep(optax.apply_updates(state.params, updates), state.params),
            opt_state=keep(opt_state, state.opt_state),
            model_state=keep(new_model_state, state.model_state),
        )
        sums = dict(sums,
                    nonfinite_loss=(~loss_ok).astype(jnp.float32),
                    nonfinite_gradients=(loss_ok & ~grads_ok).astype(jnp.float32),
                    nonfinite_updates=(loss_ok & grads_ok & ~updates_ok).astype(jnp.float32),
                    first_nonfinite_step=jnp.where(ok, _NO_STEP, state.step).astype(jnp.int32))
        return new_state, sums

    return train_step


def make_eval_step(objective: Objective) -> Callable:
    """The pure step ``(state, batch) -> sums`` in evaluation mode (no dropout, running BN stats)."""

    def eval_step(state: TrainState, batch: dict):
        outputs, _ = forward(state, state.params, batch["x"], train=False)
        return objective.sums(outputs, batch["y"], batch["mask"])

    return eval_step


__all__ = ["AUGMENT_STREAM", "NONFINITE_POLICIES", "augment_key", "tree_finite", "make_train_step", "make_eval_step",
           "LossScaleState", "StaticLossScale", "DynamicLossScale", "loss_scaling", "with_loss_scale", "loss_scale_of"]
