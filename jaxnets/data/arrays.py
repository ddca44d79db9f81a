"""A :class:`Dataset` from a researcher's own NumPy arrays: :func:`from_arrays`.

Every argument is checked here, before the :class:`Dataset` is built, so a wrong
shape or dtype is reported in one line naming the argument the caller passed
(``x_test.shape``, ``y_train``, ...), not a field of the container.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from jaxnets.data.builtin import TEST_FRACTION, TEST_SPLIT_SEED
from jaxnets.data.dataset import TASKS, Dataset, holdout_indices

# Labels are stored as int32 (the Dataset convention).
_LABEL_LIMIT = np.iinfo(np.int32).max


def _array(field: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"{field}: got a {type(value).__name__} that is not a rectangular array; allowed: a NumPy array"
        ) from None


def _rows_text(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _inputs(field: str, value: Any, features: Optional[tuple[int, ...]] = None) -> np.ndarray:
    x = _array(field, value)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise ValueError(
            f"{field}.dtype: got {str(x.dtype)!r}; allowed: a float, integer or bool dtype (stored as float32)"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{field}.shape: got {x.shape!r}; allowed: (n, *features), e.g. {field}[:, None] for one feature"
        )
    if features is not None and x.shape[1:] != features:
        raise ValueError(
            f"{field}.shape: got {x.shape!r}; allowed: (n, {', '.join(map(str, features))}) like x_train"
        )
    if len(x) == 0:
        raise ValueError(f"{field}: got 0 rows; allowed: at least 1 row")
    # Overflow to inf (float64 values beyond float32's range) is caught by the check below.
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        raise ValueError(
            f"{field}: got {int(bad.sum())} non-finite values (first in row {row}) after conversion to "
            "float32; allowed: finite numbers within float32 range"
        )
    return x


def _targets(field: str, value: Any, n: int, x_field: str) -> np.ndarray:
    y = _array(field, value)
    if y.ndim == 0 or len(y) != n:
        got = "a scalar" if y.ndim == 0 else _rows_text(len(y))
        raise ValueError(f"{field}: got {got}; allowed: {_rows_text(n)}, one per row of {x_field}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise ValueError(
            f"{field}.dtype: got {str(y.dtype)!r}; allowed: integer or bool labels (classification) "
            "or floats (regression)"
        )
    return y


def _infer_task(y_train: np.ndarray, y_test: Optional[np.ndarray], num_classes: Optional[int]) -> str:
    if np.issubdtype(y_train.dtype, np.floating):
        return "regression"
    if y_train.ndim == 2 and y_train.shape[1] > 1:
        return "multiclass"  # one label per position of a sequence
    if num_classes is not None:
        return "binary" if num_classes == 2 else "multiclass"
    top = max(int(y.max()) for y in (y_train, y_test) if y is not None)
    return "binary" if top <= 1 else "multiclass"


def _regression(field: str, y: np.ndarray, width: Optional[int]) -> np.ndarray:
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or (width is not None and y.shape[1] != width):
        allowed = "(n,) or (n, k)"
        if width is not None:
            allowed = f"(n, {width}) like y_train" + (" or (n,)" if width == 1 else "")
        raise ValueError(f"{field}.shape: got {y.shape!r}; allowed: {allowed} for task 'regression'")
    with np.errstate(over="ignore"):
        y = y.astype(np.float32)
    if not np.isfinite(y).all():
        raise ValueError(f"{field}: got non-finite values after conversion to float32; allowed: finite numbers")
    return y


def _labels(field: str, y: np.ndarray, task: str, steps: Optional[tuple[int, ...]]) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{field}.dtype: got {str(y.dtype)!r}; allowed: integer or bool labels for task {task!r} "
            f"(e.g. {field}.astype(int))"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    per_position = task == "multiclass" and y.ndim == 2
    if not (y.ndim == 1 or per_position) or (steps is not None and y.shape[1:] != steps):
        allowed = "(n,) or (n, 1)" + (", or (n, T) per position" if task == "multiclass" else "")
        if steps is not None:
            allowed = f"(n, {steps[0]}) like y_train" if steps else "(n,) like y_train"
        raise ValueError(f"{field}.shape: got {y.shape!r}; allowed: {allowed} for task {task!r}")
    if y.min() < 0 or y.max() > _LABEL_LIMIT:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(
            f"{field}: got label {bad}; allowed: non-negative integers 0 .. K-1 below 2**31 for task {task!r}"
        )
    return y


def _class_count(task: str, y_train: np.ndarray, y_test: Optional[np.ndarray],
                 num_classes: Optional[int]) -> int:
    k = 2 if task == "binary" else num_classes
    if task == "binary" and num_classes not in (None, 2):
        raise ValueError(f"num_classes: got {num_classes!r}; allowed: None or 2 for task 'binary'")
    if k is None:
        k = max(2, max(int(y.max()) + 1 for y in (y_train, y_test) if y is not None))
    for field, y in (("y_train", y_train), ("y_test", y_test)):
        if y is not None and y.max() >= k:
            given = "task 'binary'" if task == "binary" else f"num_classes={k}"
            raise ValueError(f"{field}: got label {int(y.max())}; allowed: 0 .. {k - 1} for {given}")
    return k


def _check_options(task: Any, num_classes: Any, validation: Any, seed: Any, standardize: Any) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"task: got {task!r}; allowed: None (inferred), {', '.join(TASKS)}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, (int, np.integer)) or num_classes < 2):
        raise ValueError(f"num_classes: got {num_classes!r}; allowed: None (inferred) or an integer >= 2")
    if isinstance(validation, bool) or not isinstance(validation, (int, float, np.floating)) \
            or not 0.0 <= validation < 1.0:
        raise ValueError(f"validation: got {validation!r}; allowed: 0 <= validation < 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; allowed: an integer >= 0")
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize: got {standardize!r}; allowed: True, False")


def from_arrays(
    x_train: Any,
    y_train: Any,
    *,
    x_test: Any = None,
    y_test: Any = None,
    task: Optional[str] = None,
    num_classes: Optional[int] = None,
    validation: float = 0.0,
    seed: int = 0,
    standardize: bool = False,
    name: str = "arrays",
) -> Dataset:
    """Build a :class:`Dataset` from your own arrays, checked and converted.

    Inputs ``x`` are ``(n, *features)`` of any float, integer or bool dtype and
    are stored as float32 copies (later changes to your arrays do not reach the
    dataset). The task, when ``task`` is None, follows from ``y_train``:

    * float ``y`` -> ``"regression"`` (even if every value is a whole number);
      ``y`` of shape ``(n,)`` is stored as ``(n, 1)``, ``output_dim = k`` for ``(n, k)``;
    * integer or bool ``y`` of shape ``(n,)`` or ``(n, 1)`` -> ``"binary"`` when
      the largest label in ``y_train`` and ``y_test`` is at most 1 (or
      ``num_classes=2``), else ``"multiclass"`` with ``K = largest label + 1``
      classes (or ``num_classes``); ``output_dim`` is 1 for binary, ``K`` for multiclass;
    * integer ``y`` of shape ``(n, T)``, ``T > 1`` -> ``"multiclass"``, one label per position.

    Labels must be ``0 .. K-1``. Without ``x_test``/``y_test``, 20 %
    (:data:`~jaxnets.data.TEST_FRACTION`) of the rows become the test split,
    stratified for classification and drawn with the fixed
    :data:`~jaxnets.data.TEST_SPLIT_SEED`, so the test set never depends on
    ``seed``. Then ``validation`` of the training rows move to a validation split
    (:meth:`Dataset.with_validation`, seeded by ``seed``), then the inputs are
    standardized with training statistics if ``standardize``.

    Args:
      x_train: inputs ``(n, *features)``.
      y_train: targets or labels with ``n`` rows (see the task rule above).
      x_test, y_test: a test split, both or neither; ``x_test`` must have
        ``x_train``'s feature shape.
      task: ``"regression"``, ``"binary"``, ``"multiclass"`` or None (inferred).
      num_classes: ``K`` for classification when some classes may be missing
        from the labels; None counts them.
      validation: share of the training rows moved to validation, ``0 <= v < 1``.
      seed: seed of the validation draw.
      standardize: scale every feature with the training split's mean and std.
      name: the dataset's name (shown in summaries and results).

    Returns:
      the :class:`Dataset`.

    Raises:
      ValueError: one line naming the argument, e.g. ``x_test.shape: got (3, 4); allowed: (n, 2) like x_train``.

    >>> x = np.arange(20.0).reshape(10, 2)
    >>> ds = from_arrays(x, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), validation=0.25, seed=1)
    >>> ds.task, ds.output_dim, ds.num_train, ds.num_val, ds.num_test
    ('multiclass', 3, 6, 2, 2)
    >>> reg = from_arrays(x, x.sum(axis=1), x_test=x[:3], y_test=x[:3].sum(axis=1))
    >>> reg.task, reg.output_dim, reg.y_train.shape, reg.num_test
    ('regression', 1, (10, 1), 3)
    """
    _check_options(task, num_classes, validation, seed, standardize)
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise ValueError(f"{missing}: got None while {given} is given; allowed: both x_test and y_test, or neither")
    x_tr = _inputs("x_train", x_train)
    y_tr = _targets("y_train", y_train, len(x_tr), "x_train")
    x_te = y_te = None
    if x_test is not None:
        x_te = _inputs("x_test", x_test, x_tr.shape[1:])
        y_te = _targets("y_test", y_test, len(x_te), "x_test")
    task = task or _infer_task(y_tr, y_te, num_classes)
    if task == "regression" and num_classes is not None:
        raise ValueError(f"num_classes: got {num_classes!r}; allowed: None for task 'regression'")
    if task == "regression":
        y_tr = _regression("y_train", y_tr, None)
        y_te = None if y_te is None else _regression("y_test", y_te, y_tr.shape[1])
        k = None
    else:
        y_tr = _labels("y_train", y_tr, task, None)
        y_te = None if y_te is None else _labels("y_test", y_te, task, y_tr.shape[1:])
        k = _class_count(task, y_tr, y_te, num_classes)
        y_tr = y_tr.astype(np.int32)
        y_te = None if y_te is None else y_te.astype(np.int32)
    return _assemble(x_tr, y_tr, x_te, y_te, task, k, float(validation), int(seed), standardize, name)


def _assemble(x_tr: np.ndarray, y_tr: np.ndarray, x_te: Optional[np.ndarray], y_te: Optional[np.ndarray],
              task: str, k: Optional[int], validation: float, seed: int, standardize: bool,
              name: str) -> Dataset:
    if x_te is None:
        if len(x_tr) < 2:
            raise ValueError(
                f"x_train: got {_rows_text(len(x_tr))} and no x_test; allowed: at least 2 rows "
                f"({TEST_FRACTION:.0%} become the test split) or x_test/y_test"
            )
        stratify = task != "regression" and y_tr.ndim == 1
        keep, hold = holdout_indices(y_tr, TEST_FRACTION, TEST_SPLIT_SEED, stratify=stratify)
        x_tr, y_tr, x_te, y_te = x_tr[keep], y_tr[keep], x_tr[hold], y_tr[hold]
    if validation > 0 and len(x_tr) < 2:
        raise ValueError(
            f"validation: got {validation!r} with {_rows_text(len(x_tr))} to train on; "
            "allowed: 0, or at least 2 training rows"
        )
    ds = Dataset(
        x_train=x_tr, y_train=y_tr,
        x_val=np.zeros((0, *x_tr.shape[1:]), np.float32), y_val=np.zeros((0, *y_tr.shape[1:]), y_tr.dtype),
        x_test=x_te, y_test=y_te, task=task, num_classes=k, name=name,
    )
    if validation > 0:
        ds = ds.with_validation(validation, seed)
    return ds.standardize() if standardize else ds
