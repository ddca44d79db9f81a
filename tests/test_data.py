"""Tests of the offline data package: built-ins, splits, scaling, file formats, docs.

References are independent of the code under test: NumPy statistics written here,
the scikit-learn bunches themselves, the slides' XOR table, file bytes assembled
here with struct/gzip and a hand-written Python 2 pickle stream.
"""
from __future__ import annotations

import doctest
import gzip
import pickle
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn import datasets as skd

import jaxnets.data as data
from jaxnets.data import Dataset, arrays, builtin, dataset, files

ROOT = Path(__file__).resolve().parents[1]
IN_MEMORY = tuple(n for n in data.DATASETS if n not in ("mnist", "fashion_mnist", "cifar10"))


# ---------------------------------------------------------------- built-ins

# name -> (task, input shape, output_dim, total rows or None, num_classes)
EXPECTED = {
    "xor": ("binary", (2,), 1, None, 2),
    "sine": ("regression", (1,), 1, 300, None),
    "house_prices": ("regression", (2,), 1, 700, None),
    "digits": ("multiclass", (64,), 10, len(skd.load_digits().target), 10),
    "breast_cancer": ("binary", (30,), 1, len(skd.load_breast_cancer().target), 2),
    "diabetes": ("regression", (10,), 1, len(skd.load_diabetes().target), None),
    "iris": ("multiclass", (4,), 3, len(skd.load_iris().target), 3),
    "wine": ("multiclass", (13,), 3, len(skd.load_wine().target), 3),
    "fair": ("binary", (8,), 1, 6366, 2),
    "mnist1d": ("multiclass", (40,), 10, 5000, 10),
    "adding": ("regression", (30, 2), 1, 5000, None),
    "parity": ("binary", (12,), 1, 5000, 2),
    "grammar_lm": ("multiclass", (16,), 37, None, 37),
    "reviews": ("binary", (12,), 1, 2500, 2),
}


def test_expected_table_covers_every_in_memory_dataset():
    assert set(EXPECTED) == set(IN_MEMORY)


@pytest.mark.parametrize("name", IN_MEMORY)
def test_builtin_shapes_dtypes_tasks(name):
    task, shape, out, total, k = EXPECTED[name]
    ds = data.load(name)
    assert (ds.task, ds.input_shape, ds.output_dim, ds.num_classes, ds.name) == (task, shape, out, k, name)
    assert ds.num_val == 0 and ds.x_val.shape == (0, *shape)
    if total is not None:
        assert ds.num_train + ds.num_test == total
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and x.shape[1:] == shape and len(y) == len(x)
        if task == "regression":
            assert y.dtype == np.float32 and y.ndim == 2 and y.shape[1] == 1
        else:
            assert y.dtype == np.int32 and (y.ndim == 1 or (task == "multiclass" and y.ndim == 2))
            assert len(y) == 0 or (y.min() >= 0 and y.max() < k)
    if task != "regression" and ds.y_train.ndim == 1:
        # every class shows up in training (per-token targets of a language model need not:
        # the special tokens <pad> and <unk> are never predicted)
        assert set(np.unique(ds.y_train).tolist()) == set(range(k))


def test_xor_is_the_truth_table_and_train_equals_test():
    ds = data.load("xor")
    table = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 0}
    assert {tuple(map(int, x)): int(y) for x, y in zip(ds.x_train, ds.y_train)} == table
    np.testing.assert_array_equal(ds.x_train, ds.x_test)
    np.testing.assert_array_equal(ds.y_train, ds.y_test)
    reg = data.load("xor", task="regression")
    assert reg.task == "regression" and reg.y_train.shape == (4, 1) and reg.y_train.dtype == np.float32
    np.testing.assert_array_equal(reg.y_train[:, 0], ds.y_train.astype(np.float32))


@pytest.mark.parametrize(
    "function, reference",
    [("sine", np.sin), ("kink", np.abs), ("step", lambda x: np.where(x >= 0, 1.0, 0.0))],
)
def test_sine_targets_follow_the_function(function, reference):
    ds = data.load("sine", function=function, n_train=50, n_test=7)
    x64 = ds.x_train.astype(np.float64)
    assert np.all(np.abs(x64) <= np.pi)
    np.testing.assert_allclose(ds.y_train, reference(x64), atol=1e-6)
    np.testing.assert_allclose(ds.x_test[:, 0], np.linspace(-np.pi, np.pi, 7), rtol=1e-6)
    np.testing.assert_allclose(ds.y_test, reference(ds.x_test.astype(np.float64)), atol=1e-6)


def test_sine_noise_on_train_only():
    clean = data.load("sine", n_train=4000)
    noisy = data.load("sine", n_train=4000, noise=0.3)
    np.testing.assert_array_equal(clean.x_train, noisy.x_train)
    residual = (noisy.y_train - np.sin(noisy.x_train.astype(np.float64)))[:, 0]
    assert abs(residual.std() - 0.3) < 0.02
    np.testing.assert_array_equal(clean.y_test, noisy.y_test)


def _house_reference(area, age):
    # written out again here from the documented formula
    return 40 + 400 / (1 + np.exp(-(area - 120) / 35)) * (0.6 + 0.4 * np.exp(-age / 30))


