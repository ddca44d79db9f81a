"""experiments.regularization at tiny size: wider nets fit the training set better, and choices read validation only."""
import json

import numpy as np
import pytest

from experiments import regularization


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("regularization")
    return out, regularization.run(quick=True, out=out, n_train=200, widths=(1, 32), depths=(),
                                   dropouts=(), l2s=(), l1s=(), epochs=15)


def test_train_accuracy_rises_with_width(results):
    _, res = results
    narrow, wide = res["sweeps"]["width"]["rows"]
    assert (narrow["value"], wide["value"]) == (1, 32)
    assert wide["train_accuracy"] > narrow["train_accuracy"] + 0.3   # one unit cannot separate 10 digits
    assert wide["val_accuracy"] > narrow["val_accuracy"]


def test_selection_is_the_validation_argmax_and_ignores_test(results):
    out, res = results
    for sweep in res["sweeps"].values():
        vals = [row["val_accuracy"] for row in sweep["rows"]]
        assert sweep["chosen_index"] == int(np.argmax(vals))
        assert sweep["chosen_test_accuracy"] == sweep["rows"][sweep["chosen_index"]]["test_accuracy"]
    rows = [{"val_accuracy": 0.8, "test_accuracy": 0.1}, {"val_accuracy": 0.6, "test_accuracy": 0.99}]
    assert regularization.choose(rows) == 0
    rows_without_test = [{"val_accuracy": row["val_accuracy"]} for row in rows]
    assert regularization.choose(rows_without_test) == 0   # the test accuracy is never read
    assert json.loads((out / "results.json").read_text())["sweeps"]["width"]["chosen_index"] == \
        res["sweeps"]["width"]["chosen_index"]
    assert (out / "validation_curves.png").stat().st_size > 0
    assert "| width |" in regularization.summary(res)


def test_bad_input_is_one_line_value_error():
    with pytest.raises(ValueError, match="rows: got none"):
        regularization.choose([])
    with pytest.raises(ValueError, match="sweeps: got every sweep empty"):
        regularization.run(quick=True, out=None, widths=(), depths=(), dropouts=(), l2s=(), l1s=())
