"""Promises of README.md and docs/ that no other test checked (issue 13).

Each test's docstring quotes the page and the sentence it keeps true. Promises that
another test already checks are not repeated here. Data are tiny (xor, iris) and runs
short, so each test takes a few seconds at most.
"""
import ast
import inspect
import json
import os
import socket
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets as jn
from jaxnets.checkpoint import CheckpointManager
from jaxnets.cli import main
from jaxnets.data.text import GRAMMAR_VOCAB, GRAMMAR_WORDS, REVIEW_VOCAB, REVIEW_WORDS
from jaxnets.inference import load_model
from jaxnets.models import CNN, MLP, EncoderBlock, TransformerClassifier, get_model
from jaxnets.tree import params_sha256

ROOT = Path(__file__).resolve().parents[1]
IRIS = ["train", "--dataset", "iris", "--model", "mlp", "--hidden", "8", "--epochs", "2", "--batch-size", "32",
        "--no-progress"]


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# ------------------------------------------------------------------ README.md


@pytest.mark.parametrize("name", ["xor", "sine", "house_prices", "digits", "breast_cancer", "diabetes", "iris",
                                  "wine", "fair", "mnist1d", "adding", "parity", "grammar_lm", "reviews"])
def test_built_in_datasets_load_without_the_network(name, monkeypatch):
    """README.md: "nothing is downloaded at run time; all data ships with the installed
    packages or is generated locally"; docs/datasets.md: "Nothing is ever downloaded."
    """
    def offline(*args, **kwargs):
        raise OSError(f"the network was used by load({name!r})")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    data = jn.data.load(name)
    assert len(data.x_train) > 0 and len(data.x_test) > 0


def test_out_dir_receives_the_four_outputs_and_the_whole_summary_contract(tmp_path, capsys):
    """README.md: "`--out DIR` receives `metrics.jsonl` ..., `curves.png` ..., `model/` ... and
    `summary.json` (the contract: ... `flops_per_step` and `gflops_per_s` ..., `num_params`, and
    `params_sha256`, a digest of every parameter's bytes so two runs can be compared exactly)."
    """
    out = tmp_path / "run"
    assert main(IRIS + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert {"metrics.jsonl", "curves.png", "model", "summary.json"} <= {p.name for p in out.iterdir()}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "wall_time_s",
                "steps_per_s", "flops_per_step", "gflops_per_s", "num_params", "params_sha256"):
        assert key in summary, key
    assert summary["flops_per_step"] > 0 and summary["gflops_per_s"] > 0
    params = load_model(out / "model").variables["params"]
    assert summary["params_sha256"] == params_sha256(params)
    # Every parameter's bytes count: one ulp in any leaf changes the digest.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    for index in range(len(leaves)):
        nudged = list(leaves)
        flat = np.array(nudged[index]).ravel()
        flat[-1] = np.nextafter(flat[-1], np.float32(np.inf))
        nudged[index] = flat.reshape(np.shape(leaves[index]))
        assert params_sha256(jax.tree_util.tree_unflatten(treedef, nudged)) != summary["params_sha256"]


def test_every_output_file_is_written_by_an_atomic_rename(tmp_path, capsys, monkeypatch):
    """README.md: "All are written atomically." (metrics.jsonl, curves.png, model/, summary.json);
    docs/fault_tolerance.md: "every such file is written to a temporary file and renamed"."""
    renamed = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        renamed.append(Path(dst).resolve())
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    out = tmp_path / "run"
    assert main(IRIS + ["--out", str(out)]) == 0
    capsys.readouterr()
    written = [p.resolve() for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"metrics.jsonl", "curves.png", "summary.json"}
    assert any(p.parent.name == "model" for p in written)
    for path in written:
        assert path in renamed, f"{path.relative_to(out.resolve())} was not written by a rename"