def test_house_prices_generator_formula():
    ds = data.load("house_prices", standardize=False, noise=0.0)
    assert ds.feature_names == ("area_m2", "age_years")
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    y = np.concatenate([ds.y_train, ds.y_test])[:, 0]
    assert x[:, 0].min() >= 40 and x[:, 0].max() <= 250
    assert x[:, 1].min() >= 0 and x[:, 1].max() <= 100
    np.testing.assert_allclose(y, _house_reference(x[:, 0], x[:, 1]), rtol=1e-5)
    noisy = data.load("house_prices", standardize=False)
    np.testing.assert_array_equal(noisy.x_train, ds.x_train)
    residual = noisy.y_train[:, 0] - _house_reference(*noisy.x_train.astype(np.float64).T)
    assert 12 < residual.std() < 18  # noise 15 (thousands), 500 draws
    other = data.load("house_prices", standardize=False, data_seed=1)
    assert not np.array_equal(other.x_train, ds.x_train)


def test_digits_image_option_is_a_reshape_scaled_to_unit_interval():
    flat = data.load("digits", standardize=False)
    img = data.load("digits", image=True, standardize=False)
    assert img.x_train.shape[1:] == (8, 8, 1) and img.feature_names is None
    np.testing.assert_array_equal(img.x_train.reshape(len(img.x_train), 64), flat.x_train)
    raw = skd.load_digits()
    assert flat.x_train.max() == 1.0 and flat.x_train.min() == 0.0
    # rows are exactly the scikit-learn rows / 16, as a set
    rows = {r.tobytes() for r in (raw.data / 16).astype(np.float32)}
    assert all(r.tobytes() in rows for r in flat.x_test)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "iris", "wine", "fair"])
def test_sklearn_test_split_is_stratified_and_fixed(name):
    a, b = data.load(name, seed=0, standardize=False), data.load(name, seed=7, standardize=False)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    counts = np.bincount(np.concatenate([a.y_train, a.y_test]))
    test_counts = np.bincount(a.y_test, minlength=len(counts))
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)
    assert a.num_test == int(np.floor(0.2 * counts.sum() + 0.5))


def test_diabetes_uses_raw_features_and_float_targets():
    ds = data.load("diabetes", standardize=False)
    raw = skd.load_diabetes(scaled=False)
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    y = np.concatenate([ds.y_train, ds.y_test])[:, 0].astype(np.float64)
    order_ours, order_ref = np.lexsort(x.T[::-1]), np.lexsort(raw.data.T[::-1])
    np.testing.assert_allclose(x[order_ours], raw.data[order_ref], rtol=1e-6)
    np.testing.assert_allclose(y[order_ours], raw.target[order_ref])


def test_fair_is_the_statsmodels_table_with_a_binary_label():
    from statsmodels.datasets import fair as fair_table

    table = fair_table.load_pandas().data
    ds = data.load("fair", standardize=False)
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    y = np.concatenate([ds.y_train, ds.y_test])
    raw = table[list(data.builtin.FAIR_FEATURES)].to_numpy(np.float64)
    order_ours, order_ref = np.lexsort(np.c_[x, y].T[::-1]), np.lexsort(np.c_[raw, table["affairs"] > 0].T[::-1])
    np.testing.assert_allclose(x[order_ours], raw[order_ref], rtol=1e-6)
    np.testing.assert_array_equal(y[order_ours], (table["affairs"].to_numpy() > 0)[order_ref])
    assert ds.class_names == ("no affair", "affair") and 0.3 < y.mean() < 0.35


def test_mnist1d_matches_the_generator_and_leaves_global_rng_alone():
    from mnist1d.data import get_dataset_args, make_dataset

    saved_np, saved_py = np.random.get_state(), random.getstate()
    builtin._mnist1d_arrays.cache_clear()  # make sure the generator really runs here
    np.random.seed(123)
    random.seed(123)
    before_np, before_py = np.random.get_state(), random.getstate()
    ds = data.load("mnist1d", num_samples=120)
    after_np = np.random.get_state()
    assert all(np.array_equal(u, v) for u, v in zip(before_np, after_np))
    assert random.getstate() == before_py
    args = get_dataset_args()
    args.num_samples = 120
    ref = make_dataset(args)
    np.random.set_state(saved_np)
    random.setstate(saved_py)
    np.testing.assert_array_equal(ds.x_train, ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, ref["y_test"].astype(np.int32))
    assert (ds.num_train, ds.num_test) == (96, 24)
    # cached arrays are copied out: writing into one load does not leak into the next
    ds.x_train[0, 0] = 1e6
    assert data.load("mnist1d", num_samples=120).x_train[0, 0] != 1e6


# ------------------------------------------------------------- standardize

