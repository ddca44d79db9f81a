"""The in-memory dataset every loader returns, and the splits and scaling done on it.

A :class:`Dataset` is a frozen bundle of NumPy arrays (train, validation, test) plus
what the training code needs to build a model and a loss for it: the task, the
number of classes, the feature shape. Everything here is NumPy only; nothing in
the data package knows about JAX, models or devices.

Conventions (the training code relies on them):

* ``x`` is float32 with shape ``(n, *feature_shape)``: ``(n, d)`` for tables,
  ``(n, h, w, c)`` (NHWC) for images.
* classification ``y`` is int32 with shape ``(n,)`` and labels ``0 .. K-1``
  (binary: ``K = 2``); multiclass may also label every position of a sequence,
  shape ``(n, T)`` (language models: the next token at each position).
* regression ``y`` is float32 with shape ``(n, k)``, always two-dimensional.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

#: Task names a :class:`Dataset` may carry.
TASKS = ("regression", "binary", "multiclass")

_SPLITS = ("train", "val", "test")


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def holdout_indices(
    y: np.ndarray, fraction: float, seed: int, *, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices ``0 .. n-1`` into a kept part and a held-out part.

    The held-out size is ``m = floor(fraction * n + 1/2)`` clipped to ``[1, n - 1]``.
    With ``stratify=True`` the ``m`` slots are shared among the classes in
    proportion to their counts ``c_k``: class ``k`` first gets
    ``floor(m * c_k / n)`` and the slots still free go to the classes with the
    largest remainders (ties: lower label first). Inside each class (or the whole
    set when not stratified) the held-out rows are drawn with
    ``np.random.default_rng(seed)``, so the split depends on ``seed`` only.

    Args:
      y: labels ``(n,)`` (used for stratification) or any array with ``n`` rows.
      fraction: share of rows to hold out, ``0 < fraction < 1``.
      seed: integer seed of the draw.
      stratify: keep class proportions (``y`` must hold integer labels).

    Returns:
      ``(keep, hold)``: two sorted int64 index arrays that partition ``0 .. n-1``.

    >>> keep, hold = holdout_indices(np.array([0, 0, 0, 1, 1, 1]), 1 / 3, 0, stratify=True)
    >>> len(keep), len(hold), sorted(np.array([0, 0, 0, 1, 1, 1])[hold].tolist())
    (4, 2, [0, 1])
    """
    n = len(y)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: got {fraction!r}; allowed: 0 < fraction < 1")
    if n < 2:
        raise ValueError(f"rows: got {n!r}; allowed: at least 2 rows to split")
    m = int(np.clip(np.floor(fraction * n + 0.5), 1, n - 1))
    rng = np.random.default_rng(seed)
    if not stratify:
        hold = rng.permutation(n)[:m]
    else:
        labels, counts = np.unique(y, return_counts=True)
        ideal = m * counts / n
        quota = np.floor(ideal).astype(np.int64)
        # Largest remainders first; a stable sort on -remainder keeps ties by label.
        order = np.argsort(-(ideal - quota), kind="stable")
        quota[order[: m - int(quota.sum())]] += 1
        parts = []
        for label, q in zip(labels, quota):
            members = np.flatnonzero(y == label)
            parts.append(members[rng.permutation(len(members))[:q]])
        hold = np.concatenate(parts)
    mask = np.zeros(n, dtype=bool)
    mask[hold] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


@dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Dataset:
    """Train / validation / test arrays of one dataset, with its task description.

    Treat the arrays as read-only: methods return new instances and never write
    into them.

    Attributes:
      x_train, y_train, x_val, y_val, x_test, y_test: the splits (see the module
        docstring for dtypes and shapes); the validation split may have 0 rows.
      task: ``"regression"``, ``"binary"`` or ``"multiclass"``.
      num_classes: ``K`` for classification (2 for binary), ``None`` for regression.
      class_names: ``K`` names or ``None``.
      feature_names: one name per column of a 2-D ``x``, or ``None``.
      name: the dataset's name (e.g. the registry name it was loaded under).
      x_mean, x_std: per-feature statistics of the training inputs when
        :meth:`standardize` has been applied, else ``None``.

    >>> ds = Dataset(
    ...     x_train=np.zeros((4, 2), np.float32), y_train=np.array([0, 1, 0, 1], np.int32),
    ...     x_val=np.zeros((0, 2), np.float32), y_val=np.zeros((0,), np.int32),
    ...     x_test=np.ones((2, 2), np.float32), y_test=np.array([1, 0], np.int32),
    ...     task="binary", num_classes=2, name="toy")
    >>> ds.input_shape, ds.output_dim, ds.num_train, ds.num_val, ds.num_test
    ((2,), 1, 4, 0, 2)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: Optional[int] = None
    class_names: Optional[tuple[str, ...]] = None
    feature_names: Optional[tuple[str, ...]] = None
    name: str = "dataset"
    x_mean: Optional[np.ndarray] = None
    x_std: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: got {self.task!r}; allowed: {', '.join(TASKS)}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: got {self.name!r}; allowed: a non-empty string")
        for split in _SPLITS:
            for part in ("x", "y"):
                field = f"{part}_{split}"
                value = getattr(self, field)
                if not isinstance(value, np.ndarray):
                    raise ValueError(
                        f"{field}: got {type(value).__name__}; allowed: numpy.ndarray"
                    )
        self._check_inputs()
        if self.task == "regression":
            self._check_regression_targets()
        else:
            self._check_labels()
        self._check_names()
        self._check_statistics()

    def _check_inputs(self) -> None:
        feature_shape = self.x_train.shape[1:]
        for split in _SPLITS:
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.dtype != np.float32:
                raise ValueError(f"x_{split}.dtype: got {str(x.dtype)!r}; allowed: 'float32'")
            if x.ndim < 2:
                raise ValueError(
                    f"x_{split}.shape: got {x.shape!r}; allowed: (n, *feature_shape)"
                )
            if x.shape[1:] != feature_shape:
                raise ValueError(
                    f"x_{split}.shape: got {x.shape!r}; allowed: (n, {', '.join(map(str, feature_shape))}) "
                    "like x_train"
                )
            if len(y) != len(x):
                raise ValueError(
                    f"y_{split}: got {_rows(len(y))}; allowed: {_rows(len(x))} like x_{split}"
                )
            if not np.isfinite(x).all():
                raise ValueError(f"x_{split}: got non-finite values; allowed: finite floats")
        for split in ("train", "test"):
            n = len(getattr(self, f"x_{split}"))
            if n == 0:
                raise ValueError(f"x_{split}: got 0 rows; allowed: at least 1 row")

    def _check_regression_targets(self) -> None:
        if self.num_classes is not None:
            raise ValueError(
                f"num_classes: got {self.num_classes!r}; allowed: None for task 'regression'"
            )
        width = self.y_train.shape[1:]
        for split in _SPLITS:
            y = getattr(self, f"y_{split}")
            if y.dtype != np.float32:
                raise ValueError(
                    f"y_{split}.dtype: got {str(y.dtype)!r}; allowed: 'float32' for regression"
                )
            if y.ndim != 2 or y.shape[1:] != width:
                raise ValueError(
                    f"y_{split}.shape: got {y.shape!r}; allowed: (n, k) with the same k in every split"
                )
            if not np.isfinite(y).all():
                raise ValueError(f"y_{split}: got non-finite values; allowed: finite floats")

    def _check_labels(self) -> None:
        k = self.num_classes
        if self.task == "binary" and k != 2:
            raise ValueError(f"num_classes: got {k!r}; allowed: 2 for task 'binary'")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
            raise ValueError(f"num_classes: got {k!r}; allowed: an integer >= 2")
        for split in _SPLITS:
            y = getattr(self, f"y_{split}")
            if y.dtype != np.int32:
                raise ValueError(
                    f"y_{split}.dtype: got {str(y.dtype)!r}; allowed: 'int32' for task {self.task!r}"
                )
            # Multiclass may label every position of a sequence: (n, T), one T for all splits.
            if y.ndim != 1 and not (self.task == "multiclass" and y.ndim == 2
                                    and y.shape[1:] == self.y_train.shape[1:]):
                allowed = "(n,) or (n, T) with the same T in every split" \
                    if self.task == "multiclass" else "(n,)"
                raise ValueError(f"y_{split}.shape: got {y.shape!r}; allowed: {allowed}")
            if len(y) and (y.min() < 0 or y.max() >= k):
                bad = int(y.min()) if y.min() < 0 else int(y.max())
                raise ValueError(f"y_{split}: got label {bad}; allowed: 0 .. {k - 1}")

    def _check_names(self) -> None:
        if self.class_names is not None:
            if self.task == "regression":
                raise ValueError(
                    f"class_names: got {self.class_names!r}; allowed: None for task 'regression'"
                )
            if not isinstance(self.class_names, tuple) or len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"class_names: got {self.class_names!r}; allowed: a tuple of {self.num_classes} strings"
                )
        if self.feature_names is not None:
            if self.x_train.ndim != 2:
                raise ValueError(
                    f"feature_names: got {len(self.feature_names)} names; allowed: None for "
                    f"inputs of shape {self.input_shape}"
                )
            if (
                not isinstance(self.feature_names, tuple)
                or len(self.feature_names) != self.x_train.shape[1]
            ):
                raise ValueError(
                    f"feature_names: got {self.feature_names!r}; allowed: a tuple of "
                    f"{self.x_train.shape[1]} strings"
                )

    def _check_statistics(self) -> None:
        if (self.x_mean is None) != (self.x_std is None):
            raise ValueError(
                "x_mean/x_std: got one of them None; allowed: both None or both arrays"
            )
        if self.x_mean is None:
            return
        for field in ("x_mean", "x_std"):
            value = getattr(self, field)
            if not isinstance(value, np.ndarray) or value.shape != self.input_shape:
                shape = getattr(value, "shape", type(value).__name__)
                raise ValueError(
                    f"{field}: got shape {shape!r}; allowed: the feature shape {self.input_shape!r}"
                )

    # -------------------------------------------------------------- properties
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, ``x_train.shape[1:]``."""
        return tuple(self.x_train.shape[1:])

    @property
    def output_dim(self) -> int:
        """Width of the model output: ``k`` (regression), 1 (binary), ``K`` (multiclass)."""
        if self.task == "regression":
            return int(self.y_train.shape[1])
        if self.task == "binary":
            return 1
        return int(self.num_classes)

    @property
    def num_train(self) -> int:
        """Rows in the training split."""
        return len(self.x_train)

    @property
    def num_val(self) -> int:
        """Rows in the validation split (may be 0)."""
        return len(self.x_val)

    @property
    def num_test(self) -> int:
        """Rows in the test split."""
        return len(self.x_test)

    @property
    def standardized(self) -> bool:
        """Whether :meth:`standardize` has been applied."""
        return self.x_mean is not None

    # ----------------------------------------------------------------- methods
    def standardize(self) -> "Dataset":
        """Scale every feature to zero mean and unit variance on the training split.

        ``mu_j`` and ``sigma_j`` are the mean and (population, ``ddof=0``) standard
        deviation of feature ``j`` over ``x_train`` only; every split is mapped by
        ``x' = (x - mu) / sigma``. A feature that is constant on the training split
        gets ``sigma_j = 1``. Statistics are computed in float64, the result is
        float32, and ``x_mean``/``x_std`` record ``mu``/``sigma``.

        Returns:
          a new :class:`Dataset`; ``self`` is left as it was.

        >>> ds = Dataset(
        ...     x_train=np.array([[1.0, 5.0], [3.0, 5.0]], np.float32), y_train=np.zeros((2, 1), np.float32),
        ...     x_val=np.zeros((0, 2), np.float32), y_val=np.zeros((0, 1), np.float32),
        ...     x_test=np.array([[5.0, 6.0]], np.float32), y_test=np.zeros((1, 1), np.float32),
        ...     task="regression")
        >>> s = ds.standardize()
        >>> s.x_train.tolist(), s.x_test.tolist(), s.x_std.tolist()
        ([[-1.0, 0.0], [1.0, 0.0]], [[3.0, 1.0]], [1.0, 1.0])
        """
        if self.standardized:
            raise ValueError(
                "x_mean: got statistics already set; allowed: None (standardize() was already applied)"
            )
        train = self.x_train.astype(np.float64)
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        # Exactly constant columns (peak-to-peak 0) would divide by 0; leave them centred.
        std = np.where(np.ptp(train, axis=0) == 0, 1.0, std)

        def scale(x: np.ndarray) -> np.ndarray:
            return ((x.astype(np.float64) - mean) / std).astype(np.float32)

        return dataclasses.replace(
            self,
            x_train=scale(self.x_train),
            x_val=scale(self.x_val),
            x_test=scale(self.x_test),
            x_mean=mean.astype(np.float32),
            x_std=std.astype(np.float32),
        )

    def with_validation(self, fraction: float, seed: int) -> "Dataset":
        """Carve a validation split out of the training split.

        Uses :func:`holdout_indices` on the training rows: stratified by label for
        classification, a plain random draw for regression; ``round(fraction *
        num_train)`` rows move to validation and both parts keep their original
        order. The test split is not touched. Call it before :meth:`standardize`
        so the statistics never see validation rows.

        Args:
          fraction: share of the training rows to move, ``0 < fraction < 1``.
          seed: integer seed; the same seed gives the same split.

        Returns:
          a new :class:`Dataset` with ``num_val > 0``.

        >>> ds = Dataset(
        ...     x_train=np.arange(10, dtype=np.float32)[:, None], y_train=np.array([0, 1] * 5, np.int32),
        ...     x_val=np.zeros((0, 1), np.float32), y_val=np.zeros((0,), np.int32),
        ...     x_test=np.zeros((1, 1), np.float32), y_test=np.zeros((1,), np.int32),
        ...     task="binary", num_classes=2)
        >>> v = ds.with_validation(0.2, seed=0)
        >>> v.num_train, v.num_val, sorted(v.y_val.tolist())
        (8, 2, [0, 1])
        """
        if self.num_val > 0:
            raise ValueError(
                f"x_val: got {_rows(self.num_val)}; allowed: 0 rows (the dataset already has a validation split)"
            )
        if self.standardized:
            raise ValueError(
                "x_mean: got statistics already set; allowed: None (carve the validation split before standardize())"
            )
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)):
            raise ValueError(f"fraction: got {fraction!r}; allowed: 0 < fraction < 1")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: got {seed!r}; allowed: an integer >= 0")
        # Sequence labels (n, T) have no single class per row to stratify on.
        keep, hold = holdout_indices(
            self.y_train, float(fraction), int(seed),
            stratify=self.task != "regression" and self.y_train.ndim == 1,
        )
        return dataclasses.replace(
            self,
            x_train=self.x_train[keep],
            y_train=self.y_train[keep],
            x_val=self.x_train[hold],
            y_val=self.y_train[hold],
        )

    def summary(self) -> str:
        """One line describing the dataset: task, shapes and split sizes.

        >>> ds = Dataset(
        ...     x_train=np.zeros((3, 2), np.float32), y_train=np.zeros((3, 1), np.float32),
        ...     x_val=np.zeros((0, 2), np.float32), y_val=np.zeros((0, 1), np.float32),
        ...     x_test=np.zeros((1, 2), np.float32), y_test=np.zeros((1, 1), np.float32),
        ...     task="regression", name="toy")
        >>> print(ds.summary())
        toy: regression, input (2,), output 1, train 3 / val 0 / test 1, raw inputs
        """
        task = self.task
        if self.task != "regression":
            task = f"{self.task} ({self.num_classes} classes)"
        scaling = "standardized on train" if self.standardized else "raw inputs"
        return (
            f"{self.name}: {task}, input {self.input_shape}, output {self.output_dim}, "
            f"train {self.num_train} / val {self.num_val} / test {self.num_test}, {scaling}"
        )

    def __repr__(self) -> str:
        return f"Dataset({self.summary()})"
