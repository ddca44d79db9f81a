"""Callbacks: your code, called after every evaluated epoch, able to stop training.

A callback is any callable ``callback(epoch, metrics, state)``:

- ``epoch``: the index of the epoch just evaluated (0-based);
- ``metrics``: that epoch's history entry (``epoch_loss``, ``train_*``, ``val_*``, ``test_*``, ...);
- ``state``: the ``TrainState`` after that epoch (one copy, on the host's default device).

It returns None (go on) or a reason to stop: ``True`` or a string, which
``FitResult.stop_reason`` records. Early stopping is one such callback.

>>> stop_at_90 = lambda epoch, metrics, state: metrics["train_accuracy"] >= 0.9 and "train accuracy 90%"
>>> stop_at_90(3, {"train_accuracy": 0.95}, None)
'train accuracy 90%'
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from jaxnets.checks import check_choice, check_int
from jaxnets.config import MINIMIZED_MONITORS, MONITORS


class Callback(Protocol):
    def __call__(self, epoch: int, metrics: dict, state: Any) -> bool | str | None: ...


class EarlyStopping:
    """Stop after ``patience`` evaluations without an improvement of ``monitor``.

    With ``restore_best`` it keeps a copy of the best epoch's state, which ``fit``
    returns instead of the last one.

    >>> stopper = EarlyStopping("val_loss", patience=2)
    >>> [stopper(e, {"val_loss": v}, None) for e, v in enumerate([3.0, 2.0, 2.5, 2.1])]
    [None, None, None, 'val_loss did not improve for 2 evaluations (best 2 at epoch 1)']
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, *, restore_best: bool = True):
        self.monitor = check_choice("monitor", monitor, MONITORS)
        self.patience = check_int("patience", patience, minimum=1)
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state = None
        self._bad = 0

    def __call__(self, epoch: int, metrics: dict, state) -> str | None:
        if self.monitor not in metrics:
            raise ValueError(f"monitor: got {self.monitor!r}; allowed: a metric of this run "
                             f"({', '.join(k for k in metrics if k.startswith('val_')) or 'none'})")
        value = metrics[self.monitor]
        score = value if self.monitor in MINIMIZED_MONITORS else -value
        if self.best is None or score < self.best:
            self.best, self.best_epoch, self._bad = score, epoch, 0
            if self.restore_best and state is not None:
                self.best_state = jax.tree_util.tree_map(jnp.copy, state)
            return None
        self._bad += 1
        if self._bad >= self.patience:
            best = self.best if self.monitor in MINIMIZED_MONITORS else -self.best
            return (f"{self.monitor} did not improve for {self.patience} evaluations "
                    f"(best {best:.4g} at epoch {self.best_epoch})")
        return None


def stop_reason(callback: Callable, verdict: Any) -> str | None:
    """None to go on; otherwise the reason a callback's return value gives."""
    if verdict is None or verdict is False:
        return None
    if isinstance(verdict, str):
        return verdict
    return f"stopped by {getattr(callback, '__qualname__', type(callback).__name__)}"


__all__ = ["Callback", "EarlyStopping", "stop_reason"]
