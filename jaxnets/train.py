"""Training: ``fit`` runs the pure step over epochs, evaluates, checkpoints and stops.

``fit`` is a short function over named helpers: ``prepare`` (checks and the batch
layout, shared with ``jaxnets.population``), ``create_state``, ``resume``
(``jaxnets.resume``), the epoch loop (``TrainingLoop``: run compiled epochs, guard
non-finite steps, evaluate, checkpoint, call the callbacks) and ``finish``.
Epochs run either as a Python loop over compiled steps or as one compiled
``lax.scan`` per epoch (the default: small models are dominated by per-step
dispatch, and the scan removes it). Both loops run the same step on the same
batches and give the same parameters.
"""
from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxnets.callbacks import EarlyStopping, stop_reason
from jaxnets.checks import fail
from jaxnets.config import CheckpointConfig, TrainConfig
from jaxnets.data import Dataset
from jaxnets.epochs import RUN_KEYS, STEP_LOSS, Geometry, batch_geometry
from jaxnets.evaluation import Evaluator
from jaxnets.objective import Objective, objective_for
from jaxnets.parallel import AXIS, Runner, make_runner
from jaxnets.resume import resume, run_spec
from jaxnets.state import TrainState, accepts_train, create_state, run_keys
from jaxnets.steps import make_train_step, with_loss_scale
from jaxnets.tree import count_params

#: The field a model exposes to have its batch norm synchronized over the devices under pmap.
BATCH_NORM_AXIS_FIELD = "batch_norm_axis_name"


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss, gradient or update under ``nonfinite="halt"``."""

    def __init__(self, step: int, quantity: str, epoch: int):
        self.step, self.quantity, self.epoch = step, quantity, epoch
        super().__init__(f"non-finite {quantity} at step {step} (epoch {epoch}); training halted "
                         "(nonfinite='halt'; 'skip' would skip such steps)")


class Preempted(RuntimeError):
    """A SIGTERM/SIGINT stopped ``fit`` at a step boundary, after saving a checkpoint."""

    def __init__(self, step: int, checkpoint: str | None, history: list[dict], epoch: int = -1):
        self.step, self.checkpoint, self.history, self.epoch = step, checkpoint, history, epoch
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint was saved"
        super().__init__(f"interrupted at epoch {epoch}, step {step}; {where}")


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
      state: the final (or, with early stopping and ``restore_best``, the best) state.
      history: one dict per evaluated epoch (epoch, step, epoch_loss, train_*, val_*, test_*, time_s).
      best_epoch: the epoch whose state is returned.
      traces: how many times each compiled function was traced (1 each: no recompiles).
      wall_time_s: total time of ``fit``.
      train_time_s: time inside training calls.
      steps_per_s: optimizer steps per second, excluding the first compiled call
        (which includes compilation) when there is more than one call.
      num_params: number of trainable scalars.
      step_history: with ``log_every_steps=k``, ``{"step", "epoch", "loss"}`` for every
        k-th step (the loss of that step's batch); empty otherwise. The history entry of
        each evaluated epoch also lists them, as ``step_losses`` ``[[step, loss], ...]``
        since the previous evaluation.
      stop_reason: why training stopped before ``epochs`` (a callback's reason), or None.
      flops_per_step: floating-point operations of one training step of the global
        batch, from XLA's cost analysis of the compiled step (measured, not estimated).
      gflops_per_s: flops_per_step × steps_per_s / 1e9, the achieved rate.
    """

    state: TrainState
    history: list[dict]
    best_epoch: int
    traces: dict[str, int]
    wall_time_s: float
    train_time_s: float
    steps_per_s: float
    num_params: int
    step_history: list[dict] = dataclasses.field(default_factory=list)
    stop_reason: str | None = None
    flops_per_step: float = float("nan")
    gflops_per_s: float = float("nan")

    @property
    def final(self) -> dict:
        """The history entry of the returned state's epoch."""
        for entry in self.history:
            if entry["epoch"] == self.best_epoch:
                return entry
        return self.history[-1]


