"""Populations: many copies of one model trained in one compiled program.

A population member differs from the others only in numbers: its seed (so its
initialization, data order and dropout) and its optimizer's float
hyperparameters (learning rate, momentum, ...). Members share the model, the
optimizer's structure, the data and the batch layout, so the whole population is
one state pytree with a leading member axis, and one epoch of all of them is

    jax.vmap(scan_epochs, in_axes=(0, None, None, 0, None, None))(states, x, y, data_keys, epoch, None)

compiled once. Because learning rates live in the optimizer state
(``optax.inject_hyperparams``, see ``jaxnets.optim``), changing them never
recompiles. This is the engine behind learning-rate sweeps and seed repeats.

Each member computes exactly what ``fit`` with the same seed and learning rate
computes; only the batching of the arithmetic differs (vmap turns a member's
matrix products into batched ones), so results agree to float32 rounding rather
than bitwise: the tests bound the difference.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets import optim
from jaxnets.config import TrainConfig
from jaxnets.data import Dataset
from jaxnets.epochs import epoch_functions
from jaxnets.evaluation import Evaluator
from jaxnets.state import TrainState, create_state, run_keys
from jaxnets.steps import make_train_step
from jaxnets.train import prepare
from jaxnets.tree import count_params


@dataclasses.dataclass
class PopulationResult:
    """What ``fit_population`` returns.

    Attributes:
      state: the stacked final states (every leaf has a leading member axis P).
      members: one dict per member: its ``seed`` and hyperparameter values.
      history: one dict per evaluated epoch; each metric is a list of P floats
        (NaN where a member diverged).
      traces: how many times each compiled function was traced.
      wall_time_s, train_time_s: total and training time.
      num_params: parameters of one member.
    """

    state: TrainState
    members: list[dict]
    history: list[dict]
    traces: dict[str, int]
    wall_time_s: float
    train_time_s: float
    num_params: int

    def member_state(self, index: int) -> TrainState:
        """The state of one member (a plain TrainState, as ``fit`` returns)."""
        return jax.tree_util.tree_map(lambda leaf: leaf[index], self.state)

    def metric(self, name: str) -> np.ndarray:
        """A (epochs, P) array of one metric over the evaluated epochs."""
        return np.array([entry[name] for entry in self.history], dtype=np.float64)


def create_population(model: nn.Module, tx: optax.GradientTransformation, sample_x, seeds: Sequence[int],
                      hyperparams: Mapping[str, Sequence[float]] | None = None) -> TrainState:
    """Stacked states, one per seed, with per-member optimizer hyperparameters.

    Args:
      model, tx, sample_x: as for ``jaxnets.create_state``; ``tx`` must come from
        ``jaxnets.optim.create`` so its hyperparameters are in its state.
      seeds: one seed per member (P of them).
      hyperparams: name -> P values, e.g. ``{"learning_rate": [1e-3, 1e-2]}``.
    """
    seeds = np.asarray(seeds, dtype=np.int32)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ValueError(f"seeds: got shape {seeds.shape}; allowed: a non-empty 1-D sequence")
    sample = jnp.asarray(np.asarray(sample_x)[:1])
    # Compiled: an eager vmap of Flax's init dispatches every small op P-wide (seconds).
    state = jax.jit(jax.vmap(lambda seed: create_state(model, tx, sample, seed)))(jnp.asarray(seeds))
    for name, values in (hyperparams or {}).items():
        values = np.asarray(values, dtype=np.float32)
        if values.shape != seeds.shape:
            raise ValueError(f"hyperparams[{name!r}]: got {values.size} values; allowed: one per member "
                             f"({seeds.size})")
        state = state.replace(opt_state=optim.set_hyperparam(state.opt_state, name, values))
    return state


def fit_population(model: nn.Module, data: Dataset, tx: optax.GradientTransformation,
                   config: TrainConfig, *, seeds: Sequence[int],
                   hyperparams: Mapping[str, Sequence[float]] | None = None,
                   on_epoch_end: Callable[[dict], None] | None = None) -> PopulationResult:
    """Train P members at once: member i uses ``seeds[i]`` and ``hyperparams[name][i]``.

    ``config`` is shared (epochs, batch size, loss, penalties, evaluation);
    ``config.seed`` is ignored in favour of ``seeds``, and early stopping is not
    applied (every member runs all epochs; pick the best epoch from ``history``).
    Members whose loss diverges keep running with NaN metrics and do not disturb
    the others.

    >>> import jaxnets as jn
    >>> data = jn.data.load("iris")
    >>> model = jn.models.MLP(hidden=(8,), output_dim=data.output_dim)
    >>> result = fit_population(model, data, jn.optim.create("sgd", 0.1), jn.TrainConfig(epochs=3, batch_size=30),
    ...                         seeds=[0, 1, 0], hyperparams={"learning_rate": [0.1, 0.1, 0.3]})
    >>> len(result.history[-1]["test_accuracy"]), result.traces["train_step"]
    (3, 1)
    """
    if config.parallel != "none":
        raise ValueError(f"parallel: got {config.parallel!r}; allowed: 'none' for populations "
                         "(the member axis is the parallel axis)")
    started = time.perf_counter()
    run = prepare(model, data, tx, config)
    seeds = [int(s) for s in seeds]
    state = create_population(model, tx, run.x_train, seeds, hyperparams)
    data_keys = jax.vmap(lambda seed: run_keys(seed).data)(jnp.asarray(seeds, dtype=jnp.int32))

    traces: dict[str, int] = {}
    _, _, scan_epochs = epoch_functions(make_train_step(run.objective), run.geometry, traces)
    run_epoch = jax.jit(jax.vmap(scan_epochs, in_axes=(0, None, None, 0, None, None)), donate_argnums=0)
    xs, ys = jax.device_put(run.x_train), jax.device_put(run.y_train)
    evaluator = Evaluator(run.objective, run.eval_batch_size, traces, members=True)
    splits = run.splits

    members = [{"seed": seed, **{name: float(np.asarray(values)[i]) for name, values in (hyperparams or {}).items()}}
               for i, seed in enumerate(seeds)]
    history: list[dict] = []
    train_time = 0.0
    for epoch in range(config.epochs):
        tick = time.perf_counter()
        state, sums = run_epoch(state, xs, ys, data_keys, jnp.int32(epoch), None)
        sums = jax.device_get(sums)
        train_time += time.perf_counter() - tick
        if (epoch + 1) % config.eval_every and epoch != config.epochs - 1:
            continue
        entry: dict[str, Any] = {"epoch": epoch, "step": int(np.asarray(state.step)[0]),
                                 "epoch_loss": (np.asarray(sums["loss"], np.float64)
                                                / np.maximum(np.asarray(sums["count"], np.float64), 1.0)).tolist()}
        for prefix, x, y in splits:
            per_member = evaluator(state, x, y, prefix=prefix)
            for key in per_member[0]:
                entry[key] = [m[key] for m in per_member]
        entry["time_s"] = time.perf_counter() - started
        history.append(entry)
        if on_epoch_end is not None:
            on_epoch_end(entry)
    return PopulationResult(state=state, members=members, history=history, traces=traces,
                            wall_time_s=time.perf_counter() - started, train_time_s=train_time,
                            num_params=count_params(jax.tree_util.tree_map(lambda leaf: leaf[0], state.params)))


__all__ = ["PopulationResult", "create_population", "fit_population"]