def test_nonfinite_halt_exits_3_and_no_checkpoint_holds_a_nan(tmp_path, capsys):
    """README.md: "3 a non-finite loss, gradient or update under `--nonfinite halt` (the default;
    no checkpoint with a NaN is written)"; docs/fault_tolerance.md: "(CLI exit status **3**)"."""
    out = tmp_path / "run"
    status = main(["train", "--dataset", "diabetes", "--model", "linear", "--optimizer", "sgd", "--lr", "1e30",
                   "--batch-size", "full", "--epochs", "6", "--checkpoint-every", "1", "--keep-checkpoints", "10",
                   "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 3
    assert len(err.strip().splitlines()) == 1 and "step" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "nonfinite"
    model = get_model("linear", output_dim=1)
    target = jn.create_state(model, jn.optim.create("sgd", 1e30), np.zeros((1, 10), np.float32))
    manager = CheckpointManager(out / "checkpoints")
    for step in manager.steps():
        state, _ = manager.restore(target, step=step)
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(state.params))


def test_the_library_never_imports_the_experiments():
    """README.md: "experiments/  runnable studies that import jaxnets (never the reverse)"."""
    for path in (ROOT / "jaxnets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "experiments" or n.startswith("experiments.") for n in names), path


def test_the_suite_runs_on_four_simulated_cpu_devices():
    """README.md: "tests/  pytest suite (4 simulated CPU devices, see tests/conftest.py)"."""
    assert jax.device_count() == 4 and {d.platform for d in jax.devices()} == {"cpu"}


# ------------------------------------------------------------------ docs/training.md


def test_the_train_step_is_not_compiled_inside():
    """docs/training.md: "The step is not compiled inside: `fit` wraps it in `jax.jit` (or a
    `lax.scan`), and the data-parallel paths wrap the same function in `pmap` or a sharded `jit`."""
    step = jn.make_train_step(jn.objective_for("multiclass"))
    assert inspect.isfunction(step) and not hasattr(step, "lower")  # a jax.jit wrapper has .lower
    state = jn.create_state(MLP(hidden=(4,), output_dim=3), jn.optim.create("sgd", 0.1), jnp.zeros((1, 2)))
    batch = {"x": jnp.ones((6, 2)), "y": jnp.arange(6) % 3, "mask": jnp.ones(6)}
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), (state, batch))
    one, _ = jax.jit(step)(state, batch)
    two, _ = jax.vmap(step)(*stacked)  # the same function under another transformation
    assert leaves_equal(one.params, jax.tree.map(lambda a: a[0], two.params)) or all(
        np.allclose(a, b[0], atol=1e-6) for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)))


def test_data_order_and_keys_follow_the_documented_derivation():
    """docs/training.md: "`run_keys(seed)` splits the seed into three keys: initialization, dropout
    and data order. The dropout key of step `t` is `fold_in(dropout_key, t)` and the order of epoch
    `e` is a permutation drawn from `fold_in(data_key, e)`."
    """
    data, seed, batch_size = jn.data.load("iris"), 3, 40
    model = MLP(hidden=(8,), output_dim=3, dropout_rate=0.3)
    tx = jn.optim.create("sgd", 0.1)
    result = jn.fit(model, data, tx, jn.TrainConfig(epochs=2, batch_size=batch_size, seed=seed, loop="python"))
    keys = jax.random.split(jax.random.key(seed), 3)
    state = jn.create_state(model, tx, data.x_train, seed=seed)
    assert np.array_equal(jax.random.key_data(state.dropout_key), jax.random.key_data(keys[1]))
    def step(state, x, y):  # written from the sentence: the key of step t is fold_in(dropout_key, t)
        def loss(params):
            out = model.apply({"params": params}, x, train=True,
                              rngs={"dropout": jax.random.fold_in(state.dropout_key, state.step)})
            return jnp.mean(jn.losses.softmax_cross_entropy(out, y))
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    step = jax.jit(step)
    n = len(data.x_train)
    for epoch in range(2):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(keys[2], epoch), n))
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            state = step(state, jnp.asarray(data.x_train[rows]), jnp.asarray(data.y_train[rows]))
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_scan_is_the_default_loop():
    """docs/training.md: "`TrainConfig(loop="scan")` (the default) compiles a whole epoch into one call"."""
    assert jn.TrainConfig().loop == "scan"


