"""Convolutional networks: a configurable ``CNN`` and two named presets, ``LeNet`` and ``CNN1D``.

A ``CNN`` is a stack of convolution blocks followed by a dense head:

    block l  (l = 0..L−1):  h ← pool(g(BN(h ⋆ W_l) + b_l))  (BN only with batch_norm, which
                                                              replaces b_l; pool only with pool set)
    features:               f = flatten(h)  or  global_avg_pool(h)
    head:                   f ← g(BN(dropout(f) W_j + b_j))   for each width in ``dense``
                            ŷ = head(dropout(f) W_out + b_out)

Each block is one call of its ``Conv`` layer, which runs
``jaxnets.kernels.conv_bias_act_pool``; ``conv_impl`` picks XLA's convolution and
pooling or the hand-written CPU kernels ("auto": the latter on CPU only) and changes
no value, gradient or parameter.

Inputs are channels-last images (N, H, W, C) or signals (N, L, C); a batch of
flat vectors (N, L) is read as signals with one channel, so MNIST-1D's (N, 40)
goes in directly. ``input_shape`` reshapes each flat example first, e.g.
``input_shape=(8, 8, 1)`` turns scikit-learn's (N, 64) digits into images.

Parameter count, with C_0 the input channels, |k_l| the window size of conv l
(k_h·k_w), F the flattened size after the last block (H_L·W_L·C_L, or C_L with
global pooling) and n_1..n_J the dense widths (n_0 = F, n_{J+1} = output_dim):

    Σ_l (|k_l|·C_{l−1}·C_l + C_l)  +  Σ_{j=1}^{J+1} (n_{j−1} + 1)·n_j

With ``batch_norm`` each conv and hidden dense layer has no bias but a scale γ
and a shift β per channel instead: + 2·C_l (and + 2·n_j) in place of + C_l (+ n_j).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.kernels import check_impl, global_avg_pool
from jaxnets.kernels.windows import conv_output_size, normalize_padding
from jaxnets.models.registry import compute_dtype, register_model
from jaxnets.models.activations import ACTIVATIONS, get_activation, get_head
from jaxnets.models.conv import Conv
from jaxnets.models.initializers import get_initializer
from jaxnets.models.linear import check_dense_fields
from jaxnets.models.regularizers import (BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM, check_rate,
                                         make_batch_norm, make_dropout)

#: Pooling after each convolution block.
POOLS = ("max", "avg", None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _ints(value: Any, field: str, allow_empty: bool = True) -> tuple[int, ...]:
    """An int is one layer; a tuple/list lists the layers; every entry an int >= 1."""
    values = (value,) if _is_int(value) else tuple(value) if isinstance(value, (tuple, list)) \
        else None
    if values is None or not all(_is_int(v) and v >= 1 for v in values) \
            or (not values and not allow_empty):
        raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1 or a tuple of them")
    return values


class CNN(nn.Module):
    """A convolutional network: conv blocks, flatten (or global average pool), dense layers.

    Attributes:
      output_dim: number of outputs per example (required).
      channels: output channels of each conv layer, e.g. ``(32, 64)``.
      kernel_size: one int for every conv layer (a square window), or one entry per
        layer, each an int or a tuple per spatial axis.
      strides: one int for every conv layer, or one entry per layer.
      padding: "SAME", "VALID" or an int p for every conv layer, or one per layer.
      pool: "max", "avg" or None: pooling after each conv block, window = stride =
        ``pool_size`` (VALID: a remainder row/column is dropped).
      pool_size: the pooling window.
      activation: a key of ``ACTIVATIONS``, after every conv and hidden dense layer.
      batch_norm: batch normalization before every activation (biases dropped there).
      bn_momentum, bn_epsilon: batch-norm running-average momentum (Flax convention) and ε.
      batch_norm_axis_name: the mapped axis (e.g. ``jax.pmap(..., axis_name="data")``)
        over which training averages the batch statistics, so every device normalizes
        with those of the global batch (synchronized batch norm); None uses each
        device's own batch. Parameter and collection names do not change.
      dropout_rate: inverted dropout on the input of every dense layer (the
        flattened features and each hidden dense output) in training; 0 disables it.
      dense: widths of the hidden dense layers, e.g. ``(256,)``; ``()`` for none.
      global_pool: average over all positions instead of flattening.
      input_shape: reshape each example to this shape first (e.g. ``(8, 8, 1)``);
        None keeps it (adding one channel to flat vectors).
      head: output function, a key of ``HEADS``.
      kernel_init, init_scale: initializer of every kernel (see ``get_initializer``).
      conv_impl: "auto", "xla" or "patches": XLA's convolution and pooling, or the
        hand-written kernels of ``jaxnets.kernels`` ("auto": those on CPU only). The
        same values, gradients and parameters either way.
      dtype, param_dtype: computation and parameter dtypes.

    >>> model = CNN(output_dim=10, channels=(4, 8), dense=(16,))
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> variables = jax.eval_shape(model.init, {"params": jax.random.key(0)}, x)
    >>> list(variables["params"])
    ['conv_0', 'conv_1', 'dense_0', 'output']
    >>> jax.eval_shape(model.apply, variables, x).shape, model.param_count((8, 8, 1))
    ((2, 10), 1034)
    """

    output_dim: int
    channels: Sequence[int] = (32, 64)
    kernel_size: Any = 3
    strides: Any = 1
    padding: Any = "SAME"
    pool: str | None = "max"
    pool_size: int = 2
    activation: str = "relu"
    batch_norm: bool = False
    bn_momentum: float = BATCH_NORM_MOMENTUM
    bn_epsilon: float = BATCH_NORM_EPSILON
    batch_norm_axis_name: str | None = None
    dropout_rate: float = 0.0
    dense: Sequence[int] = (256,)
    global_pool: bool = False
    input_shape: Sequence[int] | None = None
    head: str = "logits"
    kernel_init: str = "lecun"
    init_scale: float | None = None
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        for field in ("channels", "kernel_size", "strides", "padding", "dense", "input_shape"):
            setattr(self, field, _as_tuple(getattr(self, field)))
        self.channels = _ints(self.channels, "channels")
        self.dense = _ints(self.dense, "dense")
        for field in ("kernel_size", "strides"):
            self._per_layer(field)  # validates
        self._per_layer("padding")
        if self.pool not in POOLS:
            raise ValueError(f"pool: got {self.pool!r}; allowed: max, avg, None")
        if not _is_int(self.pool_size) or self.pool_size < 1:
            raise ValueError(f"pool_size: got {self.pool_size!r}; allowed: an int >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: got {self.activation!r}; allowed: "
                             f"{', '.join(ACTIVATIONS)}")
        for field in ("batch_norm", "global_pool"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field}: got {getattr(self, field)!r}; allowed: True, False")
        check_rate(self.dropout_rate)
        if self.input_shape is not None:
            self.input_shape = _ints(self.input_shape, "input_shape", allow_empty=False)
        check_impl(self.conv_impl, "conv_impl")
        name = self.batch_norm_axis_name
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"batch_norm_axis_name: got {name!r}; allowed: None or a non-empty "
                             "string (a mapped axis name)")
        make_batch_norm(train=False, momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        check_dense_fields(output_dim=self.output_dim, head=self.head,
                           kernel_init=self.kernel_init, init_scale=self.init_scale,
                           bias_init=0.0)
        super().__post_init__()

    # ---------------------------------------------------------------- configuration

    def _per_layer(self, field: str) -> tuple:
        """The value of ``field`` for each conv layer (broadcast or checked per layer)."""
        value = getattr(self, field)
        n = len(self.channels)
        if field == "padding":
            if isinstance(value, tuple):
                if len(value) != n:
                    raise ValueError(f"padding: got {value!r}; allowed: one padding or {n} "
                                     "(one per conv layer)")
                return tuple(normalize_padding(v) for v in value)
            return (normalize_padding(value),) * n
        ok = _is_int(value) and value >= 1
        if isinstance(value, tuple) and len(value) == n:
            ok = all((_is_int(v) and v >= 1) or (isinstance(v, tuple) and len(v) in (1, 2)
                                                 and all(_is_int(u) and u >= 1 for u in v))
                     for v in value)
        if not ok:
            raise ValueError(f"{field}: got {value!r}; allowed: an int >= 1 or {n} entries "
                             "(one per conv layer), each an int or a tuple per spatial axis")
        return (value,) * n if _is_int(value) else value

    def example_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The (*spatial, channels) shape the first conv sees for one example of ``shape``.

        Args:
          shape: one example's shape as given to the model, e.g. ``(40,)`` or ``(8, 8, 1)``.

        Returns:
          ``input_shape`` if set (its size must match), ``(L, 1)`` for a flat
          example of length L, else ``shape``.

        >>> CNN(output_dim=2).example_shape((40,))
        (40, 1)
        >>> CNN(output_dim=2, input_shape=(8, 8, 1)).example_shape((64,))
        (8, 8, 1)
        """
        shape = tuple(int(n) for n in shape)
        if self.input_shape is not None:
            if math.prod(shape) != math.prod(self.input_shape):
                raise ValueError(f"input_shape: got {self.input_shape!r} for examples of shape "
                                 f"{shape}; allowed: a shape with {math.prod(shape)} entries")
            shape = tuple(self.input_shape)
        elif len(shape) == 1:
            shape = (*shape, 1)
        if len(shape) not in (2, 3):
            raise ValueError(f"x: got examples of shape {shape}; allowed: (L,), (L, C) or "
                             "(H, W, C), or set input_shape")
        return shape

    def block_shapes(self, shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Per-example shape entering the network and after each conv block.

        Args:
          shape: one example's shape as given to the model.

        Returns:
          ``[(*spatial, C_0), (*spatial_1, C_1), ...]``, one entry more than ``channels``.

        >>> CNN1D(output_dim=10).block_shapes((40,))
        [(40, 1), (19, 25), (10, 25), (5, 25)]
        """
        current = self.example_shape(shape)
        shapes = [current]
        ndim = len(current) - 1
        per_layer = zip(self.channels, self._per_layer("kernel_size"),
                        self._per_layer("strides"), self._per_layer("padding"))
        for index, (features, kernel, stride, padding) in enumerate(per_layer):
            kernel = (kernel,) * ndim if _is_int(kernel) else kernel
            stride = (stride,) * ndim if _is_int(stride) else stride
            if len(kernel) != ndim or len(stride) != ndim:
                raise ValueError(f"kernel_size/strides of conv_{index}: got {kernel}/{stride}; "
                                 f"allowed: {ndim} entries for {ndim}-D inputs")
            spatial = [conv_output_size(n, k, s, padding)
                       for n, k, s in zip(current[:-1], kernel, stride)]
            if self.pool is not None:
                spatial = [n // self.pool_size for n in spatial]
            if min(spatial) < 1:
                raise ValueError(f"x: got examples of shape {shapes[0]}; allowed: a size that "
                                 f"stays >= 1 through conv_{index} (it reaches {tuple(spatial)})")
            current = (*spatial, features)
            shapes.append(current)
        return shapes

    def param_count(self, shape: Sequence[int]) -> int:
        """Number of trainable scalars for examples of ``shape``.

        conv l: k_l·C_{l−1}·C_l weights plus C_l biases (or, with batch norm, 2·C_l
        for γ and β); hidden dense j: n_{j−1}·n_j plus n_j (or 2·n_j with batch norm);
        output: (n + 1)·output_dim. Here k_l is the window size (k_h·k_w), n_0 = F
        the flattened size (H_L·W_L·C_L, or C_L with global pooling).

        Args:
          shape: one example's shape as given to the model, e.g. ``(8, 8, 1)``.

        Returns:
          The number of scalars in the "params" collection (batch statistics excluded).

        >>> CNN1D(output_dim=10).param_count((40,))  # the MNIST-1D paper's CNN
        5210
        """
        shapes = self.block_shapes(shape)
        per_channel = 2 if self.batch_norm else 1
        total = 0
        for (before, after), kernel in zip(zip(shapes[:-1], shapes[1:]),
                                           self._per_layer("kernel_size")):
            ndim = len(before) - 1
            window = kernel ** ndim if _is_int(kernel) else math.prod(kernel)
            total += window * before[-1] * after[-1] + per_channel * after[-1]
        width = shapes[-1][-1] if self.global_pool else math.prod(shapes[-1])
        for hidden in self.dense:
            total += width * hidden + per_channel * hidden
            width = hidden
        return total + (width + 1) * self.output_dim

    # ---------------------------------------------------------------- forward

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Map a batch (N, *example_shape) to (N, output_dim)."""
        x = jnp.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"x: got shape {x.shape}; allowed: (batch, *example_shape)")
        x = x.reshape(x.shape[0], *self.example_shape(x.shape[1:]))
        self.block_shapes(x.shape[1:])  # one-line error if a size reaches 0
        g = get_activation(self.activation)
        init = get_initializer(self.kernel_init, self.init_scale)
        per_layer = zip(self.channels, self._per_layer("kernel_size"),
                        self._per_layer("strides"), self._per_layer("padding"))
        for index, (features, kernel, stride, padding) in enumerate(per_layer):
            # One block: conv → (batch norm) → bias → activation → pool.
            conv = Conv(features, kernel, stride, padding, use_bias=not self.batch_norm,
                        impl=self.conv_impl, kernel_init=self.kernel_init,
                        init_scale=self.init_scale, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"conv_{index}")
            norm = self._batch_norm(train, f"conv_bn_{index}") if self.batch_norm else None
            x = conv(x, normalize=norm, activation=self.activation, pool=self.pool,
                     pool_size=self.pool_size)
        x = global_avg_pool(x) if self.global_pool else x.reshape(x.shape[0], -1)
        for index, width in enumerate(self.dense):
            x = self._dropout(x, train)
            x = nn.Dense(width, use_bias=not self.batch_norm, kernel_init=init, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"dense_{index}")(x)
            if self.batch_norm:
                x = self._batch_norm(train, f"dense_bn_{index}")(x)
            x = g(x)
        x = self._dropout(x, train)
        z = nn.Dense(self.output_dim, kernel_init=init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="output")(x)
        return get_head(self.head)(z)

    def _batch_norm(self, train: bool, name: str) -> nn.BatchNorm:
        return make_batch_norm(train=train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               axis_name=self.batch_norm_axis_name, name=name)

    def _dropout(self, x: jax.Array, train: bool) -> jax.Array:
        if self.dropout_rate == 0:
            return x
        return make_dropout(self.dropout_rate, train=train)(x)


