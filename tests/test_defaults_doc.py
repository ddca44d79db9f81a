"""docs/defaults.md: every value in its jaxnets column is the code's default.

Each table row is looked up by its first cell(s) in CHECKS below, which reads the
value from the code (signatures, module constants, built models); a row without a
check, or a check without a row, fails. The promises in the notes (flax's
LeCun initializer, the mean reduction) are checked numerically.
"""
from __future__ import annotations

import inspect
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import losses, models, optim
from jaxnets.models import regularizers

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "defaults.md"


def _tables() -> dict[str, list[list[str]]]:
    """Section title -> the body rows of its tables, each a list of stripped cells."""
    sections: dict[str, list[list[str]]] = {}
    title = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            sections.setdefault(title, []).append(cells)
    return {t: rows[1:] for t, rows in sections.items()}  # drop each header row


def _number(text: str) -> Any:
    text = text.strip("`")
    words = {"True": True, "False": False, "None": None, "required": None}
    return words[text] if text in words else float(text)


def _signature_default(function: Callable, name: str) -> Any:
    default = inspect.signature(function).parameters[name].default
    return None if default is inspect.Parameter.empty else default


def _field_default(module: Any, name: str) -> Any:
    return getattr(module, name)


def test_optimizer_table_is_generated_from_optim():
    text = DOC.read_text()
    start, end = "<!-- optimizer-defaults:start -->\n", "\n<!-- optimizer-defaults:end -->"
    assert text[text.index(start) + len(start):text.index(end)] == optim.defaults_table()


def test_optimizer_rows_match_create_defaults():
    rows = _tables()["Optimizers"]
    seen = set()
    for cells in rows:
        name, key, ours = cells[0].strip("`"), cells[1].strip("`"), _number(cells[2])
        defaults = {"weight_decay": 0.0, **optim.default_hyperparams(name)}
        assert defaults[key] == ours, (name, key)
        seen.add((name, key))
    assert seen == {(n, k) for n in optim.OPTIMIZERS
                    for k in {"weight_decay", *optim.default_hyperparams(n)}}


SCHEDULE_ARGS = {"decay_rate", "step_size", "alpha", "total_steps", "warmup_steps"}


def test_schedule_rows_match_make_schedule_and_create():
    rows = _tables()["Schedules"]
    assert {cells[1].strip("`") for cells in rows} == SCHEDULE_ARGS
    for cells in rows:
        key, ours = cells[1].strip("`"), _number(cells[2])
        assert _signature_default(optim.make_schedule, key) == ours, key
        assert _signature_default(optim.create, key) == ours, key


def _model_defaults(field: str, names: tuple[str, ...] = ("linear", "logistic", "mlp", "cnn")) -> set[Any]:
    """The field's default in each of the named models."""
    return {_field_default(models.get_model(name, output_dim=1), field) for name in names}


def _first_cells(section: str) -> dict[str, str]:
    return {cells[0]: cells[1] for cells in _tables()[section]}


def test_initializer_rows_match_models():
    rows = _first_cells("Initializers")
    assert set(rows) == {"kernel init", "bias init", "`normal` stddev"}
    assert _model_defaults("kernel_init") == {rows["kernel init"].strip("`")}
    assert _model_defaults("bias_init", ("linear", "logistic", "mlp")) == {_number(rows["bias init"])}
    assert models.DEFAULT_NORMAL_STDDEV == _number(rows["`normal` stddev"])
    # The flax column: Dense's own default and initializers.normal's stddev.
    assert _signature_default(nn.initializers.normal, "stddev") == 0.01


def test_lecun_is_flax_dense_default_and_biases_start_at_zero():
    key = jax.random.key(3)
    ours = models.get_initializer("lecun")(key, (50, 20), jnp.float32)
    flax_default = nn.Dense(20).kernel_init(key, (50, 20), jnp.float32)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(flax_default))
    params = models.get_model("mlp", output_dim=2, hidden=(4,)).init(key, jnp.ones((1, 3)))["params"]
    biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if path[-1].key == "bias"]
    assert biases and all(np.all(np.asarray(b) == 0) for b in biases)


def test_layer_rows_match_regularizers_and_models():
    rows = {cells[0]: cells for cells in _tables()["Layers"]}
    assert set(rows) == {"BatchNorm momentum", "BatchNorm epsilon", "Dropout rate"}
    assert regularizers.BATCH_NORM_MOMENTUM == _number(rows["BatchNorm momentum"][1])
    assert regularizers.BATCH_NORM_EPSILON == _number(rows["BatchNorm epsilon"][1])
    assert _model_defaults("dropout_rate", ("mlp", "cnn")) == {_number(rows["Dropout rate"][1])}
    bn = regularizers.make_batch_norm(train=True)
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    # The flax column.
    assert (nn.BatchNorm.momentum, nn.BatchNorm.epsilon) == (
        _number(rows["BatchNorm momentum"][2]), _number(rows["BatchNorm epsilon"][2]))


def test_loss_rows_match_losses():
    rows = _first_cells("Losses")
    assert set(rows) == {"binary cross-entropy on logits", "its reduction"}
    name = rows["binary cross-entropy on logits"].strip("`")
    assert losses.default_loss("binary") == name
    assert losses.get_loss(name) is losses.binary_cross_entropy_with_logits
    assert rows["its reduction"] == "mean"


def test_bce_reduction_is_the_mean_over_logits_then_examples():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 3)) * 4, rng.integers(0, 2, size=(6, 3))
    elementwise = np.asarray(optax.sigmoid_binary_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    per_example = np.asarray(losses.binary_cross_entropy_with_logits(jnp.asarray(logits),
                                                                     jnp.asarray(labels)))
    np.testing.assert_allclose(per_example, elementwise.mean(axis=1), rtol=1e-6)
    # The objective's mean over examples is PyTorch's mean over all elements.
    np.testing.assert_allclose(per_example.mean(), elementwise.mean(), rtol=1e-6)


@pytest.mark.parametrize("section", ["Optimizers", "Schedules", "Initializers", "Layers", "Losses"])
def test_every_section_has_a_table(section):
    assert _tables()[section]