def test_evaluation_runs_in_evaluation_mode():
    """docs/training.md: "`fit` evaluates the training, validation and test splits in evaluation
    mode (no dropout, running batch statistics)"; docs/architectures/regularization.md: "with
    `train=False` for every evaluation"."""
    data = jn.data.load("iris")
    model = MLP(hidden=(16,), output_dim=3, dropout_rate=0.5)
    result = jn.fit(model, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(epochs=2, batch_size=32))
    logits = np.asarray(model.apply(result.state.variables(), data.x_test), np.float64)  # train=False
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(len(data.y_test)), data.y_test].mean()
    assert result.final["test_loss"] == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ docs/fault_tolerance.md


@pytest.mark.filterwarnings("ignore::jaxnets.resume.ResumeNotice")  # the first call finds no checkpoint yet
def test_a_second_identical_fit_restores_and_has_nothing_left_to_do(tmp_path):
    """docs/fault_tolerance.md: "print(len(result.history))   # 4 (a second call with the same
    arguments restores and has nothing left to do)"."""
    data = jn.data.load("iris")
    model = MLP(hidden=(8,), output_dim=data.output_dim)
    checkpoint = jn.CheckpointConfig(str(tmp_path / "ckpt"), every_epochs=2, keep=2, resume=True)
    first, second = (jn.fit(model, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(epochs=4),
                            checkpoint=checkpoint) for _ in range(2))
    assert len(first.history) == len(second.history) == 4
    assert int(second.state.step) == int(first.state.step)
    assert leaves_equal(first.state.params, second.state.params)
    assert second.traces.get("train_step", 0) == 0  # nothing was trained


def test_checkpoints_fall_on_the_boundaries_of_compiled_calls(tmp_path):
    """docs/fault_tolerance.md: "Checkpoints fall on the boundaries of `fit`'s compiled calls: every
    epoch by default, or every `eval_every` epochs when several epochs run in one call."""
    data = jn.data.load("xor")  # full batch: one step per epoch
    model = MLP(hidden=(4,), output_dim=1)
    for eval_every, steps in [(1, [1, 2, 3, 4]), (2, [2, 4])]:
        directory = tmp_path / f"every{eval_every}"
        jn.fit(model, data, jn.optim.create("sgd", 0.1), jn.TrainConfig(epochs=4, eval_every=eval_every),
               checkpoint=jn.CheckpointConfig(str(directory), every_epochs=1, keep=10))
        assert CheckpointManager(directory).steps() == steps


# ------------------------------------------------------------------ docs/checkpoints.md


def test_metadata_comes_back_as_json_reads_it(tmp_path):
    """docs/checkpoints.md: "It comes back as JSON reads it (tuples become lists, NumPy scalars
    plain numbers, non-finite floats `null`)." and "`CheckpointManager(directory, *, keep=3)`: a
    frozen dataclass"."""
    manager = CheckpointManager(tmp_path)
    assert manager.keep == 3
    with pytest.raises(AttributeError):
        manager.keep = 5
    state = jn.create_state(MLP(hidden=(2,), output_dim=1), jn.optim.create("sgd", 0.1), jnp.zeros((1, 2)))
    manager.save(state, metadata={"hidden": (8, 4), "lr": np.float32(0.5), "steps": np.int64(7),
                                  "best": float("nan"), "worst": float("inf")})
    _, metadata = manager.restore(state)
    assert metadata == {"hidden": [8, 4], "lr": 0.5, "steps": 7, "best": None, "worst": None}
    assert type(metadata["lr"]) is float and type(metadata["steps"]) is int


