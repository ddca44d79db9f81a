"""Linear and logistic regression as one-layer Flax modules.

Both compute z = xW + b on the flattened features of each example and apply an
output function ("head"). Their parameter tree is ``{"output": {"kernel", "bias"}}``,
the same as an ``MLP`` with ``hidden=()``, so the two can be swapped freely.
"""
from __future__ import annotations

from typing import Any, ClassVar

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.models.activations import HEADS, get_head
from jaxnets.models.initializers import INITIALIZERS, get_initializer


def flatten_features(x: jax.Array) -> jax.Array:
    """Reshape (batch, *feature_shape) to (batch, prod(feature_shape)).

    Args:
      x: array with a leading batch axis; a 1-D array is read as a batch of scalars.

    Returns:
      A 2-D array (batch, features).

    >>> flatten_features(jnp.zeros((5, 28, 28, 1))).shape
    (5, 784)
    """
    if x.ndim == 1:
        return x[:, None]
    return x.reshape((x.shape[0], math.prod(x.shape[1:])))


def check_dense_fields(*, output_dim: int, head: str, kernel_init: str,
                       init_scale: float | None, bias_init: float) -> None:
    """Raise a one-line ValueError for a bad field shared by the dense models.

    Args:
      output_dim: number of outputs per example, an int >= 1.
      head: a key of ``HEADS``.
      kernel_init: a key of ``INITIALIZERS``.
      init_scale: None or a number > 0 (see ``get_initializer``).
      bias_init: the constant every bias starts at.

    Returns:
      None.

    >>> check_dense_fields(output_dim=1, head="logits", kernel_init="he",
    ...                    init_scale=None, bias_init=0.0)
    """
    if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
        raise ValueError(f"output_dim: got {output_dim!r}; allowed: an int >= 1")
    if head not in HEADS:
        raise ValueError(f"head: got {head!r}; allowed: {', '.join(HEADS)}")
    if head == "softmax" and output_dim == 1:
        raise ValueError("head: got 'softmax' with output_dim 1 (always 1.0); allowed: "
                         "logits, identity, sigmoid, relu")
    if kernel_init not in INITIALIZERS:
        raise ValueError(f"kernel_init: got {kernel_init!r}; allowed: {', '.join(INITIALIZERS)}")
    get_initializer(kernel_init, init_scale)  # validates init_scale
    if isinstance(bias_init, bool) or not isinstance(bias_init, (int, float)):
        raise ValueError(f"bias_init: got {bias_init!r}; allowed: a number")


def output_layer(features: int, kernel_init: str, init_scale: float | None,
                 bias_init: float, name: str = "output", *, dtype: Any = None,
                 param_dtype: Any = jnp.float32) -> nn.Dense:
    """The named ``nn.Dense`` every dense model ends with.

    Args:
      features: number of output units.
      kernel_init, init_scale: see ``get_initializer``.
      bias_init: constant initial bias.
      name: the layer's key in the parameter tree.
      dtype: computation dtype (None: that of the inputs and parameters), e.g.
        ``jnp.bfloat16`` for mixed precision; param_dtype: dtype the parameters are stored in.

    Returns:
      An unbound ``nn.Dense``.

    >>> output_layer(3, "glorot", None, 0.0).features
    3
    """
    return nn.Dense(features, kernel_init=get_initializer(kernel_init, init_scale),
                    bias_init=nn.initializers.constant(bias_init), name=name, dtype=dtype,
                    param_dtype=param_dtype)


