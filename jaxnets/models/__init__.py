"""Models: Flax Linen modules and a registry that builds them by name.

Every model is an ``nn.Module`` whose ``__call__(x, train=False)`` maps a batch of
shape (batch, *feature_shape) to (batch, output_dim) and which has an
``output_dim``. ``model.init({"params": key, "dropout": key}, x)`` returns
``{"params": ...}`` (and possibly other collections); ``model.apply(variables, x,
train=...)`` is the pure forward function (pass ``rngs={"dropout": key}`` when
training a model with dropout).

Models are found by name (``MODELS``); a new model file adds itself with
``register_model`` and is imported at the bottom of this module.

>>> model = get_model("mlp", output_dim=3, hidden=(8,), activation="tanh")
>>> variables = model.init({"params": jax.random.key(0)}, jnp.ones((2, 4)))
>>> model.apply(variables, jnp.ones((2, 4))).shape
(2, 3)
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.models.activations import (ACTIVATIONS, HEADS, LEAKY_RELU_SLOPE, get_activation,
                                        get_head)
from jaxnets.models.initializers import DEFAULT_NORMAL_STDDEV, INITIALIZERS, get_initializer
from jaxnets.models.linear import LinearRegression, LogisticRegression, flatten_features
from jaxnets.models.mlp import MLP

__all__ = [
    "ACTIVATIONS", "COMPUTE_DTYPES", "compute_dtype", "DEFAULT_MLP_HIDDEN", "DEFAULT_NORMAL_STDDEV", "HEADS", "INITIALIZERS",
    "LEAKY_RELU_SLOPE",
    "LinearRegression", "LogisticRegression", "MLP", "MODELS", "ModelSpec",
    "describe", "flatten_features", "get_activation", "get_head", "get_initializer",
    "get_model", "register_model",
]

_REQUIRED = inspect.Parameter.empty

#: Hidden widths of ``get_model("mlp")`` when none are given: one layer of 100 units,
#: as scikit-learn's MLP. (The ``MLP`` class itself requires ``hidden``.)
DEFAULT_MLP_HIDDEN = (100,)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
      name: the registry key.
      builder: ``(*, output_dim, **options) -> nn.Module``.
      description: one line saying what the model is.
      options: the builder's keyword options (besides ``output_dim``) with their
        defaults; ``inspect.Parameter.empty`` marks a required option.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    options: dict[str, Any]


#: Registered models by name. Filled only by ``register_model`` (at import time).
MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], description: str, *,
                   replace: bool = False) -> ModelSpec:
    """Add a model to ``MODELS`` so ``get_model(name, ...)`` can build it.

    The builder's keyword parameters (other than ``output_dim``) become the model's
    options; ``get_model`` rejects any other option by name.

    Args:
      name: the registry key (a non-empty string).
      builder: callable taking ``output_dim`` and keyword options, returning a module.
      description: one line for ``describe``.
      replace: allow overwriting an existing entry.

    Returns:
      The stored ``ModelSpec``.

    Raises:
      ValueError: empty or already registered name, or a builder without ``output_dim``
        or with ``**kwargs`` (options must be listed).

    >>> spec = register_model("tiny_doctest", lambda output_dim, width=2: MLP(
    ...     hidden=(width,), output_dim=output_dim), "a doctest model", replace=True)
    >>> spec.options
    {'width': 2}
    >>> _ = MODELS.pop("tiny_doctest")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: got {name!r}; allowed: a non-empty string")
    if name in MODELS and not replace:
        raise ValueError(f"name: got {name!r}; allowed: a name not yet in {', '.join(MODELS)}")
    parameters = inspect.signature(builder).parameters
    if "output_dim" not in parameters:
        raise ValueError(f"builder: got {builder!r}; allowed: a callable with an output_dim "
                         "parameter")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(f"builder: got {builder!r}; allowed: a callable naming every option "
                         "(no **kwargs)")
    options = {key: p.default for key, p in parameters.items() if key != "output_dim"}
    spec = ModelSpec(name=name, builder=builder, description=description, options=options)
    MODELS[name] = spec
    return spec


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"model: got {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[name]


