"""The built-in datasets, all offline, and the registry that loads them by name.

Every built-in is either generated here (``xor``, ``sine``, ``house_prices``,
``mnist1d``), shipped inside scikit-learn (``digits``, ``breast_cancer``,
``diabetes``, ``iris``, ``wine``) or statsmodels (``fair``), or read from local files (``mnist``,
``fashion_mnist``, ``cifar10``). Nothing is ever downloaded.

Use :func:`load`; the per-dataset builders below return the raw splits (no
validation split, no standardization) and are public so their docstrings can
document the data.

Randomness:

* the *data* never depends on ``seed``: generators use their own fixed
  ``data_seed`` option and the scikit-learn test splits use the constant
  :data:`TEST_SPLIT_SEED`, so test sets are the same in every run;
* ``seed`` only decides which training rows :func:`load` moves to validation.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import random
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from jaxnets.data import files, sequences, text
from jaxnets.data.dataset import Dataset, holdout_indices

#: Share of each scikit-learn dataset kept as the test split.
TEST_FRACTION = 0.2
#: Seed of the scikit-learn test splits; fixed so that test sets never change.
TEST_SPLIT_SEED = 0
#: Environment variable naming the directory of file-based datasets.
DATA_DIR_ENV = "JAXNETS_DATA_DIR"

SINE_FUNCTIONS = ("sine", "kink", "step")

# Constants of the synthetic house prices (see house_price_formula); named so that
# the docs table is written from them.
HOUSE_AREA_RANGE = (40.0, 250.0)
HOUSE_AGE_RANGE = (0.0, 100.0)
HOUSE_BASE, HOUSE_PREMIUM = 40.0, 400.0
HOUSE_AREA_MID, HOUSE_AREA_SCALE = 120.0, 35.0
HOUSE_AGE_FLOOR, HOUSE_AGE_DECAY = 0.6, 30.0
#: Largest pixel count of scikit-learn's digits; pixels are divided by it.
DIGITS_MAX = 16.0


# ------------------------------------------------------------------ helpers

def _empty_like(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, *x.shape[1:]), x.dtype), np.zeros((0, *y.shape[1:]), y.dtype)


def _make(
    name: str, task: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
    y_test: np.ndarray, **fields: Any,
) -> Dataset:
    x_val, y_val = _empty_like(x_train, y_train)
    return Dataset(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        task=task, name=name, **fields,
    )


def _check_int(field: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{field}: got {value!r}; allowed: an integer >= {low}")
    return int(value)


def _check_float(field: str, value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value >= low:
        raise ValueError(f"{field}: got {value!r}; allowed: a number >= {low}")
    return float(value)


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: got {value!r}; allowed: {', '.join(allowed)}")
    return value


# ----------------------------------------------------------------- builders

def xor(*, task: str = "binary") -> Dataset:
    """The four XOR points; train and test are the same four points.

    ``x = (q, p)`` in ``{0, 1}^2`` in the order (0,0), (0,1), (1,0), (1,1) and
    ``y = q XOR p = (0, 1, 1, 0)``. There is nothing to generalize to: the point
    of the example is that a linear model cannot fit the training set (its best
    MSE fit predicts 1/2 everywhere) while one hidden ReLU layer can.

    Args:
      task: ``"binary"`` (int32 labels) or ``"regression"`` (float32 targets
        ``(4, 1)``, for fitting with the MSE as in the slides).

    Returns:
      the raw :class:`Dataset` (4 train rows, 4 test rows).

    >>> ds = xor(task="regression")
    >>> ds.x_train.tolist(), ds.y_train[:, 0].tolist()
    ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [0.0, 1.0, 1.0, 0.0])
    """
    _check_choice("task", task, ("binary", "regression"))
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    labels = np.array([0, 1, 1, 0], np.int32)
    if task == "binary":
        y = labels
        fields: dict[str, Any] = {"num_classes": 2, "class_names": ("0", "1")}
    else:
        y = labels.astype(np.float32)[:, None]
        fields = {}
    return _make("xor", task, x, y, x.copy(), y.copy(), feature_names=("q", "p"), **fields)


def _target(function: str, x: np.ndarray) -> np.ndarray:
    if function == "sine":
        return np.sin(x)
    if function == "kink":
        return np.abs(x)
    return (x >= 0).astype(np.float64)


def sine(
    *, function: str = "sine", n_train: int = 200, n_test: int = 100, noise: float = 0.0,
    data_seed: int = 0,
) -> Dataset:
    """One-dimensional function approximation on ``[-pi, pi]``.

    Training inputs are drawn ``x ~ Uniform[-pi, pi]`` with
    ``np.random.default_rng(data_seed)``; test inputs are ``n_test`` evenly spaced
    points from ``-pi`` to ``pi`` (handy for plotting the fitted curve). Targets are
    ``y = f(x) + eps`` with ``f`` one of

    * ``"sine"``: ``f(x) = sin(x)``
    * ``"kink"``: ``f(x) = |x|``
    * ``"step"``: ``f(x) = 1 if x >= 0 else 0``

    and ``eps ~ Normal(0, noise^2)`` on the training rows only: test targets are
    the noiseless ``f(x)``, so the test error measures how well ``f`` itself is
    approximated.

    Args:
      function: ``"sine"``, ``"kink"`` or ``"step"``.
      n_train: number of training points (>= 1).
      n_test: number of test grid points (>= 2).
      noise: standard deviation of the training noise (>= 0).
      data_seed: seed of the training draw.

    Returns:
      a regression :class:`Dataset`, x ``(n, 1)``, y ``(n, 1)``.

    >>> ds = sine(n_train=3, n_test=3)
    >>> np.round(ds.x_test[:, 0].astype(float), 4).tolist(), bool(np.abs(ds.y_test).max() < 1e-6)
    ([-3.1416, 0.0, 3.1416], True)
    """
    _check_choice("function", function, SINE_FUNCTIONS)
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 2)
    noise = _check_float("noise", noise, 0.0)
    rng = np.random.default_rng(_check_int("data_seed", data_seed, 0))
    x_train = rng.uniform(-np.pi, np.pi, size=(n_train, 1))
    y_train = _target(function, x_train) + noise * rng.standard_normal((n_train, 1))
    x_test = np.linspace(-np.pi, np.pi, n_test)[:, None]
    y_test = _target(function, x_test)
    f32 = np.float32
    return _make(
        "sine", "regression", x_train.astype(f32), y_train.astype(f32), x_test.astype(f32),
        y_test.astype(f32), feature_names=("x",),
    )


def house_price_formula(area: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Noise-free price, in thousands, of the synthetic ``house_prices`` data.

    ``price = 40 + 400 * sigmoid((area - 120) / 35) * (0.6 + 0.4 * exp(-age / 30))``

    with ``sigmoid(z) = 1 / (1 + exp(-z))``: prices rise with the living area in
    an S-shape (small flats are cheap per m2, large houses saturate) and lose up
    to 40 % of the area premium as the house ages (half of that within ~21
    years). The S-shape is what a 2-2-1 sigmoid network can represent.

    Args:
      area: living area in m2.
      age: age of the house in years.

    Returns:
      the price in thousands, same shape as the broadcast inputs.

    >>> float(house_price_formula(np.array(120.0), np.array(0.0)))
    240.0
    """
    sigmoid = 1.0 / (1.0 + np.exp(-(area - HOUSE_AREA_MID) / HOUSE_AREA_SCALE))
    age_factor = HOUSE_AGE_FLOOR + (1.0 - HOUSE_AGE_FLOOR) * np.exp(-age / HOUSE_AGE_DECAY)
    return HOUSE_BASE + HOUSE_PREMIUM * sigmoid * age_factor


