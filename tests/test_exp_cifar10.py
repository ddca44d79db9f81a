"""The CIFAR-10 scale path of experiments.optimizer_comparison, end to end on generated CIFAR-format files."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from experiments import optimizer_comparison as job


def write_cifar10(directory: Path, per_batch: int = 40, seed: int = 0) -> None:
    """The python version's on-disk format: pickled dicts of b"data" uint8 (n, 3072), CHW row-major, b"labels"."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 3, per_batch)  # three of the ten classes: learnable in a few steps
        # The signal: every pixel's brightness grows with the label (crops and flips keep it).
        planes = rng.integers(0, 40, (per_batch, 3, 32, 32)) + (labels * 100)[:, None, None, None]
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                 b"data": planes.astype(np.uint8).reshape(per_batch, 3072), b"filenames": []}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                  "horse", "ship", "truck")], b"num_cases_per_batch": per_batch}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar10_study_runs_end_to_end(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    write_cifar10(data_dir / "cifar-10-batches-py")
    # A tiny grid (the protocol's structure, not its size): 3 rates, no extension, refinement or sensitivity.
    monkeypatch.setattr(job, "CIFAR10_PROTOCOL", {"grid_points": 3, "max_extensions": 0, "refine": False,
                                                  "sensitivity_factors": (), "batch_size": 20,
                                                  "selection_seeds": 1})
    out = tmp_path / "out"
    code = job.main(["--dataset", "cifar10", "--data-dir", str(data_dir), "--out", str(out), "--seeds", "2",
                     "--epochs", "3", "--channels", "4", "--optimizers", "sgd,adam"])
    assert code == 0 and (out / "report.md").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["name"] == "cifar10"
    assert results["model"]["name"] == "vgg" and results["model"]["options"]["channels"] == [4]
    assert results["config"]["augment"] == "crop_flip" and results["config"]["train_config"]["augment"] == "crop_flip"
    assert results["model"]["load_options"]["validation"] == pytest.approx(0.1)
    for arm in results["arms"]:
        assert arm["runs"]["seeds"] == [0, 1]
        # The rate is chosen on validation numbers only: the grid holds no test number, and the
        # chosen rate is a grid point with the best validation score.
        selection, grid = arm["selection"], arm["selection"]["grid"]
        assert selection["metric"] == "val_accuracy"
        assert not any("test" in key for row in grid for key in row)
        best = max(row["score"] for row in grid if row["score"] is not None)
        chosen = selection["chosen"]["learning_rate"]
        assert selection["chosen_score"] == best == next(r["score"] for r in grid if r["learning_rate"] == chosen)


@pytest.mark.parametrize("argv, message", [
    ([], "--data-dir: got nothing; allowed: the folder holding the CIFAR-10 python batches"),
    (["--data-dir", "/nonexistent"], "--data-dir: cifar10: expected data_batch_1, "),
])
def test_missing_or_malformed_data_dir_is_refused_in_one_line(argv, message, capsys, tmp_path):
    assert job.main(["--dataset", "cifar10", "--out", str(tmp_path / "out"), *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"optimizer_comparison: error: {message}") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_malformed_batch_is_refused(tmp_path, capsys):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    assert job.main(["--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    assert "data_batch_3: got a truncated or corrupt pickle" in capsys.readouterr().err


def test_default_run_is_the_documented_one():
    assert job.CIFAR10_OUT == Path("results/optimizer_comparison_cifar10")
    assert job.CIFAR10_OPTIMIZERS == ("sgd", "momentum", "adam", "adagrad", "adam_eps")
    assert job.CIFAR10_VALIDATION * 50000 == 5000 and job.CIFAR10_AUGMENT == "crop_flip"
    assert job.CIFAR10_DEFAULT == {"model": {"channels": (64, 128, 256), "convs": 2, "dense": (256,)},
                                   "protocol": {"epochs": 30, "batch_size": 128, "schedule": "constant"}}
    assert job.CIFAR10_PROTOCOL == {}  # the library's grid settings


def test_wilson_preset_is_the_documented_table():
    preset = job.CIFAR10_PRESETS["wilson_cifar10"]
    assert preset["protocol"] == {"epochs": 250, "batch_size": 128, "schedule": "step", "decay_rate": 0.5,
                                  "decay_epochs": 25, "l2": 5e-4}
    assert preset["model"] == {"channels": (64, 128, 256, 512, 512), "convs": (2, 2, 3, 3, 3), "dense": (512,),
                               "dropout_rate": 0.5}
    import jaxnets as jn
    model = jn.models.get_model("vgg", output_dim=10, **preset["model"])
    assert model.param_count((32, 32, 3)) == 14_987_210  # 14,710,464 conv weights + 8,448 batch-norm + 263,168 dense + 5,130 output
