"""Epochs: how the training rows are cut into batches, and the compiled epoch loops.

A batch is planned here (``epoch_plan``: row indices and masks of a whole epoch,
a pure function of the data key and the epoch), built here (``indexed_step``
gathers the rows inside the compiled step) and stepped here (``scan_epochs``:
one ``lax.scan`` per epoch). ``jaxnets.parallel`` only says where these run.

The sums a step returns (``Objective.sums`` plus the non-finite counters) are
added over the steps of an epoch, except ``first_*`` keys, which take the
minimum. Every epoch also returns ``step_loss``, the mean loss of each of its
steps, stacked inside the compiled epoch (no host round trip per step).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

#: Sums keys reduced by minimum (not by sum) over steps and epochs.
FIRST_KEYS = ("first_nonfinite_step",)
#: Sums keys accumulated over every epoch of a multi-epoch call (the rest describe the last epoch).
RUN_KEYS = ("nonfinite_loss", "nonfinite_gradients", "nonfinite_updates", "first_nonfinite_step")
#: The per-step mean losses of an epoch, (steps_per_epoch,): stacked, never summed.
STEP_LOSS = "step_loss"


class Geometry(NamedTuple):
    """How one epoch is cut into batches.

    Attributes:
      num_examples: training rows n.
      batch_size: global rows per step B (including masked padding).
      steps_per_epoch: ⌈n/B⌉ (or ⌊n/B⌋ with drop_remainder).
      shuffle: draw a new order every epoch.
      drop_remainder: drop a last partial batch instead of masking it.
    """

    num_examples: int
    batch_size: int
    steps_per_epoch: int
    shuffle: bool
    drop_remainder: bool


def num_batches_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    """⌈n / B⌉, or ⌊n / B⌋ with ``drop_remainder``."""
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def steps_for(num_examples: int, batch_size: int | None, epochs: int, drop_remainder: bool = False) -> int:
    """Total optimizer steps of a run: epochs · ⌈n / B⌉ (B = n for full batch)."""
    batch = num_examples if batch_size is None else min(batch_size, num_examples)
    return epochs * num_batches_per_epoch(num_examples, batch, drop_remainder)


def batch_geometry(num_examples: int, batch_size: int | None, *, shuffle: bool = True,
                   drop_remainder: bool = False, num_devices: int = 1) -> Geometry:
    """Batch size, steps per epoch and shuffling for ``num_examples`` rows.

    An explicit batch size is used as given (the runner checks it splits over the
    devices); full batch (``None``, or more than n) takes all n rows, padded up to a
    multiple of the devices. Full-batch gradient descent is not shuffled: the order
    of the rows cannot change the step.

    >>> batch_geometry(10, 4)
    Geometry(num_examples=10, batch_size=4, steps_per_epoch=3, shuffle=True, drop_remainder=False)
    """
    n = num_examples
    if batch_size is not None and batch_size <= n:
        size = batch_size
    else:
        if drop_remainder and batch_size is not None:
            raise ValueError(f"batch_size: got {batch_size}; allowed: <= {n} (training examples) "
                             "when drop_remainder is set")
        size = -(-n // num_devices) * num_devices
    steps = num_batches_per_epoch(n, size, drop_remainder)
    return Geometry(n, size, steps, shuffle and size < n, drop_remainder)


def epoch_plan(data_key: jax.Array, epoch, num_examples: int, batch_size: int, *,
               shuffle: bool = True, drop_remainder: bool = False) -> tuple[jax.Array, jax.Array]:
    """Row indices and masks of every batch of one epoch: ``(idx, mask)``, each (num_batches, B).

    The order is ``permutation(fold_in(data_key, epoch), n)``: a pure function of the
    key and the epoch. A last partial batch is filled with the epoch's first rows
    (real data, so batch statistics stay sensible) whose mask is 0, unless
    ``drop_remainder`` drops it.

    >>> idx, mask = epoch_plan(jax.random.key(0), 0, 5, 2, shuffle=False)
    >>> idx.tolist(), mask.tolist()
    ([[0, 1], [2, 3], [4, 0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    """
    num_batches = num_batches_per_epoch(num_examples, batch_size, drop_remainder)
    if shuffle:
        order = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
    else:
        order = jnp.arange(num_examples)
    order = order.astype(jnp.int32)
    total = num_batches * batch_size
    if total <= num_examples:
        idx = order[:total]
        mask = jnp.ones((total,), jnp.float32)
    else:
        pad = total - num_examples
        idx = jnp.concatenate([order, order[:pad]])
        mask = jnp.concatenate([jnp.ones((num_examples,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    return idx.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def reduce_step_sums(sums: dict, axis: int | None = None) -> dict:
    """Sums of a stack of steps: summed, except ``first_*`` keys, which take the minimum
    (over ``axis``, the steps' axis; None: every axis). ``step_loss`` (each step's mean
    loss, with the steps' axis last) is added alongside."""
    reduced = {key: (jnp.min if key in FIRST_KEYS else jnp.sum)(value, axis=axis) for key, value in sums.items()}
    step_loss = sums["loss"] / jnp.maximum(sums["count"], 1.0)
    # The steps' axis goes last, so a leading device or member axis stays leading.
    reduced[STEP_LOSS] = step_loss if axis is None else jnp.moveaxis(step_loss, axis, -1)
    return reduced


def add_sums(total: dict, new: dict) -> dict:
    """Combine the sums of consecutive calls (sum, or minimum for ``first_*`` keys)."""
    return {key: (jnp.minimum if key in FIRST_KEYS else jnp.add)(total[key], value) for key, value in new.items()}


def carry_run_keys(previous: dict, last: dict) -> dict:
    """The sums of a multi-epoch call: the last epoch's, with the non-finite counters
    (``RUN_KEYS``) accumulated over every epoch of the call."""
    keys = [key for key in RUN_KEYS if key in last]
    return {**last, **add_sums({k: previous[k] for k in keys}, {k: last[k] for k in keys})}


def epoch_functions(train_step: Callable, geometry: Geometry, traces: dict[str, int], *,
                    part: Callable | None = None, constrain: Callable | None = None):
    """The three uncompiled pieces every runner (and the population engine) compiles.

    Returns ``(plan, indexed_step, scan_epochs)``:
      plan(data_key, epoch) -> (idx, mask) of the whole epoch;
      indexed_step(state, xs, ys, idx_row, mask_row) -> (state, sums): one step on those rows;
      scan_epochs(state, xs, ys, data_key, first_epoch, num_epochs) -> (state, sums of the last
        epoch): ``num_epochs`` epochs in one call, each a ``lax.scan`` over its batches, inside a
        ``fori_loop`` whose trip count is traced (so any number of epochs reuses one compile).
    ``part`` picks this device's rows of a global batch (pmap); ``constrain`` annotates the
    batch's sharding (sharded jit).
    """
    g = geometry

    def plan(data_key, epoch):
        return epoch_plan(data_key, epoch, g.num_examples, g.batch_size,
                          shuffle=g.shuffle, drop_remainder=g.drop_remainder)

    def indexed_step(state, xs, ys, idx, mask):
        traces["train_step"] = traces.get("train_step", 0) + 1
        if part is not None:
            idx, mask = part(idx, mask)
        batch = {"x": xs[idx], "y": ys[idx], "mask": mask}
        return train_step(state, constrain(batch) if constrain is not None else batch)

    def scan_epoch(state, xs, ys, data_key, epoch):
        idx, mask = plan(data_key, epoch)
        state, sums = jax.lax.scan(lambda s, row: indexed_step(s, xs, ys, *row), state, (idx, mask))
        return state, reduce_step_sums(sums, axis=0)

    def scan_epochs(state, xs, ys, data_key, first_epoch, num_epochs):
        traces["epoch"] = traces.get("epoch", 0) + 1
        if num_epochs is None:  # exactly one epoch: no loop around it
            return scan_epoch(state, xs, ys, data_key, first_epoch)
        # The loop carries the last epoch's sums: start from zeros of their shape, found
        # by abstract evaluation of the raw step (compiles nothing, counts no trace).
        idx, mask = plan(data_key, first_epoch)
        rows, row_mask = (idx[0], mask[0]) if part is None else part(idx[0], mask[0])
        shapes = jax.eval_shape(lambda s: train_step(s, {"x": xs[rows], "y": ys[rows], "mask": row_mask})[1],
                                state)
        shapes[STEP_LOSS] = jax.ShapeDtypeStruct((g.steps_per_epoch,), jnp.float32)
        zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        def body(epoch, carry):
            state, sums = scan_epoch(carry[0], xs, ys, data_key, epoch)
            return state, carry_run_keys(carry[1], sums)

        return jax.lax.fori_loop(first_epoch, first_epoch + num_epochs, body, (state, zeros))

    return plan, indexed_step, scan_epochs


__all__ = ["FIRST_KEYS", "RUN_KEYS", "STEP_LOSS", "Geometry", "num_batches_per_epoch", "steps_for",
           "batch_geometry", "epoch_plan", "reduce_step_sums", "add_sums", "carry_run_keys", "epoch_functions"]