def house_prices(
    *, n_train: int = 500, n_test: int = 200, noise: float = 15.0, data_seed: int = 0
) -> Dataset:
    """Synthetic house prices with two features, for the 2-2-1 network of the slides.

    Features: ``area ~ Uniform[40, 250]`` (living area, m2) and
    ``age ~ Uniform[0, 100]`` (years). Target: :func:`house_price_formula` plus
    ``Normal(0, noise^2)`` noise, in thousands. ``n_train + n_test`` houses are
    drawn with ``np.random.default_rng(data_seed)`` (columns area, age, noise in
    that order) and the first ``n_train`` form the training split; train and test
    both carry noise. Prices are left in thousands (roughly 60 to 430).

    Args:
      n_train: training houses (>= 1).
      n_test: test houses (>= 1).
      noise: standard deviation of the price noise, in thousands (>= 0).
      data_seed: seed of the draw.

    Returns:
      a regression :class:`Dataset`, x ``(n, 2)`` = (area, age), y ``(n, 1)``.

    >>> ds = house_prices(noise=0.0)
    >>> ds.num_train, ds.num_test, ds.feature_names
    (500, 200, ('area_m2', 'age_years'))
    """
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    noise = _check_float("noise", noise, 0.0)
    rng = np.random.default_rng(_check_int("data_seed", data_seed, 0))
    n = n_train + n_test
    area = rng.uniform(*HOUSE_AREA_RANGE, n)
    age = rng.uniform(*HOUSE_AGE_RANGE, n)
    price = house_price_formula(area, age) + noise * rng.standard_normal(n)
    x = np.stack([area, age], axis=1).astype(np.float32)
    y = price[:, None].astype(np.float32)
    return _make(
        "house_prices", "regression", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
        feature_names=("area_m2", "age_years"),
    )