def test_standardize_uses_train_statistics_only():
    raw = data.load("wine", standardize=False, validation=0.2, seed=3)
    std = raw.standardize()
    train = raw.x_train.astype(np.float64)
    mu, sigma = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(std.x_mean, mu, rtol=1e-6)
    np.testing.assert_allclose(std.x_std, sigma, rtol=1e-6)
    for split in ("train", "val", "test"):
        expected = (getattr(raw, f"x_{split}").astype(np.float64) - mu) / sigma
        np.testing.assert_allclose(getattr(std, f"x_{split}"), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(std.x_train.std(axis=0), 1, atol=1e-5)
    assert np.abs(std.x_test.mean(axis=0)).max() > 1e-3  # test set is not fitted
    assert raw.x_mean is None and not raw.standardized  # original untouched
    assert std.x_train.dtype == np.float32


def test_standardize_constant_feature_gets_unit_std():
    ds = data.load("digits", standardize=False)  # several corner pixels are always 0
    constant = np.ptp(ds.x_train, axis=0) == 0
    assert constant.any()
    s = ds.standardize()
    np.testing.assert_array_equal(s.x_std[constant], 1.0)
    assert np.isfinite(s.x_test).all()
    np.testing.assert_array_equal(s.x_train[:, constant], 0.0)


def test_load_standardizes_after_the_validation_carve():
    ds = data.load("iris", validation=0.25, seed=2)
    raw = data.load("iris", validation=0.25, seed=2, standardize=False)
    np.testing.assert_allclose(ds.x_mean, raw.x_train.astype(np.float64).mean(axis=0), rtol=1e-6)


# -------------------------------------------------------------- validation

def _tagged(n: int, labels: np.ndarray) -> Dataset:
    # column 0 holds the row's identity so that moved rows can be traced
    x = np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.float32)
    return Dataset(
        x_train=x, y_train=labels.astype(np.int32), x_val=x[:0], y_val=labels[:0].astype(np.int32),
        x_test=x[:3], y_test=labels[:3].astype(np.int32), task="multiclass",
        num_classes=int(labels.max()) + 1,
    )


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
def test_validation_split_is_disjoint_stratified_and_deterministic(fraction):
    labels = np.repeat([0, 1, 2], [50, 30, 17])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    ds = _tagged(len(labels), labels)
    v = ds.with_validation(fraction, seed=4)
    ids_train, ids_val = v.x_train[:, 0].astype(int), v.x_val[:, 0].astype(int)
    assert set(ids_train).isdisjoint(ids_val)
    assert sorted(np.concatenate([ids_train, ids_val]).tolist()) == list(range(len(labels)))
    np.testing.assert_array_equal(v.y_train, labels[ids_train])
    np.testing.assert_array_equal(v.y_val, labels[ids_val])
    assert v.num_val == int(np.floor(fraction * len(labels) + 0.5))
    expected = fraction * np.bincount(labels)
    assert np.all(np.abs(np.bincount(v.y_val, minlength=3) - expected) < 1)
    again = ds.with_validation(fraction, seed=4)
    np.testing.assert_array_equal(again.x_val, v.x_val)
    other = ds.with_validation(fraction, seed=5)
    assert not np.array_equal(other.x_val, v.x_val)
    np.testing.assert_array_equal(v.x_test, ds.x_test)


def test_validation_for_regression_and_through_load():
    ds = data.load("house_prices", validation=0.2, seed=1, standardize=False)
    raw = data.load("house_prices", standardize=False)
    assert (ds.num_train, ds.num_val) == (400, 100)
    rows = {r.tobytes() for r in raw.x_train}
    moved = {r.tobytes() for r in ds.x_val}
    assert moved <= rows and moved.isdisjoint({r.tobytes() for r in ds.x_train})


# ----------------------------------------------------------------- errors

def _tiny(**changes) -> dict:
    fields = dict(
        x_train=np.zeros((4, 2), np.float32), y_train=np.array([0, 1, 0, 1], np.int32),
        x_val=np.zeros((0, 2), np.float32), y_val=np.zeros((0,), np.int32),
        x_test=np.zeros((2, 2), np.float32), y_test=np.array([0, 1], np.int32),
        task="binary", num_classes=2,
    )
    fields.update(changes)
    return fields


BAD_CALLS = [
    ("name", lambda: data.load("imagenet")),
    ("name", lambda: data.describe("imagenet")),
    ("validation", lambda: data.load("iris", validation=1.0)),
    ("validation", lambda: data.load("iris", validation=-0.1)),
    ("seed", lambda: data.load("iris", seed=-1)),
    ("standardize", lambda: data.load("iris", standardize="yes")),
    ("colour", lambda: data.load("iris", colour=True)),
    ("function", lambda: data.load("sine", function="cos")),
    ("n_train", lambda: data.load("sine", n_train=0)),
    ("noise", lambda: data.load("house_prices", noise=-1.0)),
    ("task", lambda: data.load("xor", task="multiclass")),
    ("image", lambda: data.load("digits", image="yes")),
    ("num_samples", lambda: data.load("mnist1d", num_samples=5)),
    ("fraction", lambda: Dataset(**_tiny()).with_validation(0.0, 0)),
    ("fraction", lambda: Dataset(**_tiny()).with_validation(1.0, 0)),
    ("fraction", lambda: Dataset(**_tiny()).with_validation(1.5, 0)),
    ("seed", lambda: Dataset(**_tiny()).with_validation(0.5, -1)),
    ("x_val", lambda: data.load("iris", validation=0.2).with_validation(0.2, 0)),
    ("x_mean", lambda: data.load("iris").with_validation(0.2, 0)),
    ("x_mean", lambda: data.load("iris").standardize()),
    ("task", lambda: Dataset(**_tiny(task="classification"))),
    ("x_train.dtype", lambda: Dataset(**_tiny(x_train=np.zeros((4, 2))))),
    ("y_train.dtype", lambda: Dataset(**_tiny(y_train=np.array([0, 1, 0, 1])))),
    ("y_test", lambda: Dataset(**_tiny(y_test=np.array([0, 1, 1], np.int32)))),
    ("y_train", lambda: Dataset(**_tiny(y_train=np.array([0, 1, 2, 1], np.int32)))),
    ("num_classes", lambda: Dataset(**_tiny(num_classes=3))),
    ("x_test.shape", lambda: Dataset(**_tiny(x_test=np.zeros((2, 3), np.float32)))),
    ("x_train", lambda: Dataset(**_tiny(x_train=np.full((4, 2), np.nan, np.float32)))),
    ("y_train.shape", lambda: Dataset(**_tiny(
        task="regression", num_classes=None, y_train=np.zeros((4,), np.float32),
        y_val=np.zeros((0, 1), np.float32), y_test=np.zeros((2, 1), np.float32)))),
    ("feature_names", lambda: Dataset(**_tiny(feature_names=("a",)))),
    ("class_names", lambda: Dataset(**_tiny(class_names=("a", "b", "c")))),
]


