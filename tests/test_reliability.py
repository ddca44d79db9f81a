"""Fault tolerance: kill -9 and resume bitwise, SIGTERM, non-finite guards, bad inputs, flat memory."""
import gc
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxnets as jn
from jaxnets.checkpoint import CheckpointManager
from jaxnets.data import Dataset
from jaxnets.models import MLP

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "helpers" / "resume_worker.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
ENV.pop("XLA_FLAGS", None)


def worker(out: Path, kill_step: int, loop: str, resume: bool = False) -> subprocess.CompletedProcess:
    command = ["timeout", "120", sys.executable, str(WORKER), str(out), str(kill_step), loop]
    return subprocess.run(command + (["--resume"] if resume else []), env=ENV, capture_output=True, text=True,
                          timeout=150)


# digits: 1437 training rows, batch 256 -> 6 steps per epoch, 6 epochs = 36 steps.
KILLS = [(4, "scan"), (6, "python"), (17, "scan"), (24, "python"), (35, "scan")]


def test_kill_9_at_five_steps_then_resume_is_bitwise_identical(tmp_path):
    """Step 6 is the first step after the epoch-0 checkpoint; step 35 is the last one."""
    def killed_then_resumed(kill):
        step, loop = kill
        out = tmp_path / f"kill{step}"
        first = worker(out, step, loop)
        assert first.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), first.stderr[-2000:]
        assert not (out / "final.txt").exists()
        second = worker(out, -1, loop, resume=True)
        assert second.returncode == 0, second.stderr[-2000:]
        return (out / "final.txt").read_text()

    with ThreadPoolExecutor(max_workers=2) as pool:
        reference = pool.submit(worker, tmp_path / "full", -1, "scan")
        outcomes = list(pool.map(killed_then_resumed, KILLS))
        assert reference.result().returncode == 0
    expected = (tmp_path / "full" / "final.txt").read_text()
    digest, epochs = expected.splitlines()
    assert epochs == "0,1,2,3,4,5"
    assert outcomes == [expected] * len(KILLS), "every resumed run must end bitwise equal, history unduplicated"