def _sklearn(name: str, task: str, bunch: Any, x: np.ndarray, **fields: Any) -> Dataset:
    target = np.asarray(bunch.target)
    if task == "regression":
        y = target.astype(np.float32)[:, None]
    else:
        y = target.astype(np.int32)
        fields.setdefault("num_classes", int(y.max()) + 1)
        fields.setdefault("class_names", tuple(str(c) for c in bunch.target_names))
    keep, hold = holdout_indices(y, TEST_FRACTION, TEST_SPLIT_SEED, stratify=task != "regression")
    x = x.astype(np.float32)
    return _make(name, task, x[keep], y[keep], x[hold], y[hold], **fields)


def digits(*, image: bool = False) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes).

    Pixel counts ``0 .. 16`` are mapped to ``[0, 1]`` by ``x = count / 16``. The
    test split is 20 %, stratified, drawn with :data:`TEST_SPLIT_SEED`.

    Args:
      image: ``False`` gives x ``(n, 64)``; ``True`` gives images ``(n, 8, 8, 1)``.

    Returns:
      a multiclass :class:`Dataset`.

    >>> digits(image=True).input_shape
    (8, 8, 1)
    """
    from sklearn.datasets import load_digits

    if not isinstance(image, bool):
        raise ValueError(f"image: got {image!r}; allowed: True, False")
    bunch = load_digits()
    x = np.asarray(bunch.data, np.float64) / DIGITS_MAX
    if image:
        return _sklearn("digits", "multiclass", bunch, x.reshape(-1, 8, 8, 1))
    return _sklearn("digits", "multiclass", bunch, x, feature_names=tuple(bunch.feature_names))


def breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table: 569 tumours, 30 features, binary.

    Label 0 is ``malignant`` and 1 ``benign`` (scikit-learn's coding). Test split
    20 %, stratified, seed :data:`TEST_SPLIT_SEED`.

    Returns:
      a binary :class:`Dataset`, x ``(n, 30)``.

    >>> breast_cancer().class_names
    ('malignant', 'benign')
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return _sklearn("breast_cancer", "binary", bunch, np.asarray(bunch.data),
                    feature_names=tuple(str(f) for f in bunch.feature_names))


def diabetes() -> Dataset:
    """scikit-learn's diabetes table: 442 patients, 10 raw (unscaled) features.

    The target is a measure of disease progression one year after baseline.
    Features are taken with ``scaled=False`` (age in years, sex coded 1/2, ...);
    :func:`load` standardizes them on the training split. Test split 20 %, a
    plain random draw with :data:`TEST_SPLIT_SEED`.

    Returns:
      a regression :class:`Dataset`, x ``(n, 10)``, y ``(n, 1)``.

    >>> diabetes().output_dim
    1
    """
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    return _sklearn("diabetes", "regression", bunch, np.asarray(bunch.data),
                    feature_names=tuple(bunch.feature_names))


def iris() -> Dataset:
    """scikit-learn's iris flowers: 150 rows, 4 measurements in cm, 3 species.

    Test split 20 %, stratified, seed :data:`TEST_SPLIT_SEED`.

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 4)``.

    >>> iris().class_names
    ('setosa', 'versicolor', 'virginica')
    """
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return _sklearn("iris", "multiclass", bunch, np.asarray(bunch.data),
                    feature_names=tuple(bunch.feature_names))


def wine() -> Dataset:
    """scikit-learn's wine recognition table: 178 wines, 13 chemical features, 3 cultivars.

    Test split 20 %, stratified, seed :data:`TEST_SPLIT_SEED`.

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 13)``.

    >>> wine().num_classes
    3
    """
    from sklearn.datasets import load_wine

    bunch = load_wine()
    return _sklearn("wine", "multiclass", bunch, np.asarray(bunch.data),
                    feature_names=tuple(bunch.feature_names))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Pure given num_samples (the generator reseeds itself), so caching is safe.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    # make_dataset reseeds NumPy's and Python's global generators; put them back.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    arrays = (
        np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int32),
        np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int32),
    )
    for array in arrays:
        array.flags.writeable = False
    return arrays


def mnist1d(*, num_samples: int = 5000) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package.

    Calls ``mnist1d.data.make_dataset`` with the package's default arguments
    (``seed`` 42, 40-step signals, 80/20 train/test) and only ``num_samples``
    changed, so the defaults give 4000 train and 1000 test signals. The generator
    already centres and scales ``x`` over the whole set. Nothing is downloaded,
    the global NumPy and ``random`` states are restored afterwards, and the
    arrays are cached for the life of the process.

    Args:
      num_samples: total signals before the split (>= 20; rounded down to a
        multiple of 10, one tenth per digit).

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 40)``, y in ``0 .. 9``.

    >>> ds = mnist1d(num_samples=100)
    >>> ds.x_train.shape, ds.x_test.shape
    ((80, 40), (20, 40))
    """
    x_train, y_train, x_test, y_test = _mnist1d_arrays(_check_int("num_samples", num_samples, 20))
    return _make(
        "mnist1d", "multiclass", x_train.copy(), y_train.copy(), x_test.copy(), y_test.copy(),
        num_classes=10, class_names=tuple(str(i) for i in range(10)),
    )


