"""One process of the two-process loopback test (tests/test_multiprocess.py).

Usage: python multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
Each process owns 2 CPU devices; together they train with parallel="sharded".
"""
import os
import sys

process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxnets.parallel import initialize_distributed  # noqa: E402

initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id, timeout_s=60)

import jaxnets as jn  # noqa: E402
from tests.helpers.problems import blobs, mlp  # noqa: E402

assert jax.device_count() == 2 * num_processes and jax.local_device_count() == 2
result = jn.fit(mlp(), blobs(), jn.optim.create("adam", 1e-2),
                jn.TrainConfig(epochs=3, batch_size=16, parallel="sharded"))
leaves = {jn.tree.path_to_str(path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_leaves_with_path(result.state.params)}
np.savez(out, sha=jn.tree.params_sha256(result.state.params), step=int(result.state.step),
         test_accuracy=result.history[-1]["test_accuracy"], **leaves)
jax.distributed.shutdown()