@pytest.mark.parametrize("field, call", BAD_CALLS, ids=[f"{i}-{f}" for i, (f, _) in enumerate(BAD_CALLS)])
def test_bad_input_gives_one_line_value_error_naming_the_field(field, call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{field}: got "), message
    assert "; allowed: " in message


def test_unknown_name_lists_every_dataset():
    with pytest.raises(ValueError) as info:
        data.load("nope")
    assert all(name in str(info.value) for name in data.DATASETS)


def test_describe_is_one_line_per_dataset():
    for name in data.DATASETS:
        line = data.describe(name)
        assert "\n" not in line and line.startswith(f"{name}: ")


def test_dataset_is_frozen():
    ds = Dataset(**_tiny())
    with pytest.raises(AttributeError):
        ds.task = "regression"


# ------------------------------------------------------------------ IDX files

def _idx_bytes(array: np.ndarray) -> bytes:
    # magic 0x0000TTDD, big-endian uint32 dims, big-endian data (written independently)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def _mnist_files(directory: Path, gz_train: bool, gz_test: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n, gz in (("train", 5, gz_train), ("t10k", 3, gz_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write(directory / f"{split}-images-idx3-ubyte", _idx_bytes(images), gz)
        _write(directory / f"{split}-labels-idx1-ubyte", _idx_bytes(labels), gz)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([[-300, 7], [32767, -32768]], np.int16),
    np.array([1.5, -2.25, 1e-3], np.float32),
])
def test_read_idx_round_trips(tmp_path, array, gz):
    _write(tmp_path / "a-idx", _idx_bytes(array), gz)
    out = files.read_idx(tmp_path / ("a-idx.gz" if gz else "a-idx"))
    assert out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("payload", [
    b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00",   # first byte not zero
    b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00",   # unknown type code
    b"\x00\x00\x08\x00",                                      # zero dimensions
    b"\x00\x00",                                              # too short
])
def test_read_idx_rejects_bad_magic(tmp_path, payload):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(ValueError) as info:
        files.read_idx(tmp_path / "bad")
    assert str(info.value).startswith(f"{tmp_path / 'bad'}: got ") and "\n" not in str(info.value)


def test_read_idx_rejects_wrong_data_length(tmp_path):
    (tmp_path / "short").write_bytes(struct.pack(">II", 0x801, 5) + b"\x01\x02")
    with pytest.raises(ValueError, match="got 2 data bytes; allowed: 5"):
        files.read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz_train, gz_test", [(False, False), (True, True), (False, True)])
