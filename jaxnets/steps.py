"""The pure training and evaluation steps.

``train_step(state, batch) -> (state, sums)`` and ``eval_step(state, batch) -> sums``
are plain functions of their arguments: they are compiled (and, in
``jaxnets.parallel``, distributed) where they are called, never inside.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxnets.objective import Objective
from jaxnets.state import TrainState, forward

NONFINITE_POLICIES = ("halt", "skip", "ignore")
_NO_STEP = jnp.iinfo(jnp.int32).max


def tree_finite(tree) -> jnp.ndarray:
    """True when every element of every leaf is finite (a traced bool)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.bool_(True)
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]).all()


def _gradients(objective: Objective, state: TrainState, batch: dict, dropout_key, axis_name, sharded_batch):
    """(grads, sums, new model state) of the global-batch loss (see ``make_train_step``)."""
    count = jnp.sum(batch["mask"].astype(jnp.float32))
    divide_first = axis_name is None and not sharded_batch

    def loss_fn(params):
        outputs, new_model_state = forward(state, params, batch["x"], train=True, dropout_key=dropout_key)
        sums = objective.sums(outputs, batch["y"], batch["mask"])
        if divide_first:
            return sums["loss"] / jnp.maximum(count, 1.0) + objective.penalty(params), (sums, new_model_state)
        return sums["loss"], (sums, new_model_state)

    grads, (sums, new_model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
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
                    sharded_batch: bool = False) -> Callable:
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
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite: got {nonfinite!r}; allowed: {', '.join(NONFINITE_POLICIES)}")

    def train_step(state: TrainState, batch: dict):
        dropout_key = jax.random.fold_in(state.dropout_key, state.step)
        if axis_name is not None:
            dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
        grads, sums, new_model_state = _gradients(objective, state, batch, dropout_key, axis_name, sharded_batch)
        if nonfinite == "ignore":
            return state.apply_gradients(grads, new_model_state), sums

        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        loss_ok = jnp.isfinite(sums["loss"])
        grads_ok = tree_finite(grads)
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


__all__ = ["NONFINITE_POLICIES", "tree_finite", "make_train_step", "make_eval_step"]
