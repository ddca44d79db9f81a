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
from jaxnets.callbacks import EarlyStopping
from jaxnets.inference import SavedModel, load_model, predict, save_model
from jaxnets.version import __version__
from jaxnets.config import CheckpointConfig, TrainConfig
from jaxnets.evaluation import evaluate
from jaxnets.state import TrainState, create_state
from jaxnets.steps import make_eval_step, make_train_step
from jaxnets.train import FitResult, NonFiniteError, Preempted, fit


__all__ = [
    "data", "losses", "metrics", "models", "optim", "tree",
    "Objective", "objective_for",
    "EarlyStopping", "SavedModel", "load_model", "predict", "save_model", "CheckpointConfig", "FitResult", "NonFiniteError", "Preempted", "TrainConfig", "TrainState", "create_state", "evaluate", "fit",
    "make_eval_step", "make_train_step",
    "__version__",
]