def test_sigterm_saves_at_the_next_boundary_and_resumes_exactly(tmp_path):
    args = [sys.executable, "-m", "jaxnets.cli", "train", "--dataset", "iris", "--model", "mlp", "--hidden", "8",
            "--optimizer", "sgd", "--lr", "0.01", "--batch-size", "8", "--epochs", "400", "--no-progress"]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(args + ["--out", str(stopped), "--checkpoint-every", "100000"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = stopped / "metrics.jsonl"
    deadline = time.time() + 100
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=100)
    assert proc.returncode == 75, stderr  # documented: EXIT_PREEMPTED
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "preempted"
    saved = CheckpointManager(str(stopped / "checkpoints")).steps()
    assert saved, sorted(str(p) for p in (stopped / "checkpoints").rglob("*"))[:20]
    assert saved == [summary["step"]] and summary["step"] < 400 * 15  # saved at the boundary it stopped at
    resumed = subprocess.run(args + ["--out", str(stopped), "--checkpoint-every", "100000", "--resume"], env=ENV,
                             capture_output=True, text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run(args + ["--out", str(tmp_path / "whole")], env=ENV, capture_output=True, text=True,
                           timeout=200)
    assert whole.returncode == 0, whole.stderr
    a = json.loads((stopped / "summary.json").read_text())
    b = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert a["params_sha256"] == b["params_sha256"]
    epochs = [json.loads(line)["epoch"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(400))


def poisoned(row: int, n: int = 12) -> Dataset:
    """Regression data whose row ``row`` overflows float32 in the forward pass (finite input)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[row] = 3e38
    y = rng.normal(size=(n, 1)).astype(np.float32)
    empty = np.zeros((0, 3), np.float32)
    return Dataset(x_train=x, y_train=y, x_val=empty, y_val=np.zeros((0, 1), np.float32), x_test=x[:2] * 0,
                   y_test=y[:2], task="regression", name="poisoned")


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_nonfinite_halt_names_the_step_and_saves_no_nonfinite_checkpoint(tmp_path, loop):
    data = poisoned(row=7)  # batch 1, no shuffle: row 7 is step 7 of each epoch; epoch 0 is 0..11
    config = jn.TrainConfig(epochs=3, batch_size=1, shuffle=False, loop=loop, nonfinite="halt")
    with pytest.raises(jn.NonFiniteError) as info:
        jn.fit(MLP(hidden=(4,), output_dim=1), data, jn.optim.create("sgd", 0.01), config,
               checkpoint=jn.CheckpointConfig(str(tmp_path / "ckpt")))
    assert info.value.step == 7 and info.value.quantity == "loss" and info.value.epoch == 0
    assert "step 7" in str(info.value)
    assert CheckpointManager(str(tmp_path / "ckpt")).steps() == []  # nothing at all was saved


def test_nonfinite_skip_leaves_the_state_unchanged_and_counts(tmp_path):
    data = poisoned(row=7)
    config = jn.TrainConfig(epochs=2, batch_size=1, shuffle=False, nonfinite="skip")
    ckpt = jn.CheckpointConfig(str(tmp_path / "ckpt"), every_epochs=1)
    result = jn.fit(MLP(hidden=(4,), output_dim=1), data, jn.optim.create("sgd", 0.01), config, checkpoint=ckpt)
    assert [e["nonfinite_steps"] for e in result.history] == [1, 2]
    assert int(result.state.step) == 24
    for leaf in jax.tree_util.tree_leaves(result.state):
        if hasattr(leaf, "dtype") and jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
            assert np.all(np.isfinite(leaf))
    manager = CheckpointManager(str(tmp_path / "ckpt"))
    for step in manager.steps():  # every saved checkpoint is finite
        template = jn.create_state(MLP(hidden=(4,), output_dim=1), jn.optim.create("sgd", 0.01), data.x_train)
        restored, _ = manager.restore(template, step)
        floats = [leaf for leaf in jax.tree_util.tree_leaves(restored.params)]
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in floats)

    # Reference: the same run on the data without the bad row's steps. Skipping step 7 is
    # the same as that row contributing nothing, so compare with a masked-out row instead.
    clean = Dataset(x_train=np.delete(data.x_train, 7, axis=0), y_train=np.delete(data.y_train, 7, axis=0),
                    x_val=data.x_val, y_val=data.y_val, x_test=data.x_test, y_test=data.y_test,
                    task="regression", name="clean")
    # The dropout/data keys are unused here (no dropout, no shuffle), so the clean run's
    # 11 steps per epoch are exactly the poisoned run's 12 minus the skipped one.
    reference = jn.fit(MLP(hidden=(4,), output_dim=1), clean, jn.optim.create("sgd", 0.01),
                       jn.TrainConfig(epochs=2, batch_size=1, shuffle=False))
    for a, b in zip(jax.tree_util.tree_leaves(result.state.params), jax.tree_util.tree_leaves(reference.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ignore_policy_lets_nan_through():
    data = poisoned(row=0)
    result = jn.fit(MLP(hidden=(4,), output_dim=1), data, jn.optim.create("sgd", 0.01),
                    jn.TrainConfig(epochs=1, batch_size=1, shuffle=False, nonfinite="ignore"))
    assert not np.isfinite(result.history[-1]["train_loss"])


def test_memory_stays_flat_over_training():
    """Live device buffers after 100 and after 1,000 steps are the same count."""
    data = jn.data.load("iris")
    model = MLP(hidden=(8,), output_dim=data.output_dim)

    def live_after(epochs):
        result = jn.fit(model, data, jn.optim.create("adam", 1e-3),
                        jn.TrainConfig(epochs=epochs, batch_size=30, eval_every=10, loop="python"))
        del result
        # Count what is still reachable: garbage left in cycles by earlier tests would
        # otherwise be collected at a random point between the two counts.
        gc.collect()
        return len(jax.live_arrays())

    live_after(10)  # warm caches
    at_100 = live_after(25)   # 4 steps per epoch
    at_1000 = live_after(250)
    assert at_1000 == at_100


def _dataset(**overrides):
    rng = np.random.default_rng(0)
    fields = dict(x_train=rng.normal(size=(8, 3)).astype(np.float32), y_train=np.arange(8, dtype=np.int32) % 2,
                  x_val=np.zeros((0, 3), np.float32), y_val=np.zeros((0,), np.int32),
                  x_test=rng.normal(size=(4, 3)).astype(np.float32), y_test=np.arange(4, dtype=np.int32) % 2,
                  task="binary", num_classes=2, name="tiny")
    fields.update(overrides)
    return Dataset(**fields)


MALFORMED = [  # (what, callable, text the one-line error must contain)
    ("config epochs", lambda: jn.TrainConfig(epochs=-1), "epochs: got -1"),
    ("config batch", lambda: jn.TrainConfig(batch_size="64"), "batch_size: got '64'"),
    ("config loop", lambda: jn.TrainConfig(loop="vmap"), "loop: got 'vmap'"),
    ("config parallel", lambda: jn.TrainConfig(parallel="tpu"), "parallel: got 'tpu'"),
    ("config nonfinite", lambda: jn.TrainConfig(nonfinite="retry"), "nonfinite: got 'retry'"),
    ("config l1", lambda: jn.TrainConfig(l1=float("nan")), "l1: got nan"),
    ("config seed", lambda: jn.TrainConfig(seed=-3), "seed: got -3"),
    ("checkpoint keep", lambda: jn.CheckpointConfig("x", keep=0), "keep: got 0"),
    ("checkpoint every", lambda: jn.CheckpointConfig("x", every_epochs=0), "every_epochs: got 0"),
    ("checkpoint dir", lambda: jn.CheckpointConfig(""), "directory: got ''"),
    ("optimizer name", lambda: jn.optim.create("lion", 1e-3), "lion"),
    ("optimizer lr", lambda: jn.optim.create("adam", 0.0), "learning_rate: got 0.0"),
    ("optimizer hparam", lambda: jn.optim.create("sgd", 0.1, beta=0.9), "beta"),
    ("optimizer schedule", lambda: jn.optim.create("sgd", 0.1, schedule="cosine"), "total_steps"),
    ("model name", lambda: jn.models.get_model("resnet", output_dim=2), "model: got 'resnet'"),
    ("model option", lambda: jn.models.get_model("mlp", output_dim=2, widths=(3,)), "mlp option: got 'widths'"),
    ("model activation", lambda: jn.models.MLP(hidden=(3,), output_dim=1, activation="swish2"), "activation: got"),
    ("dataset name", lambda: jn.data.load("cifar100"), "name: got 'cifar100'"),
    ("dataset validation", lambda: jn.data.load("iris", validation=1.2), "validation"),
    ("dataset files", lambda: jn.data.load("mnist", data_dir="/nonexistent"), "mnist"),
    ("arrays lengths", lambda: _dataset(y_train=np.zeros(7, np.int32)), "y_train"),
    ("arrays label range", lambda: _dataset(y_train=np.full(8, 5, np.int32)), "y_train"),
    ("arrays label dtype", lambda: _dataset(y_train=np.zeros(8, np.float32)), "y_train"),
    ("arrays task", lambda: _dataset(task="ranking"), "task: got 'ranking'"),
    ("arrays rank", lambda: jn.train.check_arrays(np.zeros(5, np.float32), np.zeros(5), "train"), "x_train: got shape (5,)"),
    ("arrays dtype", lambda: jn.train.check_arrays(np.zeros((5, 2), np.int32), np.zeros(5), "train"), "x_train: got dtype int32"),
    ("arrays nan", lambda: jn.train.check_arrays(np.full((5, 2), np.nan, np.float32), np.zeros(5), "train"), "non-finite"),
    ("population seeds", lambda: __import__("jaxnets.population", fromlist=["x"]).create_population(
        MLP(hidden=(2,), output_dim=1), jn.optim.create("sgd", 0.1), np.zeros((2, 3), np.float32), []), "seeds: got"),
    ("parallel batch", lambda: jn.fit(MLP(hidden=(2,), output_dim=1), _dataset(), jn.optim.create("sgd", 0.1),
                                      jn.TrainConfig(epochs=1, batch_size=6, parallel="pmap")), "batch_size: got 6"),
    ("early stopping without validation", lambda: jn.fit(
        MLP(hidden=(2,), output_dim=1), _dataset(), jn.optim.create("sgd", 0.1),
        jn.TrainConfig(epochs=2, batch_size=4, early_stopping_patience=1)), "monitor: got 'val_loss'"),
]


@pytest.mark.parametrize("what, build, text", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_give_one_line_errors(what, build, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        build()
    message = str(info.value)
    assert text in message and "\n" not in message, message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_there_are_at_least_thirty_malformed_cases():
    from tests.test_cli import BAD_INPUTS
    assert len(MALFORMED) >= 30 and len(MALFORMED) + len(BAD_INPUTS) >= 50
