"""Data augmentation as pure functions of a key and a batch, for the compiled train step.

Each augmentation maps ``(key, x) -> x'`` with x a batch of channels-last images
(N, H, W, C) and x' of the same shape and dtype. Every example draws its own
randomness from ``key``, so the functions are safe under ``jit``, ``vmap`` (a
population) and data parallelism (each device passes its own key, see
``jaxnets.steps.augment_key``):

* ``random_crop(key, x, padding=p)``: pad H and W with p zeros on each side, then
  cut an H x W window at offsets (a, b), a and b uniform on 0 .. 2p per example:
  ``x'[n, i, j] = pad(x)[n, a_n + i, b_n + j]``.
* ``random_flip(key, x)``: with probability ½ per example, mirror the width axis:
  ``x'[n, i, j] = x[n, i, W − 1 − j]``.
* ``crop_flip``: the standard CIFAR-10 augmentation, a 4-pixel random crop then a
  random horizontal flip (independent keys).

``TrainConfig(augment=...)`` takes a name of ``AUGMENTATIONS`` or any such callable
and applies it to the training batches only, never at evaluation.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


def _check_images(x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"x: got shape {tuple(x.shape)}; allowed: a batch of images (N, H, W, C)")


def random_crop(key: jax.Array, x: jax.Array, padding: int = 4) -> jax.Array:
    """Zero-pad each image by ``padding`` on every side and cut a random window of the original size.

    Args:
      key: a PRNG key; example n's offsets (a_n, b_n) are uniform on 0 .. 2·padding.
      x: images (N, H, W, C).
      padding: p >= 0 zeros added on each side of H and W.

    Returns:
      (N, H, W, C), ``x'[n, i, j] = pad(x)[n, a_n + i, b_n + j]``.

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> random_crop(jax.random.key(0), x, padding=0).tolist() == x.tolist()
    True
    >>> random_crop(jax.random.key(0), x, padding=2).shape
    (1, 4, 4, 1)
    """
    _check_images(x)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding: got {padding!r}; allowed: an int >= 0")
    n, height, width, channels = x.shape
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Mirror each image's width axis with probability ½, independently per example.

    Args:
      key: a PRNG key.
      x: images (N, H, W, C).

    Returns:
      (N, H, W, C): each example either unchanged or ``x[n, :, ::-1, :]``.

    >>> x = jnp.arange(3.0).reshape(1, 1, 3, 1)
    >>> random_flip(jax.random.key(1), x).ravel().tolist() in ([0.0, 1.0, 2.0], [2.0, 1.0, 0.0])
    True
    """
    _check_images(x)
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def crop_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """The standard CIFAR-10 augmentation: ``random_crop`` with 4 pixels of padding, then ``random_flip``.

    >>> crop_flip(jax.random.key(0), jnp.ones((2, 8, 8, 3))).shape
    (2, 8, 8, 3)
    """
    crop_key, flip_key = jax.random.split(key)
    return random_flip(flip_key, random_crop(crop_key, x, padding=4))


#: Augmentations by name (``TrainConfig(augment=...)``, ``--augment``).
AUGMENTATIONS: dict[str, Augmentation] = {"crop_flip": crop_flip}

ALLOWED = "None, " + ", ".join(repr(name) for name in AUGMENTATIONS) + " or a callable (key, x) -> x"


def get_augmentation(augment: str | Augmentation | None) -> Augmentation | None:
    """The function an ``augment`` setting names: None, a key of ``AUGMENTATIONS`` or a callable.

    >>> get_augmentation("crop_flip") is crop_flip, get_augmentation(None)
    (True, None)
    >>> get_augmentation("mixup")
    Traceback (most recent call last):
    ...
    ValueError: augment: got 'mixup'; allowed: None, 'crop_flip' or a callable (key, x) -> x
    """
    if augment is None or callable(augment):
        return augment
    if isinstance(augment, str) and augment in AUGMENTATIONS:
        return AUGMENTATIONS[augment]
    raise ValueError(f"augment: got {augment!r}; allowed: {ALLOWED}")


__all__ = ["AUGMENTATIONS", "Augmentation", "crop_flip", "get_augmentation", "random_crop", "random_flip"]