class LeNet(CNN):
    """LeNet-5-style network (LeCun et al. 1998): two 5x5 conv + pool blocks, dense 120 and 84.

    The classic tanh activation and average pooling are the defaults. Both convs
    pad SAME so that small images such as 8x8 digits fit; the 1998 layout on
    28x28 inputs is ``padding=(2, "VALID")`` (61,706 parameters).

    >>> LeNet(output_dim=10).param_count((8, 8, 1))
    21386
    >>> LeNet(output_dim=10, padding=(2, "VALID")).param_count((28, 28, 1))
    61706
    """

    channels: Sequence[int] = (6, 16)
    kernel_size: Any = 5
    padding: Any = "SAME"
    pool: str | None = "avg"
    activation: str = "tanh"
    dense: Sequence[int] = (120, 84)


class CNN1D(CNN):
    """The MNIST-1D paper's CNN (Greydanus 2020): three 1-D convs of 25 channels, one dense layer.

    Kernels 5, 3, 3, stride 2, one zero of padding on each side (PyTorch's
    ``padding=1``), ReLU, no pooling, then flatten and a linear layer. On 40-step
    signals the lengths are 40 → 19 → 10 → 5, so the parameter count is
    (5·1·25 + 25) + 2·(3·25·25 + 25) + (5·25 + 1)·10 = 5,210.

    >>> CNN1D(output_dim=10).param_count((40,))
    5210
    """

    channels: Sequence[int] = (25, 25, 25)
    kernel_size: Any = (5, 3, 3)
    strides: Any = 2
    padding: Any = 1
    pool: str | None = None
    dense: Sequence[int] = ()


