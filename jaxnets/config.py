"""How to train: plain dataclasses, checked when built.

``TrainConfig`` says how ``fit`` trains (the optimizer itself is passed
separately); ``CheckpointConfig`` says where and how often it saves. Every field
is checked in ``__post_init__``: a bad value fails when the config is built, in
one line, before anything compiles.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from jaxnets import losses
from jaxnets.augment import get_augmentation
from jaxnets.checks import check_choice, check_int, check_number, check_seed, fail
from jaxnets.models.activations import HEADS
from jaxnets.parallel import MODES
from jaxnets.steps import NONFINITE_POLICIES

LOOPS = ("scan", "python")
MONITORS = ("val_loss", "val_accuracy", "val_rmse", "val_r2")
#: Monitors where a smaller value is better (the others: larger).
MINIMIZED_MONITORS = ("val_loss", "val_rmse")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (the optimizer itself is passed to ``fit`` separately).

    Attributes:
      epochs: passes over the training set.
      batch_size: examples per step. ``None`` means full-batch gradient descent,
        1 means single-sample stochastic gradient descent, anything in between
        minibatch SGD (the three the slides compare).
      loss: a name from ``jaxnets.losses.LOSSES``, or your own callable
        ``loss(outputs, targets) -> (batch,)`` per-example losses; None picks the
        task's default (MSE, binary or softmax cross-entropy).
      metrics: None, or a callable ``metrics(outputs, targets) -> {name: (batch,)}``
        of per-example values; each is averaged over a split like the loss and
        reported as ``train_<name>``, ``val_<name>``, ``test_<name>``.
      head: the model's output function ("logits" unless the model applies a
        sigmoid/softmax itself); accuracy thresholds follow it.
      l1: penalty l1·Σ|w| on weights (not biases).
      l2: penalty l2·½Σw² on weights (not biases).
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
      log_every_steps: record the training loss of every k-th step in
        ``FitResult.step_history`` (None: per-epoch metrics only).
      early_stopping_patience: stop after this many evaluations without an
        improvement of ``monitor``; None disables early stopping.
      monitor: the validation metric early stopping watches.
      restore_best: with early stopping, return the parameters of the best epoch.
      progress: show a progress bar.
      loss_scale: None (no scaling), "dynamic", or a number S > 0 (static): the loss
        is multiplied by the scale before differentiating and the gradients divided by
        it, so small float16 gradients survive (see ``jaxnets.steps.loss_scaling``).
        Dynamic scaling skips a step whose scaled gradients overflow and halves the scale.
      loss_scale_init: the first scale of dynamic scaling.
      loss_scale_period: dynamic scaling doubles the scale after this many finite steps in a row.
      augment: None, "crop_flip" (4-pixel random crop and horizontal flip, see
        ``jaxnets.augment``) or your own callable ``augment(key, x) -> x`` on the
        training batch (N, ...). It runs inside the compiled train step, with a key
        drawn from the seed and the step (``jaxnets.steps.augment_key``), and never
        at evaluation. A checkpoint resumes only with the same setting (a callable is
        compared by its ``module.qualname``).
    """

    epochs: int = 10
    batch_size: int | None = 128
    loss: str | Callable[[Any, Any], Any] | None = None
    metrics: Callable[[Any, Any], dict] | None = None
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
    log_every_steps: int | None = None
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    restore_best: bool = True
    progress: bool = False
    loss_scale: str | float | None = None
    loss_scale_init: float = 2.0 ** 15
    loss_scale_period: int = 2000
    augment: str | Callable[[Any, Any], Any] | None = None

    def __post_init__(self):
        check_int("epochs", self.epochs, minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        check_seed("seed", self.seed)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        check_int("eval_every", self.eval_every, minimum=1)
        for name in ("log_every_steps", "early_stopping_patience"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        check_choice("nonfinite", self.nonfinite, NONFINITE_POLICIES)
        check_choice("parallel", self.parallel, MODES)
        check_choice("loop", self.loop, LOOPS)
        check_choice("monitor", self.monitor, MONITORS)
        check_choice("head", self.head, HEADS)
        if self.loss is not None and not callable(self.loss):
            check_choice("loss", self.loss, tuple(losses.LOSSES))
        if self.metrics is not None and not callable(self.metrics):
            raise fail("metrics", self.metrics, "None or a callable (outputs, targets) -> {name: (batch,) values}")
        check_number("l1", self.l1, minimum=0)
        check_number("l2", self.l2, minimum=0)
        if self.loss_scale is not None and self.loss_scale != "dynamic":
            try:
                check_number("loss_scale", self.loss_scale, positive=True)
            except ValueError:
                raise fail("loss_scale", self.loss_scale, "None, 'dynamic' or a finite number > 0") from None
        check_number("loss_scale_init", self.loss_scale_init, positive=True)
        check_int("loss_scale_period", self.loss_scale_period, minimum=1)
        get_augmentation(self.augment)  # None, a known name or a callable, else one line

    def to_json(self) -> dict:
        """The config as JSON values (a callable loss, metrics or augment by its qualified name)."""
        out = dataclasses.asdict(self)
        for name in ("loss", "metrics", "augment"):
            if callable(out[name]):
                out[name] = callable_name(out[name])
        return out


def callable_name(fn: Callable) -> str:
    """``module.qualname`` of a user's function, for configs and summaries."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


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
            raise fail("directory", self.directory, "a path")
        check_int("every_epochs", self.every_epochs, minimum=1)
        check_int("keep", self.keep, minimum=1)


__all__ = ["LOOPS", "MONITORS", "MINIMIZED_MONITORS", "TrainConfig", "CheckpointConfig", "callable_name"]