def _resolve_data_dir(name: str, data_dir: Optional[os.PathLike | str]) -> Path:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        raise FileNotFoundError(
            f"data_dir: got None and {DATA_DIR_ENV} unset; allowed: a directory holding "
            f"the {name} files ({files.DATA_DIR_HINT})"
        )
    return Path(data_dir).expanduser()


def mnist(*, data_dir: Optional[os.PathLike | str] = None) -> Dataset:
    """MNIST from local IDX files (see :func:`jaxnets.data.files.load_mnist_dir`).

    Args:
      data_dir: the data directory; ``None`` reads ``JAXNETS_DATA_DIR``.

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 28, 28, 1)`` in ``[0, 1]``.

    >>> try:
    ...     mnist(data_dir="/nonexistent")
    ... except FileNotFoundError as err:
    ...     print(str(err).split(" expected")[0])
    mnist:
    """
    return files.load_mnist_dir(_resolve_data_dir("mnist", data_dir), "mnist")


def fashion_mnist(*, data_dir: Optional[os.PathLike | str] = None) -> Dataset:
    """Fashion-MNIST from local IDX files (see :func:`jaxnets.data.files.load_mnist_dir`).

    Args:
      data_dir: the data directory; ``None`` reads ``JAXNETS_DATA_DIR``.

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 28, 28, 1)`` in ``[0, 1]``.

    >>> try:
    ...     fashion_mnist(data_dir="/nonexistent")
    ... except FileNotFoundError as err:
    ...     print(str(err).split(" expected")[0])
    fashion_mnist:
    """
    return files.load_mnist_dir(_resolve_data_dir("fashion_mnist", data_dir), "fashion_mnist")


def cifar10(*, data_dir: Optional[os.PathLike | str] = None) -> Dataset:
    """CIFAR-10 from the local Python-version batches (see :func:`jaxnets.data.files.load_cifar10_dir`).

    Args:
      data_dir: the data directory; ``None`` reads ``JAXNETS_DATA_DIR``.

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 32, 32, 3)`` in ``[0, 1]``.

    >>> try:
    ...     cifar10(data_dir="/nonexistent")
    ... except FileNotFoundError as err:
    ...     print(str(err).split(" expected")[0])
    cifar10:
    """
    return files.load_cifar10_dir(_resolve_data_dir("cifar10", data_dir))


# ----------------------------------------------------------------- registry

@dataclasses.dataclass(frozen=True)
class _Entry:
    build: Callable[..., Dataset]
    task: str
    standardize: bool  # the default of load(standardize=None)
    source: str
    files: Optional[str] = None  # for file-based sets: the expected input shape