def test_load_mnist_from_idx_files(tmp_path, gz_train, gz_test):
    arrays = _mnist_files(tmp_path, gz_train, gz_test)
    ds = data.load("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
    for split, (x, y) in (("train", (ds.x_train, ds.y_train)), ("t10k", (ds.x_test, ds.y_test))):
        images, labels = arrays[split]
        np.testing.assert_array_equal(x[..., 0], (images / 255.0).astype(np.float32))
        np.testing.assert_array_equal(y, labels.astype(np.int32))
    assert ds.task == "multiclass" and ds.num_classes == 10 and ds.class_names[3] == "3"


def test_fashion_mnist_from_subfolder_and_environment(tmp_path, monkeypatch):
    arrays = _mnist_files(tmp_path / "FashionMNIST" / "raw", True, True, seed=1)
    _mnist_files(tmp_path, False, False, seed=2)  # plain MNIST in the root must not win
    monkeypatch.setenv("JAXNETS_DATA_DIR", str(tmp_path))
    ds = data.load("fashion_mnist", validation=0.4, seed=0)
    assert ds.name == "fashion_mnist" and ds.class_names[9] == "Ankle boot"
    assert (ds.num_train, ds.num_val) == (3, 2)
    merged = np.concatenate([ds.y_train, ds.y_val])
    assert sorted(merged.tolist()) == sorted(arrays["train"][1].tolist())


def test_missing_mnist_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("mnist: expected ")
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f"{stem}[.gz]" in message
    assert str(tmp_path) in message and "JAXNETS_DATA_DIR" in message


def test_no_data_dir_at_all(monkeypatch):
    monkeypatch.delenv("JAXNETS_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"^data_dir: got None and JAXNETS_DATA_DIR unset"):
        data.load("cifar10")


def test_mnist_rejects_swapped_files(tmp_path):
    _mnist_files(tmp_path, False, False)
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    swapped = labels.read_bytes()
    labels.write_bytes(images.read_bytes())
    images.write_bytes(swapped)
    with pytest.raises(ValueError, match="allowed: magic 0x00000803"):
        data.load("mnist", data_dir=tmp_path)


# --------------------------------------------------------------- CIFAR files

class _Py2Pickle:
    """Writes protocol-2 pickles the way Python 2 wrote the CIFAR-10 batches.

    Python 2 ``str`` values are SHORT_BINSTRING/BINSTRING opcodes and NumPy 1.x
    arrays reduce to ``numpy.core.multiarray._reconstruct`` plus a BUILD state.
    """

    def __init__(self):
        self.out = bytearray(b"\x80\x02")

    def str(self, value: bytes):
        if len(value) < 256:
            self.out += b"U" + bytes([len(value)]) + value
        else:
            self.out += b"T" + struct.pack("<i", len(value)) + value

    def int(self, value: int):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        else:
            self.out += b"J" + struct.pack("<i", value)

    def obj(self, value):
        if isinstance(value, bytes):
            self.str(value)
        elif isinstance(value, bool):
            self.out += b"\x88" if value else b"\x89"
        elif isinstance(value, int):
            self.int(value)
        elif value is None:
            self.out += b"N"
        elif isinstance(value, tuple):
            self.out += b"("
            for item in value:
                self.obj(item)
            self.out += b"t"
        elif isinstance(value, list):
            self.out += b"]("
            for item in value:
                self.obj(item)
            self.out += b"e"
        elif isinstance(value, dict):
            self.out += b"}("
            for key, item in value.items():
                self.obj(key)
                self.obj(item)
            self.out += b"u"
        elif isinstance(value, np.ndarray):
            assert value.dtype == np.uint8 and value.flags.c_contiguous
            self.out += b"cnumpy.core.multiarray\n_reconstruct\n"
            self.out += b"cnumpy\nndarray\n"
            self.obj((0,))
            self.str(b"b")
            self.out += b"\x87R"  # TUPLE3, REDUCE
            self.out += b"("
            self.int(1)
            self.obj(tuple(value.shape))
            self.out += b"cnumpy\ndtype\n"
            self.obj((b"u1", 0, 1))
            self.out += b"R"
            self.obj((3, b"|", None, None, None, -1, -1, 0))
            self.out += b"b"  # BUILD the dtype
            self.obj(False)
            self.str(value.tobytes())
            self.out += b"tb"  # state tuple, BUILD the array
        else:
            raise TypeError(type(value))

    def dump(self, value) -> bytes:
        self.obj(value)
        return bytes(self.out) + b"."


def _cifar_files(directory: Path, per_batch: int = 2, n_test: int = 3, py2: bool = True) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        arrays[name] = (rows, labels)
        batch = {b"batch_label": b"testing batch 1 of 1" if name == "test_batch" else b"training batch",
                 b"labels": labels, b"data": rows,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        if py2:
            payload = _Py2Pickle().dump(batch)
        else:
            payload = pickle.dumps({k.decode(): v for k, v in batch.items()})
        (directory / name).write_bytes(payload)
    meta = {b"num_cases_per_batch": 10000, b"num_vis": 3072,
            b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                             b"dog", b"frog", b"horse", b"ship", b"truck"]}
    (directory / "batches.meta").write_bytes(_Py2Pickle().dump(meta) if py2 else pickle.dumps(meta))
    return arrays


def _cifar_reference(rows: np.ndarray) -> np.ndarray:
    # pixel (r, c) of channel ch sits at ch * 1024 + r * 32 + c
    out = np.empty((len(rows), 32, 32, 3), np.float32)
    for i in range(len(rows)):
        for ch in range(3):
            plane = rows[i, ch * 1024:(ch + 1) * 1024]
            out[i, :, :, ch] = (plane.reshape(32, 32) / 255.0).astype(np.float32)
    return out


@pytest.mark.parametrize("py2, sub", [(True, "cifar-10-batches-py"), (False, "")])
def test_load_cifar10_batches(tmp_path, py2, sub):
    arrays = _cifar_files(tmp_path / sub if sub else tmp_path, py2=py2)
    ds = data.load("cifar10", data_dir=tmp_path)
    train_rows = np.concatenate([arrays[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((arrays[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(ds.x_train, _cifar_reference(train_rows))
    np.testing.assert_array_equal(ds.y_train, np.array(train_labels, np.int32))
    np.testing.assert_array_equal(ds.x_test, _cifar_reference(arrays["test_batch"][0]))
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.y_test.dtype == np.int32
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"


def test_py2_pickle_writer_matches_the_standard_reader(tmp_path):
    # the hand-written stream is read by the stdlib exactly as the CIFAR docs describe
    rows = np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    payload = _Py2Pickle().dump({b"data": rows, b"labels": [1, 2]})
    assert b"numpy.core.multiarray" in payload
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = pickle.loads(payload, encoding="bytes")
    np.testing.assert_array_equal(loaded[b"data"], rows)
    assert loaded[b"labels"] == [1, 2]


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    _cifar_files(tmp_path)
    # GLOBAL os.system, argument, REDUCE: what a malicious batch would contain
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02cos\nsystem\nU\x04true\x85R.")
    with pytest.raises(ValueError, match=r"got pickle global os.system; allowed"):
        data.load("cifar10", data_dir=tmp_path)


def test_missing_cifar_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load("cifar10", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("cifar10: expected data_batch_1, ")
    assert "test_batch, batches.meta" in message and str(tmp_path) in message


# --------------------------------------------------------- your own arrays

def _tagged_rows(n: int, width: int = 2) -> np.ndarray:
    # row i is (i*width, ..., i*width + width - 1): each row names itself
    return np.arange(n * width, dtype=np.int64).reshape(n, width)


def _row_ids(x: np.ndarray) -> list[int]:
    return (x[:, 0] // x.shape[1]).astype(int).tolist()


def holdout_ids(y: np.ndarray, fraction: float, seed: int, *, stratify: bool) -> list[int]:
    return dataset.holdout_indices(y, fraction, seed, stratify=stratify)[1].tolist()


def test_from_arrays_given_test_split_and_validation_exactly():
    x, y = _tagged_rows(10), np.array([0, 1] * 5)
    x_test, y_test = _tagged_rows(3) + 100, np.array([1, 0, 1])
    ds = data.from_arrays(x, y, x_test=x_test, y_test=y_test, validation=0.2, seed=3, name="mine")
    assert (ds.task, ds.num_classes, ds.output_dim, ds.name) == ("binary", 2, 1, "mine")
    assert ds.x_train.dtype == ds.x_val.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.num_val == 2 and ds.num_train == 8
    np.testing.assert_array_equal(ds.x_test, x_test.astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, y_test)
    train, val = _row_ids(ds.x_train), _row_ids(ds.x_val)
    # a partition of rows 0..9, each part in the original order, labels travel with their rows
    assert sorted(train + val) == list(range(10)) and train == sorted(train) and val == sorted(val)
    assert ds.y_train.tolist() == [i % 2 for i in train] and sorted(ds.y_val.tolist()) == [0, 1]
    # the documented rule: Dataset.with_validation's stratified draw with this seed
    assert val == holdout_ids(y, 0.2, 3, stratify=True)
    again = data.from_arrays(x, y, x_test=x_test, y_test=y_test, validation=0.2, seed=3)
    assert _row_ids(again.x_val) == val
    assert len({tuple(_row_ids(data.from_arrays(x, y, x_test=x_test, y_test=y_test, validation=0.2,
                                                seed=s).x_val)) for s in range(8)}) > 1


def test_from_arrays_without_test_split_holds_out_a_fixed_fifth():
    x, y = _tagged_rows(20), np.arange(20) % 4
    first = data.from_arrays(x, y, validation=0.25, seed=0)
    other = data.from_arrays(x, y, validation=0.25, seed=7)
    assert (first.task, first.num_classes, first.output_dim) == ("multiclass", 4, 4)
    assert first.num_test == 4 and sorted(first.y_test.tolist()) == [0, 1, 2, 3]  # stratified
    assert _row_ids(first.x_test) == _row_ids(other.x_test) == holdout_ids(
        y, data.TEST_FRACTION, data.TEST_SPLIT_SEED, stratify=True)
    assert (first.num_train, first.num_val) == (12, 4)
    everything = _row_ids(first.x_train) + _row_ids(first.x_val) + _row_ids(first.x_test)
    assert sorted(everything) == list(range(20))


@pytest.mark.parametrize("y, task, output_dim, num_classes", [
    (np.array([0.5, 1.0, 2.0, 3.0, 1.5]), "regression", 1, None),
    (np.array([1.0, 2.0, 3.0, 4.0, 5.0]), "regression", 1, None),  # whole floats are still targets
    (np.arange(15, dtype=np.float32).reshape(5, 3), "regression", 3, None),
    (np.array([0, 1, 1, 0, 1]), "binary", 1, 2),
    (np.array([True, False, True, True, False]), "binary", 1, 2),
    (np.array([[0], [1], [1], [0], [1]], np.uint8), "binary", 1, 2),
    (np.array([0, 1, 2, 1, 0]), "multiclass", 3, 3),
    (np.array([0, 5, 2, 1, 0], np.int16), "multiclass", 6, 6),
    (np.array([[0, 1, 2], [2, 1, 0], [1, 1, 1], [0, 0, 0], [2, 2, 2]]), "multiclass", 3, 3),
])
def test_from_arrays_infers_the_task_and_output_dim(y, task, output_dim, num_classes):
    ds = data.from_arrays(np.ones((5, 2)), y, x_test=np.ones((5, 2)), y_test=y)
    assert (ds.task, ds.output_dim, ds.num_classes) == (task, output_dim, num_classes)
    if task == "regression":
        expected = y.astype(np.float32).reshape(5, -1)  # always (n, k)
    else:
        expected = y.astype(np.int32).reshape(5, -1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(5)
    np.testing.assert_array_equal(ds.y_train, expected)


def test_from_arrays_given_task_and_class_count():
    x, y = np.ones((4, 1)), np.array([0, 1, 1, 0])
    assert data.from_arrays(x, y, x_test=x, y_test=y, task="multiclass").output_dim == 2
    assert data.from_arrays(x, y, x_test=x, y_test=y, num_classes=5).output_dim == 5
    assert data.from_arrays(x, y, x_test=x, y_test=y, task="regression").y_train.dtype == np.float32
    # the largest label anywhere (here only in y_test) sets K
    assert data.from_arrays(x, y, x_test=x, y_test=np.array([0, 3, 0, 0])).num_classes == 4


def test_from_arrays_copies_converts_and_standardizes_on_train_only():
    x = np.array([[1, 10], [3, 10], [5, 20], [7, 20]], np.int32)
    x_test = np.array([[4, 15]], np.int32)
    y = np.array([0.0, 1.0, 2.0, 3.0])
    ds = data.from_arrays(x, y, x_test=x_test, y_test=np.array([1.0]), standardize=True)
    mean, std = x.astype(np.float64).mean(axis=0), x.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(ds.x_mean, mean, rtol=1e-7)
    np.testing.assert_allclose(ds.x_test, (x_test - mean) / std, rtol=1e-6)
    raw = data.from_arrays(x, y, x_test=x_test, y_test=np.array([1.0]))
    x[0, 0] = 99
    y[0] = 99.0
    assert raw.x_train[0, 0] == 1.0 and raw.y_train[0, 0] == 0.0 and not raw.standardized
    flags = data.from_arrays(np.array([[True, False], [False, True]]), np.array([1, 0]),
                             x_test=np.array([[True, True]]), y_test=np.array([1]))
    assert flags.x_train.dtype == np.float32 and flags.x_train.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def _fa(**changes):
    args = dict(x_train=np.zeros((6, 2)), y_train=np.array([0, 1, 0, 1, 0, 1]),
                x_test=np.zeros((2, 2)), y_test=np.array([0, 1]))
    args.update(changes)
    return lambda: data.from_arrays(**args)


BAD_ARRAYS = [
    ("x_train.shape", _fa(x_train=np.zeros(6))),
    ("x_train.dtype", _fa(x_train=np.array([["a", "b"]] * 6))),
    ("x_train.dtype", _fa(x_train=np.zeros((6, 2), complex))),
    ("x_train", _fa(x_train=np.zeros((0, 2)), y_train=np.zeros(0, int))),
    ("x_train", _fa(x_train=np.array([[0.0, np.nan]] * 6))),
    ("x_train", _fa(x_train=np.full((6, 2), 1e300))),  # beyond float32
    ("x_train", _fa(x_train=np.zeros((1, 2)), y_train=np.array([0]), x_test=None, y_test=None)),
    ("y_train", _fa(y_train=np.array([0, 1, 0]))),
    ("y_train", _fa(y_train=np.int64(1))),
    ("y_train", _fa(y_train=np.array([0, 1, 0, 1, 0, -1]))),
    ("y_train", _fa(y_train=np.array([0, 1, 0, 1, 0, 2]), task="binary")),
    ("y_train.dtype", _fa(y_train=np.array(list("abcabc")))),
    ("y_train.dtype", _fa(y_train=np.array([0.0, 1.0] * 3), task="binary")),
    ("y_train.shape", _fa(y_train=np.zeros((6, 2, 2)))),
    ("y_train.shape", _fa(y_train=np.zeros((6, 3), int), task="binary")),
    ("y_train", _fa(y_train=np.array([0.0, np.inf] * 3))),
    ("y_test", _fa(y_test=None)),
    ("x_test", _fa(x_test=None)),
    ("x_test.shape", _fa(x_test=np.zeros((2, 3)))),
    ("x_test.shape", _fa(x_test=np.zeros((2, 2, 1)))),
    ("y_test", _fa(y_test=np.array([0, 1, 1]))),
    ("y_test", _fa(y_test=np.array([0, 7]), num_classes=3)),
    ("y_test.shape", _fa(y_test=np.zeros((2, 2)), y_train=np.zeros((6, 3)))),
    ("y_test.shape", _fa(y_test=np.zeros((2, 4), int))),
    ("task", _fa(task="classification")),
    ("num_classes", _fa(num_classes=1)),
    ("num_classes", _fa(num_classes=3, task="binary")),
    ("num_classes", _fa(num_classes=3, y_train=np.zeros(6), y_test=np.zeros(2))),
    ("validation", _fa(validation=1.0)),
    ("validation", _fa(validation=-0.1)),
    ("validation", _fa(validation=True)),
    ("validation", _fa(x_train=np.zeros((1, 2)), y_train=np.array([0]), validation=0.5)),
    ("seed", _fa(seed=-1)),
    ("seed", _fa(seed=1.5)),
    ("standardize", _fa(standardize="yes")),
    ("name", _fa(name="")),
]


@pytest.mark.parametrize("field, call", BAD_ARRAYS, ids=[f"{i}-{f}" for i, (f, _) in enumerate(BAD_ARRAYS)])
def test_from_arrays_bad_argument_gives_one_line_naming_it(field, call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{field}: got "), message
    assert "; allowed: " in message


# --------------------------------------------------------- broken files, one table

def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _flip_gzip_body(path: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # inside the stored CRC32: the stream decodes, the check fails
    path.write_bytes(bytes(raw))
    return path


def _mnist_then(tmp: Path, stem: str, damage) -> Path:
    _mnist_files(tmp, True, True)
    return damage(tmp / f"{stem}.gz")


def _cifar_then(tmp: Path, name: str, damage) -> Path:
    _cifar_files(tmp / "cifar-10-batches-py")
    return damage(tmp / "cifar-10-batches-py" / name)


def _cifar_binary(tmp: Path) -> Path:
    # the layout of cifar-10-binary.tar.gz: 3073-byte records, a text meta file
    folder = tmp / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(2 * 3073))
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")
    return folder


# id, dataset, make the bad input (returns the path the message must name), type, words in the message
BAD_FILES = [
    ("mnist-truncated-gz", "mnist",
     lambda t: _mnist_then(t, "train-images-idx3-ubyte", lambda p: _truncate(p, 40)),
     ValueError, "gzip stream that ends early"),
    ("fashion-truncated-gz-labels", "fashion_mnist",
     lambda t: _mnist_then(t, "t10k-labels-idx1-ubyte", lambda p: _truncate(p, 15)),
     ValueError, "gzip stream that ends early"),
    ("mnist-html-named-gz", "mnist",
     lambda t: _mnist_then(t, "t10k-labels-idx1-ubyte",
                           lambda p: p.write_bytes(b"<html>404 Not Found</html>") and p),
     ValueError, "not a gzip stream; allowed: a gzip-compressed IDX file"),
    ("mnist-empty-gz", "mnist",
     lambda t: _mnist_then(t, "train-labels-idx1-ubyte", lambda p: _truncate(p, 0)),
     ValueError, "got an empty file, not a gzip stream"),
    ("mnist-bad-crc-gz", "mnist",
     lambda t: _mnist_then(t, "train-labels-idx1-ubyte", _flip_gzip_body),
     ValueError, "got a corrupt gzip stream (CRC check failed)"),
    ("cifar-binary-version", "cifar10", _cifar_binary,
     FileNotFoundError, "got the CIFAR-10 binary version (data_batch_1.bin, ...); allowed: the python version"),
    ("cifar-truncated-pickle", "cifar10",
     lambda t: _cifar_then(t, "data_batch_2", lambda p: _truncate(p, 500)),
     ValueError, "got a truncated or corrupt pickle (pickle data was truncated); allowed: a CIFAR-10 batch"),
    ("cifar-pickle-without-stop", "cifar10",
     lambda t: _cifar_then(t, "test_batch", lambda p: _truncate(p, len(p.read_bytes()) - 1)),
     ValueError, "got a truncated or corrupt pickle"),
    ("cifar-empty-meta", "cifar10",
     lambda t: _cifar_then(t, "batches.meta", lambda p: _truncate(p, 0)),
     ValueError, "got an empty file; allowed: a CIFAR-10 batch pickled by the python version"),
]


@pytest.mark.parametrize("name, make, kind, words", [row[1:] for row in BAD_FILES],
                         ids=[row[0] for row in BAD_FILES])
def test_broken_files_give_one_line_naming_the_file(tmp_path, name, make, kind, words):
    bad = make(tmp_path)
    with pytest.raises(kind) as info:
        data.load(name, data_dir=tmp_path)
    message = str(info.value)
    assert type(info.value) is kind and "\n" not in message
    assert message.startswith(f"{bad}: got ") and words in message
    # no chained gzip/pickle traceback behind the line
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_raw_idx_file_under_a_gz_name_still_reads(tmp_path):
    # browsers may decompress on download and keep the .gz name
    arrays = _mnist_files(tmp_path, False, False)
    for path in list(tmp_path.iterdir()):
        path.rename(path.with_name(path.name + ".gz"))
    ds = data.load("mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k"][1].astype(np.int32))


def test_python_version_wins_over_a_binary_folder_beside_it(tmp_path):
    _cifar_binary(tmp_path)
    _cifar_files(tmp_path / "cifar-10-batches-py")
    assert data.load("cifar10", data_dir=tmp_path).num_train == 10


# ------------------------------------------------------------ docs, doctests

def test_docs_table_is_the_generated_table():
    text = (ROOT / "docs" / "datasets.md").read_text()
    match = re.search(r"<!-- datasets-table:start -->\n(.*?)\n<!-- datasets-table:end -->", text, re.S)
    assert match, "docs/datasets.md lost its table markers"
    assert match.group(1) == data.datasets_table(), (
        "docs/datasets.md is stale; regenerate the table with "
        "python -c 'import jaxnets.data as d; print(d.datasets_table())'"
    )


@pytest.mark.parametrize("module", [dataset, files, builtin, arrays])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