def test_batch_statistics_are_checkpointed_with_the_state(tmp_path):
    """docs/architectures/regularization.md: "Checkpoints save the whole state, statistics included."
    docs/checkpoints.md: "`model_state` | other collections, e.g. `batch_stats`"."""
    model = CNN(output_dim=3, channels=(2,), dense=(), batch_norm=True)
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 1)) * 2.0 + 1.0
    tx = jn.optim.create("sgd", 0.1)
    state = jn.create_state(model, tx, x)
    batch = {"x": x, "y": jnp.arange(8) % 3, "mask": jnp.ones(8)}
    state, _ = jax.jit(jn.make_train_step(jn.objective_for("multiclass")))(state, batch)
    assert not leaves_equal(state.model_state, jn.create_state(model, tx, x).model_state)
    manager = CheckpointManager(tmp_path)
    manager.save(state, metadata={})
    restored, _ = manager.restore(jn.create_state(model, tx, x))
    assert "batch_stats" in restored.model_state
    assert leaves_equal(restored.model_state, state.model_state)


def test_overwrite_keeps_older_steps_and_corrupt_checkpoints_stay(tmp_path):
    """docs/checkpoints.md: "Saving a step that already has a complete checkpoint is an error unless
    `overwrite=True` (then the old one is deleted before the new one is written; the older steps
    stay)." and "Corrupt checkpoints are not deleted: they stay for inspection."
    """
    manager = CheckpointManager(tmp_path, keep=5)
    state = jn.create_state(MLP(hidden=(2,), output_dim=1), jn.optim.create("sgd", 0.1), jnp.zeros((1, 2)))
    for step in (1, 2):
        manager.save(state.replace(step=jnp.int32(step)), metadata={"run": 1})
    manager.save(state.replace(step=jnp.int32(2)), metadata={"run": 2}, overwrite=True)
    assert manager.steps() == [1, 2]
    assert manager.restore(state, step=1)[1] == {"run": 1} and manager.restore(state, step=2)[1] == {"run": 2}
    chunk = next(p for p in (tmp_path / "step_00000002" / "state").rglob("*")
                 if p.is_file() and "params." in str(p.parent.name) and not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[:-1])
    result = manager.restore_latest_valid(state)
    assert result.step == 1 and len(result.skipped) == 1
    assert chunk.exists() and manager.steps() == [1, 2]


# ------------------------------------------------------------------ docs/models.md and docs/losses.md


def test_a_model_with_dropout_needs_a_dropout_key_when_training():
    """docs/models.md: "A model with dropout needs `rngs={"dropout": key}` when `train=True`."""
    model = MLP(hidden=(4,), output_dim=1, dropout_rate=0.5)
    x = jnp.ones((3, 2))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, train=True)
    model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    model.apply(variables, x)  # evaluation needs no key


def test_normalization_parameters_are_never_penalized():
    """docs/losses.md: "Over the weight leaves only (`kernel`, `embedding`; biases and normalization
    parameters are never penalized)"."""
    model = CNN(output_dim=2, channels=(2,), dense=(3,), batch_norm=True)
    params = model.init(jax.random.key(0), jnp.ones((1, 6, 6, 1)))["params"]
    params = jax.tree.map(lambda a: jnp.full_like(a, 2.0), params)  # make scales and biases count if summed
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if path[-1].key == "kernel"]
    assert len(kernels) < len(jax.tree.leaves(params))  # there are scales and biases to leave out
    size = sum(k.size for k in kernels)
    assert float(jn.losses.l1_penalty(params)) == pytest.approx(2.0 * size)
    assert float(jn.losses.l2_penalty(params)) == pytest.approx(0.5 * 4.0 * size)


