"""Training: one state pytree, a pure train step, and the loop that drives it.

The step is a pure function ``train_step(state, batch) -> (state, sums)``; it is
compiled (and, in ``jaxnets.parallel``, distributed) where it is called, never
inside. ``fit`` runs epochs either as a Python loop over compiled steps or as one
compiled ``lax.scan`` per epoch (the default: small models are dominated by
per-step dispatch, and the scan removes it). Both loops run the same step on the
same batches and give the same parameters.

Randomness is a pure function of the seed: ``run_keys(seed)`` gives the keys for
initialization, dropout and data order; the dropout key of step t is
``fold_in(dropout_key, t)`` and the data order of epoch e is a permutation drawn
from ``fold_in(data_key, e)``. A run is therefore reproducible from
(seed, step), which is what exact resume needs.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.data import Dataset
from jaxnets.objective import Objective, objective_for, summarize
from jaxnets.parallel import MODES, Geometry, make_runner
from jaxnets.tree import count_params

LOOPS = ("scan", "python")
MONITORS = ("val_loss", "val_accuracy", "val_rmse", "val_r2")


class TrainState(flax.struct.PyTreeNode):
    """Everything a run carries from one step to the next, as one pytree.

    Attributes:
      step: number of optimizer updates applied so far (int32 scalar).
      params: the model's parameters (the ``"params"`` collection).
      opt_state: the Optax state (with traced hyperparameters, see ``jaxnets.optim``).
      model_state: the model's other collections, e.g. ``{"batch_stats": ...}``;
        an empty dict for models without any.
      dropout_key: base key; the key of step t is ``fold_in(dropout_key, t)``.
      apply_fn, tx: the model's pure ``apply`` and the optimizer (static, not traced).
    """

    step: jnp.ndarray
    params: Any
    opt_state: Any
    model_state: Any
    dropout_key: jnp.ndarray
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def apply_gradients(self, grads, model_state=None) -> "TrainState":
        """θ ← θ + tx.update(∇θ), step ← step + 1 (and the new model state, if any)."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            opt_state=opt_state,
            model_state=self.model_state if model_state is None else model_state,
        )

    def variables(self) -> dict:
        """The Flax variables dict ``{"params": ..., **model_state}`` for ``apply``."""
        return {"params": self.params, **self.model_state}


class RunKeys(NamedTuple):
    init: jax.Array
    dropout: jax.Array
    data: jax.Array


def run_keys(seed: int) -> RunKeys:
    """The three independent keys of a run, derived deterministically from its seed."""
    return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def create_state(model: nn.Module, tx: optax.GradientTransformation, sample_x, seed: int = 0) -> TrainState:
    """Initialize parameters, optimizer state and keys for ``model`` on inputs like ``sample_x``.

    Args:
      model: a Flax Linen module with ``__call__(x, train=False)``.
      tx: an Optax gradient transformation (e.g. from ``jaxnets.optim.create``).
      sample_x: an array of shape (batch, *feature_shape); only its shape and dtype matter.
      seed: the run's seed.

    >>> import jax.numpy as jnp, optax
    >>> from jaxnets.models import MLP
    >>> state = create_state(MLP(hidden=(3,), output_dim=1), optax.sgd(0.1), jnp.zeros((1, 2)))
    >>> int(state.step), sorted(state.params)
    (0, ['hidden_0', 'output'])
    """
    keys = run_keys(seed)
    sample = jnp.asarray(sample_x[:1])

    def initialize(init_key):
        params_key, dropout_key = jax.random.split(init_key)
        variables = dict(model.init({"params": params_key, "dropout": dropout_key}, sample, train=False))
        params = variables.pop("params")
        return params, tx.init(params), variables

    # Compiled: one XLA program initializes faster than Flax's init run op by op.
    params, opt_state, variables = jax.jit(initialize)(keys.init)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        model_state=variables,
        dropout_key=keys.dropout,
        apply_fn=model.apply,
        tx=tx,
    )