# ----------------------------------------------------------------------------- preparation
class Prepared(NamedTuple):
    """What ``fit`` and ``fit_population`` share: the checked data and the batch layout."""

    objective: Objective
    x_train: np.ndarray
    y_train: np.ndarray
    splits: list[tuple[str, np.ndarray, np.ndarray]]
    geometry: Geometry
    eval_batch_size: int


def prepare(model: nn.Module, data: Dataset, tx: Any, config: TrainConfig, *,
            num_devices: int | None = None) -> Prepared:
    """Check every argument and build the objective, the splits and the batch layout.

    ``num_devices`` (the devices a global batch is split over) defaults to those of
    ``config.parallel``; it is read only after ``config`` is known to be a ``TrainConfig``.
    """
    check_fit_arguments(model, data, tx, config)
    if num_devices is None:
        num_devices = devices_for(config.parallel)
    objective = objective_for(data.task, loss=config.loss, head=config.head, l1=config.l1, l2=config.l2,
                              metrics=config.metrics)
    x_train, y_train = check_arrays(data.x_train, data.y_train, "train")
    splits = [("train_", x_train, y_train)] if config.eval_train else []
    if data.num_val:
        splits.append(("val_", *check_arrays(data.x_val, data.y_val, "val")))
    if data.num_test:
        splits.append(("test_", *check_arrays(data.x_test, data.y_test, "test")))
    check_monitor(config, data)
    check_model_fits_data(model, data, [x_train, *(x for prefix, x, _ in splits if prefix != "train_")])
    check_output_shape(model, data, x_train, y_train, objective)
    geometry = batch_geometry(int(x_train.shape[0]), config.batch_size, shuffle=config.shuffle,
                              drop_remainder=config.drop_remainder, num_devices=num_devices)
    largest = max(data.num_train, data.num_val, data.num_test)
    return Prepared(objective, x_train, y_train, splits, geometry, max(1, min(config.eval_batch_size, largest)))


def check_fit_arguments(model: Any, data: Any, tx: Any, config: Any) -> None:
    """One line for each argument of the wrong kind, saying what to pass instead."""
    if not isinstance(model, nn.Module):
        raise fail("model", type(model).__name__, "a Flax Linen module (jaxnets.models.get_model(...) or your own "
                   "nn.Module)")
    if not isinstance(data, Dataset):
        raise fail("data", type(data).__name__, "a jaxnets.data.Dataset: jaxnets.data.load(name) or "
                   "jaxnets.data.from_arrays(x_train, y_train, ...)")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise fail("tx", tx if isinstance(tx, str) else type(tx).__name__,
                   "an Optax GradientTransformation, e.g. jaxnets.optim.create('adam', 1e-3) or optax.adam(1e-3)")
    if not isinstance(config, TrainConfig):
        raise fail("config", type(config).__name__, "a jaxnets.TrainConfig (from a dict: TrainConfig(**d))")


def check_monitor(config: TrainConfig, data: Dataset) -> None:
    """Early stopping needs a validation split and a metric the task has."""
    if config.early_stopping_patience is None:
        return
    if not data.num_val:
        raise fail("monitor", config.monitor, "a metric of this run (none: early stopping needs a validation "
                   "split, e.g. jaxnets.data.load(name, validation=0.1))")
    task_metrics = ("val_accuracy",) if data.task != "regression" else ("val_rmse", "val_r2")
    if config.monitor not in ("val_loss", *task_metrics):
        raise fail("monitor", config.monitor, f"val_loss or {' or '.join(task_metrics)} for a {data.task} task")


