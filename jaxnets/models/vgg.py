"""A small VGG-style network (Simonyan & Zisserman 2015) for 32x32 images such as CIFAR-10.

Stage s (s = 0..S−1) is ``convs[s]`` 3x3 convolutions of ``channels[s]`` output
channels, each followed by batch normalization and ReLU, then a 2x2 max pool:

    h ← relu(BN(h ⋆ W_{s,k}))   for k = 0..convs[s]−1   (SAME padding, stride 1, no bias)
    h ← maxpool_2x2(h)
    f = flatten(h);   f ← relu(BN(dropout(f) W_j))  for each width in ``dense``
    ŷ = dropout(f) W_out + b_out

Every convolution is one ``Conv`` layer, so ``conv_impl`` ("auto", "xla",
"patches") switches the arithmetic without changing any value or parameter.
Parameter count for H x W x C_0 inputs, with C_{s,k} the channels of conv k of
stage s, F = (H / 2^S)·(W / 2^S)·C_last and n_0 = F:

    Σ_{s,k} (9·C_in·C_{s,k} + 2·C_{s,k})  +  Σ_j (n_{j−1} + 2)·n_j  +  (n_J + 1)·output_dim

(2 per channel or unit: batch norm's γ and β, which replace the bias.)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.kernels import check_impl
from jaxnets.models.conv import Conv
from jaxnets.models.initializers import INITIALIZERS, get_initializer
from jaxnets.models.registry import compute_dtype, register_model
from jaxnets.models.regularizers import (BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM, check_rate,
                                         make_batch_norm, make_dropout)


def _widths(value: Any, field: str, *, allow_empty: bool) -> tuple[int, ...]:
    # One int means one layer (as CNN takes it; the CLI's --model-opt channels=4 gives an int).
    one = isinstance(value, int) and not isinstance(value, bool)
    values = (value,) if one else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values) \
            or (not values and not allow_empty):
        raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1 or a tuple of them")
    return values


class VGG(nn.Module):
    """VGG-style CNN: stages of [3x3 conv, batch norm, ReLU] x convs, then a 2x2 max pool; a dense head.

    Attributes:
      output_dim: number of classes (required).
      channels: output channels of each stage, e.g. ``(64, 128, 256)``.
      convs: convolutions per stage: one int for every stage, or one per stage.
      dense: widths of the hidden dense layers (batch norm and ReLU after each); ``()`` for none.
      dropout_rate: inverted dropout on the input of every dense layer in training.
      input_shape: reshape each flat example to this (H, W, C) first (e.g. ``(8, 8, 1)`` for
        scikit-learn's digits), as ``CNN`` does; None takes images as they come.
      bn_momentum, bn_epsilon: batch norm's running-average momentum (Flax convention) and ε.
      batch_norm_axis_name: mapped axis over which training averages batch statistics
        (set by ``fit`` under ``parallel="pmap"``).
      kernel_init, init_scale: initializer of every kernel (``get_initializer``).
      conv_impl: "auto", "xla" or "patches" (see ``jaxnets.kernels``): same values either way.
      dtype, param_dtype: computation and parameter dtypes.

    >>> model = VGG(output_dim=10, channels=(4, 8), dense=(16,))
    >>> x = jnp.ones((2, 8, 8, 3))
    >>> variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, x)
    >>> [name for name in variables["params"] if name.startswith("stage_0")]
    ['stage_0_bn_0', 'stage_0_bn_1', 'stage_0_conv_0', 'stage_0_conv_1']
    >>> jax.eval_shape(model.apply, variables, x).shape
    (2, 10)
    >>> model.param_count((8, 8, 3))
    1878
    """

    output_dim: int
    channels: Sequence[int] = (64, 128, 256)
    convs: Any = 2
    dense: Sequence[int] = (256,)
    dropout_rate: float = 0.0
    input_shape: Sequence[int] | None = None
    bn_momentum: float = BATCH_NORM_MOMENTUM
    bn_epsilon: float = BATCH_NORM_EPSILON
    batch_norm_axis_name: str | None = None
    kernel_init: str = "he"
    init_scale: float | None = None
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        self.channels = _widths(self.channels, "channels", allow_empty=False)
        self.dense = _widths(self.dense, "dense", allow_empty=True)
        if self.input_shape is not None:
            self.input_shape = _widths(self.input_shape, "input_shape", allow_empty=False)
            if len(self.input_shape) != 3:
                raise ValueError(f"input_shape: got {self.input_shape!r}; allowed: (H, W, C) of one image")
        self.convs = self.convs_per_stage()
        if isinstance(self.output_dim, bool) or not isinstance(self.output_dim, int) or self.output_dim < 1:
            raise ValueError(f"output_dim: got {self.output_dim!r}; allowed: an int >= 1")
        check_rate(self.dropout_rate)
        check_impl(self.conv_impl, "conv_impl")
        make_batch_norm(train=False, momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        if self.kernel_init not in INITIALIZERS:
            raise ValueError(f"kernel_init: got {self.kernel_init!r}; allowed: {', '.join(INITIALIZERS)}")
        get_initializer(self.kernel_init, self.init_scale)  # checks init_scale
        super().__post_init__()

    def convs_per_stage(self) -> tuple[int, ...]:
        """``convs`` as one int >= 1 per stage.

        >>> VGG(output_dim=2, channels=(4, 8, 16), convs=2).convs_per_stage()
        (2, 2, 2)
        """
        value = self.convs
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,) * len(self.channels)
        values = _widths(value, "convs", allow_empty=False)
        if len(values) != len(self.channels):
            raise ValueError(f"convs: got {self.convs!r}; allowed: an int >= 1 or {len(self.channels)} of them "
                             "(one per stage)")
        return values

    def param_count(self, shape: Sequence[int]) -> int:
        """Trainable scalars for images of ``shape`` (H, W, C) (the module docstring's formula).

        >>> VGG(output_dim=10).param_count((32, 32, 3))
        2197962
        """
        height, width, width_in = (int(n) for n in shape)
        total = 0
        for features, count in zip(self.channels, self.convs_per_stage()):
            for _ in range(count):
                total += 9 * width_in * features + 2 * features
                width_in = features
            height, width = height // 2, width // 2
        fan_in = height * width * width_in
        for units in self.dense:
            total += fan_in * units + 2 * units
            fan_in = units
        return total + (fan_in + 1) * self.output_dim

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Map images (N, H, W, C) to logits (N, output_dim); flat rows first become ``input_shape``."""
        x = jnp.asarray(x)
        if self.input_shape is not None:
            x = x.reshape(x.shape[0], *self.input_shape)
        if x.ndim != 4:
            raise ValueError(f"x: got shape {x.shape}; allowed: images (N, H, W, C)")
        if min(x.shape[1:3]) < 2 ** len(self.channels):
            raise ValueError(f"x: got images of {x.shape[1]}x{x.shape[2]}; allowed: at least "
                             f"{2 ** len(self.channels)} pixels a side ({len(self.channels)} 2x2 pools)")
        for stage, (features, count) in enumerate(zip(self.channels, self.convs_per_stage())):
            for k in range(count):
                conv = Conv(features, 3, use_bias=False, impl=self.conv_impl, kernel_init=self.kernel_init,
                            init_scale=self.init_scale, dtype=self.dtype, param_dtype=self.param_dtype,
                            name=f"stage_{stage}_conv_{k}")
                norm = self._batch_norm(train, f"stage_{stage}_bn_{k}")
                # The pool ends the stage: it runs with the stage's last convolution.
                x = conv(x, normalize=norm, activation="relu", pool="max" if k == count - 1 else None)
        x = x.reshape(x.shape[0], -1)
        init = get_initializer(self.kernel_init, self.init_scale)
        for index, units in enumerate(self.dense):
            x = self._dropout(x, train)
            x = nn.Dense(units, use_bias=False, kernel_init=init, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"dense_{index}")(x)
            x = nn.relu(self._batch_norm(train, f"dense_bn_{index}")(x))
        x = self._dropout(x, train)
        return nn.Dense(self.output_dim, kernel_init=init, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="output")(x)

    def _batch_norm(self, train: bool, name: str) -> nn.BatchNorm:
        return make_batch_norm(train=train, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype,
                               param_dtype=self.param_dtype, axis_name=self.batch_norm_axis_name, name=name)

    def _dropout(self, x: jax.Array, train: bool) -> jax.Array:
        return x if self.dropout_rate == 0 else make_dropout(self.dropout_rate, train=train)(x)


def _build_vgg(output_dim: int, channels: Any = (64, 128, 256), convs: Any = 2, dense: Any = (256,),
               dropout_rate: float = 0.0, kernel_init: str = "he", init_scale: float | None = None,
               conv_impl: str = "auto", input_shape: Any = None, dtype: str = "float32") -> nn.Module:
    return VGG(output_dim=output_dim, channels=channels, convs=convs, dense=dense, dropout_rate=dropout_rate,
               input_shape=input_shape,
               kernel_init=kernel_init, init_scale=init_scale, conv_impl=conv_impl, dtype=compute_dtype(dtype))


register_model("vgg", _build_vgg,
               "VGG-style CNN for 32x32 images: per stage, [3x3 conv, batch norm, ReLU] x convs then 2x2 max "
               "pool; then dense layers")

__all__ = ["VGG"]
