"""Small deterministic problems shared by tests that run in several processes."""
import numpy as np

from jaxnets.data import Dataset
from jaxnets.models import MLP


def blobs(n=50, d=4, k=3, seed=0, *, scale=3.0, n_val=6, n_test=7) -> Dataset:
    """k Gaussian clusters in d dimensions (centres ~ N(0, scale²)): n train, n_val, n_test rows."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=scale, size=(k, d))
    total = n + n_val + n_test
    y = rng.integers(0, k, size=total).astype(np.int32)
    x = (centers[y] + rng.normal(size=(total, d))).astype(np.float32)
    return Dataset(x_train=x[:n], y_train=y[:n], x_val=x[n:n + n_val], y_val=y[n:n + n_val],
                   x_test=x[n + n_val:], y_test=y[n + n_val:], task="multiclass", num_classes=k, name="blobs")


def mlp() -> MLP:
    return MLP(hidden=(16,), output_dim=3)
