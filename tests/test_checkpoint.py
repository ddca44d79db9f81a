"""Checkpoints: exact round trips, retention, crashes, corruption and structure errors.

References are independent of the code under test: leaves are compared with the
arrays of the state that was saved, SHA-256 digests are recomputed here with
hashlib, and corruption is made by editing the files on disk.
"""
import dataclasses
import doctest
import functools
import hashlib
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jaxnets
from jaxnets import checkpoint
from jaxnets.checkpoint import CheckpointManager, CorruptCheckpointError
from jaxnets.models import MLP

ROOT = Path(__file__).resolve().parents[1]
X = jax.random.normal(jax.random.key(1), (16, 5))
Y = jnp.arange(16) % 3
BATCH = {"x": X, "y": Y, "mask": jnp.ones(16)}
STEP = jax.jit(jaxnets.make_train_step(jaxnets.objective_for("multiclass")))


# States are immutable pytrees, so each distinct one is built (and its ops compiled) once.
@functools.lru_cache(maxsize=None)
def make_state(hidden=8, optimizer="adam", dropout_rate=0.5):
    model = MLP(hidden=(hidden,), output_dim=3, dropout_rate=dropout_rate)
    return jaxnets.create_state(model, jaxnets.optim.create(optimizer, 1e-3), X)


@functools.lru_cache(maxsize=None)
def trained(steps):
    state = make_state()
    for _ in range(steps):
        state, _ = STEP(state, BATCH)
    return state


