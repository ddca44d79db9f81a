"""Small utilities over parameter pytrees: which leaves are weights, counting, digests.

These are shared by losses (L1/L2 penalties), optimizers (decoupled weight decay)
and the command line (parameter counts and digests), so they live below all three.
"""
from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np

#: Leaf names that hold weights (penalized and decayed); biases, batch-norm and
#: layer-norm scales are not. Flax names dense/conv weights ``kernel`` and
#: embedding tables ``embedding``.
WEIGHT_LEAF_NAMES = ("kernel", "embedding")


def path_to_str(path: tuple) -> str:
    """``(DictKey('Dense_0'), DictKey('kernel'))`` -> ``'Dense_0/kernel'``."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def is_weight_path(path: tuple) -> bool:
    """True when the last key of a leaf's path names a weight (see WEIGHT_LEAF_NAMES)."""
    return bool(path) and path_to_str(path[-1:]) in WEIGHT_LEAF_NAMES


def weight_mask(params: Any) -> Any:
    """A pytree of bools, True on weight leaves: the mask for penalties and decay."""
    return jax.tree_util.tree_map_with_path(lambda p, _: is_weight_path(p), params)


def count_params(params: Any) -> int:
    """Total number of scalars in a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def params_sha256(params: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, in sorted path order.

    Two runs that end with bitwise-identical parameters get the same digest, so
    results can be compared exactly across machines and sessions.
    """
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for path, leaf in sorted(leaves, key=lambda item: path_to_str(item[0])):
        array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        digest.update(path_to_str(path).encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
