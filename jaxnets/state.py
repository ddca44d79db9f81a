"""The training state: one pytree, the run's keys, and how a model is applied.

Randomness is a pure function of the seed: ``run_keys(seed)`` gives the keys for
initialization, dropout and data order; the dropout key of step t is
``fold_in(dropout_key, t)`` and the data order of epoch e is a permutation drawn
from ``fold_in(data_key, e)``. A run is therefore reproducible from
(seed, step), which is what exact resume needs.

Any Flax Linen module can be trained: ``train=`` is passed to its ``__call__``
only if that method takes it (``accepts_train``), so a plain module
``__call__(self, x)`` works as well as the registry's models.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Everything a run carries from one step to the next, as one pytree.

    Attributes:
      step: number of optimizer updates applied so far (int32 scalar).
      params: the model's parameters (the ``"params"`` collection).
      opt_state: the Optax state (with traced hyperparameters, see ``jaxnets.optim``).
      model_state: the model's other collections, e.g. ``{"batch_stats": ...}``;
        an empty dict for models without any.
      dropout_key: base key; the key of step t is ``fold_in(dropout_key, t)``.
      apply_fn: the model's pure ``apply`` (static, not traced).
      tx: the Optax optimizer (static, not traced).
      train_arg: whether the model's ``__call__`` takes ``train`` (static).
      input_shape: the shape of one input example, from ``create_state``'s sample
        (static); ``jaxnets.save_model`` records it so ``load_model`` can check the
        variables against the module.
    """

    step: jnp.ndarray
    params: Any
    opt_state: Any
    model_state: Any
    dropout_key: jnp.ndarray
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    train_arg: bool = flax.struct.field(pytree_node=False, default=True)
    input_shape: tuple[int, ...] | None = flax.struct.field(pytree_node=False, default=None)

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


def accepts_train(model: nn.Module) -> bool:
    """Whether ``model.__call__`` takes a ``train`` argument (or ``**kwargs``).

    >>> class Plain(nn.Module):
    ...     def __call__(self, x):
    ...         return x
    >>> accepts_train(Plain())
    False
    """
    parameters = inspect.signature(type(model).__call__).parameters
    return "train" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def apply_model(apply_fn: Callable, variables: dict, x, *, train: bool, train_arg: bool = True,
                rngs: dict | None = None, mutable=False):
    """``apply_fn(variables, x, train=train, ...)``, leaving ``train`` out where the model has none."""
    kwargs = {"train": train} if train_arg else {}
    if mutable:
        return apply_fn(variables, x, rngs=rngs, mutable=mutable, **kwargs)
    return apply_fn(variables, x, rngs=rngs, **kwargs)


def create_state(model: nn.Module, tx: optax.GradientTransformation, sample_x, seed: int = 0) -> TrainState:
    """Initialize parameters, optimizer state and keys for ``model`` on inputs like ``sample_x``.

    Args:
      model: any Flax Linen module; ``train`` is passed only if its ``__call__`` takes it.
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
    train_arg = accepts_train(model)

    def initialize(init_key):
        params_key, dropout_key = jax.random.split(init_key)
        rngs = {"params": params_key, "dropout": dropout_key}
        variables = dict(model.init(rngs, sample, **({"train": False} if train_arg else {})))
        params = variables.pop("params", {})
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
        train_arg=train_arg,
        input_shape=tuple(int(d) for d in sample.shape[1:]),
    )


def forward(state: TrainState, params, x, *, train: bool, dropout_key=None):
    """Run the model; in training also return its updated mutable collections."""
    variables = {"params": params, **state.model_state}
    rngs = {"dropout": dropout_key} if dropout_key is not None else None
    if train and state.model_state:
        outputs, new_model_state = apply_model(state.apply_fn, variables, x, train=True,
                                               train_arg=state.train_arg, rngs=rngs,
                                               mutable=list(state.model_state))
        return outputs, dict(new_model_state)
    return apply_model(state.apply_fn, variables, x, train=train, train_arg=state.train_arg,
                       rngs=rngs), state.model_state


__all__ = ["TrainState", "RunKeys", "run_keys", "accepts_train", "apply_model", "create_state", "forward"]
