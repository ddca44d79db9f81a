"""jaxnets: functional deep learning on JAX, Flax Linen and Optax.

Models are Flax Linen modules (``init`` gives the parameter pytree, ``apply`` is
the pure function), optimizers are Optax transformations chosen by name, and a
training step is a pure function ``(state, batch) -> (state, metrics)`` compiled
where it is called.

>>> import jaxnets as jn
>>> sorted(jn.optim.OPTIMIZERS)[:3]
['adagrad', 'adam', 'adamw']
"""
from jaxnets import data, losses, metrics, models, optim, tree
from jaxnets.objective import Objective, objective_for
from jaxnets.train import (
    CheckpointConfig,
    FitResult,
    NonFiniteError,
    Preempted,
    TrainConfig,
    TrainState,
    create_state,
    evaluate,
    fit,
    make_eval_step,
    make_train_step,
)

__version__ = "0.1.0"

__all__ = [
    "data", "losses", "metrics", "models", "optim", "tree",
    "Objective", "objective_for",
    "CheckpointConfig", "FitResult", "NonFiniteError", "Preempted", "TrainConfig", "TrainState", "create_state", "evaluate", "fit",
    "make_eval_step", "make_train_step",
    "__version__",
]