def _house_source() -> str:
    noise = inspect.signature(house_prices).parameters["noise"].default
    (a0, a1), (g0, g1) = HOUSE_AREA_RANGE, HOUSE_AGE_RANGE
    return (
        f"generated: area ~ U[{a0:g}, {a1:g}] m2, age ~ U[{g0:g}, {g1:g}] years, price (thousands) = "
        f"{HOUSE_BASE:g} + {HOUSE_PREMIUM:g} sigmoid((area - {HOUSE_AREA_MID:g}) / {HOUSE_AREA_SCALE:g}) "
        f"({HOUSE_AGE_FLOOR:g} + {1 - HOUSE_AGE_FLOOR:g} exp(-age / {HOUSE_AGE_DECAY:g})) + N(0, {noise:g}^2)"
    )

FAIR_FEATURES = ("rate_marriage", "age", "yrs_married", "children", "religious", "educ", "occupation",
                 "occupation_husb")


def fair() -> Dataset:
    """Fair's (1978) affairs survey as statsmodels ships it: 6,366 women, 8 features, binary.

    Label 1 if the woman reported any time spent in extramarital affairs
    (``affairs > 0``), else 0 — the binary-choice version econometrics textbooks fit
    with a logit. Features, in :data:`FAIR_FEATURES` order: marriage rating (1-5),
    age, years married, children, religiousness (1-4), education (years),
    occupation and husband's occupation (coded 1-6). Test split 20 %, stratified,
    seed :data:`TEST_SPLIT_SEED`.

    Returns:
      a binary :class:`Dataset`, x ``(n, 8)``.

    >>> fair().feature_names[:2]
    ('rate_marriage', 'age')
    """
    from statsmodels.datasets import fair as fair_table

    table = fair_table.load_pandas().data
    x = table[list(FAIR_FEATURES)].to_numpy(np.float64)
    y = (table["affairs"].to_numpy() > 0).astype(np.int32)
    keep, hold = holdout_indices(y, TEST_FRACTION, TEST_SPLIT_SEED, stratify=True)
    x = x.astype(np.float32)
    return _make("fair", "binary", x[keep], y[keep], x[hold], y[hold], num_classes=2,
                 class_names=("no affair", "affair"), feature_names=FAIR_FEATURES)


_REGISTRY: dict[str, _Entry] = {
    "xor": _Entry(xor, "binary", False,
                  "the 4 XOR points, train = test; task='regression' gives float targets"),
    "sine": _Entry(sine, "regression", False,
                   "generated: y = sin(x), abs(x) or step(x) for x ~ U[-pi, pi]; test on an even grid"),
    "house_prices": _Entry(house_prices, "regression", True, _house_source()),
    "digits": _Entry(digits, "multiclass", True, f"scikit-learn load_digits, pixels / {DIGITS_MAX:g}"),
    "breast_cancer": _Entry(breast_cancer, "binary", True, "scikit-learn load_breast_cancer"),
    "diabetes": _Entry(diabetes, "regression", True, "scikit-learn load_diabetes(scaled=False)"),
    "iris": _Entry(iris, "multiclass", True, "scikit-learn load_iris"),
    "wine": _Entry(wine, "multiclass", True, "scikit-learn load_wine"),
    "fair": _Entry(fair, "binary", True, "statsmodels fair (Fair 1978), label = affairs > 0"),
    "mnist1d": _Entry(mnist1d, "multiclass", False, "generated by mnist1d.data.make_dataset (default args)"),
    "mnist": _Entry(mnist, "multiclass", False, "local IDX files", files="(28, 28, 1)"),
    "fashion_mnist": _Entry(fashion_mnist, "multiclass", False, "local IDX files", files="(28, 28, 1)"),
    "cifar10": _Entry(cifar10, "multiclass", False, "local CIFAR-10 python batches", files="(32, 32, 3)"),
    "adding": _Entry(sequences.adding, "regression", False,
                     "generated adding problem: y = sum of the 2 marked values v ~ U[0, 1]; x = (value, marker)"),
    "parity": _Entry(sequences.parity, "binary", False,
                     "generated bit sequences, y = (number of 1s) mod k; tokens 1 + bit, 0 = padding"),
    "grammar_lm": _Entry(text.grammar_lm, "multiclass", False,
                         "generated sentences of a small grammar with number agreement; next-word "
                         "windows, y = x shifted by one"),
    "reviews": _Entry(text.reviews, "binary", False,
                      "generated one-line reviews, label = polarity of the last clause (the one after 'but'); "
                      "padded token ids"),
}

#: Names accepted by :func:`load`.
DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"name: got {name!r}; allowed: {', '.join(DATASETS)}")
    return _REGISTRY[name]