# ---------------------------------------------------------------- registry


def _build_cnn(output_dim: int, channels: Any = (32, 64), kernel_size: Any = 3, strides: Any = 1,
               padding: Any = "SAME", pool: str | None = "max", pool_size: int = 2,
               activation: str = "relu", batch_norm: bool = False, dropout_rate: float = 0.0,
               dense: Any = (256,), global_pool: bool = False, input_shape: Any = None,
               head: str = "logits", kernel_init: str = "lecun",
               init_scale: float | None = None, conv_impl: str = "auto",
               dtype: str = "float32") -> nn.Module:
    return CNN(output_dim=output_dim, channels=channels, kernel_size=kernel_size,
               strides=strides, padding=padding, pool=pool, pool_size=pool_size,
               activation=activation, batch_norm=batch_norm, dropout_rate=dropout_rate,
               dense=dense, global_pool=global_pool, input_shape=input_shape, head=head,
               kernel_init=kernel_init, init_scale=init_scale, conv_impl=conv_impl,
               dtype=compute_dtype(dtype))


def _build_lenet(output_dim: int, activation: str = "tanh", pool: str | None = "avg",
                 padding: Any = "SAME", batch_norm: bool = False, dropout_rate: float = 0.0,
                 input_shape: Any = None, conv_impl: str = "auto",
                 dtype: str = "float32") -> nn.Module:
    return LeNet(output_dim=output_dim, activation=activation, pool=pool, padding=padding,
                 batch_norm=batch_norm, dropout_rate=dropout_rate, input_shape=input_shape,
                 conv_impl=conv_impl, dtype=compute_dtype(dtype))


def _build_cnn1d(output_dim: int, channels: int = 25, activation: str = "relu",
                 dropout_rate: float = 0.0, input_shape: Any = None,
                 conv_impl: str = "auto", dtype: str = "float32") -> nn.Module:
    if not _is_int(channels) or channels < 1:
        raise ValueError(f"channels: got {channels!r}; allowed: an int >= 1 (the width of all "
                         "three conv layers)")
    return CNN1D(output_dim=output_dim, channels=(channels,) * 3, activation=activation,
                 dropout_rate=dropout_rate, input_shape=input_shape, conv_impl=conv_impl,
                 dtype=compute_dtype(dtype))


register_model("cnn", _build_cnn,
               "convolutional network: [conv, (BN), activation, (pool)] per channel width, then "
               "flatten or global average pool, then dense layers")
register_model("lenet", _build_lenet,
               "LeNet-5-style CNN: conv5-6, pool, conv5-16, pool, dense 120, 84 (tanh, avg pool)")
register_model("cnn1d", _build_cnn1d,
               "the MNIST-1D paper's 1-D CNN: 3 convs of 25 channels (kernel 5/3/3, stride 2, "
               "padding 1), ReLU, linear output")

__all__ = ["CNN", "CNN1D", "LeNet", "POOLS"]
