"""One run of the kill-and-resume test (tests/test_reliability.py).

Usage: python resume_worker.py OUT_DIR KILL_STEP LOOP [--resume]
Trains a small MLP on digits with checkpoints every epoch. When KILL_STEP >= 0, the
process SIGKILLs itself from inside the compiled step KILL_STEP (a host callback in
the optimizer chain), i.e. in the middle of training, with no chance to clean up.
Writes OUT_DIR/final.txt (the params digest) when training completes.
"""
import os
import signal
import sys

out, kill_step, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
resume = "--resume" in sys.argv
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import optax  # noqa: E402

import jaxnets as jn  # noqa: E402


def kill_at(step_to_kill: int) -> optax.GradientTransformation:
    """Passes updates through; SIGKILLs the process when the optimizer's count hits the step."""
    def init(params):
        return optax.ScaleByScheduleState(count=jax.numpy.zeros((), jax.numpy.int32))

    def update(updates, state, params=None):
        def maybe_die(count):
            if int(count) == step_to_kill:
                os.kill(os.getpid(), signal.SIGKILL)
        jax.debug.callback(maybe_die, state.count, ordered=True)
        return updates, optax.ScaleByScheduleState(count=state.count + 1)

    return optax.GradientTransformation(init, update)


data = jn.data.load("digits")
model = jn.models.MLP(hidden=(32,), output_dim=10, dropout_rate=0.1)
tx = optax.chain(kill_at(kill_step), jn.optim.create("adam", 1e-3))
config = jn.TrainConfig(epochs=6, batch_size=256, loop=loop, seed=3)
result = jn.fit(model, data, tx, config,
                checkpoint=jn.CheckpointConfig(os.path.join(out, "ckpt"), every_epochs=1, resume=resume))
with open(os.path.join(out, "final.txt"), "w") as handle:
    handle.write(jn.tree.params_sha256(result.state.params) + "\n")
    handle.write(",".join(str(e["epoch"]) for e in result.history) + "\n")