def get_model(name: str, *, output_dim: int, **options: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
      name: a key of ``MODELS``.
      output_dim: number of outputs per example (1 for regression of one target
        and for binary classification, K for K classes).
      **options: the model's options (see ``describe(name)``).

    Returns:
      An unbound Flax module.

    Raises:
      ValueError: unknown model, unknown or missing option, or a bad option value.

    >>> get_model("logistic", output_dim=1).num_classes
    2
    >>> get_model("mlp", output_dim=1, hiden=(3,))
    Traceback (most recent call last):
    ...
    ValueError: mlp option: got 'hiden'; allowed: hidden, activation, head, kernel_init, init_scale, bias_init, dropout_rate, dtype
    """
    spec = _spec(name)
    for key in options:
        if key not in spec.options:
            raise ValueError(f"{name} option: got {key!r}; allowed: {', '.join(spec.options)}")
    missing = [key for key, default in spec.options.items()
               if default is _REQUIRED and key not in options]
    if missing:
        raise ValueError(f"{name} option {missing[0]}: got nothing; allowed: it is required")
    return spec.builder(output_dim=output_dim, **options)


def describe(name: str) -> str:
    """One paragraph on a registered model: its description and options with defaults.

    Args:
      name: a key of ``MODELS``.

    Returns:
      ``"<name>: <description>\\n  options: key=default, ..."``.

    >>> print(describe("linear"))
    linear: linear regression, y = xW + b (MLP with no hidden layer and identity head)
      options: head='identity', kernel_init='lecun', init_scale=None, bias_init=0.0, dtype='float32'
    """
    spec = _spec(name)
    parts = [key + ("=<required>" if default is _REQUIRED else f"={default!r}")
             for key, default in spec.options.items()]
    return f"{name}: {spec.description}\n  options: {', '.join(parts) or '(none)'}"


#: Computation dtypes a model can be built with by name (mixed precision keeps
#: parameters, optimizer state and the loss in float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> Any:
    """The dtype named ``name`` (one of ``COMPUTE_DTYPES``).

    >>> compute_dtype("bfloat16")
    <class 'jax.numpy.bfloat16'>
    """
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype: got {name!r}; allowed: {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def _build_linear(output_dim: int, head: str = "identity", kernel_init: str = "lecun",
                  init_scale: float | None = None, bias_init: float = 0.0,
                  dtype: str = "float32") -> nn.Module:
    return LinearRegression(output_dim=output_dim, head=head, kernel_init=kernel_init,
                            init_scale=init_scale, bias_init=bias_init, dtype=compute_dtype(dtype))


def _build_logistic(output_dim: int, head: str = "logits", kernel_init: str = "lecun",
                    init_scale: float | None = None, bias_init: float = 0.0,
                    dtype: str = "float32") -> nn.Module:
    # Binary logistic regression has ONE logit; K >= 3 classes have K logits. Two
    # logits would be a redundant binary model, so it is refused rather than guessed.
    if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim in (0, 2) \
            or output_dim < 0:
        raise ValueError(f"output_dim: got {output_dim!r}; allowed: 1 (binary, one logit) or "
                         ">= 3 (K classes, K logits)")
    return LogisticRegression(num_classes=2 if output_dim == 1 else output_dim, head=head,
                              kernel_init=kernel_init, init_scale=init_scale,
                              bias_init=bias_init, dtype=compute_dtype(dtype))


def _build_mlp(output_dim: int, hidden: Sequence[int] = DEFAULT_MLP_HIDDEN,
               activation: str = "relu",
               head: str = "logits", kernel_init: str = "lecun",
               init_scale: float | None = None, bias_init: float = 0.0,
               dropout_rate: float = 0.0, dtype: str = "float32") -> nn.Module:
    return MLP(hidden=tuple(hidden) if isinstance(hidden, list) else hidden,
               output_dim=output_dim, activation=activation, head=head,
               kernel_init=kernel_init, init_scale=init_scale, bias_init=bias_init,
               dropout_rate=dropout_rate, dtype=compute_dtype(dtype))


register_model("linear", _build_linear,
               "linear regression, y = xW + b (MLP with no hidden layer and identity head)")
register_model("logistic", _build_logistic,
               "logistic regression: one logit (binary, sigmoid) or K logits (softmax)")
register_model("mlp", _build_mlp,
               "multilayer perceptron: Dense+activation per hidden width, then a linear output")

# Later model files register themselves on import; import them here, e.g.
# from jaxnets.models import cnn  # noqa: E402,F401
from jaxnets.models import rnn  # noqa: E402,F401
from jaxnets.models.rnn import RecurrentNet  # noqa: E402
__all__ += ["RecurrentNet"]
from jaxnets.models import transformer  # noqa: E402,F401
from jaxnets.models.transformer import (DecoderBlock, EncoderBlock, TransformerClassifier,  # noqa: E402
                                        TransformerLM)
__all__ += ["DecoderBlock", "EncoderBlock", "TransformerClassifier", "TransformerLM"]
from jaxnets.models import cnn  # noqa: E402,F401
from jaxnets.models.cnn import CNN, CNN1D, LeNet  # noqa: E402
from jaxnets.models.conv import Conv  # noqa: E402
from jaxnets.kernels import avg_pool, global_avg_pool, max_pool  # noqa: E402
__all__ += ["CNN", "CNN1D", "Conv", "LeNet", "avg_pool", "global_avg_pool", "max_pool"]
