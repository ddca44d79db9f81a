"""Checkpoints of a whole ``TrainState``: Orbax for the tensors, a JSON manifest to trust them.

One checkpoint is one directory per step::

    <directory>/step_00000120/
        state/            Orbax PyTree checkpoint (one Zarr array folder per leaf)
        manifest.json     format, step, run metadata, library versions,
                          every leaf (path, shape, dtype, SHA-256 of its bytes)
                          and every file of state/ (size, SHA-256); written LAST

A step counts as saved only once ``manifest.json`` exists. Orbax writes
``state.orbax-checkpoint-tmp`` and renames it to ``state`` when done; the manifest
is then written to a temporary file, flushed, and renamed into place
(``jaxnets.io``). A run killed at any moment therefore leaves either a complete
checkpoint or a folder without a manifest, which :meth:`CheckpointManager.steps`
does not list and the next save removes.

Restoring checks, in order: the manifest's leaves against the target's (a
different model or optimizer fails before any tensor is read), the size and
SHA-256 of every file, then the SHA-256 of every restored leaf. Typed PRNG keys
(``jax.random.key``) are stored as ``jax.random.key_data`` and rebuilt with
``jax.random.wrap_key_data`` and the recorded implementation. Tensors pass
through host memory, so a checkpoint saved from any device placement restores
onto the placement (sharding) of the target's leaves.

See docs/checkpoints.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp

from jaxnets.io import atomic_write_json, to_jsonable
from jaxnets.state import TrainState
from jaxnets.tree import path_to_str

#: Version tag written into every manifest; restore refuses other formats.
FORMAT = "jaxnets.checkpoint/1"
MANIFEST = "manifest.json"
STATE_DIR = "state"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_LEAF_KEYS = frozenset({"path", "shape", "dtype", "key_impl", "sha256", "file"})
_VERSIONED = ("jaxnets", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


class CorruptCheckpointError(ValueError):
    """A saved checkpoint whose files or tensors no longer match its manifest."""


class Restored(NamedTuple):
    """What :meth:`CheckpointManager.restore_latest_valid` returns.

    Attributes:
      state: the restored ``TrainState``.
      metadata: the run metadata given to ``save`` (as read back from JSON).
      step: the step that was restored.
      skipped: one line per newer checkpoint that failed its integrity check.
    """

    state: TrainState
    metadata: dict
    step: int
    skipped: tuple[str, ...]


class _Leaf(NamedTuple):
    path: str
    shape: tuple[int, ...]
    dtype: str
    key_impl: str | None


@dataclasses.dataclass(frozen=True)
class CheckpointManager:
    """Saves and restores ``TrainState`` checkpoints under one directory, keeping the last ``keep``.

    The manager holds no state besides its two settings: everything it knows is
    read from the directory, so several managers on one directory agree.

    Args:
      directory: where the ``step_XXXXXXXX`` folders live (created on first save).
      keep: how many complete checkpoints to keep (an integer >= 1); older ones
        are deleted after a new one is complete.

    >>> import tempfile, jax.numpy as jnp, optax
    >>> from jaxnets.models import MLP
    >>> from jaxnets.state import create_state
    >>> state = create_state(MLP(hidden=(3,), output_dim=2), optax.sgd(0.1), jnp.zeros((1, 4)))
    >>> manager = CheckpointManager(tempfile.mkdtemp(), keep=2)
    >>> manager.save(state, metadata={"epoch": 0}).name
    'step_00000000'
    >>> restored, metadata = manager.restore(state)
    >>> manager.steps(), manager.latest_step(), metadata
    ([0], 0, {'epoch': 0})
    >>> for step in (1, 2):
    ...     _ = manager.save(state.replace(step=jnp.int32(step)), metadata={"epoch": step})
    >>> manager.steps()
    [1, 2]
    >>> result = manager.restore_latest_valid(state)
    >>> result.step, result.metadata, result.skipped
    (2, {'epoch': 2}, ())
    """

    directory: Path
    keep: int = dataclasses.field(default=3, kw_only=True)

    def __post_init__(self):
        object.__setattr__(self, "directory", Path(self.directory))
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, np.integer)) or self.keep < 1:
            raise ValueError(f"keep: got {self.keep!r}; allowed: an integer >= 1")

    # ------------------------------------------------------------------ listing
    def step_dir(self, step: int) -> Path:
        """The folder of ``step``: ``<directory>/step_<step, 8 digits>``."""
        return self.directory / f"step_{int(step):08d}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints (those with a manifest), ascending.

        Folders without ``manifest.json`` (a save that was interrupted) are not
        listed. A missing directory has no steps.

        Returns:
          The step numbers, e.g. ``[100, 200, 300]``; ``[]`` when there are none.
        """
        if not self.directory.is_dir():
            return []
        found = []
        for child in self.directory.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / MANIFEST).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def latest_step(self) -> int | None:
        """The highest complete step, or None when there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def manifest(self, step: int) -> dict:
        """The parsed ``manifest.json`` of a complete checkpoint.

        Args:
          step: a step listed by :meth:`steps`.

        Returns:
          A dict with ``format``, ``step``, ``metadata``, ``versions``, ``leaves``
          (path, shape, dtype, key_impl, sha256, file) and ``files`` (bytes, sha256).
        """
        path = self._complete_dir(step)
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise _error(CorruptCheckpointError, step, path, f"{MANIFEST} is unreadable ({_first_line(error)})",
                         "a JSON manifest as written by save") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise _error(CorruptCheckpointError, step, path, f"{MANIFEST} has format {found!r}", FORMAT)
        leaves, files = manifest.get("leaves"), manifest.get("files")
        if not (isinstance(leaves, list) and isinstance(files, dict) and "metadata" in manifest
                and all(isinstance(e, dict) and _LEAF_KEYS <= set(e) for e in leaves)
                and all(isinstance(r, dict) and {"bytes", "sha256"} <= set(r) for r in files.values())):
            raise _error(CorruptCheckpointError, step, path, f"{MANIFEST} lacks fields",
                         f"metadata, leaves (each with {', '.join(sorted(_LEAF_KEYS))}) and files")
        return manifest

    # ------------------------------------------------------------------- saving
    def save(self, state: TrainState, *, metadata: dict, overwrite: bool = False,
             _before_finalize: Callable[[Path], None] | None = None) -> Path:
        """Save ``state`` (every pytree leaf) and ``metadata`` as the checkpoint of step ``state.step``.

        Steps: Orbax writes the tensors (temporary folder, then rename); every
        file is hashed and flushed to disk; ``manifest.json`` is written
        atomically, last; then checkpoints beyond the newest ``keep`` and
        folders of interrupted saves are deleted. When this returns, the
        checkpoint is complete and on disk.

        Args:
          state: the ``TrainState`` to save; ``apply_fn`` and ``tx`` are static
            and not saved (they come from the restore target).
          metadata: JSON-serializable run metadata, e.g. the config (as a dict)
            and the data position ``{"epoch": e, "step": s}``; library versions
            are added to the manifest automatically.
          overwrite: replace a complete checkpoint of the same step (it is
            deleted before the new one is written); otherwise that is an error.
          _before_finalize: tests only: called with the step folder after the
            tensors are written and before the manifest is, to simulate a crash.

        Returns:
          The checkpoint's folder.
        """
        step_value = np.asarray(jax.device_get(state.step))
        if step_value.ndim != 0 or not np.issubdtype(step_value.dtype, np.integer):
            raise ValueError(f"state.step: got {step_value.dtype}{list(step_value.shape)}; allowed: an integer "
                             "scalar (take one replica of a pmap-ed state before saving)")
        step = int(step_value)
        path = self.step_dir(step)
        if not isinstance(metadata, dict):
            raise _error(ValueError, step, path, f"metadata is a {type(metadata).__name__}", "a dict")
        try:
            json.dumps(to_jsonable(metadata), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise _error(ValueError, step, path, f"metadata is not JSON-serializable ({_first_line(error)})",
                         "dicts, lists, strings, numbers, booleans and None") from None
        if (path / MANIFEST).is_file() and not overwrite:
            raise _error(ValueError, step, path, "a complete checkpoint of this step exists",
                         "a new step, or overwrite=True")
        leaves, arrays = _flatten_for_save(state, step, path)
        if (path / MANIFEST).is_file():
            _delete_checkpoint(path)
        if path.exists():  # the remains of an interrupted save of this step
            shutil.rmtree(path)
        path.mkdir(parents=True)
        with _quiet_orbax(), ocp.Checkpointer(ocp.StandardCheckpointHandler(use_ocdbt=False)) as ckptr:
            ckptr.save(path / STATE_DIR, args=ocp.args.StandardSave(arrays))
        files = _hash_files(path)
        _fsync_tree(path / STATE_DIR)
        if _before_finalize is not None:
            _before_finalize(path)

        manifest = {
            "format": FORMAT,
            "step": step,
            "metadata": metadata,
            "versions": _versions(),
            "leaves": [
                {"path": leaf.path, "shape": list(leaf.shape), "dtype": leaf.dtype, "key_impl": leaf.key_impl,
                 "sha256": _sha256(host), "file": None if name is None else f"{STATE_DIR}/{name}"}
                for leaf, host, name in leaves
            ],
            "files": files,
        }
        atomic_write_json(path / MANIFEST, manifest)
        _fsync_dir(path)
        _fsync_dir(self.directory)
        self._prune(keep_step=step)
        return path

    def delete(self, step: int) -> None:
        """Delete the checkpoint of ``step``.

        Its manifest goes first, so a kill mid-way leaves a folder that no longer
        counts as a checkpoint (and that the next save removes).

        Args:
          step: a step listed by :meth:`steps`.
        """
        _delete_checkpoint(self._complete_dir(step))

    def _prune(self, keep_step: int) -> None:
        """Keep ``keep_step`` and the newest ``keep - 1`` others; remove folders of interrupted saves."""
        others = [s for s in self.steps() if s != keep_step]
        for step in others[:max(0, len(others) - (self.keep - 1))]:
            _delete_checkpoint(self.step_dir(step))
        for child in self.directory.iterdir():
            if _STEP_DIR.match(child.name) and child.is_dir() and not (child / MANIFEST).is_file():
                shutil.rmtree(child, ignore_errors=True)

    # ---------------------------------------------------------------- restoring
    def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """Restore a checkpoint into the structure and placement of ``target``.

        Checks, in order (each failure is a one-line error and nothing is restored):
        the manifest's leaf paths, shapes and dtypes equal the target's (else a
        ``ValueError`` naming the first differing leaf); every file's size and
        SHA-256 equal the manifest's; every restored leaf's SHA-256 equals the
        manifest's (both else a ``CorruptCheckpointError``).

        Args:
          target: a freshly created state of the same model and optimizer (e.g.
            from ``create_state``); its ``apply_fn`` and ``tx``, and the
            sharding of each leaf, are used for the result. It is not modified.
          step: which checkpoint; None means the latest complete one.

        Returns:
          ``(state, metadata)``: the restored state and the metadata given to ``save``.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise self._nothing_saved()
        path = self._complete_dir(step)
        manifest = self.manifest(step)
        saved = [_Leaf(entry["path"], tuple(entry["shape"]), entry["dtype"], entry["key_impl"])
                 for entry in manifest["leaves"]]
        target_leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
        wanted = [_describe(path_to_str(p), leaf) for p, leaf in target_leaves]
        _check_structure(step, path, saved, wanted)
        _check_files(step, path, manifest)

        names = {entry["path"]: entry["file"][len(STATE_DIR) + 1:] for entry in manifest["leaves"]
                 if entry["file"] is not None}
        abstract = {names[leaf.path]: np.empty(_stored_shape(leaf), _stored_dtype(leaf))
                    for leaf in saved if leaf.path in names}
        try:
            with _quiet_orbax(), ocp.Checkpointer(ocp.StandardCheckpointHandler(use_ocdbt=False)) as ckptr:
                arrays = ckptr.restore(path / STATE_DIR, args=ocp.args.StandardRestore(abstract)) if abstract else {}
        except Exception as error:  # noqa: BLE001 - any reader failure means the files are unusable
            raise _error(CorruptCheckpointError, step, path, f"Orbax could not read {STATE_DIR}/ "
                         f"({_first_line(error)})", "a readable checkpoint") from None

        new_leaves = []
        for entry, leaf, (_, like) in zip(manifest["leaves"], saved, target_leaves):
            if leaf.path in names:
                host = np.asarray(arrays[names[leaf.path]])
            else:
                host = np.zeros(_stored_shape(leaf), _stored_dtype(leaf))
            if host.shape != _stored_shape(leaf) or str(host.dtype) != str(_stored_dtype(leaf)) \
                    or _sha256(host) != entry["sha256"]:
                raise _error(CorruptCheckpointError, step, path,
                             f"leaf {leaf.path} (file {entry['file']}) does not match its SHA-256 after reading",
                             f"sha256 {entry['sha256'][:16]}... as recorded at save time")
            new_leaves.append(_place(host, leaf, like))
        return jax.tree_util.tree_unflatten(treedef, new_leaves), manifest["metadata"]

    def restore_latest_valid(self, target: TrainState) -> Restored:
        """Restore the newest checkpoint that passes the integrity checks, skipping corrupt newer ones.

        A structure mismatch (wrong model or optimizer) is raised at once, not
        skipped: an older checkpoint of the same run would not fit either.

        Args:
          target: as in :meth:`restore`.

        Returns:
          A :class:`Restored` ``(state, metadata, step, skipped)`` where ``skipped``
          holds the one-line error of each newer checkpoint passed over.
        """
        steps = self.steps()
        if not steps:
            raise self._nothing_saved()
        skipped: list[str] = []
        for step in reversed(steps):
            try:
                state, metadata = self.restore(target, step)
            except CorruptCheckpointError as error:
                skipped.append(str(error))
                continue
            return Restored(state, metadata, step, tuple(skipped))
        raise CorruptCheckpointError(
            f"checkpoint latest ({self.directory}): all {len(steps)} checkpoints failed their integrity "
            f"checks (steps {', '.join(map(str, reversed(steps)))}); expected: at least one intact checkpoint; "
            f"first failure: {skipped[0]}")

    def _complete_dir(self, step: int) -> Path:
        path = self.step_dir(step)
        if not (path / MANIFEST).is_file():
            if not self.directory.is_dir():
                raise self._nothing_saved(step)
            steps = self.steps()
            allowed = ", ".join(map(str, steps)) if steps else "none saved yet"
            raise FileNotFoundError(f"checkpoint {step} ({path}): no complete checkpoint of this step; "
                                    f"allowed: {allowed}")
        return path

    def _nothing_saved(self, step: int | str = "latest") -> FileNotFoundError:
        what = "directory does not exist" if not self.directory.is_dir() else "no complete checkpoint in the directory"
        return FileNotFoundError(f"checkpoint {step} ({self.directory}): {what}; "
                                 "expected: a directory written by CheckpointManager.save")


