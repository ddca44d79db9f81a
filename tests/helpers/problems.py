"""Small deterministic problems shared by tests that run in several processes."""
import numpy as np

from jaxnets.data import Dataset
from jaxnets.models import MLP


def blobs(n=50, d=4, k=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    y = rng.integers(0, k, size=n + 13).astype(np.int32)
    x = (centers[y] + rng.normal(size=(n + 13, d))).astype(np.float32)
    return Dataset(x_train=x[:n], y_train=y[:n], x_val=x[n:n + 6], y_val=y[n:n + 6], x_test=x[n + 6:],
                   y_test=y[n + 6:], task="multiclass", num_classes=k, name="blobs")


def mlp() -> MLP:
    return MLP(hidden=(16,), output_dim=3)