def check_model_fits_data(model: nn.Module, data: Dataset, inputs: Sequence[np.ndarray]) -> None:
    """A model for some tasks only (``supported_tasks``), or one that looks up token ids
    (a ``vocab_size`` field), is refused on data it cannot mean anything on."""
    tasks = getattr(type(model), "supported_tasks", None)
    if tasks is not None and data.task not in tasks:
        raise fail("model", type(model).__name__, f"a model for a {data.task} task ({type(model).__name__} is for "
                   f"{' and '.join(tasks)} tasks only)")
    vocab = getattr(model, "vocab_size", None)
    if isinstance(vocab, int) and not all(_token_ids(x, vocab) for x in inputs):
        raise fail("model", type(model).__name__, f"inputs that are token ids (integers 0..{vocab - 1}); "
                   f"{data.name!r} has other values: use a model for feature vectors (e.g. mlp), or "
                   "vocab_size=None for float sequences")


def _token_ids(x: np.ndarray, vocab: int) -> bool:
    return x.size == 0 or bool(np.all(x == np.round(x)) and x.min() >= 0 and x.max() < vocab)


def expected_output_shape(task: str, y_shape: tuple[int, ...], output_dim: int) -> list[tuple[int, ...]]:
    """The per-example output shapes a built-in loss accepts for targets of ``y_shape``.

    >>> expected_output_shape("multiclass", (), 10), expected_output_shape("binary", (), 1)
    ([(10,)], [(1,), ()])
    """
    if task == "multiclass":
        return [(*y_shape, output_dim)] if len(y_shape) < 1 or y_shape[-1] != output_dim else [y_shape]
    if y_shape in ((), (1,)):
        return [(1,), ()]
    return [y_shape]


def check_output_shape(model: nn.Module, data: Dataset, x_train, y_train, objective: Objective) -> None:
    """A model whose outputs do not fit the task's targets is refused before compiling."""
    if callable(objective.loss):
        return  # your own loss decides what shapes it takes
    sample = jax.ShapeDtypeStruct((1, *x_train.shape[1:]), x_train.dtype)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    kwargs = {"train": False} if accepts_train(model) else {}
    try:
        out, _ = jax.eval_shape(lambda x: model.init_with_output(rngs, x, **kwargs), sample)
    except Exception as error:  # noqa: BLE001 - the model cannot take these inputs at all
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise fail("model", type(model).__name__, f"a module that takes inputs of shape {sample.shape} "
                   f"({data.name} features); it failed with {type(error).__name__}: {first}") from None
    allowed = expected_output_shape(data.task, tuple(y_train.shape[1:]), data.output_dim)
    got = tuple(getattr(out, "shape", (None,))[1:])
    if got not in allowed:
        raise fail("model", f"outputs of shape (batch, {', '.join(map(str, got))})".replace(", )", ")"),
                   f"(batch, {', '.join(map(str, allowed[0]))}) for the {data.task} task of {data.name!r} "
                   f"(output_dim={data.output_dim})".replace(", )", ")"))


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


def devices_for(mode: str) -> int:
    return 1 if mode == "none" else jax.local_device_count() if mode == "pmap" else jax.device_count()


def model_for_mode(model: nn.Module, mode: str) -> nn.Module:
    """Under pmap, a model with a batch-norm axis field normalizes over every device's rows."""
    if mode == "pmap" and BATCH_NORM_AXIS_FIELD in {f.name for f in dataclasses.fields(model)}:
        return model.clone(**{BATCH_NORM_AXIS_FIELD: AXIS})
    return model


def check_batch_norm_mode(model: nn.Module, state: TrainState, mode: str) -> None:
    """pmap with batch norm the model cannot synchronize would compute per-device statistics."""
    if mode == "pmap" and "batch_stats" in state.model_state and model_for_mode(model, mode) is model:
        raise fail("parallel", mode, f"'sharded' for {type(model).__name__}: it has batch norm but no "
                   f"{BATCH_NORM_AXIS_FIELD!r} field, so under pmap each device would normalize with its "
                   "own statistics (sharded jit uses the global batch's)")


def flops_per_step(objective: Objective, state: TrainState, geometry: Geometry, x_train, y_train) -> float:
    """XLA's cost analysis of one (single-device) training step on the global batch."""
    rows = np.arange(geometry.batch_size) % x_train.shape[0]
    batch = {"x": x_train[rows], "y": y_train[rows], "mask": np.ones(len(rows), np.float32)}
    analysis = jax.jit(make_train_step(objective)).lower(state, batch).cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


