"""Populations: many copies of one model trained in one compiled program.

A population member differs from the others only in numbers: its seed (so its
initialization, data order and dropout) and its optimizer's float
hyperparameters (learning rate, momentum, ...). Members share the model, the
optimizer's structure, the data and the batch layout, so the whole population is
one state pytree with a leading member axis, and one epoch of all of them is

    jax.vmap(scan_epochs, in_axes=(0, None, None, 0, None, None))(states, x, y, data_keys, epoch, None)

compiled once. With several devices the member axis is split over them
(``jaxnets.parallel.MemberPlacement``: P members on D devices, ⌈P/D⌉ each, one
``shard_map``-ped program, no communication between devices); ``fit_population``
does this by default. Because learning rates live in the optimizer state
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
from jaxnets.checks import fail
from jaxnets.config import TrainConfig
from jaxnets.data import Dataset
from jaxnets.epochs import epoch_functions
from jaxnets.evaluation import Evaluator
from jaxnets.state import TrainState, create_state, run_keys
from jaxnets.parallel import MemberPlacement
from jaxnets.steps import make_train_step, with_loss_scale
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
      num_devices: how many devices the members were split over.
    """

    state: TrainState
    members: list[dict]
    history: list[dict]
    traces: dict[str, int]
    wall_time_s: float
    train_time_s: float
    num_params: int
    num_devices: int = 1

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
    seeds, values = check_members(seeds, hyperparams)
    sample = jnp.asarray(np.asarray(sample_x)[:1])
    # Compiled: an eager vmap of Flax's init dispatches every small op P-wide (seconds).
    state = jax.jit(jax.vmap(lambda seed: create_state(model, tx, sample, seed)))(jnp.asarray(seeds))
    for name, column in values.items():
        state = state.replace(opt_state=optim.set_hyperparam(state.opt_state, name, column))
    return state


