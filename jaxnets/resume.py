"""Resuming a run: what a checkpoint must agree with before training continues.

A resumed run must train exactly as the interrupted one did, so ``fit`` stores a
description of the run with every checkpoint (``run_spec``: the training
config, the model's fields, the optimizer's hyperparameters and a fingerprint of
the training data) and, on resume, compares it field by field with the run it
is asked to do. The first difference is refused in one line naming the field,
the stored and the given value (``ResumeMismatch``), before anything is deleted
or trained. Fields that do not change the arithmetic of the steps already
taken (``RESUMABLE_CHANGES``: epochs, evaluation, early stopping, progress) may
differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from jaxnets.checkpoint import CheckpointManager, CorruptCheckpointError
from jaxnets.config import CheckpointConfig, TrainConfig
from jaxnets.state import TrainState

#: TrainConfig fields that may differ between a run and its resumption (they do not
#: change the arithmetic of the steps already taken).
RESUMABLE_CHANGES = frozenset({"epochs", "progress", "eval_every", "eval_batch_size", "eval_train",
                               "early_stopping_patience", "restore_best", "monitor", "log_every_steps"})


class ResumeMismatch(ValueError):
    """The run asked for differs from the checkpointed run it would continue."""


class ResumeNotice(UserWarning):
    """Something the user should know about a resume (a fallback, a fresh start)."""


def module_fields(model: nn.Module) -> dict[str, str]:
    """A Linen module's class and dataclass fields, as strings that compare across runs."""
    fields = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    for field in dataclasses.fields(model):
        if field.name not in ("parent", "name") and field.init:
            fields[field.name] = repr(getattr(model, field.name))
    return fields


def optimizer_hyperparams(opt_state: Any) -> dict[str, float]:
    """Every injected hyperparameter in an Optax state (``optax.inject_hyperparams``), by path."""
    found: dict[str, float] = {}

    def visit(node: Any, path: str) -> None:
        hyperparams = getattr(node, "hyperparams", None)
        if isinstance(hyperparams, dict):
            for key, value in hyperparams.items():
                found[f"{path}{key}"] = float(np.asarray(jax.device_get(value)).reshape(-1)[0])
        if isinstance(node, (tuple, list)):
            for index, child in enumerate(node):
                visit(child, f"{path}{index}/" if not hasattr(node, "_fields") else path)

    visit(opt_state, "")
    return found


def data_fingerprint(x_train, y_train) -> str:
    """SHA-256 of the training arrays' shapes, dtypes and bytes (the rows a run steps over)."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(x_train), np.ascontiguousarray(y_train)):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def run_spec(model: nn.Module, state: TrainState, config: TrainConfig, x_train, y_train,
             optimizer: dict | None = None) -> dict:
    """What a checkpoint records about its run, for ``check_resumable``."""
    return {
        "config": {k: v for k, v in config.to_json().items() if k not in RESUMABLE_CHANGES},
        "model": module_fields(model),
        "optimizer": {**optimizer_hyperparams(state.opt_state), **(optimizer or {})},
        "training_data_sha256": data_fingerprint(x_train, y_train),
    }


def check_resumable(stored: dict, wanted: dict) -> None:
    """Raise ``ResumeMismatch`` on the first field where the checkpoint's run differs."""
    for section in ("config", "model", "optimizer"):
        saved, given = stored.get(section, {}), wanted.get(section, {})
        # What names the run comes first: the optimizer's name before its hyperparameters.
        for key in sorted(set(saved) | set(given), key=lambda k: (k not in ("name", "class", "schedule"), k)):
            if section == "config" and key in RESUMABLE_CHANGES:
                continue
            if saved.get(key) != given.get(key):
                name = key if section == "config" else f"{section}.{key}"
                raise ResumeMismatch(f"{name}: got {given.get(key)!r}; the checkpoint being resumed has "
                                     f"{saved.get(key)!r} (resume only with the options it was started with, "
                                     "or start a new run)")
    if "training_data_sha256" in stored and stored["training_data_sha256"] != wanted["training_data_sha256"]:
        raise ResumeMismatch("training data: got different rows than the checkpoint was trained on "
                             "(dataset, validation split or seed changed); resume with the same data")


def _stored_run(metadata: dict) -> dict:
    """The run description of a checkpoint (older ones stored only the config)."""
    return metadata.get("run", {"config": metadata.get("config", {})})


class Resumed(NamedTuple):
    state: TrainState
    history: list[dict]
    manager: CheckpointManager | None


def resume(checkpoint: CheckpointConfig | None, state: TrainState, spec: dict) -> Resumed:
    """The state and history to start from: a fresh start, or the newest intact checkpoint.

    The checkpoint is checked against ``spec`` before anything changes on disk; only
    then are newer damaged checkpoints (the ones the run is about to redo) removed,
    and a fallback to an older checkpoint is announced in one line (``ResumeNotice``).
    """
    if checkpoint is None:
        return Resumed(state, [], None)
    manager = CheckpointManager(checkpoint.directory, keep=checkpoint.keep)
    if not checkpoint.resume or manager.latest_step() is None:
        if checkpoint.resume:
            warnings.warn(f"no checkpoint in {checkpoint.directory} yet: starting from step 0",
                          ResumeNotice, stacklevel=3)
        return Resumed(state, [], manager)
    try:  # refuse a changed run before reading any tensor (the newest manifest says what it was)
        check_resumable(_stored_run(manager.manifest(manager.latest_step())["metadata"]), spec)
    except CorruptCheckpointError:
        pass  # restore_latest_valid reports or skips it
    try:
        restored = manager.restore_latest_valid(state)
    except CorruptCheckpointError:
        raise
    except ValueError as error:  # a different model or optimizer: the state does not fit
        raise ResumeMismatch(str(error)) from None
    check_resumable(_stored_run(restored.metadata), spec)
    for newer in manager.steps():
        if newer > restored.step:
            manager.delete(newer)
    if restored.skipped:
        warnings.warn(f"resuming from step {restored.step}: {len(restored.skipped)} newer checkpoint(s) failed "
                      f"their integrity check and were removed ({restored.skipped[0]})", ResumeNotice, stacklevel=3)
    return Resumed(restored.state, list(restored.metadata.get("history", [])), manager)


__all__ = ["RESUMABLE_CHANGES", "ResumeMismatch", "ResumeNotice", "module_fields", "optimizer_hyperparams",
           "data_fingerprint", "run_spec", "check_resumable", "Resumed", "resume"]