def test_the_training_loops_r2_pools_the_outputs():
    """docs/losses.md: "The training loop's reported R², accumulated over batches in `jaxnets.objective`,
    pools the outputs instead: 1 − Σ SS_res / Σ SS_tot; the two agree for one output."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = np.column_stack([x @ [1.0, 2.0, 0.0], 10 * x @ [0.0, 1.0, -1.0]]).astype(np.float32)  # unequal scales
    y += rng.normal(size=y.shape).astype(np.float32)
    for columns in ([0, 1], [0]):
        data = jn.data.from_arrays(x[:40], y[:40, columns], x_test=x[40:], y_test=y[40:, columns], task="regression")
        model = get_model("linear", output_dim=len(columns))
        result = jn.fit(model, data, jn.optim.create("sgd", 0.05), jn.TrainConfig(epochs=3, batch_size=16))
        pred = np.asarray(model.apply(result.state.variables(), data.x_test), np.float64)
        target = data.y_test.astype(np.float64)
        pooled = 1 - ((pred - target) ** 2).sum() / ((target - target.mean(axis=0)) ** 2).sum()
        assert result.final["test_r2"] == pytest.approx(pooled, rel=1e-4, abs=1e-5)
        if len(columns) == 1:
            assert float(jn.metrics.r2(pred, target)) == pytest.approx(pooled, rel=1e-6)
        else:
            assert float(jn.metrics.r2(pred, target)) != pytest.approx(pooled, rel=1e-3)


# ------------------------------------------------------------------ docs/datasets.md and docs/text.md


def test_the_seed_changes_only_which_rows_validate():
    """docs/datasets.md: "`seed` picks which rows, and is the only thing `seed` changes: the data and
    the test splits are the same in every run."""
    a = jn.data.load("iris", validation=0.2, seed=0)
    b = jn.data.load("iris", validation=0.2, seed=1)
    assert not np.array_equal(a.x_val, b.x_val)

    def raw(d, x):  # standardization follows the training rows, so compare the rows themselves
        return np.round(x * d.x_std + d.x_mean, 4)

    assert np.array_equal(raw(a, a.x_test), raw(b, b.x_test)) and np.array_equal(a.y_test, b.y_test)

    def rows(d):
        x = np.concatenate([raw(d, d.x_train), raw(d, d.x_val)])
        return sorted(map(tuple, np.column_stack([x, np.concatenate([d.y_train, d.y_val])])))

    assert rows(a) == rows(b)


def test_built_in_vocabularies_are_the_reserved_tokens_then_the_words_in_order():
    """docs/text.md: "their vocabularies are fixed lists (`GRAMMAR_VOCAB`, `REVIEW_VOCAB`: the
    reserved tokens, then every word of the generator in alphabetical order)"."""
    for vocab, words, reserved in [(GRAMMAR_VOCAB, GRAMMAR_WORDS, ("<pad>", "<unk>", "<eos>")),
                                   (REVIEW_VOCAB, REVIEW_WORDS, ("<pad>", "<unk>"))]:
        tokens = vocab.tokens
        assert tokens[:len(reserved)] == reserved
        rest = list(tokens[len(reserved):])
        assert rest == sorted(rest)
        assert {w for group in words.values() for w in group} <= set(rest)
    reviews = jn.data.load("reviews", n_train=200, n_test=50)
    used = {REVIEW_VOCAB.tokens[int(i)] for i in np.unique(reviews.x_train) if i > 0}
    assert used == set(REVIEW_VOCAB.tokens[2:])  # every listed word is one the generator writes


# ------------------------------------------------------------------ docs/architectures


def test_recurrent_net_traces_the_cell_once_whatever_the_length():
    """docs/architectures/rnn.md: "there is no Python loop over time steps; the cell is traced once
    and the whole sequence runs as one compiled loop, so compile time does not grow with T"."""
    model = get_model("lstm", output_dim=1, hidden_size=4)
    params = model.init(jax.random.key(0), jnp.ones((2, 3, 1)))

    def equations(length):
        jaxpr = jax.make_jaxpr(model.apply)(params, jnp.ones((2, length, 1))).jaxpr
        assert any(eqn.primitive.name == "scan" for eqn in jaxpr.eqns)
        return len(str(jaxpr).splitlines())

    assert equations(4) == equations(64)


