"""The several-hosts recipe as a user launches it: one `jaxnets train` per process, joined by
--coordinator HOST:PORT --num-processes N --process-id I (here two processes on loopback)."""
import json
import os
import subprocess
import sys

import pytest

from jaxnets.cli import main
from tests.test_multiprocess import free_port

ARGS = ["train", "--dataset", "iris", "--hidden", "8", "--epochs", "2", "--batch-size", "40", "--no-progress",
        "--parallel", "sharded"]


def test_two_processes_train_as_one_run_and_process_0_writes(tmp_path):
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(["timeout", "150", sys.executable, "-m", "jaxnets.cli", *ARGS,
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                               "--out", str(tmp_path / "run")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["devices"]["process_count"] == 2 and summary["devices"]["device_count"] == 4
    assert summary["status"] == "done"
    # The same global batch on the 4 devices of this one process (tests/conftest.py): same run up to
    # float32 rounding of the cross-process all-reduce.
    single = tmp_path / "single"
    assert main(ARGS + ["--out", str(single)]) == 0
    alone = json.loads((single / "summary.json").read_text())
    assert abs(summary["test_loss"] - alone["test_loss"]) < 1e-5


@pytest.mark.parametrize("extra, fragment", [
    (["--coordinator", "127.0.0.1:1"], "--coordinator: got HOST:PORT without --num-processes"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "--coordinator: got 'nohost'"),
    (["--num-processes", "2"], "--num-processes: got it without --coordinator"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id: got 2"),
])
def test_bad_distributed_options_are_one_line(extra, fragment, capsys):
    assert main(ARGS + extra) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err


def test_several_processes_need_the_sharded_mode(capsys):
    args = [a if a != "sharded" else "pmap" for a in ARGS]
    assert main(args + ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"]) == 2
    assert "--parallel: got 'pmap' with --coordinator" in capsys.readouterr().err
