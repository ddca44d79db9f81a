"""Inference: predict with a trained state, and save / load a model for later use.

``save_model(path, state, model)`` writes a directory:

    path/variables.msgpack   the model's variables (``params`` and e.g. ``batch_stats``),
                             Flax's msgpack serialization
    path/model.json          what rebuilds the module: its class and fields, the input
                             feature shape, the task, and the jaxnets version

``load_model(path)`` rebuilds a jaxnets module from ``model.json`` (a module of
your own is passed in: ``load_model(path, model=MyNet(...))``), checks every
variable's path and shape against the module, and returns a ``SavedModel`` that
``predict`` accepts like a ``TrainState``.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checks import check_int, fail
from jaxnets.io import atomic_write_bytes, atomic_write_json
from jaxnets.state import TrainState, accepts_train, apply_model
from jaxnets.tree import path_to_str
from jaxnets.version import __version__

FORMAT = "jaxnets.model/1"
VARIABLES_FILE = "variables.msgpack"
SPEC_FILE = "model.json"
#: Only modules defined in these packages are rebuilt from model.json (importing a class
#: named in a file could run any code); pass your own module to load_model instead.
REBUILDABLE_PACKAGES = ("jaxnets.",)


class SavedModel(NamedTuple):
    """A module with its variables, ready for ``predict``."""

    model: nn.Module
    variables: dict
    spec: dict


def predict(state_or_model: TrainState | SavedModel, x, *, batch_size: int | None = None) -> np.ndarray:
    """The model's outputs (after its head) on ``x``, in evaluation mode, as a NumPy array.

    Args:
      state_or_model: a ``TrainState`` (e.g. ``fit(...).state``, from any parallel mode)
        or a ``SavedModel`` from ``load_model``.
      x: inputs of shape (n, *feature_shape).
      batch_size: rows per compiled call (the last batch is padded, its padding
        dropped); None predicts all rows in one call.

    >>> import jaxnets as jn, optax
    >>> state = jn.create_state(jn.models.MLP(hidden=(), output_dim=1, head="identity"), optax.sgd(0.1),
    ...                         np.zeros((1, 2), np.float32))
    >>> predict(state, np.zeros((5, 2), np.float32), batch_size=2).shape
    (5, 1)
    """
    apply_fn, variables, train_arg = _parts(state_or_model)
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise fail("x", f"shape {x.shape}", "(examples, *features) with at least one example")
    n = x.shape[0]
    size = n if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    run = jax.jit(lambda v, batch: apply_model(apply_fn, v, batch, train=False, train_arg=train_arg))
    outputs = []
    for start in range(0, n, size):
        rows = np.arange(start, start + size)
        rows = np.where(rows < n, rows, start)  # pad with a real row: one compiled shape for every batch
        outputs.append(np.asarray(jax.device_get(run(variables, x[rows])))[: min(size, n - start)])
    return np.concatenate(outputs, axis=0)


def _parts(state_or_model) -> tuple[Any, dict, bool]:
    if isinstance(state_or_model, SavedModel):
        model = state_or_model.model
        return model.apply, state_or_model.variables, accepts_train(model)
    if isinstance(state_or_model, TrainState):
        state = _one_replica(state_or_model)
        return state.apply_fn, state.variables(), state.train_arg
    raise fail("state_or_model", type(state_or_model).__name__,
               "a TrainState (fit(...).state) or a SavedModel (jaxnets.load_model(path))")


def _one_replica(state: TrainState) -> TrainState:
    """A pmap-ed state carries a leading device axis on every leaf (its step too): take one copy."""
    if np.ndim(jax.device_get(state.step)) == 1:
        return jax.tree_util.tree_map(lambda leaf: leaf[0], state)
    return state


def module_spec(model: nn.Module) -> dict:
    """A module's class and its fields as JSON (tuples as lists, dtypes by name)."""
    fields = {}
    for field in dataclasses.fields(model):
        if field.name in ("parent", "name") or not field.init:
            continue
        value = getattr(model, field.name)
        fields[field.name] = _to_json(field.name, value)
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}", "fields": fields}