def options(name: str) -> tuple[str, ...]:
    """Keyword options that :func:`load` accepts for one dataset, besides the common ones.

    Args:
      name: a name from :data:`DATASETS`.

    Returns:
      the option names, in signature order.

    >>> options("sine")
    ('function', 'n_train', 'n_test', 'noise', 'data_seed')
    """
    params = inspect.signature(_entry(name).build).parameters
    return tuple(p for p in params if p != "data_dir")


def load(
    name: str,
    *,
    seed: int = 0,
    validation: float = 0.0,
    standardize: Optional[bool] = None,
    data_dir: Optional[os.PathLike | str] = None,
    **kwargs: Any,
) -> Dataset:
    """Load a built-in dataset by name, offline.

    Steps: build the raw splits, then carve ``validation`` of the training rows
    out as a validation split (:meth:`Dataset.with_validation`, seeded by
    ``seed``), then standardize with training statistics
    (:meth:`Dataset.standardize`) if asked.

    Args:
      name: one of :data:`DATASETS`.
      seed: seed of the validation draw (the data themselves never depend on it).
      validation: share of the training rows moved to validation, ``0 <= v < 1``.
      standardize: ``True``/``False``, or ``None`` for the dataset's default
        (tables yes; images, signals and toy sets no).
      data_dir: directory of the file-based sets (``mnist``, ``fashion_mnist``,
        ``cifar10``); ``None`` reads ``JAXNETS_DATA_DIR``. Ignored by the others.
      **kwargs: dataset options, see :func:`options`.

    Returns:
      the :class:`Dataset`.

    >>> ds = load("iris", validation=0.25, seed=1)
    >>> ds.num_train, ds.num_val, ds.num_test, ds.standardized
    (90, 30, 30, True)
    """
    entry = _entry(name)
    allowed = options(name)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"{key}: got an option unknown to {name!r}; allowed: {', '.join(allowed) or 'none'}"
            )
    if isinstance(validation, bool) or not isinstance(validation, (int, float, np.floating)) \
            or not 0.0 <= validation < 1.0:
        raise ValueError(f"validation: got {validation!r}; allowed: 0 <= validation < 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; allowed: an integer >= 0")
    if standardize not in (None, True, False):
        raise ValueError(f"standardize: got {standardize!r}; allowed: True, False, None")
    if entry.files is not None:
        kwargs["data_dir"] = data_dir
    ds = entry.build(**kwargs)
    if validation > 0:
        ds = ds.with_validation(float(validation), int(seed))
    if entry.standardize if standardize is None else standardize:
        ds = ds.standardize()
    return ds


def describe(name: str) -> str:
    """One line about a dataset, for ``jaxnets list``: name, task, defaults, source.

    Args:
      name: one of :data:`DATASETS`.

    Returns:
      the line (nothing is loaded).

    >>> describe("iris")
    'iris: multiclass, standardized by default; scikit-learn load_iris'
    """
    entry = _entry(name)
    scaling = "standardized by default" if entry.standardize else "not standardized by default"
    where = f"; needs data_dir or {DATA_DIR_ENV}" if entry.files is not None else ""
    return f"{name}: {entry.task}, {scaling}; {entry.source}{where}"


def datasets_table() -> str:
    """The Markdown table of built-in datasets used in ``docs/datasets.md``.

    Sizes and shapes are measured by loading each dataset with its defaults (the
    file-based ones are described by their expected shape instead), so the table
    cannot drift from the code; a test compares it with the docs.

    Returns:
      the table, one row per name in :data:`DATASETS`.

    >>> datasets_table().splitlines()[2].split(" | ")[:5]
    ['| `xor`', 'binary', '2 classes', '4', '4']
    """
    rows = [
        "| name | task | classes / outputs | train | test | input shape | standardized by default | source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in DATASETS:
        entry = _REGISTRY[name]
        if entry.files is not None:
            train = test = "from files"
            shape, outputs = entry.files, "10 classes"
        else:
            ds = load(name, standardize=False)
            train, test, shape = str(ds.num_train), str(ds.num_test), str(ds.input_shape)
            outputs = f"{ds.num_classes} classes" if ds.num_classes else f"{ds.output_dim} output"
        rows.append(
            f"| `{name}` | {entry.task} | {outputs} | {train} | {test} | {shape} | "
            f"{'yes' if entry.standardize else 'no'} | {entry.source} |"
        )
    return "\n".join(rows)
