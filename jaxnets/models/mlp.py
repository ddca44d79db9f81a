"""The multilayer perceptron (fully connected feed-forward network).

With h_0 = x (the flattened features of an example), L = len(hidden) and g the
activation:

    h_l = g(h_{l−1} W_l + b_l)        l = 1..L        (layer "hidden_{l−1}")
    ŷ   = head(h_L W_out + b_out)                      (layer "output")

Parameter count for d inputs, widths n_1..n_L and k outputs, n_0 = d, n_{L+1} = k:
Σ_{l=1}^{L+1} (n_{l−1} + 1)·n_l. With ``hidden=()`` the MLP is linear regression
(head "identity") or logistic regression (head "logits"/"sigmoid"/"softmax").
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.models.activations import ACTIVATIONS, get_activation, get_head
from jaxnets.models.linear import check_dense_fields, flatten_features, output_layer
from jaxnets.models.initializers import get_initializer


class MLP(nn.Module):
    """Fully connected network: ``len(hidden)`` hidden layers, then a linear output.

    Each hidden activation is also recorded with ``sow`` under the
    "intermediates" collection as ``hidden_{l}_output`` (only kept when that collection
    is made mutable in ``apply``), so a worked example can read h.

    Attributes:
      hidden: widths of the hidden layers, e.g. ``(64, 64)``; ``()`` for none
        (required; a list is turned into a tuple).
      output_dim: number of outputs per example (required).
      activation: hidden activation, a key of ``ACTIVATIONS`` (the same in every layer).
      head: output function, a key of ``HEADS``; "logits" (linear) by default.
      kernel_init, init_scale: kernel initializer and its scale (see ``get_initializer``).
      bias_init: the constant every bias starts at.
      dropout_rate: probability of zeroing each hidden unit when ``train=True``
        (inverted dropout, kept units are scaled by 1/(1−rate)); 0 disables it.
      dtype: computation dtype (None: float32 here); ``jnp.bfloat16`` or
        ``jnp.float16`` for mixed precision. param_dtype: storage dtype of the
        parameters (keep float32 so optimizer updates are not rounded away).

    >>> model = MLP(hidden=(4, 5), output_dim=2)
    >>> x = jnp.ones((7, 3))
    >>> variables = model.init({"params": jax.random.key(0)}, x)
    >>> sorted(variables["params"])
    ['hidden_0', 'hidden_1', 'output']
    >>> model.apply(variables, x).shape, model.param_count(3)
    ((7, 2), 53)
    """

    hidden: Sequence[int]
    output_dim: int
    activation: str = "relu"
    head: str = "logits"
    kernel_init: str = "lecun"
    init_scale: float | None = None
    bias_init: float = 0.0
    dropout_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (tuple, list)):
            raise ValueError(f"hidden: got {self.hidden!r}; allowed: a tuple of ints >= 1")
        if isinstance(self.hidden, list):  # a tuple keeps the module hashable
            self.hidden = tuple(self.hidden)
        for width in self.hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"hidden: got {self.hidden!r}; allowed: a tuple of ints >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: got {self.activation!r}; allowed: "
                             f"{', '.join(ACTIVATIONS)}")
        rate = self.dropout_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"dropout_rate: got {rate!r}; allowed: 0 <= rate < 1")
        check_dense_fields(output_dim=self.output_dim, head=self.head,
                           kernel_init=self.kernel_init, init_scale=self.init_scale,
                           bias_init=self.bias_init)
        super().__post_init__()

    def param_count(self, input_dim: int) -> int:
        """Σ_l (n_{l−1} + 1)·n_l with n_0 = input_dim and n_{L+1} = output_dim.

        Args:
          input_dim: number of (flattened) input features.

        Returns:
          The number of scalars in the parameter tree.

        >>> MLP(hidden=(2,), output_dim=1).param_count(2)  # the 2-2-1 house-price net
        9
        """
        widths = (input_dim, *self.hidden, self.output_dim)
        return sum((n_in + 1) * n_out for n_in, n_out in zip(widths[:-1], widths[1:]))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Map (batch, *feature_shape) to (batch, output_dim)."""
        g = get_activation(self.activation)
        h = flatten_features(x)
        for index, width in enumerate(self.hidden):
            h = nn.Dense(width, kernel_init=get_initializer(self.kernel_init, self.init_scale),
                         bias_init=nn.initializers.constant(self.bias_init),
                         dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f"hidden_{index}")(h)
            h = g(h)
            self.sow("intermediates", f"hidden_{index}_output", h)
            if self.dropout_rate > 0:
                h = nn.Dropout(rate=self.dropout_rate, deterministic=not train)(h)
        z = output_layer(self.output_dim, self.kernel_init, self.init_scale,
                         self.bias_init, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        return get_head(self.head)(z)