# ------------------------------------------------------------------------- leaves
def _describe(path: str, leaf: Any) -> _Leaf:
    """Path, shape, dtype (``key<fry>`` for typed keys) and key implementation of one leaf."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(leaf)) if isinstance(leaf, jax.Array) else None
        return _Leaf(path, tuple(leaf.shape), str(dtype), impl)
    if dtype is None or not hasattr(leaf, "shape"):
        array = np.asarray(leaf)
        return _Leaf(path, tuple(array.shape), str(array.dtype), None)
    return _Leaf(path, tuple(leaf.shape), str(np.dtype(dtype)), None)


def _flatten_for_save(state: TrainState, step: int, path: Path):
    """``[(leaf, host array, Orbax name or None)]`` and the ``{name: array}`` dict Orbax writes."""
    leaves, arrays = [], {}
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(state):
        described = _describe(path_to_str(key_path), leaf)
        if described.key_impl is not None:
            leaf = jax.random.key_data(leaf)
        host = np.asarray(jax.device_get(leaf))
        name = None
        if host.size:  # Orbax refuses empty arrays; the manifest alone rebuilds them.
            name = described.path.replace("/", ".")
            if name in arrays:
                raise _error(ValueError, step, path, f"two leaves are both stored as {name!r}",
                             "leaf paths that stay distinct when '/' is replaced by '.'")
            arrays[name] = host
        leaves.append((described, host, name))
    return leaves, arrays


def _stored_shape(leaf: _Leaf) -> tuple[int, ...]:
    """A typed key of shape s is stored as its key data, shape s + (words per key,)."""
    if leaf.key_impl is None:
        return leaf.shape
    words = jax.random.key_data(jax.random.key(0, impl=leaf.key_impl)).shape
    return leaf.shape + tuple(words)


def _stored_dtype(leaf: _Leaf) -> np.dtype:
    """NumPy dtype of the stored array; names NumPy lacks (bfloat16, float8_*) come from ml_dtypes."""
    if leaf.key_impl is not None:
        return np.dtype("uint32")
    try:
        return np.dtype(leaf.dtype)
    except TypeError:
        return np.dtype(getattr(ml_dtypes, leaf.dtype))


def _place(host: np.ndarray, leaf: _Leaf, like: Any) -> Any:
    """Turn the host array back into the kind of leaf ``like`` is, on ``like``'s devices."""
    value: Any = host
    if leaf.key_impl is not None:
        value = jax.random.wrap_key_data(host, impl=leaf.key_impl)
    sharding = getattr(like, "sharding", None)
    if isinstance(like, (jax.Array, jax.ShapeDtypeStruct)):
        # An uncommitted target leaf (the default device, free to move) gives an uncommitted leaf.
        if sharding is None or not getattr(like, "committed", True):
            return jax.device_put(value)
        return jax.device_put(value, sharding)
    if isinstance(like, np.ndarray):
        return host
    if isinstance(like, np.generic):
        return host[()]
    return host.item() if host.ndim == 0 else host


