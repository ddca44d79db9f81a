"""Models: Flax Linen modules and a registry that builds them by name.

Every model is an ``nn.Module`` whose ``__call__(x, train=False)`` maps a batch of
shape (batch, *feature_shape) to (batch, output_dim) and which has an
``output_dim``. ``model.init({"params": key, "dropout": key}, x)`` returns
``{"params": ...}`` (and possibly other collections); ``model.apply(variables, x,
train=...)`` is the pure forward function (pass ``rngs={"dropout": key}`` when
training a model with dropout).

Models are found by name (``MODELS``, in ``jaxnets.models.registry``); a new model
file adds itself with ``register_model`` and is imported here.

>>> model = get_model("mlp", output_dim=3, hidden=(8,), activation="tanh")
>>> variables = model.init({"params": jax.random.key(0)}, jnp.ones((2, 4)))
>>> model.apply(variables, jnp.ones((2, 4))).shape
(2, 3)
"""
from __future__ import annotations

import jax  # noqa: F401  (the doctest above uses jax and jnp)
import jax.numpy as jnp

from jaxnets.models.activations import (ACTIVATIONS, HEADS, LEAKY_RELU_SLOPE, get_activation,
                                        get_head)
from jaxnets.models.initializers import DEFAULT_NORMAL_STDDEV, INITIALIZERS, get_initializer
from jaxnets.models.linear import LinearRegression, LogisticRegression, flatten_features
from jaxnets.models.mlp import MLP
from jaxnets.models.registry import (COMPUTE_DTYPES, DEFAULT_MLP_HIDDEN, MODELS, ModelSpec, compute_dtype, describe,
                                     get_model, register_model)
from jaxnets.models.rnn import RecurrentNet
from jaxnets.models.transformer import DecoderBlock, EncoderBlock, TransformerClassifier, TransformerLM
from jaxnets.models.cnn import CNN, CNN1D, LeNet
from jaxnets.models.conv import Conv
from jaxnets.models.vgg import VGG
from jaxnets.kernels import avg_pool, global_avg_pool, max_pool

__all__ = [
    "ACTIVATIONS", "COMPUTE_DTYPES", "compute_dtype", "DEFAULT_MLP_HIDDEN", "DEFAULT_NORMAL_STDDEV", "HEADS", "INITIALIZERS",
    "LEAKY_RELU_SLOPE",
    "LinearRegression", "LogisticRegression", "MLP", "VGG", "MODELS", "ModelSpec",
    "describe", "flatten_features", "get_activation", "get_head", "get_initializer",
    "get_model", "register_model", "RecurrentNet", "DecoderBlock", "EncoderBlock", "TransformerClassifier",
    "TransformerLM", "CNN", "CNN1D", "Conv", "LeNet", "avg_pool", "global_avg_pool", "max_pool",
]