# ----------------------------------------------------------------------------- the loop
class StopRequest:
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


@dataclasses.dataclass
class TrainingLoop:
    """The epochs of one ``fit``: run compiled calls, guard, evaluate, save, call back."""

    runner: Runner
    run: Prepared
    config: TrainConfig
    data_key: jax.Array
    manager: Any
    checkpoint: CheckpointConfig | None
    callbacks: Sequence[Callable]
    history: list[dict]
    started: float
    spec: dict = dataclasses.field(default_factory=dict)
    step_history: list[dict] = dataclasses.field(default_factory=list)
    train_time: float = 0.0
    timed: tuple[int, float] = (0, 0.0)
    stop_reason: str | None = None
    progress: Any = None

    def run_all(self, state, first_epoch: int):
        """Train from ``first_epoch`` to the end (or a stop); returns the host state and last epoch."""
        config, steps = self.config, self.run.geometry.steps_per_epoch
        per_call = 1 if config.log_every_steps else config.eval_every
        xs, ys = self.runner.put_data(self.run.x_train), self.runner.put_data(self.run.y_train)
        evaluator = Evaluator(self.run.objective, self.run.eval_batch_size, self.runner.traces)
        skipped = int(self.history[-1].get("nonfinite_steps", 0)) if self.history else 0
        stop = StopRequest(enabled=self.manager is not None)
        epoch, host_state = first_epoch, self.runner.get_state(state)
        try:
            while epoch < config.epochs and self.stop_reason is None:
                count = min(per_call, config.epochs - epoch)
                tick = time.perf_counter()
                state, sums = self.runner.run_epochs(state, xs, ys, self.data_key, epoch,
                                                     None if per_call == 1 else count)
                self._time(time.perf_counter() - tick, epoch > first_epoch, count * steps)
                host_state = self.runner.get_state(state)
                skipped += self._guard_nonfinite(sums)
                self._log_steps(sums, epoch + count - 1)
                epoch += count
                if self.progress is not None:
                    self.progress.update(count * steps)
                    self.progress.set_description(f"epoch {epoch}/{config.epochs}")
                stopping = stop.requested  # read once: a later signal is seen at the next boundary
                evaluate = (epoch - first_epoch) % config.eval_every == 0 or epoch == config.epochs or stopping
                if evaluate:
                    self._evaluate(evaluator, host_state, sums, epoch - 1, skipped)
                self._save(host_state, epoch, stopping)
                if stopping:
                    saved = str(self.manager.step_dir(int(host_state.step))) if self.manager else None
                    raise Preempted(int(host_state.step), saved, self.history, epoch - 1)
                if evaluate:
                    self._call_back(epoch - 1, host_state)
        finally:
            stop.close()
        return host_state, epoch

    def _time(self, elapsed: float, after_first: bool, steps: int) -> None:
        self.train_time += elapsed
        if after_first:  # the first call includes compilation
            self.timed = (self.timed[0] + steps, self.timed[1] + elapsed)

    def _guard_nonfinite(self, sums: dict) -> int:
        """Raise ``NonFiniteError`` under "halt"; else the number of skipped steps."""
        bad = int(sum(sums.get(key, 0.0) for key in RUN_KEYS[:3]))
        if bad and self.config.nonfinite == "halt":
            quantity = next(k for k in RUN_KEYS[:3] if sums[k]).removeprefix("nonfinite_")
            first_bad = int(sums["first_nonfinite_step"])
            raise NonFiniteError(first_bad, quantity, first_bad // self.run.geometry.steps_per_epoch)
        return bad

    def _log_steps(self, sums: dict, epoch: int) -> None:
        every = self.config.log_every_steps
        if not every:
            return
        first_step = epoch * self.run.geometry.steps_per_epoch
        for index, loss in enumerate(sums[STEP_LOSS]):
            if (first_step + index + 1) % every == 0:
                self.step_history.append({"step": first_step + index + 1, "epoch": epoch, "loss": loss})

    def _evaluate(self, evaluator: Evaluator, host_state: TrainState, sums: dict, epoch: int, skipped: int):
        entry = {"epoch": epoch, "step": int(host_state.step),
                 "epoch_loss": float(sums["loss"]) / max(float(sums["count"]), 1.0)}
        if self.config.nonfinite == "skip":
            entry["nonfinite_steps"] = skipped
        for prefix, x, y in self.run.splits:
            entry.update(evaluator(host_state, x, y, prefix=prefix))
        if self.config.log_every_steps:  # the steps logged since the previous evaluation
            logged = sum(len(e.get("step_losses", ())) for e in self.history)
            entry["step_losses"] = [[r["step"], r["loss"]] for r in self.step_history[logged:]]
        entry["time_s"] = time.perf_counter() - self.started
        self.history.append(entry)
        if self.progress is not None:
            self.progress.set_postfix({k: round(v, 4) for k, v in entry.items()
                                       if k.startswith(("train_", "epoch_")) and k.endswith(("loss", "accuracy"))})

    def _save(self, host_state: TrainState, epoch: int, stopping: bool) -> None:
        if self.manager is None:
            return
        if epoch % self.checkpoint.every_epochs == 0 or epoch == self.config.epochs or stopping:
            self.manager.save(host_state, overwrite=True,
                              metadata={"config": self.config.to_json(), "run": self.spec, "epoch": epoch - 1,
                                        "step": int(host_state.step), "history": self.history})

    def _call_back(self, epoch: int, host_state: TrainState) -> None:
        for callback in self.callbacks:
            reason = stop_reason(callback, callback(epoch, self.history[-1], host_state))
            if reason is not None:
                self.stop_reason = reason
                return

    def steps_per_s(self, first_epoch: int, last_epoch: int) -> float:
        steps, seconds = self.timed
        if seconds == 0.0:  # a single call: compile time is included, say so by measuring it all
            steps, seconds = (last_epoch - first_epoch) * self.run.geometry.steps_per_epoch, self.train_time
        return steps / seconds if seconds > 0 else float("nan")


def _history_callback(on_epoch_end: Callable[[list[dict]], None], history: list[dict]) -> Callable:
    """The older ``on_epoch_end(history)`` hook, as a callback that never stops training."""
    def callback(epoch, metrics, state):
        on_epoch_end(history)
    return callback


# ----------------------------------------------------------------------------- fit
def fit(model: nn.Module, data: Dataset, tx: optax.GradientTransformation,
        config: TrainConfig = TrainConfig(), *, state: TrainState | None = None,
        checkpoint: CheckpointConfig | None = None, callbacks: Sequence[Callable] = (),
        on_epoch_end: Callable[[list[dict]], None] | None = None) -> FitResult:
    """Train ``model`` on ``data`` with optimizer ``tx``.

    Each epoch draws a fresh order of the training rows, runs ⌈n/B⌉ steps (the
    last batch padded and masked unless ``drop_remainder``), then evaluates on
    the training, validation and test splits in evaluation mode. The step is
    compiled once and reused for every epoch.

    With ``checkpoint``, the whole state and the history are saved every
    ``every_epochs`` epochs; ``resume=True`` continues from the newest intact
    checkpoint and ends bitwise identical to an uninterrupted run, and refuses
    (``jaxnets.resume.ResumeMismatch``) a run whose options differ from the
    checkpoint's. A SIGTERM or SIGINT then stops training at the next call
    boundary, saves a checkpoint and raises ``Preempted``. A non-finite
    loss/gradient/update raises ``NonFiniteError`` under ``nonfinite="halt"``
    before any checkpoint holds it.

    Args:
      model: any Flax Linen module (``jaxnets.models`` or your own).
      data: a ``jaxnets.data.Dataset`` (``jaxnets.data.load`` or ``jaxnets.data.from_arrays``).
      tx: an Optax transformation, e.g. ``jaxnets.optim.create("adam", 1e-3)`` or an ``optax.chain``.
      config: a ``TrainConfig``.
      state: start from this state instead of a fresh initialization.
      checkpoint: a ``CheckpointConfig``, or None for no checkpoints.
      callbacks: callables ``(epoch, metrics, state)`` called after every evaluated
        epoch; a truthy return stops training (see ``jaxnets.callbacks``).
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
    run = prepare(model, data, tx, config)
    described = getattr(tx, "spec", None)  # how jaxnets.optim.create built it (checked on resume)
    tx = with_loss_scale(tx, config)  # TrainConfig.loss_scale: the scale lives in the optimizer state
    if state is None:
        state = create_state(model_for_mode(model, config.parallel), tx, run.x_train, config.seed)
    check_batch_norm_mode(model, state, config.parallel)
    spec = run_spec(model, state, config, run.x_train, run.y_train, optimizer=described)
    state, history, manager = resume(checkpoint, state, spec)
    # Measured on the single-device step of the global batch (the model without device axes).
    flops = flops_per_step(run.objective, state.replace(apply_fn=model.apply), run.geometry, run.x_train,
                           run.y_train)
    stopper = EarlyStopping(config.monitor, config.early_stopping_patience, restore_best=config.restore_best) \
        if config.early_stopping_patience is not None else None
    hooks = [*callbacks, *([stopper] if stopper else []),
             *([_history_callback(on_epoch_end, history)] if on_epoch_end else [])]
    traces: dict[str, int] = {}
    runner = make_runner(config.parallel, lambda axis: make_train_step(
        run.objective, axis_name=axis, nonfinite=config.nonfinite, sharded_batch=config.parallel == "sharded",
        augment=config.augment),
        run.geometry, loop=config.loop, traces=traces)
    first_epoch = int(state.step) // run.geometry.steps_per_epoch
    loop = TrainingLoop(runner, run, config, run_keys(config.seed).data, manager, checkpoint, hooks, history, started,
                        spec=spec, progress=_progress_bar(config, first_epoch, run.geometry.steps_per_epoch))
    try:
        final_state, last_epoch = loop.run_all(runner.put_state(state), first_epoch)
    finally:
        if loop.progress is not None:
            loop.progress.close()
    return finish(loop, final_state, stopper, first_epoch, last_epoch, traces, flops)


def _progress_bar(config: TrainConfig, first_epoch: int, steps_per_epoch: int):
    """A bar counted in steps (updated after each compiled call), showing training metrics only
    (the test metrics would squeeze it)."""
    if not config.progress:
        return None
    return tqdm(total=config.epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
                desc=f"epoch {first_epoch}/{config.epochs}", unit="step", dynamic_ncols=True)


def finish(loop: TrainingLoop, state: TrainState, stopper: EarlyStopping | None, first_epoch: int,
           last_epoch: int, traces: dict[str, int], flops: float) -> FitResult:
    """The result: the last (or best) state, timings and the measured cost of a step."""
    history = loop.history
    best_epoch = history[-1]["epoch"] if history else first_epoch - 1
    if stopper is not None and stopper.best_state is not None:
        state, best_epoch = stopper.best_state, stopper.best_epoch
    steps_per_s = loop.steps_per_s(first_epoch, last_epoch)
    return FitResult(state=state, history=history, best_epoch=best_epoch, traces=traces,
                     wall_time_s=time.perf_counter() - loop.started, train_time_s=loop.train_time,
                     steps_per_s=steps_per_s, num_params=count_params(state.params),
                     step_history=loop.step_history, stop_reason=loop.stop_reason,
                     flops_per_step=flops, gflops_per_s=flops * steps_per_s / 1e9)


__all__ = ["FitResult", "NonFiniteError", "Preempted", "Prepared", "TrainingLoop", "prepare", "fit", "finish",
           "check_arrays", "check_fit_arguments", "check_output_shape", "expected_output_shape",
           "BATCH_NORM_AXIS_FIELD"]
