"""The command line: the summary contract, reproducibility, and one-line errors with exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxnets.cli import main

FAST = ["train", "--dataset", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "2", "--batch-size", "256",
        "--no-progress"]


def run_cli(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_train_writes_metrics_and_summary_contract(tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, _ = run_cli(FAST + ["--optimizer", "adam", "--lr", "1e-2", "--out", str(out)], capsys)
    assert status == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("config", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "wall_time_s",
                "steps_per_s", "num_params", "params_sha256"):
        assert key in summary, key
    assert summary["num_params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert summary["config"]["optimizer"] == "adam" and summary["config"]["lr"] == 1e-2
    assert summary["traces"]["train_step"] == 1
    assert len(summary["params_sha256"]) == 64
    assert "test_accuracy" in stdout


def test_same_command_gives_the_same_parameters(tmp_path, capsys):
    digests = []
    for name in ("a", "b"):
        assert run_cli(FAST + ["--out", str(tmp_path / name)], capsys)[0] == 0
        digests.append(json.loads((tmp_path / name / "summary.json").read_text())["params_sha256"])
    assert digests[0] == digests[1]


def test_model_options_reach_the_model(tmp_path, capsys):
    out = tmp_path / "opt"
    status, _, _ = run_cli(FAST + ["--model-opt", "dropout_rate=0.25", "--out", str(out)], capsys)
    assert status == 0
    assert json.loads((out / "summary.json").read_text())["config"]["model_options"] == {"dropout_rate": 0.25}


def test_regression_dataset_reports_rmse_and_r2(tmp_path, capsys):
    out = tmp_path / "reg"
    status, _, _ = run_cli(["train", "--dataset", "diabetes", "--model", "linear", "--optimizer", "sgd", "--lr", "0.05",
                            "--epochs", "3", "--batch-size", "full", "--no-progress", "--out", str(out)], capsys)
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"train_rmse", "test_rmse", "test_r2"} <= set(summary)


def test_tensorboard_event_files(tmp_path, capsys):
    out = tmp_path / "tb"
    assert run_cli(FAST + ["--out", str(out), "--tensorboard"], capsys)[0] == 0
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())


BAD_INPUTS = [
    (["--dataset", "imagenet"], "--dataset: got 'imagenet'; allowed:"),
    (["--model", "resnet"], "--model: got 'resnet'; allowed:"),
    (["--optimizer", "lbfgs"], "--optimizer: got 'lbfgs'; allowed:"),
    (["--activation", "swishy"], "--activation: got 'swishy'; allowed:"),
    (["--lr", "0"], "--lr: got '0'; allowed: a finite number > 0"),
    (["--lr", "-1e-3"], "--lr: got '-1e-3'"),
    (["--lr", "fast"], "--lr: got 'fast'"),
    (["--hidden", "128,x"], "--hidden: got '128,x'"),
    (["--hidden", "0"], "--hidden: got '0'"),
    (["--epochs", "0"], "--epochs: got '0'; allowed: an integer >= 1"),
    (["--batch-size", "-4"], "--batch-size: got '-4'"),
    (["--schedule", "cyclic"], "--schedule: got 'cyclic'"),
    (["--validation", "1.5"], "--validation: got 1.5"),
    (["--early-stopping", "3"], "--early-stopping: needs a validation split"),
    (["--data-dir", "/nonexistent/dir"], "--data-dir: got '/nonexistent/dir'"),
    (["--hparam", "momentum"], "--hparam: got 'momentum'"),
    (["--optimizer", "sgd", "--hparam", "nonsense=1"], "nonsense"),
    (["--loss", "hinge"], "--loss: got 'hinge'"),
    (["--model-opt", "dropout_rate"], "--model-opt: got 'dropout_rate'"),
    (["--model-opt", "widht=3"], "widht"),
    (["--model-opt", "dropout_rate=1.5"], "dropout_rate: got 1.5"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(extra, message, tmp_path, capsys):
    out = tmp_path / "never"
    status, stdout, stderr = run_cli(["train", "--no-progress", "--out", str(out)] + extra, capsys)
    assert status == 2
    assert message in stderr
    assert stderr.count("\n") == 1, stderr
    assert not out.exists()


def test_missing_data_files_name_what_is_expected(tmp_path, capsys):
    status, _, stderr = run_cli(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)], capsys)
    assert status == 2 and "train-images-idx3-ubyte" in stderr and stderr.count("\n") == 1


def test_out_directory_with_results_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    status, _, stderr = run_cli(FAST + ["--out", str(out)], capsys)
    assert status == 2 and "--out" in stderr
    assert (out / "summary.json").read_text() == "{}"


def test_list_shows_every_registry(capsys):
    status, stdout, _ = run_cli(["list"], capsys)
    assert status == 0
    for name in ("mlp", "logistic", "linear", "digits", "mnist1d", "xor", "sgd", "momentum", "nesterov",
                 "rmsprop", "adam", "adamw", "adagrad", "relu", "cosine", "cross_entropy", "he"):
        assert name in stdout, name


def test_console_script_exit_status_and_no_traceback():
    """The installed entry point, in a fresh process, as a user would call it."""
    exe = Path(sys.executable).with_name("jaxnets")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "jaxnets.cli"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(command + ["train", "--lr", "-1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_log_every_steps_reaches_metrics_jsonl_as_fit_records_them(tmp_path, capsys):
    """README/docs: --log-every-steps K writes every K-th step's loss into metrics.jsonl (step_losses)."""
    import jaxnets as jn

    out = tmp_path / "run"
    status, _, _ = run_cli(["train", "--dataset", "iris", "--hidden", "8", "--epochs", "3", "--batch-size", "30",
                            "--log-every-steps", "3", "--no-progress", "--out", str(out)], capsys)
    assert status == 0
    logged = [pair for line in (out / "metrics.jsonl").read_text().splitlines()
              for pair in json.loads(line)["step_losses"]]
    assert [step for step, _ in logged] == [3, 6, 9, 12]  # iris: 120 training rows, 4 steps per epoch
    data = jn.data.load("iris", seed=0)
    result = jn.fit(jn.models.get_model("mlp", output_dim=3, hidden=(8,)), data, jn.optim.create("adam", 1e-3),
                    jn.TrainConfig(epochs=3, batch_size=30, log_every_steps=3))
    assert logged == [[r["step"], r["loss"]] for r in result.step_history]


def test_help_shows_defaults_exit_statuses_and_the_version(capsys):
    """README: --help shows each option's default and the exit statuses; jaxnets --version."""
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: 20)" in text and "(default: adam)" in text
    assert "exit statuses: 0 done; 2 bad input" in text and "130 interrupted" in text
    assert "pip install 'jaxnets[tensorboard]'" in text
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    import jaxnets
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"jaxnets {jaxnets.__version__}"