def _forward(state: TrainState, params, x, *, train: bool, dropout_key=None):
    """Run the model; in training also return its updated mutable collections."""
    variables = {"params": params, **state.model_state}
    rngs = {"dropout": dropout_key} if dropout_key is not None else None
    if train and state.model_state:
        outputs, new_model_state = state.apply_fn(
            variables, x, train=True, rngs=rngs, mutable=list(state.model_state))
        return outputs, dict(new_model_state)
    return state.apply_fn(variables, x, train=train, rngs=rngs), state.model_state


NONFINITE_POLICIES = ("halt", "skip", "ignore")
#: Sums keys reduced by minimum (not by sum) over steps and epochs.
FIRST_KEYS = ("first_nonfinite_step",)
#: Sums keys accumulated over every epoch of a multi-epoch call (the rest describe the last epoch).
RUN_KEYS = ("nonfinite_loss", "nonfinite_gradients", "nonfinite_updates", "first_nonfinite_step")
_NO_STEP = jnp.iinfo(jnp.int32).max


def _tree_finite(tree) -> jnp.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.bool_(True)
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]).all()


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
        count = jnp.sum(batch["mask"].astype(jnp.float32))
        if axis_name is None and not sharded_batch:
            count = jnp.maximum(count, 1.0)

            def loss_fn(params):
                outputs, new_model_state = _forward(state, params, batch["x"], train=True, dropout_key=dropout_key)
                sums = objective.sums(outputs, batch["y"], batch["mask"])
                return sums["loss"] / count + objective.penalty(params), (sums, new_model_state)

            grads, (sums, new_model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
        else:
            # Data parallel: each replica differentiates the SUM of its examples' losses;
            # one all-reduce then adds the gradients, the metric sums, the example counts
            # and the batch statistics of every replica together, and the mean is taken
            # after it. (Dividing by the global count first would need a second
            # all-reduce before the forward pass: a synchronization point in every step.)
            def data_loss(params):
                outputs, new_model_state = _forward(state, params, batch["x"], train=True, dropout_key=dropout_key)
                sums = objective.sums(outputs, batch["y"], batch["mask"])
                return sums["loss"], (sums, new_model_state)

            loss_grads, (sums, new_model_state) = jax.grad(data_loss, has_aux=True)(state.params)
            if axis_name is not None:
                loss_grads, sums, count, model_state_sum = jax.lax.psum(
                    (loss_grads, sums, count, new_model_state), axis_name)
                new_model_state = jax.tree_util.tree_map(lambda v: v / jax.lax.psum(1, axis_name), model_state_sum)
            # (sharded_batch: the compiler inserts the same all-reduce at this point.)
            count = jnp.maximum(count, 1.0)
            # The penalty is a function of the (replicated) parameters: every replica has it whole.
            grads = jax.tree_util.tree_map(lambda g, p: g / count + p, loss_grads,
                                           jax.grad(objective.penalty)(state.params))
        if nonfinite == "ignore":
            return state.apply_gradients(grads, new_model_state), sums

        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        loss_ok = jnp.isfinite(sums["loss"])
        grads_ok = _tree_finite(grads)
        updates_ok = _tree_finite(updates)
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


def reduce_step_sums(sums: dict, axis: int | None = None) -> dict:
    """Sums of a stack of steps: summed, except ``first_*`` keys, which take the minimum
    (over ``axis``, the steps' axis; None: every axis)."""
    return {key: (jnp.min if key in FIRST_KEYS else jnp.sum)(value, axis=axis) for key, value in sums.items()}


def add_sums(total: dict, new: dict) -> dict:
    """Combine the sums of consecutive calls (sum, or minimum for ``first_*`` keys)."""
    return {key: (jnp.minimum if key in FIRST_KEYS else jnp.add)(total[key], value) for key, value in new.items()}


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss, gradient or update under ``nonfinite="halt"``."""

    def __init__(self, step: int, quantity: str, epoch: int):
        self.step, self.quantity, self.epoch = step, quantity, epoch
        super().__init__(f"non-finite {quantity} at step {step} (epoch {epoch}); training halted "
                         "(nonfinite='halt'; 'skip' would skip such steps)")


class Preempted(RuntimeError):
    """A SIGTERM/SIGINT stopped ``fit`` at a step boundary, after saving a checkpoint."""

    def __init__(self, step: int, checkpoint: str | None, history: list[dict]):
        self.step, self.checkpoint, self.history = step, checkpoint, history
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint directory was given"
        super().__init__(f"preempted at step {step}; {where}")


def make_eval_step(objective: Objective) -> Callable:
    """The pure step ``(state, batch) -> sums`` in evaluation mode (no dropout, running BN stats)."""

    def eval_step(state: TrainState, batch: dict):
        outputs, _ = _forward(state, state.params, batch["x"], train=False)
        return objective.sums(outputs, batch["y"], batch["mask"])

    return eval_step


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


def num_batches_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    """⌈n / B⌉, or ⌊n / B⌋ with ``drop_remainder``."""
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (the optimizer itself is passed to ``fit`` separately).

    Attributes:
      epochs: passes over the training set.
      batch_size: examples per step. ``None`` means full-batch gradient descent,
        1 means single-sample stochastic gradient descent, anything in between
        minibatch SGD (the three the slides compare).
      loss: a name from ``jaxnets.losses.LOSSES``; None picks the task's default
        (MSE, binary or softmax cross-entropy).
      head: the model's output function ("logits" unless the model applies a
        sigmoid/softmax itself); accuracy thresholds follow it.
      l1, l2: penalties l1·Σ|w| + l2·½Σw² on weights (not biases).
      seed: determines initialization, dropout and data order.
      shuffle: reshuffle the training set every epoch.
      drop_remainder: drop a last partial batch instead of padding and masking it.
      loop: "scan" compiles a whole epoch into one call; "python" dispatches one
        compiled step per batch. Same results.
      parallel: "none" (one device), "pmap" (replicated state, batch split over
        local devices) or "sharded" (jit over a device mesh); see ``jaxnets.parallel``.
        The batch size must be a multiple of the device count.
      nonfinite: what a non-finite loss, gradient or update does: "halt" (skip it,
        then raise ``NonFiniteError`` naming the step), "skip" (skip it and count it
        in ``nonfinite_steps``) or "ignore" (apply it).
      eval_batch_size: batch size for evaluation (padded and masked, never dropped).
      eval_train: evaluate the whole training set at each epoch's end
        (``train_loss``/``train_accuracy``); the running mean over the epoch's
        steps is reported as ``epoch_loss`` either way.
      eval_every: evaluate every k epochs (and always after the last).
      early_stopping_patience: stop after this many evaluations without an
        improvement of ``monitor``; None disables early stopping.
      monitor: the validation metric early stopping watches.
      restore_best: with early stopping, return the parameters of the best epoch.
      progress: show a progress bar.
    """

    epochs: int = 10
    batch_size: int | None = 128
    loss: str | None = None
    head: str = "logits"
    l1: float = 0.0
    l2: float = 0.0
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = False
    loop: str = "scan"
    parallel: str = "none"
    nonfinite: str = "halt"
    eval_batch_size: int = 1024
    eval_train: bool = True
    eval_every: int = 1
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    restore_best: bool = True
    progress: bool = False

    def __post_init__(self):
        _check_int("epochs", self.epochs, minimum=1)
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        _check_int("eval_every", self.eval_every, minimum=1)
        if self.early_stopping_patience is not None:
            _check_int("early_stopping_patience", self.early_stopping_patience, minimum=1)
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite: got {self.nonfinite!r}; allowed: {', '.join(NONFINITE_POLICIES)}")
        if self.parallel not in MODES:
            raise ValueError(f"parallel: got {self.parallel!r}; allowed: {', '.join(MODES)}")
        if self.loop not in LOOPS:
            raise ValueError(f"loop: got {self.loop!r}; allowed: {', '.join(LOOPS)}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor: got {self.monitor!r}; allowed: {', '.join(MONITORS)}")
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: got {value!r}; allowed: a number >= 0")


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: got {value!r}; allowed: an integer >= {minimum}")


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
      state: the final (or, with early stopping and ``restore_best``, the best) state.
      history: one dict per evaluated epoch (epoch, step, epoch_loss, train_*, val_*, test_*, time_s).
      best_epoch: the epoch whose state is returned.
      traces: how many times each compiled function was traced (1 each: no recompiles).
      wall_time_s: total time of ``fit``; train_time_s: time inside training calls.
      steps_per_s: optimizer steps per second, excluding the first compiled call
        (which includes compilation) when there is more than one call.
      num_params: number of trainable scalars.
    """

    state: TrainState
    history: list[dict]
    best_epoch: int
    traces: dict[str, int]
    wall_time_s: float
    train_time_s: float
    steps_per_s: float
    num_params: int

    @property
    def final(self) -> dict:
        """The history entry of the returned state's epoch."""
        for entry in self.history:
            if entry["epoch"] == self.best_epoch:
                return entry
        return self.history[-1]


class Evaluator:
    """Evaluates a state on whole splits with one compiled, fixed-shape batch function.

    With ``members=True`` the state is a population (a leading member axis, see
    ``jaxnets.population``): the step is vmapped over it and the call returns one
    metrics dict per member.
    """

    def __init__(self, objective: Objective, batch_size: int, traces: dict[str, int], *, members: bool = False):
        self.objective = objective
        self.batch_size = batch_size
        self.members = members
        eval_step = make_eval_step(objective)
        if members:
            eval_step = jax.vmap(eval_step, in_axes=(0, None))

        def counted(state, batch):
            traces["eval_step"] = traces.get("eval_step", 0) + 1
            return eval_step(state, batch)

        self._step = jax.jit(counted)

    def sums(self, state: TrainState, x, y) -> dict[str, np.ndarray]:
        """Masked sums over the whole split (float64 on the host; one per member if members)."""
        n = int(x.shape[0])
        batch = self.batch_size
        totals: dict[str, np.ndarray] = {}
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            rows = np.arange(start, start + batch)
            mask = (rows < stop).astype(np.float32)
            rows = np.where(rows < stop, rows, start)  # pad with a real row, masked out
            sums = self._step(state, {"x": x[rows], "y": y[rows], "mask": mask})
            for key, value in jax.device_get(sums).items():
                totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
        return totals

    def __call__(self, state: TrainState, x, y, *, prefix: str = ""):
        totals = self.sums(state, x, y)
        ss_total = None
        num_outputs = 1
        if not self.objective.is_classification:
            y_host = np.asarray(y, dtype=np.float64)
            ss_total = float(np.sum((y_host - y_host.mean(axis=0)) ** 2))
            num_outputs = int(np.prod(y_host.shape[1:])) or 1

        def finish(one: dict) -> dict[str, float]:
            return summarize(one, prefix=prefix, target_ss_total=ss_total, num_outputs=num_outputs)

        if not self.members:
            return finish(totals)
        size = len(next(iter(totals.values())))
        return [finish({key: value[i] for key, value in totals.items()}) for i in range(size)]


def evaluate(state: TrainState, x, y, objective: Objective, *, batch_size: int = 1024,
             prefix: str = "") -> dict[str, float]:
    """Mean loss and metrics of ``state`` on (x, y) in evaluation mode.

    Every example counts exactly once: the last batch is padded and masked, never dropped.
    Returns ``{"loss", "accuracy"}`` for classification or ``{"loss", "rmse", "r2"}``
    for regression, each key prefixed with ``prefix``.
    """
    batch = max(1, min(batch_size, int(x.shape[0])))
    return Evaluator(objective, batch, {})(state, x, y, prefix=prefix)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often ``fit`` saves its whole state (see ``jaxnets.checkpoint``).

    Attributes:
      directory: checkpoints go to ``directory/step_XXXXXXXX``.
      every_epochs: save after every k epochs (checkpoints fall on the boundaries of
        ``fit``'s compiled calls; a final one is always written).
      keep: how many complete checkpoints to keep.
      resume: start from the newest intact checkpoint in ``directory`` if there is one.
    """

    directory: str
    every_epochs: int = 1
    keep: int = 3
    resume: bool = False

    def __post_init__(self):
        if not isinstance(self.directory, (str, os.PathLike)) or not str(self.directory):
            raise ValueError(f"directory: got {self.directory!r}; allowed: a path")
        _check_int("every_epochs", self.every_epochs, minimum=1)
        _check_int("keep", self.keep, minimum=1)


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag that the loop reads at the next call boundary."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._previous = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # only sets a flag: safe at any moment
        self.requested = True

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def fit(model: nn.Module, data: Dataset, tx: optax.GradientTransformation,
        config: TrainConfig = TrainConfig(), *, state: TrainState | None = None,
        checkpoint: CheckpointConfig | None = None,
        on_epoch_end: Callable[[list[dict]], None] | None = None) -> FitResult:
    """Train ``model`` on ``data`` with optimizer ``tx``.

    Each epoch draws a fresh order of the training rows, runs ⌈n/B⌉ steps (the
    last batch padded and masked unless ``drop_remainder``), then evaluates on
    the training, validation and test splits in evaluation mode. The step is
    compiled once and reused for every epoch.

    With ``checkpoint``, the whole state and the history are saved every
    ``every_epochs`` epochs; ``resume=True`` continues from the newest intact
    checkpoint and ends bitwise identical to an uninterrupted run. A SIGTERM or
    SIGINT then stops training at the next call boundary, saves a checkpoint and
    raises ``Preempted``. A non-finite loss/gradient/update raises
    ``NonFiniteError`` under ``nonfinite="halt"`` before any checkpoint holds it.

    Args:
      model: a Flax Linen module (see ``jaxnets.models``).
      data: a ``jaxnets.data.Dataset``.
      tx: an Optax transformation, e.g. ``jaxnets.optim.create("adam", 1e-3)``.
      config: a ``TrainConfig``.
      state: start from this state instead of a fresh initialization.
      checkpoint: a ``CheckpointConfig``, or None for no checkpoints.
      on_epoch_end: called with the whole history (restored entries included) after
        each evaluation.

    Returns:
      A ``FitResult`` with the final state and the per-epoch history.

    >>> import jaxnets as jn
    >>> data = jn.data.load("xor")
    >>> model = jn.models.MLP(hidden=(8,), output_dim=data.output_dim)
    >>> result = jn.fit(model, data, jn.optim.create("adam", 0.05), jn.TrainConfig(epochs=200, batch_size=None, eval_every=200))
    >>> result.final["train_accuracy"]
    1.0
    """
    started = time.perf_counter()
    objective = objective_for(data.task, loss=config.loss, head=config.head, l1=config.l1, l2=config.l2)
    x_train, y_train = check_arrays(data.x_train, data.y_train, "train")
    splits = [("train_", x_train, y_train)] if config.eval_train else []
    if data.num_val:
        splits.append(("val_", *check_arrays(data.x_val, data.y_val, "val")))
    if data.num_test:
        splits.append(("test_", *check_arrays(data.x_test, data.y_test, "test")))
    n = int(x_train.shape[0])
    devices = 1 if config.parallel == "none" else (
        jax.local_device_count() if config.parallel == "pmap" else jax.device_count())
    geometry = batch_geometry(n, config, devices)
    steps_per_epoch = geometry.steps_per_epoch

    if state is None:
        state = create_state(model, tx, x_train, config.seed)
    history: list[dict] = []
    manager = None
    if checkpoint is not None:
        from jaxnets.checkpoint import CheckpointManager

        manager = CheckpointManager(checkpoint.directory, keep=checkpoint.keep)
        if checkpoint.resume and manager.latest_step() is not None:
            restored = manager.restore_latest_valid(state)
            for newer in manager.steps():
                if newer > restored.step:  # corrupt ones the run is about to redo
                    manager.delete(newer)
            state, history = restored.state, list(restored.metadata.get("history", []))
            _check_resumable(restored.metadata, config)
    data_key = run_keys(config.seed).data
    traces: dict[str, int] = {}
    runner = make_runner(config.parallel,
                         lambda axis: make_train_step(objective, axis_name=axis, nonfinite=config.nonfinite,
                                                      sharded_batch=config.parallel == "sharded"),
                         geometry, loop=config.loop, traces=traces)
    first_epoch = int(state.step) // steps_per_epoch
    xs, ys = runner.put_data(x_train), runner.put_data(y_train)
    state = runner.put_state(state)
    evaluator = Evaluator(objective, max(1, min(config.eval_batch_size, _largest_split(data))), traces)

    best = (None, -1, None)  # (score, epoch, state)
    bad_evals = 0
    skipped_steps = int(history[-1].get("nonfinite_steps", 0)) if history else 0
    train_time, timed_steps, timed_time = 0.0, 0, 0.0
    # Epochs between evaluations run in one compiled call (scan loop): the chunk is eval_every.
    chunk = config.eval_every
    progress = None
    if config.progress:
        from tqdm.auto import tqdm
        progress = tqdm(total=config.epochs, initial=first_epoch, desc="train", unit="epoch")
    stop = _StopRequest(enabled=manager is not None)
    epoch = first_epoch
    try:
        while epoch < config.epochs:
            count = min(chunk, config.epochs - epoch)
            tick = time.perf_counter()
            state, sums = runner.run_epochs(state, xs, ys, data_key, epoch, None if chunk == 1 else count)
            elapsed = time.perf_counter() - tick
            train_time += elapsed
            if epoch > first_epoch:  # the first call includes compilation
                timed_steps += count * steps_per_epoch
                timed_time += elapsed
            epoch += count
            if progress is not None:
                progress.update(count)
            host_state = runner.get_state(state)
            bad = int(sum(sums.get(key, 0.0) for key in RUN_KEYS[:3]))
            if bad and config.nonfinite == "halt":
                quantity = next(k for k in RUN_KEYS[:3] if sums[k]).removeprefix("nonfinite_")
                first_bad = int(sums["first_nonfinite_step"])
                raise NonFiniteError(first_bad, quantity, first_bad // steps_per_epoch)
            skipped_steps += bad
            entry = {"epoch": epoch - 1, "step": int(host_state.step),
                     "epoch_loss": float(sums["loss"]) / max(float(sums["count"]), 1.0)}
            if config.nonfinite == "skip":
                entry["nonfinite_steps"] = skipped_steps
            for prefix, x, y in splits:
                entry.update(evaluator(host_state, x, y, prefix=prefix))
            entry["time_s"] = time.perf_counter() - started
            history.append(entry)
            if progress is not None:
                progress.set_postfix({k: round(v, 4) for k, v in entry.items() if k.endswith(("loss", "accuracy"))})
            stopping = stop.requested  # read once: a signal from now on is seen at the next boundary
            if manager is not None and (epoch % checkpoint.every_epochs == 0 or epoch == config.epochs
                                        or stopping):
                manager.save(host_state, overwrite=True,
                             metadata={"config": _jsonable_config(config), "epoch": epoch - 1,
                                       "step": int(host_state.step), "history": history})
            if on_epoch_end is not None:
                on_epoch_end(history)
            if stopping:
                saved = str(manager.step_dir(int(host_state.step))) if manager is not None else None
                raise Preempted(int(host_state.step), saved, history)
            if config.early_stopping_patience is not None:
                if config.monitor not in entry:
                    raise ValueError(f"monitor: got {config.monitor!r}; allowed: a metric of this run "
                                     f"({', '.join(k for k in entry if k.startswith('val_')) or 'none'}); "
                                     "early stopping needs a validation split")
                score = entry[config.monitor] * (1.0 if config.monitor in ("val_loss", "val_rmse") else -1.0)
                if best[0] is None or score < best[0]:
                    best = (score, entry["epoch"],
                            jax.tree_util.tree_map(jnp.copy, host_state) if config.restore_best else None)
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if bad_evals >= config.early_stopping_patience:
                        break
    finally:
        stop.close()
        if progress is not None:
            progress.close()
    if timed_time == 0.0:  # a single call: compile time is included, say so by measuring it all
        timed_steps, timed_time = (epoch - first_epoch) * steps_per_epoch, train_time
    state = runner.get_state(state)
    best_epoch = history[-1]["epoch"] if history else first_epoch - 1
    if config.early_stopping_patience is not None and config.restore_best and best[2] is not None:
        state, best_epoch = best[2], best[1]
    return FitResult(
        state=state,
        history=history,
        best_epoch=best_epoch,
        traces=traces,
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time,
        steps_per_s=timed_steps / timed_time if timed_time > 0 else float("nan"),
        num_params=count_params(state.params),
    )


def _jsonable_config(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


#: TrainConfig fields that may differ between a run and its resumption (they do not
#: change the arithmetic of the steps already taken).
_RESUMABLE_CHANGES = {"epochs", "progress", "eval_every", "eval_batch_size", "eval_train",
                      "early_stopping_patience", "restore_best", "monitor"}


def _check_resumable(metadata: dict, config: TrainConfig) -> None:
    """A resumed run must train exactly as the interrupted one did."""
    saved = metadata.get("config", {})
    for key, value in _jsonable_config(config).items():
        if key in saved and key not in _RESUMABLE_CHANGES and saved[key] != value:
            raise ValueError(f"{key}: got {value!r}; allowed: {saved[key]!r} (the value of the checkpointed "
                             "run being resumed)")


def batch_geometry(num_examples: int, config: TrainConfig, num_devices: int = 1) -> Geometry:
    """Batch size, steps per epoch and shuffling for ``num_examples`` rows under ``config``.

    An explicit batch size is used as given (the runner checks it splits over the
    devices); full batch (``None``, or more than n) takes all n rows, padded up to a
    multiple of the devices. Full-batch gradient descent is not shuffled: the order
    of the rows cannot change the step.
    """
    n = num_examples
    if config.batch_size is not None and config.batch_size <= n:
        batch_size = config.batch_size
    else:
        if config.drop_remainder and config.batch_size is not None:
            raise ValueError(f"batch_size: got {config.batch_size}; allowed: <= {n} (training examples) "
                             "when drop_remainder is set")
        batch_size = -(-n // num_devices) * num_devices
    shuffle = config.shuffle and batch_size < n
    steps = num_batches_per_epoch(n, batch_size, config.drop_remainder)
    return Geometry(n, batch_size, steps, shuffle, config.drop_remainder)


def _largest_split(data: Dataset) -> int:
    return max(data.num_train, data.num_val, data.num_test)


def check_arrays(x, y, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one split's arrays before anything compiles: same length, numeric, finite x.

    Raises a one-line ValueError naming the split and what is wrong.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"x_{split}: got shape {x.shape}; allowed: (examples, *features) with at least 2 dims")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y_{split}: got {y.shape[0]} rows; allowed: {x.shape[0]} (as many as x_{split})")
    if x.shape[0] == 0:
        raise ValueError(f"x_{split}: got 0 examples; allowed: at least 1")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x_{split}: got dtype {x.dtype}; allowed: a floating dtype")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x_{split}: got non-finite values; allowed: finite numbers only")
    return x, y


def steps_for(num_examples: int, batch_size: int | None, epochs: int, drop_remainder: bool = False) -> int:
    """Total optimizer steps of a run: epochs · ⌈n / B⌉ (B = n for full batch)."""
    batch = num_examples if batch_size is None else min(batch_size, num_examples)
    return epochs * num_batches_per_epoch(num_examples, batch, drop_remainder)


__all__ = [
    "TrainState", "TrainConfig", "CheckpointConfig", "FitResult", "NonFiniteError", "Preempted",
    "NONFINITE_POLICIES", "RunKeys", "run_keys", "create_state",
    "make_train_step", "make_eval_step", "epoch_plan", "num_batches_per_epoch", "batch_geometry", "fit",
    "evaluate", "Evaluator", "check_arrays", "steps_for",
]
