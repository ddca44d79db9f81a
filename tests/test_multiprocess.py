"""Two processes on loopback (jax.distributed + gloo) train one model with parallel='sharded'."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import jaxnets as jn
from tests.helpers.problems import blobs, mlp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_a_single_process_run(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    worker = ROOT / "tests" / "helpers" / "multiprocess_worker.py"
    procs = [subprocess.Popen(["timeout", "150", sys.executable, str(worker), str(i), "2", str(port),
                               str(tmp_path / f"p{i}.npz")], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    results = [np.load(tmp_path / f"p{i}.npz") for i in range(2)]
    assert str(results[0]["sha"]) == str(results[1]["sha"])  # both processes hold the same model
    assert int(results[0]["step"]) == 3 * 4

    # The same global batch on 4 devices of one process (tests/conftest.py): same parameters up to
    # float32 rounding (measured: not bitwise, because gloo's cross-process all-reduce adds the
    # partial sums in another order than the in-process one).
    single = jn.fit(mlp(), blobs(), jn.optim.create("adam", 1e-2),
                    jn.TrainConfig(epochs=3, batch_size=16, parallel="sharded"))
    for path, leaf in __import__("jax").tree_util.tree_leaves_with_path(single.state.params):
        np.testing.assert_allclose(results[0][jn.tree.path_to_str(path)], np.asarray(leaf), rtol=0, atol=1e-6)
    assert float(results[0]["test_accuracy"]) == single.history[-1]["test_accuracy"]