def _to_json(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return {"tuple": [_to_json(name, v) for v in value]}
    try:
        return {"dtype": np.dtype(value).name}
    except TypeError:
        return {"unsaved": repr(value)}


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "tuple" in value:
            return tuple(_from_json(v) for v in value["tuple"])
        if "dtype" in value:
            return jnp.dtype(value["dtype"])
    return value


def save_model(path, state: TrainState, model: nn.Module, *, feature_shape: tuple[int, ...] | None = None,
               task: str | None = None, registry: dict | None = None) -> Path:
    """Write ``state``'s variables and what rebuilds ``model`` to the directory ``path``.

    Args:
      path: a directory (created; files in it are replaced atomically).
      state: the trained state (any parallel mode).
      model: the module the state was trained with.
      feature_shape: the shape of one input (checked by ``predict --model-dir``);
        None takes the one ``create_state`` recorded in ``state.input_shape``.
      task: the dataset's task, recorded for the reader.
      registry: ``{"name", "options"}`` when the model came from ``jaxnets.models.get_model``.

    Returns:
      The directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if feature_shape is None:
        feature_shape = state.input_shape
    variables = jax.device_get(_one_replica(state).variables())
    atomic_write_bytes(path / VARIABLES_FILE, flax.serialization.to_bytes(variables))
    spec = {"format": FORMAT, "module": module_spec(model), "registry": registry,
            "feature_shape": None if feature_shape is None else list(feature_shape), "task": task,
            "jaxnets_version": __version__}
    atomic_write_json(path / SPEC_FILE, spec)
    return path


def load_model(path, model: nn.Module | None = None) -> SavedModel:
    """Read a directory written by ``save_model``; rebuild the module unless one is given.

    Raises a one-line ``ValueError`` when the files are missing or unreadable, when
    the module cannot be rebuilt (pass ``model=``), or when a variable's path or
    shape differs from the module's (naming the first differing parameter).
    """
    path = Path(path)
    spec = _read_spec(path)
    if model is None:
        model = _rebuild(spec, path)
    try:
        raw = flax.serialization.msgpack_restore((path / VARIABLES_FILE).read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise fail("path", str(path), f"a directory written by save_model ({VARIABLES_FILE} unreadable: "
                   f"{type(error).__name__})") from None
    if spec.get("feature_shape") is None:
        raise fail("path", str(path), f"a model directory whose {SPEC_FILE} records feature_shape")
    expected = _expected_variables(model, tuple(spec["feature_shape"]))
    _check_same_tree(path, raw, expected)
    variables = jax.tree_util.tree_map(jnp.asarray, raw)
    return SavedModel(model, variables, spec)


def _read_spec(path: Path) -> dict:
    try:
        spec = json.loads((path / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise fail("path", str(path), f"a directory written by save_model ({SPEC_FILE}: "
                   f"{type(error).__name__})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise fail("path", str(path), f"a directory written by save_model (format {FORMAT})")
    return spec


def _rebuild(spec: dict, path: Path) -> nn.Module:
    class_path = spec["module"]["class"]
    module_name, _, name = class_path.rpartition(".")
    if not class_path.startswith(REBUILDABLE_PACKAGES):
        # A researcher's own module is never imported by name from a file's contents: the
        # script that defined it passes an instance (its fields define the shapes checked next).
        raise ValueError(f"model: got None, and {str(path)!r} holds your own {class_path}, which load_model "
                         f"does not import by name; allowed: the module itself, "
                         f"load_model({str(path)!r}, model={name}(...))")
    fields = {key: _from_json(value) for key, value in spec["module"]["fields"].items()}
    unsaved = [key for key, value in fields.items() if isinstance(value, dict) and "unsaved" in value]
    if unsaved:
        raise fail("model", None, f"the module passed in: field {unsaved[0]!r} of {class_path} could not be "
                   "saved as JSON; load_model(path, model=...)")
    try:
        return getattr(importlib.import_module(module_name), name)(**fields)
    except (TypeError, ValueError, AttributeError, ImportError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise fail("model", None, f"the module passed in: {class_path} could not be rebuilt from {SPEC_FILE} "
                   f"({type(error).__name__}: {first}); load_model(path, model=...)") from None


def _expected_variables(model: nn.Module, feature_shape: tuple[int, ...]) -> dict:
    sample = jax.ShapeDtypeStruct((1, *feature_shape), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    kwargs = {"train": False} if accepts_train(model) else {}
    return jax.eval_shape(lambda x: model.init(rngs, x, **kwargs), sample)


def _check_same_tree(path: Path, saved: dict, expected: Any) -> None:
    have = {path_to_str(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(saved)}
    want = {path_to_str(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(expected)}
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            got = "missing" if name not in have else f"shape {have[name]}"
            allowed = "no such parameter" if name not in want else f"shape {want[name]}"
            raise fail(f"parameter {name}", f"{got} in {str(path)!r}", f"{allowed} for this model")


__all__ = ["SavedModel", "predict", "save_model", "load_model", "module_spec", "FORMAT"]