def _format(leaf: _Leaf | None) -> str:
    if leaf is None:
        return "nothing"
    return f"{leaf.path} {leaf.dtype}{list(leaf.shape)}"


def _check_structure(step: int, path: Path, saved: list[_Leaf], wanted: list[_Leaf]) -> None:
    """Raise on the first leaf whose path, shape or dtype differs between checkpoint and target."""
    for index in range(max(len(saved), len(wanted))):
        have = saved[index] if index < len(saved) else None
        want = wanted[index] if index < len(wanted) else None
        same = (have is not None and want is not None and have.path == want.path
                and have.shape == want.shape and have.dtype == want.dtype)
        if not same:
            raise _error(ValueError, step, path,
                         f"leaf {index} differs: checkpoint has {_format(have)}, target has {_format(want)} "
                         f"({len(saved)} vs {len(wanted)} leaves)",
                         "a target built with the same model and optimizer as the saved run")


# -------------------------------------------------------------------------- files
def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(array).tobytes()).hexdigest()  # tobytes is C order for any layout


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_files(step_path: Path) -> dict[str, dict]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under the step's state folder."""
    files = {}
    for file in sorted((step_path / STATE_DIR).rglob("*")):
        if file.is_file():
            files[file.relative_to(step_path).as_posix()] = {"bytes": file.stat().st_size,
                                                             "sha256": _file_sha256(file)}
    return files


