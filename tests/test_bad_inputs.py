"""Bad input, as a new user would give it: one line, the right exit status, nothing partial.

Each row of the tables below is a case the issue tracker found unclean (a traceback,
a silent wrong result, a file left behind) or one of the same kind. The CLI cases
run ``jaxnets.cli.main`` in-process and check: the exit status, ONE line on stderr
naming the problem, and that the output directory is exactly as it was before.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxnets as jn
from jaxnets.cli import main

BASE = ["train", "--dataset", "iris", "--hidden", "8", "--epochs", "2", "--batch-size", "30", "--no-progress"]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time (what 'nothing written' compares)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main(BASE + ["--checkpoint-every", "1", "--out", str(out)]) == 0
    return out


#: Resuming with any changed option that changes the arithmetic is refused, naming the field.
CHANGED_ON_RESUME = [
    (["--lr", "0.5"], "learning_rate"),
    (["--weight-decay", "0.1"], "weight_decay"),
    (["--schedule", "cosine"], "schedule"),
    (["--warmup-steps", "3"], "warmup_steps"),
    (["--hparam", "b1=0.8"], "b1"),
    (["--optimizer", "sgd"], "optimizer.name"),
    (["--clip-norm", "1.0"], "clip_norm"),
    (["--batch-size", "15"], "batch_size"),
    (["--seed", "1"], "seed"),
    (["--l2", "0.1"], "l2"),
    (["--drop-remainder"], "drop_remainder"),
    (["--validation", "0.2"], "training data"),
    (["--dataset", "wine"], "training data"),
    (["--hidden", "16"], "model.hidden"),
    (["--model-opt", "dropout_rate=0.1"], "model.dropout_rate"),
    (["--activation", "tanh"], "model.activation"),
    (["--model", "logistic"], "model.class"),
    (["--compute-dtype", "bfloat16"], "model.dtype"),
]


@pytest.mark.parametrize("change, field", CHANGED_ON_RESUME, ids=[" ".join(c) for c, _ in CHANGED_ON_RESUME])
def test_resume_with_a_changed_option_is_refused_and_writes_nothing(checkpointed_run, change, field, capsys):
    before = snapshot(checkpointed_run)
    args = BASE + ["--epochs", "3", "--checkpoint-every", "1", "--resume", "--out", str(checkpointed_run)]
    # An option already in BASE is changed rather than repeated; another model takes no --hidden.
    for option in {change[0], *(["--hidden"] if change[0] == "--model" else [])} & set(args):
        index = args.index(option)
        args = args[:index] + args[index + 2:]
    status, _, err = run(args + change, capsys)
    assert status == 2
    assert_one_line(err, "jaxnets: error: --resume:", field)
    assert snapshot(checkpointed_run) == before


def test_resume_with_the_same_options_continues(checkpointed_run, capsys, tmp_path):
    status, _, _ = run(BASE + ["--epochs", "3", "--checkpoint-every", "1", "--resume", "--out",
                               str(checkpointed_run)], capsys)
    assert status == 0
    straight = tmp_path / "straight"
    assert main(BASE + ["--epochs", "3", "--out", str(straight)]) == 0
    resumed = json.loads((checkpointed_run / "summary.json").read_text())
    assert resumed["params_sha256"] == json.loads((straight / "summary.json").read_text())["params_sha256"]


def test_overwrite_then_resume_continues_the_new_run(tmp_path, capsys):
    out = tmp_path / "run"
    old = BASE + ["--lr", "0.01", "--epochs", "4", "--checkpoint-every", "1", "--keep-checkpoints", "5"]
    new = BASE + ["--lr", "0.02", "--checkpoint-every", "1", "--keep-checkpoints", "5"]
    assert main(old + ["--out", str(out)]) == 0
    assert main(new + ["--out", str(out), "--overwrite"]) == 0
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step_00000004", "step_00000008"]  # 4 steps per epoch: the old run's 12 and 16 are gone
    assert main(new[:new.index("--epochs")] + ["--epochs", "3"] + new[new.index("--epochs") + 2:]
                + ["--out", str(out), "--resume"]) == 0
    straight = tmp_path / "straight"
    assert main(BASE + ["--lr", "0.02", "--epochs", "3", "--out", str(straight)]) == 0
    assert json.loads((out / "summary.json").read_text())["params_sha256"] == \
        json.loads((straight / "summary.json").read_text())["params_sha256"]
    capsys.readouterr()


def test_resume_without_checkpoints_starts_fresh_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    status, _, err = run(BASE + ["--checkpoint-every", "1", "--resume", "--out", str(out)], capsys)
    assert status == 0
    assert "no checkpoint in" in err and "starting from step 0" in err


def damage(step_dir: Path) -> None:
    victim = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-4])


def test_every_checkpoint_damaged_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(BASE + ["--checkpoint-every", "1", "--out", str(out)]) == 0
    for step_dir in (out / "checkpoints").iterdir():
        damage(step_dir)
    before = snapshot(out)
    status, _, err = run(BASE + ["--epochs", "3", "--checkpoint-every", "1", "--resume", "--out", str(out)],
                         capsys)
    assert status == 2
    assert_one_line(err, "--resume:", "all 2 checkpoints failed their integrity checks")
    assert snapshot(out) == before


def test_damaged_newest_is_kept_when_the_resume_is_refused_and_announced_when_accepted(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(BASE + ["--checkpoint-every", "1", "--out", str(out)]) == 0
    newest = max((out / "checkpoints").iterdir())
    damage(newest)
    before = snapshot(out)
    status, _, err = run(BASE + ["--epochs", "3", "--checkpoint-every", "1", "--resume", "--lr", "0.5",
                                 "--out", str(out)], capsys)
    assert status == 2 and snapshot(out) == before  # refused: the damaged step was not deleted
    status, _, err = run(BASE + ["--epochs", "3", "--checkpoint-every", "1", "--resume", "--out", str(out)], capsys)
    assert status == 0
    notices = [line for line in err.splitlines() if "resuming from step" in line]
    assert len(notices) == 1 and "failed their integrity check" in notices[0]


def make_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return path


#: (arguments, setup(tmp_path) -> extra args, fragments of the one line)
CLI_CASES = [
    (["--schedule", "step"], None, ["--schedule step: step_size", "--hparam step_size"]),
    (["--schedule", "exponential"], None, ["--schedule exponential: step_size"]),
    (["--hparam", "eps_in_sqrt=maybe"], None, ["--hparam: got 'eps_in_sqrt=maybe'"]),
    (["--hparam", "eps=1e300"], None, ["eps: got 1e+300", "float32"]),
    (["--lr", "1e-320"], None, ["--lr: got '1e-320'", "float32"]),
    (["--seed", "99999999999999999999999"], None, ["--seed: got", "4294967295"]),
    (["--out", ""], None, ["--out: got ''"]),
    ([], lambda t: ["--out", str(make_file(t) / "run")], ["--out:", "under the file"]),
    ([], lambda t: ["--out", str(make_file(t))], ["--out:", "which is a file"]),
    (["--loss", "mse"], None, ["--loss: got 'mse'", "multiclass"]),
    (["--loss", "binary_cross_entropy"], None, ["--loss: got 'binary_cross_entropy'", "multiclass"]),
    (["--dataset", "diabetes", "--loss", "cross_entropy"], None, ["--loss: got 'cross_entropy'", "regression"]),
    (["--dataset", "breast_cancer", "--loss", "cross_entropy"], None, ["--loss: got 'cross_entropy'", "binary"]),
    (["--dataset", "diabetes", "--loss", "binary_cross_entropy"], None, ["--loss:", "regression"]),
    (["--dataset", "diabetes", "--model", "logistic"], None, ["--model:", "regression"]),
    (["--dataset", "diabetes", "--validation", "0.2", "--early-stopping", "2", "--monitor", "val_accuracy"], None,
     ["--monitor: got 'val_accuracy'"]),
    (["--validation", "0.2", "--early-stopping", "2", "--monitor", "val_r2"], None, ["--monitor: got 'val_r2'"]),
    (["--model", "transformer"], None, ["--model:", "token ids"]),
    (["--overwrite", "--resume"], lambda t: ["--out", str(t / "run")], ["--overwrite:", "--resume"]),
]


@pytest.mark.parametrize("extra, setup, fragments", CLI_CASES, ids=[" ".join(c[0]) or str(i)
                                                                    for i, c in enumerate(CLI_CASES)])
def test_bad_cli_input_is_one_line_exit_2_and_writes_nothing(extra, setup, fragments, tmp_path, capsys):
    more = setup(tmp_path) if setup else []
    before = snapshot(tmp_path)
    base = [a for a in BASE if a not in ("--hidden", "8")] if "--model" in extra else BASE
    status, _, err = run(base + extra + more, capsys)
    assert status == 2
    assert_one_line(err, "jaxnets: error:", *fragments)
    assert snapshot(tmp_path) == before


def test_tensorboard_without_its_extra_is_refused_before_anything_is_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # importing it now raises ImportError
    out = tmp_path / "run"
    status, _, err = run(BASE + ["--tensorboard", "--out", str(out)], capsys)
    assert status == 2
    assert_one_line(err, "--tensorboard:", "pip install 'jaxnets[tensorboard]'")
    assert not out.exists()


def test_compare_checks_its_output_before_any_work(tmp_path, capsys):
    blocker = make_file(tmp_path)
    started = time.perf_counter()
    status, _, err = run(["compare", "--dataset", "iris", "--out", str(blocker / "c")], capsys)
    assert status == 2 and time.perf_counter() - started < 10
    assert_one_line(err, "--out:", "under the file")


@pytest.mark.parametrize("schedule", ["step", "exponential"])
def test_compare_refuses_a_schedule_it_cannot_build(schedule, tmp_path, capsys):
    status, _, err = run(["compare", "--dataset", "iris", "--schedule", schedule, "--out", str(tmp_path / "c")],
                         capsys)
    assert status == 2
    assert_one_line(err, f"--schedule {schedule}:", "step_size")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args", [["--schedule", "step", "--hparam", "step_size=10"],
                                  ["--optimizer", "rmsprop", "--hparam", "eps_in_sqrt=false"],
                                  ["--schedule", "exponential", "--hparam", "step_size=5", "--hparam",
                                   "decay_rate=0.5"]])
def test_schedules_and_boolean_hyperparameters_work_from_the_cli(args, capsys):
    status, _, err = run(BASE + ["--epochs", "1"] + args, capsys)
    assert status == 0, err


def test_ctrl_c_without_checkpoints_is_one_line_and_keeps_the_metrics(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "jaxnets.cli", "train", "--dataset", "digits", "--hidden", "32",
               "--epochs", "100000", "--batch-size", "64", "--no-progress", "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS="", JAX_PLATFORMS="cpu")
    # A terminal's Ctrl-C reaches a process whose SIGINT is at its default; a test run started in the
    # background (non-interactive shells ignore SIGINT there) would hand its child SIG_IGN instead.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert_one_line(err, "jaxnets: interrupted after epoch", "metrics.jsonl holds the epochs so far")
    assert (out / "metrics.jsonl").read_text().strip()
    assert not (out / "summary.json").exists()


# ----------------------------------------------------------------------------- Python API
def ten_classes():
    return jn.data.load("digits")


API_CASES = [
    ("too few outputs", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=3), d, jn.optim.create("adam", 1e-3),
                                          jn.TrainConfig(epochs=1)), "model: got 'outputs of shape (batch, 3)'"),
    ("tuple as data", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=10), (d.x_train, d.y_train),
                                       jn.optim.create("adam", 1e-3)), "jaxnets.data.from_arrays"),
    ("array as data", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=10), d.x_train, jn.optim.create("adam", 1e-3)),
     "data: got 'ndarray'"),
    ("dict as config", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=10), d, jn.optim.create("adam", 1e-3),
                                        {"epochs": 1}), "TrainConfig(**d)"),
    ("string as optimizer", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=10), d, "adam"),
     "tx: got 'adam'; allowed: an Optax GradientTransformation"),
    ("a function as model", lambda d: jn.fit(lambda x: x, d, jn.optim.create("adam", 1e-3)), "model: got 'function'"),
    ("loss for another task", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=10), d, jn.optim.create("adam", 1e-3),
                                               jn.TrainConfig(loss="mse")), "loss: got 'mse'"),
    ("huge seed", lambda d: jn.TrainConfig(seed=2**40), "seed: got 1099511627776"),
    ("probability loss on logits", lambda d: jn.fit(jn.models.MLP(hidden=(8,), output_dim=10), d, jn.optim.create("adam", 1e-3),
                                                    jn.TrainConfig(loss="cross_entropy_probs")), "head: got 'logits'"),
]


@pytest.mark.parametrize("what, call, fragment", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_one_line(what, call, fragment):
    with pytest.raises(ValueError) as info:
        call(ten_classes())
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_the_bad_input_tables_cover_the_issue_list():
    assert len(CHANGED_ON_RESUME) + len(CLI_CASES) + len(API_CASES) >= 45


@pytest.mark.parametrize("changed", ["create", "inject_hyperparams", "schedule"])
def test_python_resume_refuses_a_changed_optimizer(changed, tmp_path):
    """docs/fault_tolerance.md: an injected hyperparameter (jaxnets.optim.create or your own
    optax.inject_hyperparams chain) and create's schedule are compared on resume."""
    import optax

    from jaxnets.resume import ResumeMismatch, ResumeNotice

    def tx(rate, schedule="constant"):
        if changed == "inject_hyperparams":
            return optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=rate))
        return jn.optim.create("adam", rate, schedule=schedule, total_steps=100)

    data, model = jn.data.load("iris"), jn.models.MLP(hidden=(8,), output_dim=3)
    checkpoint = jn.CheckpointConfig(str(tmp_path / "ckpt"), resume=True)
    with pytest.warns(ResumeNotice, match="starting from step 0"):  # nothing to resume yet: said, not silent
        jn.fit(model, data, tx(1e-3), jn.TrainConfig(epochs=1, batch_size=30), checkpoint=checkpoint)
    before = snapshot(tmp_path)
    other = tx(1e-3, "cosine") if changed == "schedule" else tx(1e-2)
    with pytest.raises(ResumeMismatch, match="schedule" if changed == "schedule" else "learning_rate") as info:
        jn.fit(model, data, other, jn.TrainConfig(epochs=2, batch_size=30), checkpoint=checkpoint)
    assert "\n" not in str(info.value) and snapshot(tmp_path) == before