def test_lstm_starts_with_zero_biases_lecun_input_and_orthogonal_recurrent_kernels():
    """docs/architectures/rnn.md: "All biases start at 0 — Flax adds no "+1" to the forget bias —
    input kernels start LeCun-normal and recurrent kernels orthogonal."""
    d, h = 200, 16
    model = get_model("lstm", output_dim=1, hidden_size=h)
    params = model.init(jax.random.key(0), jnp.ones((1, 3, d)))["params"]
    found = {"bias": 0, "recurrent": 0, "input": 0}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [getattr(p, "key", "") for p in path]
        if "output" in names:
            continue
        leaf = np.asarray(leaf, np.float64)
        if names[-1] == "bias":
            assert not leaf.any(), names
            found["bias"] += 1
        elif names[-2] in ("hi", "hf", "hg", "ho"):
            np.testing.assert_allclose(leaf.T @ leaf, np.eye(h), atol=1e-5)
            found["recurrent"] += 1
        elif names[-2] in ("ii", "if", "ig", "io"):
            assert leaf.std() == pytest.approx(1 / np.sqrt(d), rel=0.15)  # LeCun: variance 1/fan_in
            found["input"] += 1
    assert found == {"bias": 4, "recurrent": 4, "input": 4}


def test_sequence_datasets_depend_only_on_data_seed():
    """docs/architectures/rnn.md: "the data depend only on `data_seed`"."""
    for name in ("adding", "parity"):
        a = jn.data.load(name, seed=0, n_train=100, n_test=20, data_seed=2)
        b = jn.data.load(name, seed=7, n_train=100, n_test=20, data_seed=2)
        c = jn.data.load(name, seed=0, n_train=100, n_test=20, data_seed=3)
        assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_test, b.x_test)
        assert np.array_equal(a.y_train, b.y_train)
        assert not np.array_equal(a.x_train, c.x_train)


def test_attention_treats_its_inputs_as_a_set():
    """docs/architectures/transformer.md: "Attention treats its inputs as a set: permuting the tokens
    permutes the outputs the same way. Order enters only through a position vector"."""
    block = EncoderBlock(num_heads=2, mlp_dim=16)
    x = jax.random.normal(jax.random.key(0), (1, 6, 8))
    variables = block.init(jax.random.key(1), x)
    permutation = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(block.apply(variables, x[:, permutation]),
                               block.apply(variables, x)[:, permutation], atol=1e-5)


def test_registered_transformer_defaults_are_the_documented_ones():
    """docs/architectures/transformer.md: "The registered defaults are d = 64, 4 heads, 2 blocks, f = 256
    and sinusoidal positions (`max_len` = 128 applies to learned ones)"; "The registered `transformer`
    assumes token ids below `vocab_size=256`"."""
    model = get_model("transformer", output_dim=2)
    assert (model.d_model, model.num_heads, model.num_layers, model.mlp_dim, model.positions, model.max_len,
            model.vocab_size) == (64, 4, 2, 256, "sinusoidal", 128, 256)


def test_masked_positions_get_a_weight_of_exactly_zero():
    """docs/architectures/transformer.md: "B is the mask: 0 where attention is allowed, −∞ where it is
    not (Flax uses the most negative float, which gives a weight of exactly 0)."; "pass `mask=`
    (batch, T) to mark padding"."""
    model = TransformerClassifier(output_dim=2, vocab_size=None, d_model=8, num_heads=2, num_layers=2,
                                  mlp_dim=16, max_len=8)
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
    variables = model.init(jax.random.key(1), x, mask=mask)
    changed = jnp.where(mask[..., None], x, 1e3 * jax.random.normal(jax.random.key(2), x.shape))
    assert np.array_equal(model.apply(variables, x, mask=mask), model.apply(variables, changed, mask=mask))


# ------------------------------------------------------------------ docs/experiments


def test_two_relu_units_represent_the_kink_exactly():
    """docs/experiments/universal_approximation.md: "ReLU networks are piecewise linear and represent
    `|x|` exactly with two units"."""
    model = MLP(hidden=(2,), output_dim=1, activation="relu")
    params = {"hidden_0": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.zeros(2)},
              "output": {"kernel": jnp.array([[1.0], [1.0]]), "bias": jnp.zeros(1)}}
    x = jnp.linspace(-np.pi, np.pi, 2001)[:, None]
    assert np.array_equal(model.apply({"params": params}, x), jnp.abs(x))