def _check_files(step: int, path: Path, manifest: dict) -> None:
    """Every file listed in the manifest exists with the recorded size and SHA-256."""
    owners = [(entry["file"] + "/", entry["path"]) for entry in manifest["leaves"] if entry["file"]]
    for name, record in manifest["files"].items():
        owner = next((leaf for prefix, leaf in owners if name.startswith(prefix)), None)
        where = f"file {name}" + (f" (leaf {owner})" if owner else "")
        file = path / name
        if not file.is_file():
            raise _error(CorruptCheckpointError, step, path, f"{where} is missing",
                         "every file listed in the manifest")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise _error(CorruptCheckpointError, step, path, f"{where} has {size} bytes (truncated or extended)",
                         f"{record['bytes']} bytes as recorded at save time")
        digest = _file_sha256(file)
        if digest != record["sha256"]:
            raise _error(CorruptCheckpointError, step, path, f"{where} was altered: sha256 {digest[:16]}...",
                         f"sha256 {record['sha256'][:16]}... as recorded at save time")


def _delete_checkpoint(path: Path) -> None:
    """Remove the manifest first (the checkpoint stops counting at once), then the rest."""
    (path / MANIFEST).unlink(missing_ok=True)
    _fsync_dir(path)
    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames, new files); a no-op where directories cannot be opened."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (Orbax renames without flushing)."""
    for item in sorted(root.rglob("*")):
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
        elif item.is_dir():
            _fsync_dir(item)
    _fsync_dir(root)
    _fsync_dir(root.parent)


# ------------------------------------------------------------------------- misc
def _versions() -> dict[str, str]:
    versions = {}
    for package in _VERSIONED:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _error(cls: type[Exception], step: int | str, path: Path, what: str, expected: str) -> Exception:
    """``checkpoint <step> (<path>): <what>; expected: <expected>`` as one line."""
    return cls(f"checkpoint {step} ({path}): {what}; expected: {expected}")


class _DropOcdbtMergeNotice(logging.Filter):
    """Orbax warns on every non-OCDBT save that it has no OCDBT files to merge; that is expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Skipping merge of OCDBT checkpoints" not in record.getMessage()


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Drop that one notice for the duration of a call; every other Orbax message passes."""
    notice = _DropOcdbtMergeNotice()
    logger = logging.getLogger("absl")
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


__all__ = ["CheckpointManager", "CorruptCheckpointError", "Restored", "FORMAT", "MANIFEST", "STATE_DIR"]
