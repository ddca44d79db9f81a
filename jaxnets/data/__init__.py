"""Offline datasets: the :class:`Dataset` container, built-in sets by name, your own arrays, file readers.

Nothing in this package downloads. Typical use::

    from jaxnets import data
    ds = data.load("digits", validation=0.1, seed=0)
    mine = data.from_arrays(x, y, validation=0.1, seed=0)   # your own NumPy arrays

See ``docs/datasets.md`` for the list of built-in datasets and how to point the
file-based ones (MNIST, Fashion-MNIST, CIFAR-10) at local files.
"""
from jaxnets.data.arrays import from_arrays
from jaxnets.data.builtin import (
    DATA_DIR_ENV,
    DATASETS,
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    datasets_table,
    describe,
    load,
    options,
)
from jaxnets.data.dataset import TASKS, Dataset, holdout_indices
from jaxnets.data.files import load_cifar10_dir, load_mnist_dir, read_idx

__all__ = [
    "DATA_DIR_ENV",
    "DATASETS",
    "TASKS",
    "TEST_FRACTION",
    "TEST_SPLIT_SEED",
    "Dataset",
    "datasets_table",
    "describe",
    "from_arrays",
    "holdout_indices",
    "load",
    "load_cifar10_dir",
    "load_mnist_dir",
    "options",
    "read_idx",
]