def host_leaves(state):
    """(path, numpy array, dtype string) of every leaf; keys as their key data."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        dtype = str(leaf.dtype)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append((jax.tree_util.keystr(path), np.array(leaf), dtype))
    return out


def assert_same_state(a, b):
    la, lb = host_leaves(a), host_leaves(b)
    assert [p for p, _, _ in la] == [p for p, _, _ in lb]
    for (path, x, dx), (_, y, dy) in zip(la, lb):
        assert dx == dy, path
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x, y), path


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def chunk_file(step_dir: Path, leaf_folder: str) -> Path:
    (chunk,) = [p for p in (step_dir / "state" / leaf_folder).iterdir() if not p.name.startswith(".")]
    return chunk


# ---------------------------------------------------------------- round trip
def test_round_trip_of_a_trained_state_is_exact(tmp_path):
    state = trained(3)
    config = dataclasses.asdict(jaxnets.TrainConfig(epochs=4, batch_size=16))
    metadata = {"config": config, "epoch": 1, "step": 3, "note": ["a", 1, 2.5, None, True]}
    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(state, metadata=metadata)
    assert path == tmp_path / "ckpt" / "step_00000003"

    target = make_state()
    before = host_leaves(target)
    restored, got = manager.restore(target)
    assert_same_state(restored, state)
    assert got == metadata
    assert restored.apply_fn is target.apply_fn and restored.tx is target.tx
    assert not restored.params["output"]["kernel"].committed  # like the target's leaves
    assert int(restored.step) == 3
    # The typed key survives as a typed key of the same implementation and data.
    assert restored.dropout_key.dtype == state.dropout_key.dtype
    assert str(jax.random.key_impl(restored.dropout_key)) == str(jax.random.key_impl(state.dropout_key))
    assert np.array_equal(jax.random.key_data(restored.dropout_key), jax.random.key_data(state.dropout_key))
    # The target is untouched.
    for (_, x, _), (_, y, _) in zip(before, host_leaves(target)):
        assert np.array_equal(x, y)
    # Resuming is bit-identical: one more step (with dropout) from each.
    assert_same_state(STEP(restored, BATCH)[0], STEP(state, BATCH)[0])
    # A second restore reads the same bytes (restoring does not modify files).
    assert_same_state(manager.restore(target)[0], state)


def test_manifest_records_every_leaf_with_an_independent_digest(tmp_path):
    state = trained(2)
    manager = CheckpointManager(tmp_path)
    manager.save(state, metadata={"epoch": 0})
    manifest = json.loads((tmp_path / "step_00000002" / "manifest.json").read_text())
    assert manifest["format"] == "jaxnets.checkpoint/1" and manifest["step"] == 2
    assert manifest["versions"]["jax"] == jax.__version__
    assert manifest["versions"]["orbax-checkpoint"] == ocp.__version__
    leaves = {entry["path"]: entry for entry in manifest["leaves"]}
    assert len(manifest["leaves"]) == len(jax.tree_util.tree_leaves(state))
    kernel = np.asarray(state.params["output"]["kernel"])
    entry = leaves["params/output/kernel"]
    assert entry["shape"] == [8, 3] and entry["dtype"] == "float32"
    assert entry["sha256"] == hashlib.sha256(kernel.tobytes()).hexdigest()
    key = leaves["dropout_key"]
    assert key["dtype"] == "key<fry>" and key["key_impl"] == "threefry2x32" and key["shape"] == []
    key_bytes = np.asarray(jax.random.key_data(state.dropout_key)).tobytes()
    assert key["sha256"] == hashlib.sha256(key_bytes).hexdigest()
    for name, record in manifest["files"].items():
        data = (tmp_path / "step_00000002" / name).read_bytes()
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_other_key_implementations_and_empty_leaves_round_trip(tmp_path):
    state = make_state().replace(
        dropout_key=jax.random.key(7, impl="rbg"),
        model_state={"extra": {"empty": jnp.zeros((0, 3), jnp.float32), "legacy_key": jax.random.PRNGKey(3)}})
    manager = CheckpointManager(tmp_path)
    manager.save(state, metadata={})
    target = make_state().replace(
        dropout_key=jax.random.key(0, impl="rbg"),
        model_state={"extra": {"empty": jnp.zeros((0, 3), jnp.float32), "legacy_key": jax.random.PRNGKey(0)}})
    restored, _ = manager.restore(target)
    assert_same_state(restored, state)
    assert str(jax.random.key_impl(restored.dropout_key)) == "rbg"
    assert restored.model_state["extra"]["legacy_key"].dtype == jnp.uint32


# ------------------------------------------------------------------ retention
def test_keep_retains_the_newest_complete_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep=2)
    assert manager.steps() == [] and manager.latest_step() is None
    state = make_state()
    for step in (5, 10, 15, 20):
        manager.save(state.replace(step=jnp.int32(step)), metadata={"step": step})
    assert manager.steps() == [15, 20] and manager.latest_step() == 20
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000015", "step_00000020"]
    assert manager.restore(state, step=15)[1] == {"step": 15}
    # A rewound run (a lower step) keeps the newer ones and its own.
    manager.save(state.replace(step=jnp.int32(17)), metadata={})
    assert manager.steps() == [17, 20]
    manager.delete(20)
    assert manager.steps() == [17]


# -------------------------------------------------------------------- crashes
def test_crash_before_the_manifest_leaves_the_previous_checkpoint_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    first = trained(1)
    manager.save(first, metadata={"epoch": 0})
    second = trained(2)

    def crash(step_dir):
        assert (step_dir / "state" / "params.output.kernel").is_dir()  # tensors are written
        raise RuntimeError("simulated kill")

    with pytest.raises(RuntimeError, match="simulated kill"):
        manager.save(second, metadata={"epoch": 1}, _before_finalize=crash)
    partial = tmp_path / "step_00000002"
    assert partial.is_dir() and not (partial / "manifest.json").exists()
    assert manager.steps() == [1] and manager.latest_step() == 1
    restored, metadata = manager.restore(make_state())
    assert_same_state(restored, first) and metadata == {"epoch": 0}
    with pytest.raises(FileNotFoundError) as excinfo:
        manager.restore(make_state(), step=2)
    assert one_line(excinfo).startswith(f"checkpoint 2 ({partial}): no complete checkpoint")
    assert "allowed: 1" in str(excinfo.value)

    # A later save of the same step replaces the partial folder, then saving goes on.
    manager.save(second, metadata={"epoch": 1})
    manager.save(trained(3), metadata={"epoch": 2})
    assert manager.steps() == [2, 3]
    assert_same_state(manager.restore(make_state(), step=2)[0], second)


def test_an_unfinished_orbax_folder_is_not_a_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(trained(1), metadata={})
    # What a kill inside Orbax's write leaves: only its temporary folder.
    unfinished = tmp_path / "step_00000009" / "state.orbax-checkpoint-tmp"
    unfinished.mkdir(parents=True)
    (unfinished / "_METADATA").write_text("{")
    assert manager.steps() == [1]
    manager.save(trained(2), metadata={})
    assert manager.steps() == [1, 2]
    assert not (tmp_path / "step_00000009").exists()  # the next save cleans it up


# ----------------------------------------------------------------- corruption
def two_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    older, newer = trained(1), trained(2)
    manager.save(older, metadata={"epoch": 0})
    manager.save(newer, metadata={"epoch": 1})
    return manager, older, newer


def test_truncated_tensor_file_is_reported_and_skipped(tmp_path):
    manager, older, _ = two_checkpoints(tmp_path)
    chunk = chunk_file(tmp_path / "step_00000002", "params.hidden_0.kernel")
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError) as excinfo:
        manager.restore(make_state())
    message = one_line(excinfo)
    relative = chunk.relative_to(tmp_path / "step_00000002").as_posix()
    assert message.startswith(f"checkpoint 2 ({tmp_path / 'step_00000002'}): file {relative} "
                              "(leaf params/hidden_0/kernel)")
    assert f"has {len(data) // 2} bytes" in message and f"expected: {len(data)} bytes" in message
    result = manager.restore_latest_valid(make_state())
    assert result.step == 1 and result.metadata == {"epoch": 0}
    assert_same_state(result.state, older)
    assert len(result.skipped) == 1 and result.skipped[0] == message
    # The documented message has this exact form.
    form = (r"checkpoint \d+ \(\S+\): file state/\S+ \(leaf \S+\) has \d+ bytes \(truncated or extended\); "
            r"expected: \d+ bytes as recorded at save time")
    assert re.fullmatch(form, message)
    assert any(re.fullmatch(form, line) for line in DOC.splitlines())


def test_flipped_byte_is_reported_and_skipped(tmp_path):
    manager, older, _ = two_checkpoints(tmp_path)
    chunk = chunk_file(tmp_path / "step_00000002", "opt_state.inner_state.0.mu.output.kernel")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError) as excinfo:
        manager.restore(make_state(), step=2)
    message = one_line(excinfo)
    assert message.startswith("checkpoint 2 (")
    assert "(leaf opt_state/inner_state/0/mu/output/kernel) was altered" in message
    assert chunk.relative_to(tmp_path / "step_00000002").as_posix() in message
    result = manager.restore_latest_valid(make_state())
    assert result.step == 1 and "checkpoint 2 (" in result.skipped[0]
    assert_same_state(result.state, older)


def test_restored_leaves_are_checked_against_their_digest(tmp_path):
    # Swap a leaf's folder for the same leaf of another checkpoint and make the file
    # list agree: the files pass, the bytes read back do not.
    manager, _, _ = two_checkpoints(tmp_path)
    new_dir, old_dir = tmp_path / "step_00000002", tmp_path / "step_00000001"
    leaf = "params.output.bias"
    manifest = json.loads((new_dir / "manifest.json").read_text())
    for file in (old_dir / "state" / leaf).iterdir():
        (new_dir / "state" / leaf / file.name).write_bytes(file.read_bytes())
        data = file.read_bytes()
        manifest["files"][f"state/{leaf}/{file.name}"] = {"bytes": len(data),
                                                         "sha256": hashlib.sha256(data).hexdigest()}
    (new_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptCheckpointError) as excinfo:
        manager.restore(make_state())
    assert one_line(excinfo).startswith(
        f"checkpoint 2 ({new_dir}): leaf params/output/bias (file state/{leaf}) does not match its SHA-256")


def test_unreadable_manifest_and_all_corrupt(tmp_path):
    manager, _, _ = two_checkpoints(tmp_path)
    (tmp_path / "step_00000002" / "manifest.json").write_text('{"format": "jaxnets.check')
    result = manager.restore_latest_valid(make_state())
    assert result.step == 1 and "manifest.json is unreadable" in result.skipped[0]
    (tmp_path / "step_00000002" / "manifest.json").write_text('{"format": "jaxnets.checkpoint/1"}')
    with pytest.raises(CorruptCheckpointError, match="manifest.json lacks fields"):
        manager.restore(make_state(), step=2)
    (chunk_file(tmp_path / "step_00000001", "step")).unlink()
    with pytest.raises(CorruptCheckpointError) as excinfo:
        manager.restore_latest_valid(make_state())
    message = one_line(excinfo)
    assert "all 2 checkpoints failed" in message and "steps 2, 1" in message
    with pytest.raises(CorruptCheckpointError, match="is missing"):
        manager.restore(make_state(), step=1)


# ------------------------------------------------------------------ structure
def untouched(target):
    return [np.array(x) for _, x, _ in host_leaves(target)]


@pytest.mark.parametrize("kwargs, have, want", [
    ({"hidden": 16}, "params/hidden_0/bias float32[8]", "params/hidden_0/bias float32[16]"),
    ({"optimizer": "sgd"}, "opt_state/hyperparams/b1 float32[]", "opt_state/hyperparams/learning_rate float32[]"),
])
def test_structure_mismatch_names_the_first_differing_leaf(tmp_path, monkeypatch, kwargs, have, want):
    manager = CheckpointManager(tmp_path)
    manager.save(trained(3), metadata={})
    target = make_state(**kwargs)
    before = untouched(target)

    def no_reads(*args, **kw):
        raise AssertionError("tensors were read before the structure check")

    monkeypatch.setattr(ocp.Checkpointer, "restore", no_reads)
    for restore in (manager.restore, manager.restore_latest_valid):
        with pytest.raises(ValueError) as excinfo:
            restore(target)
        message = one_line(excinfo)
        assert not isinstance(excinfo.value, CorruptCheckpointError)
        assert f"checkpoint has {have}, target has {want}" in message
        assert message.startswith(f"checkpoint 3 ({tmp_path / 'step_00000003'}): leaf ")
    for x, y in zip(before, untouched(target)):
        assert np.array_equal(x, y)


def test_documented_structure_error_is_the_real_one(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(trained(3), metadata={})
    with pytest.raises(ValueError) as excinfo:
        manager.restore(make_state(hidden=16))
    documented = next(line for line in DOC.splitlines() if "leaf 1 differs" in line)
    assert one_line(excinfo) == documented.replace("/tmp/run/step_00000003", str(tmp_path / "step_00000003"))


# --------------------------------------------------------------- bad requests
def test_missing_directory_and_no_checkpoints(tmp_path):
    target = make_state()
    missing = CheckpointManager(tmp_path / "nope")
    assert missing.steps() == []
    for call in (lambda: missing.restore(target), lambda: missing.restore_latest_valid(target),
                 lambda: missing.restore(target, step=3)):
        with pytest.raises(FileNotFoundError) as excinfo:
            call()
        assert "directory does not exist; expected: a directory written by CheckpointManager.save" \
            in one_line(excinfo)
    empty = CheckpointManager(tmp_path)
    with pytest.raises(FileNotFoundError) as excinfo:
        empty.restore(target)
    assert one_line(excinfo) == (f"checkpoint latest ({tmp_path}): no complete checkpoint in the directory; "
                                 "expected: a directory written by CheckpointManager.save")


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        CheckpointManager(tmp_path, keep=0)
    assert one_line(excinfo) == "keep: got 0; allowed: an integer >= 1"
    manager = CheckpointManager(tmp_path)
    state = make_state()
    with pytest.raises(ValueError) as excinfo:
        manager.save(state.replace(step=jnp.zeros((4,), jnp.int32)), metadata={})  # a pmap-replicated step
    assert one_line(excinfo).startswith("state.step: got int32[4]; allowed: an integer scalar")
    with pytest.raises(ValueError) as excinfo:
        manager.save(state, metadata={"config": object()})
    assert "metadata is not JSON-serializable" in one_line(excinfo)
    assert manager.steps() == [] and not (tmp_path / "step_00000000").exists()
    manager.save(state, metadata={"run": 1})
    with pytest.raises(ValueError) as excinfo:
        manager.save(state, metadata={"run": 2})
    assert one_line(excinfo).endswith("a complete checkpoint of this step exists; expected: a new step, "
                                      "or overwrite=True")
    manager.save(state, metadata={"run": 2}, overwrite=True)
    assert manager.restore(state)[1] == {"run": 2}


# -------------------------------------------------------------------- devices
def test_placement_follows_the_target_on_four_devices(tmp_path):
    devices = jax.devices()
    assert len(devices) == 4
    mesh = jax.sharding.Mesh(np.array(devices), ("d",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = trained(2)
    on_three = jax.device_put(state, devices[3])
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(on_three, metadata={})  # saved from arrays committed to device 3

    # Into a target committed to device 3 ...
    restored, _ = manager.restore(jax.device_put(make_state(), devices[3]))
    assert_same_state(restored, state)
    for leaf in jax.tree_util.tree_leaves(restored):
        assert leaf.sharding == jax.sharding.SingleDeviceSharding(devices[3])
    # ... and into one replicated over the four devices; the step still runs.
    restored, _ = manager.restore(jax.device_put(make_state(), replicated))
    assert_same_state(restored, state)
    for leaf in jax.tree_util.tree_leaves(restored):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    assert_same_state(STEP(restored, BATCH)[0], STEP(state, BATCH)[0])

    # A replicated state saves too, and an abstract target (no arrays) restores it.
    manager.save(jax.device_put(trained(3), replicated), metadata={})
    abstract = jax.eval_shape(make_state)
    restored, _ = manager.restore(abstract, step=3)
    assert_same_state(restored, trained(3))


# ----------------------------------------------------------- docs, doctests
DOC = (ROOT / "docs" / "checkpoints.md").read_text()


def test_docs_example_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/checkpoints.md", "exec"), {})
    printed = capsys.readouterr().out
    expected = re.search(r"prints\n\n```\n(.*?)```", DOC, flags=re.S).group(1)
    assert printed == expected


def test_doctests():
    result = doctest.testmod(checkpoint)
    assert result.attempted > 0 and result.failed == 0
