"""Evaluation of a state on whole splits, in fixed-shape batches."""
from __future__ import annotations

import jax
import numpy as np

from jaxnets.objective import Objective, summarize
from jaxnets.state import TrainState
from jaxnets.steps import make_eval_step


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


__all__ = ["Evaluator", "evaluate"]