class _LinearModel(nn.Module):
    """What linear and logistic regression share: ŷ = head(xW + b) on the flattened features.

    Subclasses declare the fields (their order and defaults are public API) and
    ``output_dim``; one ``output`` layer keeps the parameter tree equal to an
    ``MLP`` with ``hidden=()``.
    """

    def __post_init__(self) -> None:
        check_dense_fields(output_dim=self.output_dim, head=self.head,
                           kernel_init=self.kernel_init, init_scale=self.init_scale,
                           bias_init=self.bias_init)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Map (batch, *feature_shape) to (batch, output_dim): head(xW + b).

        For logistic regression these are logits or, with a "sigmoid"/"softmax"
        head, probabilities.
        """
        z = output_layer(self.output_dim, self.kernel_init, self.init_scale, self.bias_init,
                         dtype=self.dtype, param_dtype=self.param_dtype)(flatten_features(x))
        return get_head(self.head)(z)

    def param_count(self, input_dim: int) -> int:
        """(input_dim + 1)·output_dim.

        Args:
          input_dim: number of (flattened) input features.

        Returns:
          The number of scalars in the parameter tree.

        >>> LinearRegression(output_dim=2).param_count(3)
        8
        >>> LogisticRegression(num_classes=10).param_count(784)
        7850
        """
        return (input_dim + 1) * self.output_dim


class LinearRegression(_LinearModel):
    """Linear regression: ŷ = head(xW + b), with x the flattened features.

    Parameters: a kernel W of shape (d, output_dim) and a bias b of shape
    (output_dim,): (d + 1)·output_dim scalars for d input features.

    Attributes:
      output_dim: number of outputs per example.
      head: output function (see ``HEADS``); "identity" (= "logits") by default.
      kernel_init, init_scale, bias_init: initialization (see ``get_initializer``).
      dtype, param_dtype: computation and parameter dtypes (mixed precision: bfloat16
        computation, float32 parameters).

    >>> model = LinearRegression(output_dim=1)
    >>> x = jnp.ones((4, 3))
    >>> variables = model.init({"params": jax.random.key(0)}, x)
    >>> jax.tree.map(jnp.shape, variables["params"])
    {'output': {'bias': (1,), 'kernel': (3, 1)}}
    >>> model.apply(variables, x).shape
    (4, 1)
    """

    output_dim: int = 1
    head: str = "identity"
    kernel_init: str = "lecun"
    init_scale: float | None = None
    bias_init: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32


class LogisticRegression(_LinearModel):
    """Logistic regression, binary or multinomial, returning logits by default.

    Binary (``num_classes == 2``): ONE logit z = xw + b per example, and
    P(y = 1 | x) = σ(z) = 1 / (1 + e^(−z)); ``output_dim`` is 1.
    Multinomial (``num_classes = K > 2``): K logits z = xW + b and
    P(y = k | x) = softmax(z)_k; ``output_dim`` is K.
    Parameters: (d + 1)·output_dim for d input features.

    Attributes:
      num_classes: K >= 2.
      head: "logits" (= "identity") by default; "sigmoid" (binary) or "softmax"
        (multinomial) to output probabilities instead.
      kernel_init, init_scale, bias_init: initialization (see ``get_initializer``).

    >>> model = LogisticRegression(num_classes=2, head="sigmoid")
    >>> x = jnp.zeros((2, 5))
    >>> variables = model.init({"params": jax.random.key(0)}, x)
    >>> model.output_dim, model.apply(variables, x).tolist()
    (1, [[0.5], [0.5]])
    """

    #: Tasks this model can be trained for (``fit`` refuses the others before compiling).
    supported_tasks: ClassVar[tuple[str, ...]] = ("binary", "multiclass")

    num_classes: int = 2
    head: str = "logits"
    kernel_init: str = "lecun"
    init_scale: float | None = None
    bias_init: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(f"num_classes: got {k!r}; allowed: an int >= 2")
        allowed = ("logits", "identity", "sigmoid") if k == 2 else ("logits", "identity",
                                                                    "softmax")
        if self.head not in allowed:
            raise ValueError(f"head: got {self.head!r}; allowed for num_classes={k}: "
                             f"{', '.join(allowed)}")
        super().__post_init__()  # then the checks every dense model shares

    @property
    def output_dim(self) -> int:
        """1 for binary (one logit), K for multinomial."""
        return 1 if self.num_classes == 2 else self.num_classes