def check_members(seeds: Sequence[int], hyperparams: Mapping[str, Sequence[float]] | None
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Seeds as int32 (P,) and each hyperparameter as float32 (P,), or a one-line ValueError."""
    seeds = np.asarray(seeds, dtype=np.int32)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ValueError(f"seeds: got shape {seeds.shape}; allowed: a non-empty 1-D sequence")
    values = {}
    for name, column in (hyperparams or {}).items():
        values[name] = np.asarray(column, dtype=np.float32)
        if values[name].shape != seeds.shape:
            raise ValueError(f"hyperparams[{name!r}]: got {values[name].size} values; allowed: one per member "
                             f"({seeds.size})")
    return seeds, values


def population_devices(devices: str | int | Sequence[jax.Device], num_members: int) -> list[jax.Device]:
    """The devices a population of ``num_members`` is split over.

    ``"auto"`` takes every local device, but no more than there are members (a
    single member stays on one device); an int ``n`` the first n local devices; a
    sequence those devices.

    >>> len(population_devices(1, 8)), len(population_devices("auto", 1))
    (1, 1)
    """
    local = jax.local_devices()
    if isinstance(devices, str) and devices == "auto":
        return local[:max(1, min(num_members, len(local)))]
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise fail("devices", devices, f"'auto', an int from 1 to {len(local)} (the local devices) or a "
                       "list of jax devices")
        return local[:int(devices)]
    if isinstance(devices, Sequence) and not isinstance(devices, str) and devices \
            and all(isinstance(d, jax.Device) for d in devices):
        return list(devices)
    raise fail("devices", devices, f"'auto', an int from 1 to {len(local)} (the local devices) or a list "
               "of jax devices")


def _padded_members(seeds: np.ndarray, values: dict[str, np.ndarray], padded: int):
    """Seeds and hyperparameters with copies of the last member appended up to ``padded``."""
    def pad(column):
        return np.concatenate([column, np.repeat(column[-1:], padded - column.size)])
    return pad(seeds), {name: pad(column) for name, column in values.items()}


def fit_population(model: nn.Module, data: Dataset, tx: optax.GradientTransformation,
                   config: TrainConfig, *, seeds: Sequence[int],
                   hyperparams: Mapping[str, Sequence[float]] | None = None,
                   devices: str | int | Sequence[jax.Device] = "auto",
                   on_epoch_end: Callable[[dict], None] | None = None) -> PopulationResult:
    """Train P members at once: member i uses ``seeds[i]`` and ``hyperparams[name][i]``.

    ``config`` is shared (epochs, batch size, loss, penalties, evaluation);
    ``config.seed`` is ignored in favour of ``seeds``, and early stopping is not
    applied (every member runs all epochs; pick the best epoch from ``history``).
    Members whose loss diverges keep running with NaN metrics and do not disturb
    the others.

    The members are split over ``devices`` (default ``"auto"``: every local device,
    at most one per member; see ``population_devices``): P members on D devices
    train ⌈P/D⌉ each in one compiled program (``jaxnets.parallel.MemberPlacement``).
    When D does not divide P, copies of the last member fill the gap; they are
    trained and then dropped, never returned. Each member's numbers equal the
    one-device population's to float32 rounding.

    >>> import jaxnets as jn
    >>> data = jn.data.load("iris")
    >>> model = jn.models.MLP(hidden=(8,), output_dim=data.output_dim)
    >>> result = fit_population(model, data, jn.optim.create("sgd", 0.1), jn.TrainConfig(epochs=3, batch_size=30),
    ...                         seeds=[0, 1, 0], hyperparams={"learning_rate": [0.1, 0.1, 0.3]})
    >>> len(result.history[-1]["test_accuracy"]), result.traces["train_step"]
    (3, 1)
    """
    started = time.perf_counter()
    run = prepare(model, data, tx, config)  # checks every argument first (a dict config, a string tx, ...)
    if config.parallel != "none":
        raise ValueError(f"parallel: got {config.parallel!r}; allowed: 'none' for populations "
                         "(the member axis is the parallel axis: pass fit_population(devices=...))")
    if hyperparams and not hasattr(tx, "spec"):
        raise ValueError(f"tx: got {type(tx).__name__}; allowed: an optimizer from jaxnets.optim.create(...) when "
                         "hyperparams vary per member (it keeps them in the optimizer state, so one compiled "
                         "program trains every member; an optax chain fixes them at build time)")
    tx = with_loss_scale(tx, config)
    seed_column, values = check_members(seeds, hyperparams)
    seeds = [int(s) for s in seed_column]
    placement = MemberPlacement(population_devices(devices, len(seeds)))
    padded_seeds, padded_hyperparams = _padded_members(seed_column, values, placement.padded(len(seeds)))
    state = placement.put_members(create_population(model, tx, run.x_train, padded_seeds, padded_hyperparams))
    data_keys = placement.put_members(
        jax.vmap(lambda seed: run_keys(seed).data)(jnp.asarray(padded_seeds, dtype=jnp.int32)))

    traces: dict[str, int] = {}
    _, _, scan_epochs = epoch_functions(make_train_step(run.objective, augment=config.augment), run.geometry,
                                     traces)
    one_epoch = jax.vmap(lambda state, xs, ys, keys, epoch: scan_epochs(state, xs, ys, keys, epoch, None),
                         in_axes=(0, None, None, 0, None))
    run_epoch = placement.compile(one_epoch, (True, False, False, True, False))
    xs, ys = placement.put_shared(run.x_train), placement.put_shared(run.y_train)
    evaluator = Evaluator(run.objective, run.eval_batch_size, traces, members=True)

    size = len(seeds)
    # The values as given (the state holds their float32 roundings).
    members = [{"seed": seed, **{name: float(np.asarray(column, np.float64)[i])
                                 for name, column in (hyperparams or {}).items()}}
               for i, seed in enumerate(seeds)]
    history: list[dict] = []
    train_time = 0.0
    for epoch in range(config.epochs):
        tick = time.perf_counter()
        state, sums = run_epoch(state, xs, ys, data_keys, placement.put_shared(np.int32(epoch)))
        sums = jax.device_get(sums)
        train_time += time.perf_counter() - tick
        if (epoch + 1) % config.eval_every and epoch != config.epochs - 1:
            continue
        entry: dict[str, Any] = {"epoch": epoch, "step": int(np.asarray(state.step)[0]),
                                 "epoch_loss": (np.asarray(sums["loss"], np.float64)
                                                / np.maximum(np.asarray(sums["count"], np.float64), 1.0))[:size]
                                 .tolist()}
        for prefix, x, y in run.splits:
            per_member = evaluator(state, x, y, prefix=prefix)[:size]
            for key in per_member[0]:
                entry[key] = [m[key] for m in per_member]
        entry["time_s"] = time.perf_counter() - started
        history.append(entry)
        if on_epoch_end is not None:
            on_epoch_end(entry)
    if placement.padded(size) != size:  # the filling members are never returned
        state = jax.tree_util.tree_map(lambda leaf: leaf[:size], state)
    return PopulationResult(state=state, members=members, history=history, traces=traces,
                            wall_time_s=time.perf_counter() - started, train_time_s=train_time,
                            num_params=count_params(jax.tree_util.tree_map(lambda leaf: leaf[0], state.params)),
                            num_devices=placement.num_devices)


__all__ = ["PopulationResult", "create_population", "check_members", "population_devices", "fit_population"]
