"""Readers for datasets kept as local files: MNIST-style IDX files and CIFAR-10 batches.

Nothing here downloads. The files must already be on disk, as distributed:

* MNIST and Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
  raw or gzipped (``.gz``).
* CIFAR-10 "python version": the pickled batches ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch`` and ``batches.meta``, optionally inside a ``cifar-10-batches-py``
  folder.

IDX layout (big-endian): a 4-byte magic number ``0x0000TTDD`` where ``TT`` is the
element type (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
``0x0D`` float32, ``0x0E`` float64) and ``DD`` the number of dimensions, then
``DD`` uint32 sizes, then the elements in row-major order. MNIST images are
``0x00000803`` (uint8, 3 dims) and labels ``0x00000801`` (uint8, 1 dim).

The CIFAR batches are pickles written by Python 2; they are read with a
restricted unpickler that only builds NumPy arrays and plain containers, so a
tampered file cannot run code.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Union

import numpy as np

from jaxnets.data.dataset import Dataset

PathLike = Union[str, os.PathLike]

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

#: Magic numbers of the MNIST files.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

#: The four IDX files, by split, as ``(images, labels)``.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Sub-folders of a data directory searched before the directory itself, by kind.
MNIST_SUBDIRS = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_SUBDIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10")
#: Where the binary version would sit, and one of its files; recognised only to refuse it.
CIFAR10_BINARY_SUBDIRS = ("cifar-10-batches-bin", "cifar10/cifar-10-batches-bin", "cifar10")
CIFAR10_BINARY_MARKER = "data_batch_1.bin"

DATA_DIR_HINT = "set --data-dir or JAXNETS_DATA_DIR"

#: First two bytes of every gzip stream.
GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    # gzip streams start with 1f 8b whatever the file is called.
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise ValueError(
                f"{path}: got a gzip stream that ends early (truncated download?); "
                "allowed: a complete gzip-compressed IDX file"
            ) from None
        except (OSError, zlib.error) as err:  # BadGzipFile is an OSError
            raise ValueError(
                f"{path}: got a corrupt gzip stream ({_one_line(err)}); "
                "allowed: a complete gzip-compressed IDX file"
            ) from None
    # A raw IDX file under a .gz name (browsers may decompress on download) still
    # reads; anything else under that name is not what the name promises.
    if path.suffix == ".gz" and raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: got {_first_bytes(raw)}, not a gzip stream; "
            "allowed: a gzip-compressed IDX file (the name ends in .gz)"
        )
    return raw


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _first_bytes(raw: bytes) -> str:
    return "an empty file" if not raw else f"a file starting {raw[:8]!r}"


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into a NumPy array.

    Args:
      path: the file; gzip compression is detected from its first two bytes.

    Returns:
      an array with the file's shape and element type, in native byte order.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: an empty file, a truncated or corrupt gzip stream, a ``.gz``
        name on a file that is neither gzip nor IDX, a bad magic number, a
        truncated header, or a data size that does not match the dimensions.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "labels-idx1-ubyte"
    ...     _ = p.write_bytes(struct.pack(">IIBBB", 0x00000801, 3, 7, 0, 9))
    ...     read_idx(p).tolist()
    [7, 0, 9]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: got no such file; allowed: an IDX file")
    data = _read_maybe_gzip(path)
    if not data:
        raise ValueError(f"{path}: got an empty file; allowed: an IDX file (4-byte magic number, sizes, data)")
    if len(data) < 4:
        raise ValueError(f"{path}: got {len(data)} bytes; allowed: at least a 4-byte IDX magic number")
    (magic,) = struct.unpack(">I", data[:4])
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{path}: got magic number 0x{magic:08x}; allowed: 0x0000TTDD with TT in "
            "08,09,0b,0c,0d,0e and DD >= 1 (IDX format)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: got {len(data)} bytes; allowed: at least {header} bytes of IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_TYPES[type_code])
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: got {len(data) - header} data bytes; allowed: {count * dtype.itemsize} "
            f"for dimensions {dims}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _find_file(directory: Path, stem: str) -> Path | None:
    # Some mirrors write "train-images.idx3-ubyte"; accept it next to the official name.
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _candidates(directory: Path, subdirs: tuple[str, ...]) -> list[Path]:
    return [directory / sub for sub in subdirs] + [directory]


def _where(dirs: list[Path]) -> str:
    names = [str(d) for d in dirs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _read_mnist_split(images_path: Path, labels_path: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: got an IDX file of {images.dtype} with {images.ndim} dims; "
            f"allowed: magic 0x{IDX_IMAGES_MAGIC:08x} (uint8 images, 3 dims)"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: got an IDX file of {labels.dtype} with {labels.ndim} dims; "
            f"allowed: magic 0x{IDX_LABELS_MAGIC:08x} (uint8 labels, 1 dim)"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{labels_path}: got {len(labels)} labels; allowed: {len(images)} (one per image in {images_path.name})"
        )
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{labels_path}: got label {int(labels.max())}; allowed: 0 .. 9 ({kind})")
    x = (images.astype(np.float32) / np.float32(255.0))[..., None]
    return x, labels.astype(np.int32)


def load_mnist_dir(directory: PathLike, kind: str = "mnist") -> Dataset:
    """Load MNIST or Fashion-MNIST from the four IDX files in a directory.

    The files are looked for in the kind's usual sub-folders first (``mnist``,
    ``MNIST/raw``; ``fashion_mnist``, ``fashion-mnist``, ``FashionMNIST/raw``),
    then in ``directory`` itself; the first folder holding all four wins. Pixels
    are mapped to ``[0, 1]`` by ``x = pixel / 255``.

    Args:
      directory: the data directory.
      kind: ``"mnist"`` or ``"fashion_mnist"`` (sets the name and class names).

    Returns:
      a multiclass :class:`Dataset` with x ``(n, 28, 28, 1)`` float32 (NHWC),
      y ``(n,)`` int32 in ``0 .. 9`` and no validation rows.

    Raises:
      FileNotFoundError: no searched folder holds all four files.
      ValueError: a file is not a valid MNIST IDX file.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for images, labels in MNIST_FILES.values():
    ...         _ = (Path(d) / images).write_bytes(struct.pack(">IIII", 0x803, 1, 2, 2) + bytes([0, 51, 102, 255]))
    ...         _ = (Path(d) / labels).write_bytes(struct.pack(">II", 0x801, 1) + bytes([4]))
    ...     ds = load_mnist_dir(d)
    >>> ds.x_train.shape, (ds.x_train[0, :, :, 0] * 255).round().tolist(), ds.y_test.tolist()
    ((1, 2, 2, 1), [[0.0, 51.0], [102.0, 255.0]], [4])
    """
    if kind not in MNIST_SUBDIRS:
        raise ValueError(f"kind: got {kind!r}; allowed: {', '.join(MNIST_SUBDIRS)}")
    directory = Path(directory)
    searched = _candidates(directory, MNIST_SUBDIRS[kind])
    for folder in searched:
        found = {stem: _find_file(folder, stem) for pair in MNIST_FILES.values() for stem in pair}
        if all(found.values()):
            break
    else:
        expected = ", ".join(f"{stem}[.gz]" for pair in MNIST_FILES.values() for stem in pair)
        raise FileNotFoundError(f"{kind}: expected {expected} in {_where(searched)} ({DATA_DIR_HINT})")
    x_train, y_train = _read_mnist_split(*(found[s] for s in MNIST_FILES["train"]), kind)
    x_test, y_test = _read_mnist_split(*(found[s] for s in MNIST_FILES["test"]), kind)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{found[MNIST_FILES['test'][0]]}: got images of {x_test.shape[1:3]}; "
            f"allowed: {x_train.shape[1:3]} like the training images"
        )
    class_names = FASHION_MNIST_CLASSES if kind == "fashion_mnist" else tuple(str(i) for i in range(10))
    return Dataset(
        x_train=x_train, y_train=y_train,
        x_val=np.zeros((0, *x_train.shape[1:]), np.float32), y_val=np.zeros((0,), np.int32),
        x_test=x_test, y_test=y_test,
        task="multiclass", num_classes=10, class_names=class_names, name=kind,
    )


# ---------------------------------------------------------------- CIFAR-10

def _numpy_globals() -> dict[tuple[str, str], Any]:
    # The functions NumPy's own array pickles call, found through __reduce__ so that
    # we never import numpy's private modules by name (they moved in NumPy 2).
    reconstruct = np.zeros(1, np.uint8).__reduce__()[0]
    scalar = np.uint8(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,  # bytes pickled by Python 3, protocol < 3
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed NumPy constructors."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds only NumPy arrays, NumPy scalars and builtin containers."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def _unpickle(path: Path) -> dict:
    raw = path.read_bytes()
    expected = "a CIFAR-10 batch pickled by the python version (cifar-10-python.tar.gz)"
    if not raw:
        raise ValueError(f"{path}: got an empty file; allowed: {expected}")
    try:
        # Python 2 str objects arrive as bytes; NumPy accepts bytes array state.
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as err:
        raise ValueError(
            f"{path}: got pickle global {err}; allowed: NumPy arrays, lists, dicts, strings and numbers"
        ) from None
    except Exception as err:  # truncated or garbled pickles raise many types
        raise ValueError(
            f"{path}: got a truncated or corrupt pickle ({_one_line(err)}); allowed: {expected}"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: got a pickled {type(obj).__name__}; allowed: a dict (CIFAR-10 batch)")
    # Keys are bytes in the official files (Python 2) and str if re-pickled by Python 3.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"{path}: got keys {sorted(batch)}; allowed: a dict with 'data' and 'labels'")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: got data {data.dtype} {data.shape}; allowed: uint8 (n, 3072)")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: got labels of shape {labels.shape}; allowed: {len(data)} integers")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: got label {int(labels.max())}; allowed: 0 .. 9")
    # Each row is 1024 red, 1024 green, 1024 blue values, each plane row-major: CHW -> HWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images.astype(np.float32) / np.float32(255.0), labels.astype(np.int32)


def _refuse_cifar10_binary(directory: Path) -> None:
    # The binary version (cifar-10-binary.tar.gz) is a different format; name it
    # rather than report seven missing files.
    for folder in _candidates(directory, CIFAR10_BINARY_SUBDIRS):
        if folder.is_dir() and (folder.name == CIFAR10_BINARY_SUBDIRS[0]
                                or (folder / CIFAR10_BINARY_MARKER).is_file()):
            raise FileNotFoundError(
                f"{folder}: got the CIFAR-10 binary version ({CIFAR10_BINARY_MARKER}, ...); allowed: "
                f"the python version, a {CIFAR10_SUBDIRS[0]} folder (from cifar-10-python.tar.gz) "
                f"holding data_batch_1 .. data_batch_5, test_batch and batches.meta"
            )


def load_cifar10_dir(directory: PathLike) -> Dataset:
    """Load CIFAR-10 from its Python-version batch files.

    Looks in ``cifar-10-batches-py``, ``cifar10/cifar-10-batches-py`` and
    ``cifar10`` under ``directory``, then in ``directory`` itself; the first
    folder holding all seven files wins. Each ``data`` row of 3072 bytes is the
    red, green and blue 32x32 planes in turn; it becomes one ``(32, 32, 3)`` image
    with ``x = byte / 255``. Class names come from ``batches.meta``.

    Args:
      directory: the data directory.

    Returns:
      a multiclass :class:`Dataset`, x ``(n, 32, 32, 3)`` float32 (NHWC), y int32
      in ``0 .. 9``; the train split is batches 1 to 5 in order, test is ``test_batch``.

    Raises:
      FileNotFoundError: no searched folder holds all seven files; when a
        searched place holds the binary version instead (a
        ``cifar-10-batches-bin`` folder or ``data_batch_1.bin``), the message
        names that folder and asks for the python version.
      ValueError: a file is empty, truncated, not a pickle, or not a CIFAR-10 batch.

    >>> try:
    ...     load_cifar10_dir("/nonexistent")
    ... except FileNotFoundError as err:
    ...     print(str(err).split(", data_batch_2")[0])
    cifar10: expected data_batch_1
    """
    directory = Path(directory)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
    searched = _candidates(directory, CIFAR10_SUBDIRS)
    for folder in searched:
        if all((folder / name).is_file() for name in names):
            break
    else:
        _refuse_cifar10_binary(directory)
        raise FileNotFoundError(
            f"cifar10: expected {', '.join(names)} in {_where(searched)} ({DATA_DIR_HINT})"
        )
    parts = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST_FILE)
    meta = _unpickle(folder / CIFAR10_META_FILE)
    label_names = meta.get("label_names")
    if not isinstance(label_names, list) or len(label_names) != 10:
        raise ValueError(
            f"{folder / CIFAR10_META_FILE}: got label_names {label_names!r}; allowed: a list of 10 names"
        )
    class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in label_names)
    return Dataset(
        x_train=np.concatenate([p[0] for p in parts]), y_train=np.concatenate([p[1] for p in parts]),
        x_val=np.zeros((0, 32, 32, 3), np.float32), y_val=np.zeros((0,), np.int32),
        x_test=x_test, y_test=y_test,
        task="multiclass", num_classes=10, class_names=class_names, name="cifar10",
    )
