"""One home for argument checks: every bad value becomes the same one-line error.

The line reads ``<field>: got <value>; allowed: <what is allowed>`` so a user
sees at once which argument is wrong and what to write instead. Configs
(``TrainConfig``, ``CheckpointConfig``), the data loaders and the command line
all raise through these helpers.

>>> check_int("epochs", 3, minimum=1)
3
>>> check_choice("loop", "scan", ("scan", "python"))
'scan'
>>> check_int("epochs", 0, minimum=1)
Traceback (most recent call last):
...
ValueError: epochs: got 0; allowed: an integer >= 1
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: The learning tasks every part of jaxnets knows (data, losses, objectives).
TASKS = ("regression", "binary", "multiclass")


def fail(field: str, value: Any, allowed: str) -> ValueError:
    """The one-line error for ``field`` (returned, so callers write ``raise fail(...)``)."""
    return ValueError(f"{field}: got {value!r}; allowed: {allowed}")


def check_int(field: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within [minimum, maximum]; bools and non-integers are refused."""
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    allowed = "an integer" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise fail(field, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise fail(field, value, allowed)
    return int(value)


def check_choice(field: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed`` (listed in the error otherwise)."""
    if not isinstance(value, str) or value not in allowed:
        raise fail(field, value, ", ".join(allowed))
    return value


def check_number(field: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite real number (>= minimum, or > 0 with ``positive``); bools are refused."""
    allowed = "a number" + (" > 0" if positive else f" >= {minimum:g}" if minimum is not None else "") + (
        "" if minimum is not None or positive else " (finite)")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(field, value, allowed)
    value = float(value)
    if not math.isfinite(value) or (positive and not value > 0) or (minimum is not None and value < minimum):
        raise fail(field, value, allowed)
    return value


def check_seed(field: str, value: Any) -> int:
    """A seed JAX can use: an integer in [0, 2**32 - 1] (``jax.random.key`` takes 32 bits here)."""
    return check_int(field, value, minimum=0, maximum=2**32 - 1)


__all__ = ["TASKS", "fail", "check_int", "check_choice", "check_number", "check_seed"]
