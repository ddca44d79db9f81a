"""Speed benchmarks of the jaxnets engine, each against a baseline measured in the same run.

    python -m experiments.benchmarks                 # everything (several minutes on 2 cores)
    python -m experiments.benchmarks --only mlp_step tiny_fused
    python -m experiments.benchmarks --quick         # fewer repeats, one process (a smoke run)

Each benchmark prints one JSON line and the whole run writes
``results/benchmarks/results.json`` and ``results/benchmarks/table.md`` (atomically).
Times are medians over repeats after warm-up; baselines and candidates are measured
alternately (round-robin) so machine noise hits both. PyTorch runs in a worker process
that takes its turn in the same round-robin. PyTorch comparisons run only when
``torch`` is installed (``pip install torch==2.13.0``; never a jaxnets dependency).
The CNN and data-parallel benchmarks run in ``--processes`` fresh processes (default 3)
and report each process's ratio and their median: on a shared machine one process can
run its memory-bound work much slower than the next for its whole life.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets as jn
from jaxnets.host_memory import retain_freed_memory
from jaxnets.io import atomic_write_json, atomic_write_text
from jaxnets.profiling import block, compiled_flops, round_robin_medians

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def lecun_dense(key, fan_in: int, fan_out: int):
    w = jax.random.truncated_normal(key, -2.0, 2.0, (fan_in, fan_out)) * jnp.sqrt(1.0 / fan_in) / 0.87962566
    return {"kernel": w, "bias": jnp.zeros((fan_out,))}


def softmax_xent(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


class TorchInSubprocess:
    """The PyTorch baseline in its own process, driven one run at a time.

    In the same process as JAX, the two runtimes' CPU thread pools compete for the
    cores and PyTorch's step slows several-fold. In a separate process that only
    runs when asked, it takes its turn in ``round_robin_medians``' round-robin like any
    candidate, so the machine's drift (tens of percent here) hits both frameworks alike.
    Calling the object runs ``steps`` training steps in the worker and waits for them.
    """

    def __init__(self, model: str, steps: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "experiments.benchmarks", "--worker-torch", model,
                                      "--steps", str(steps)], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())  # the worker is ready

    def __call__(self) -> None:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        if not self.proc.stdout.readline():
            raise RuntimeError("the PyTorch worker exited")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def round_robin_with_torch(candidates: dict[str, Callable[[], None]], model: str, steps: int, *,
                              repeats: int) -> dict[str, float]:
    """``round_robin_medians`` with PyTorch's version of ``model`` as one more candidate, when installed."""
    if not torch_available():
        return round_robin_medians(candidates, repeats=repeats)
    torch_run = TorchInSubprocess(model, steps)
    try:
        return round_robin_medians({**candidates, "torch_eager": torch_run}, repeats=repeats)
    finally:
        torch_run.close()


def torch_worker(model: str, steps: int) -> None:
    """Build the PyTorch model, say so, then run ``steps`` steps per "run" line read from stdin."""
    import torch

    rng = np.random.default_rng(0)
    if model == "mlp":
        x = rng.normal(size=(512, 784)).astype(np.float32)
        y = rng.integers(0, 10, size=512).astype(np.int32)
        run = torch_mlp_runner(x, y, (784, 1024, 1024, 10), 0.01, 0.9, steps)
    else:
        x = rng.normal(size=(256, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, size=256).astype(np.int32)
        run = torch_cnn_runner(x, y, steps)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            run()
            print("done", flush=True)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- 1-3: MLP step
def mlp_step(repeats: int, steps: int = 20) -> dict:
    """MLP 784-1024-1024-10, batch 512, SGD momentum 0.9: jaxnets step vs hand-written JAX (and PyTorch)."""
    rng = np.random.default_rng(0)
    batch, widths = 512, (784, 1024, 1024, 10)
    x = rng.normal(size=(batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=batch).astype(np.int32)
    lr, mu = 0.01, 0.9

    model = jn.models.MLP(hidden=(1024, 1024), output_dim=10)
    state = jn.create_state(model, jn.optim.create("momentum", lr, momentum=mu), x)
    step = jax.jit(jn.make_train_step(jn.objective_for("multiclass")), donate_argnums=0)
    jbatch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.ones((batch,), jnp.float32)}

    keys = jax.random.split(jax.random.key(0), 3)
    params = [lecun_dense(k, a, b) for k, a, b in zip(keys, widths[:-1], widths[1:])]
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)

    def forward(params, x):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        return x @ params[-1]["kernel"] + params[-1]["bias"]

    @partial(jax.jit, donate_argnums=(0, 1))
    def hand_step(params, velocity, x, y):
        grads = jax.grad(lambda p: softmax_xent(forward(p, x), y))(params)
        velocity = jax.tree_util.tree_map(lambda v, g: mu * v + g, velocity, grads)
        return jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity), velocity

    hx, hy = jnp.asarray(x), jnp.asarray(y)
    box = {"state": state, "hand": (params, velocity)}

    def run_jaxnets():
        s = box["state"]
        for _ in range(steps):
            s, _ = step(s, jbatch)
        box["state"] = block(s)

    def run_hand():
        p, v = box["hand"]
        for _ in range(steps):
            p, v = hand_step(p, v, hx, hy)
        box["hand"] = block((p, v))

    # The matmul peak is one more candidate of the round-robin: measured apart, minutes
    # later, the machine's drift could put the "peak" below the step's own rate.
    size = 2048
    square = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b)

    def run_matmul():
        for _ in range(steps):
            out = matmul(square, square)
        block(out)

    candidates = {"jaxnets": run_jaxnets, "hand_jax": run_hand, "matmul_peak": run_matmul}
    times = round_robin_with_torch(candidates, "mlp", steps, repeats=repeats)
    peak = 2.0 * size ** 3 * steps / times.pop("matmul_peak") / 1e9
    flops = compiled_flops(jn.make_train_step(jn.objective_for("multiclass")), box["state"], jbatch)
    per_step = {name: t / steps for name, t in times.items()}
    out = {"benchmark": "mlp_step", "model": "MLP 784-1024-1024-10, batch 512, SGD momentum 0.9",
           "steps_per_s": {name: 1.0 / t for name, t in per_step.items()},
           "ratio_vs_hand_jax": per_step["hand_jax"] / per_step["jaxnets"], "goal_ratio_vs_hand_jax": 0.95,
           "step_gflop": flops / 1e9, "achieved_gflops": flops / per_step["jaxnets"] / 1e9,
           "matmul_peak_gflops": peak, "fraction_of_matmul_peak": flops / per_step["jaxnets"] / 1e9 / peak}
    if "torch_eager" in per_step:
        out["ratio_vs_torch_eager"] = per_step["torch_eager"] / per_step["jaxnets"]
    return out


def torch_mlp_runner(x, y, widths, lr, mu, steps) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    return torch_training_loop(net, torch.optim.SGD(net.parameters(), lr=lr, momentum=mu), x, y, steps)


def torch_training_loop(net, opt, x, y, steps) -> Callable[[], None]:
    """``steps`` eager PyTorch training steps of ``net`` on one fixed batch (cross-entropy)."""
    import torch

    tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(tx), ty).backward()
            opt.step()

    return run


# ----------------------------------------------------------------------------- CNN step
#: Fresh processes that each measure the CNN and data-parallel benchmarks. The memory-bound
#: parts of the CNN step (patch copies, pooling) ran up to ~1.7x slower in some processes than
#: in others on the development machine, within one run of this script (other tenants' load on
#: the shared cache, as far as we could tell), so one process's ratio is one draw of several.
PROCESSES = 3


def in_fresh_processes(flag: str, repeats: int, processes: int, env: dict | None = None) -> list[dict]:
    """Run ``python -m experiments.benchmarks <flag> --repeats R`` ``processes`` times; their JSON results."""
    runs = []
    for _ in range(processes):
        proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks", flag, "--repeats", str(repeats)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def spread(values: list[float]) -> dict:
    """Median, minimum and maximum of per-process values (each a ratio measured within one process)."""
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "per_process": [float(v) for v in values]}


def cnn_step(repeats: int, processes: int = PROCESSES) -> dict:
    """The CNN benchmark in ``processes`` fresh processes: per-process ratios and their median."""
    runs = in_fresh_processes("--worker-cnn", repeats, processes)
    if runs[0].get("skipped"):
        return runs[0]
    out = {key: runs[0][key] for key in ("benchmark", "model", "default_conv_impl", "goal_ratio_vs_hand_jax",
                                        "step_gflop", "goal_ratio_vs_torch_eager") if key in runs[0]}
    out["processes"] = processes
    out["steps_per_s_per_process"] = [run["steps_per_s"] for run in runs]
    out["minor_page_faults_per_step_per_process"] = [run["minor_page_faults_per_step"] for run in runs]
    out["temp_mib"] = runs[0]["temp_mib"]
    for key in ("ratio_vs_hand_jax", "ratio_vs_torch_eager", "xla_conv_ratio_vs_torch_eager"):
        if key in runs[0]:
            out[key] = float(np.median([run[key] for run in runs]))
            out[key + "_spread"] = spread([run[key] for run in runs])
    return out


def minor_faults(run: Callable[[], None]) -> int:
    """Minor page faults this process takes during one ``run()`` (Unix; 0 elsewhere)."""
    try:
        import resource
    except ImportError:
        return 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def cnn_step_worker(repeats: int, steps: int = 5) -> dict:
    """CNN on 28x28x1, batch 256, Adam: conv3x3-32, relu, maxpool2, conv3x3-64, relu, maxpool2, dense 256, dense 10."""
    from jaxnets.models import MODELS, get_model

    if "cnn" not in MODELS:
        return {"benchmark": "cnn_step", "skipped": "no 'cnn' model registered yet"}
    rng = np.random.default_rng(0)
    batch = 256
    x = rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=batch).astype(np.int32)
    jbatch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.ones((batch,), jnp.float32)}
    step_fn = jn.make_train_step(jn.objective_for("multiclass"))
    step = jax.jit(step_fn, donate_argnums=0)
    box = {}
    candidates = {}
    for impl in ("auto", "patches", "xla"):
        model = get_model("cnn", output_dim=10, channels=(32, 64), kernel_size=3, pool="max", dense=(256,),
                          conv_impl=impl)
        box[impl] = jn.create_state(model, jn.optim.create("adam", 1e-3), x)

        def run(impl=impl):
            s = box[impl]
            for _ in range(steps):
                s, _ = step(s, jbatch)
            box[impl] = block(s)

        candidates[f"jaxnets_{impl}"] = run

    hand = hand_cnn_runner(x, y, steps)
    candidates["hand_jax"] = hand
    times = round_robin_with_torch(candidates, "cnn", steps, repeats=repeats)
    per_step = {name: t / steps for name, t in times.items()}
    faults = {name: minor_faults(candidates[name]) / steps for name in ("jaxnets_auto", "hand_jax")}
    default_impl = "auto"  # the library default: patch GEMMs on CPU, XLA convolutions elsewhere
    out = {"benchmark": "cnn_step", "model": "CNN 28x28x1 c32-p-c64-p-d256-d10, batch 256, Adam",
           "steps_per_s": {name: 1.0 / t for name, t in per_step.items()},
           "default_conv_impl": default_impl,
           "ratio_vs_hand_jax": per_step["hand_jax"] / per_step[f"jaxnets_{default_impl}"],
           "goal_ratio_vs_hand_jax": 0.95,
           "step_gflop": compiled_flops(step_fn, box[default_impl], jbatch) / 1e9,
           # Page faults per step: with glibc's defaults, a step whose temporaries exceed its
           # mmap threshold maps them afresh on every call (jaxnets.host_memory).
           "minor_page_faults_per_step": faults,
           "temp_mib": step.lower(box[default_impl], jbatch).compile().memory_analysis().temp_size_in_bytes / 2**20}
    if "torch_eager" in per_step:
        out["ratio_vs_torch_eager"] = per_step["torch_eager"] / per_step[f"jaxnets_{default_impl}"]
        out["goal_ratio_vs_torch_eager"] = 1.0
        out["xla_conv_ratio_vs_torch_eager"] = per_step["torch_eager"] / per_step["jaxnets_xla"]
    return out


def hand_cnn_runner(x, y, steps) -> Callable[[], None]:
    """The same CNN written directly with lax.conv_general_dilated and reduce_window, and Adam by hand."""
    keys = jax.random.split(jax.random.key(1), 4)

    def conv_init(key, kh, kw, cin, cout):
        fan_in = kh * kw * cin
        return {"kernel": jax.random.normal(key, (kh, kw, cin, cout)) * jnp.sqrt(1.0 / fan_in),
                "bias": jnp.zeros((cout,))}

    params = {"c1": conv_init(keys[0], 3, 3, 1, 32), "c2": conv_init(keys[1], 3, 3, 32, 64),
              "d1": lecun_dense(keys[2], 7 * 7 * 64, 256), "d2": lecun_dense(keys[3], 256, 10)}

    def conv(layer, h):
        out = jax.lax.conv_general_dilated(h, layer["kernel"], (1, 1), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out + layer["bias"]

    def pool(h):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def forward(p, h):
        h = pool(jax.nn.relu(conv(p["c1"], h)))
        h = pool(jax.nn.relu(conv(p["c2"], h)))
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["d1"]["kernel"] + p["d1"]["bias"])
        return h @ p["d2"]["kernel"] + p["d2"]["bias"]

    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-3

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(p, m, v, t, x, y):
        g = jax.grad(lambda q: softmax_xent(forward(q, x), y))(p)
        m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        t = t + 1
        mhat = jax.tree_util.tree_map(lambda a: a / (1 - b1 ** t), m)
        vhat = jax.tree_util.tree_map(lambda a: a / (1 - b2 ** t), v)
        p = jax.tree_util.tree_map(lambda a, mm, vv: a - lr * mm / (jnp.sqrt(vv) + eps), p, mhat, vhat)
        return p, m, v, t

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    box = {"s": (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.float32(0))}
    hx, hy = jnp.asarray(x), jnp.asarray(y)

    def run():
        p, m, v, t = box["s"]
        for _ in range(steps):
            p, m, v, t = step(p, m, v, t, hx, hy)
        box["s"] = block((p, m, v, t))

    return run


def torch_cnn_runner(x, y, steps) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    # PyTorch convolutions are channels-first: NHWC -> NCHW.
    return torch_training_loop(net, torch.optim.Adam(net.parameters(), lr=1e-3), x.transpose(0, 3, 1, 2), y, steps)


# ----------------------------------------------------------------------------- 4: tiny model
def tiny_fused(repeats: int, epochs: int = 2000) -> dict:
    """XOR-sized MLP, batch 4: fit's Python loop vs its scan-fused loop vs a hand-written scan."""
    from jaxnets.parallel import make_runner
    from jaxnets.epochs import batch_geometry

    data = jn.data.load("xor")
    model = jn.models.MLP(hidden=(8,), output_dim=1)
    objective = jn.objective_for("binary")
    config = jn.TrainConfig(epochs=epochs, batch_size=4)
    geometry = batch_geometry(4, config.batch_size, shuffle=config.shuffle, drop_remainder=config.drop_remainder)
    tx = jn.optim.create("sgd", 0.1)
    xs, ys = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    key = jax.random.key(0)
    box = {}
    candidates = {}
    python_epochs = max(epochs // 10, 50)  # the Python loop is slow: time fewer steps, report per step
    for loop, n_epochs in (("scan", epochs), ("python", python_epochs)):
        runner = make_runner("none", lambda axis: jn.make_train_step(objective, axis_name=axis), geometry,
                             loop=loop, traces={})
        box[loop] = jn.create_state(model, tx, data.x_train)

        def run(loop=loop, runner=runner, n_epochs=n_epochs):
            state, _ = runner.run_epochs(box[loop], xs, ys, key, 0, n_epochs)
            box[loop] = block(state)

        candidates[f"fit_{loop}"] = run

    params = {"h": lecun_dense(jax.random.key(1), 2, 8), "o": lecun_dense(jax.random.key(2), 8, 1)}
    yf = ys.astype(jnp.float32)

    def loss(p):
        z = (jax.nn.relu(xs @ p["h"]["kernel"] + p["h"]["bias"]) @ p["o"]["kernel"] + p["o"]["bias"])[:, 0]
        return jnp.mean(jnp.logaddexp(z, 0.0) - z * yf)

    @jax.jit
    def hand(p):
        def body(p, _):
            g = jax.grad(loss)(p)
            return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), None
        return jax.lax.scan(body, p, None, length=epochs)[0]

    box["hand"] = params
    candidates["hand_scan"] = lambda: box.__setitem__("hand", block(hand(box["hand"])))
    times = round_robin_medians(candidates, repeats=repeats)
    per_step = {"fit_scan": times["fit_scan"] / epochs, "fit_python": times["fit_python"] / python_epochs,
                "hand_scan": times["hand_scan"] / epochs}
    return {"benchmark": "tiny_fused", "model": "MLP 2-8-1 on XOR, batch 4, SGD",
            "us_per_step": {k: v * 1e6 for k, v in per_step.items()},
            "fused_speedup_vs_python_loop": per_step["fit_python"] / per_step["fit_scan"],
            "goal_fused_speedup": 15.0,
            "fused_slowdown_vs_hand_scan": per_step["fit_scan"] / per_step["hand_scan"],
            "goal_max_slowdown_vs_hand_scan": 1.5}


# ----------------------------------------------------------------------------- 5: population
def population(repeats: int, members: int = 16, epochs: int = 10) -> dict:
    """16 seeds of the MNIST-1D MLP (100, 100): one vmapped program vs 16 sequential fits (wall time)."""
    from jaxnets.population import fit_population

    data = jn.data.load("mnist1d")
    model = jn.models.MLP(hidden=(100, 100), output_dim=10)
    config = jn.TrainConfig(epochs=epochs, batch_size=100, eval_every=epochs)
    tick = time.perf_counter()
    for seed in range(members):
        jn.fit(model, data, jn.optim.create("adam", 1e-2), jn.TrainConfig(**{**config.__dict__, "seed": seed}))
    sequential = time.perf_counter() - tick
    tick = time.perf_counter()
    result = fit_population(model, data, jn.optim.create("adam", 1e-2), config, seeds=list(range(members)))
    vmapped = time.perf_counter() - tick
    steps = epochs * 40
    return {"benchmark": "population", "model": f"MNIST-1D MLP (100, 100), {members} seeds x {steps} steps",
            "sequential_s": sequential, "population_s": vmapped, "speedup": sequential / vmapped,
            "goal_speedup": 5.0, "population_traces": result.traces}


# ----------------------------------------------------------------------------- 6: data parallel
def data_parallel(repeats: int, processes: int = PROCESSES) -> dict:
    """pmap and sharded jit on 2 and 4 simulated CPU devices vs one device, same global batch.

    Each device count runs in ``processes`` fresh processes; ``relative_to_one_device`` is
    the median over them of each mode's steps/s over its family's one-device steps/s.
    """
    rows = []
    for devices in (2, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        runs = in_fresh_processes("--worker-data-parallel", repeats, processes, env)
        row = dict(runs[0])  # compiled ops and agreement: the same program in every process
        row["steps_per_s"] = [run["steps_per_s"] for run in runs]
        row["relative_per_process"] = [run["relative_to_one_device"] for run in runs]
        row["relative_to_one_device"] = {name: float(np.median([run["relative_to_one_device"][name] for run in runs]))
                                         for name in runs[0]["relative_to_one_device"]}
        rows.append(row)
    return {"benchmark": "data_parallel", "note": "simulated devices share 2 CPU cores: this measures "
            "overhead, not speed-up", "processes": processes, "runs": rows}


def data_parallel_worker(repeats: int, steps: int = 10) -> dict:
    """In a process with D simulated devices: steps/s of each mode, and the parameters' agreement."""
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxnets.parallel import data_mesh, make_runner
    from jaxnets.epochs import batch_geometry

    devices = jax.device_count()
    rng = np.random.default_rng(0)
    batch = 512
    n = batch * steps
    x = rng.normal(size=(n, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    model = jn.models.MLP(hidden=(1024, 1024), output_dim=10)
    objective = jn.objective_for("multiclass")
    tx = jn.optim.create("momentum", 0.01, momentum=0.9)
    config = jn.TrainConfig(epochs=1, batch_size=batch, shuffle=False)
    geometry = batch_geometry(n, config.batch_size, shuffle=config.shuffle, drop_remainder=config.drop_remainder)
    box, candidates, runners = {}, {}, {}
    for mode in ("none", "pmap", "sharded"):
        runner = make_runner(mode, lambda axis, mode=mode: jn.make_train_step(
            objective, axis_name=axis, sharded_batch=mode == "sharded"), geometry, loop="python", traces={})
        runners[mode] = runner
        xs, ys = runner.put_data(x), runner.put_data(y)
        box[mode] = runner.put_state(jn.create_state(model, tx, x))

        def run(mode=mode, runner=runner, xs=xs, ys=ys):
            state, _ = runner.run_epochs(box[mode], xs, ys, jax.random.key(0), 0)
            box[mode] = block(state)

        candidates[f"jaxnets_{mode}"] = run

    # Hand-written baselines: the same MLP step, pmapped and sharded by hand.
    keys = jax.random.split(jax.random.key(0), 3)
    widths = (784, 1024, 1024, 10)
    params = [lecun_dense(k, a, b) for k, a, b in zip(keys, widths[:-1], widths[1:])]

    def forward(p, h):
        for layer in p[:-1]:
            h = jax.nn.relu(h @ layer["kernel"] + layer["bias"])
        return h @ p[-1]["kernel"] + p[-1]["bias"]

    def grads_of(p, xb, yb):
        return jax.grad(lambda q: softmax_xent(forward(q, xb), yb))(p)

    def update(p, v, g):
        v = jax.tree_util.tree_map(lambda a, b: 0.9 * a + b, v, g)
        return jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, p, v), v

    @partial(jax.pmap, axis_name="d", donate_argnums=(0, 1))
    def pmap_step(p, v, xb, yb):
        return update(p, v, jax.lax.pmean(grads_of(p, xb, yb), "d"))

    mesh = data_mesh()
    rows_sharding = NamedSharding(mesh, PartitionSpec("data"))
    repl = NamedSharding(mesh, PartitionSpec())

    @partial(jax.jit, donate_argnums=(0, 1), out_shardings=repl)
    def sharded_step(p, v, xb, yb):
        return update(p, v, grads_of(p, xb, yb))

    @partial(jax.jit, donate_argnums=(0, 1), out_shardings=repl)
    def sharded_gather_step(p, v, xs, ys, idx):
        # As jaxnets does it: the data sit on every device and the step gathers its rows.
        xb = jax.lax.with_sharding_constraint(xs[idx], rows_sharding)
        yb = jax.lax.with_sharding_constraint(ys[idx], rows_sharding)
        return update(p, v, grads_of(p, xb, yb))

    @partial(jax.jit, donate_argnums=(0, 1))
    def one_device_step(p, v, xb, yb):
        return update(p, v, grads_of(p, xb, yb))

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    stack = lambda t: jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (devices, *a.shape)), t)  # noqa: E731
    box["hand_pmap"] = (stack(params), stack(zeros))
    # Each box owns its buffers (the steps donate them; device_put may alias its input).
    own = lambda t: jax.device_put(jax.tree_util.tree_map(jnp.copy, t), repl)  # noqa: E731
    box["hand_sharded"] = (own(params), own(zeros))
    box["hand_sharded_gather"] = (own(params), own(zeros))
    xs_rep, ys_rep = jax.device_put(x, repl), jax.device_put(y, repl)
    idx_rep = [jax.device_put(np.arange(i * batch, (i + 1) * batch, dtype=np.int32), repl) for i in range(steps)]
    box["hand_none"] = jax.tree_util.tree_map(jnp.copy, (params, zeros))  # donated: own buffers
    xb_1 = [jnp.asarray(x[i * batch:(i + 1) * batch]) for i in range(steps)]
    yb_1 = [jnp.asarray(y[i * batch:(i + 1) * batch]) for i in range(steps)]

    def run_hand_one_device():
        p, v = box["hand_none"]
        for i in range(steps):
            p, v = one_device_step(p, v, xb_1[i], yb_1[i])
        box["hand_none"] = block((p, v))

    xb_p = [jnp.asarray(x[i * batch:(i + 1) * batch]).reshape(devices, batch // devices, 784) for i in range(steps)]
    yb_p = [jnp.asarray(y[i * batch:(i + 1) * batch]).reshape(devices, batch // devices) for i in range(steps)]
    xb_s = [jax.device_put(x[i * batch:(i + 1) * batch], rows_sharding) for i in range(steps)]
    yb_s = [jax.device_put(y[i * batch:(i + 1) * batch], rows_sharding) for i in range(steps)]

    def run_hand_pmap():
        p, v = box["hand_pmap"]
        for i in range(steps):
            p, v = pmap_step(p, v, xb_p[i], yb_p[i])
        box["hand_pmap"] = block((p, v))

    def run_hand_sharded():
        p, v = box["hand_sharded"]
        for i in range(steps):
            p, v = sharded_step(p, v, xb_s[i], yb_s[i])
        box["hand_sharded"] = block((p, v))

    def run_hand_sharded_gather():
        p, v = box["hand_sharded_gather"]
        for i in range(steps):
            p, v = sharded_gather_step(p, v, xs_rep, ys_rep, idx_rep[i])
        box["hand_sharded_gather"] = block((p, v))

    candidates["hand_none"] = run_hand_one_device
    candidates["hand_sharded_gather"] = run_hand_sharded_gather
    candidates["hand_pmap"] = run_hand_pmap
    candidates["hand_sharded"] = run_hand_sharded
    times = round_robin_medians(candidates, repeats=repeats, warmup=1)
    steps_per_s = {name: steps / t for name, t in times.items()}
    # agreement: one fresh epoch per mode from the same initial state
    finals = {}
    for mode, runner in runners.items():
        state = runner.put_state(jn.create_state(model, tx, x))
        state, _ = runner.run_epochs(state, runner.put_data(x), runner.put_data(y), jax.random.key(0), 0)
        finals[mode] = runner.get_state(state).params
    diff = {mode: max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                      for a, b in zip(jax.tree_util.tree_leaves(finals["none"]), jax.tree_util.tree_leaves(p)))
            for mode, p in finals.items() if mode != "none"}
    # Why sharded costs more than pmap: count the collectives each compiled step contains.
    collectives = {}
    for mode in ("pmap", "sharded"):
        runner = runners[mode]
        state = runner.put_state(jn.create_state(model, tx, x))
        xs, ys = runner.put_data(x), runner.put_data(y)
        idx, mask = runner._plan(runner.put_data(jax.random.key(0)), runner.put_data(np.int32(0)))
        text = runner._step.lower(state, xs, ys, idx, mask, runner.put_data(np.int32(0))).compile().as_text()
        collectives[f"jaxnets_{mode}"] = count_ops(text)
    collectives["hand_pmap"] = count_ops(pmap_step.lower(*box["hand_pmap"], xb_p[0], yb_p[0]).compile().as_text())
    collectives["hand_sharded"] = count_ops(sharded_step.lower(*box["hand_sharded"], xb_s[0], yb_s[0]).compile().as_text())
    collectives["hand_sharded_gather"] = count_ops(
        sharded_gather_step.lower(*box["hand_sharded_gather"], xs_rep, ys_rep, idx_rep[0]).compile().as_text())
    return {"devices": devices, "steps_per_s": steps_per_s, "compiled_ops": collectives,
            # each family against its own one-device step: the overhead of going parallel
            "relative_to_one_device": {name: v / steps_per_s[name.split("_")[0] + "_none"]
                                       for name, v in steps_per_s.items()},
            "max_abs_param_diff_vs_one_device": diff,
            "pmap_equals_sharded_bitwise": jn.tree.params_sha256(finals["pmap"]) == jn.tree.params_sha256(finals["sharded"])}


def count_ops(hlo_text: str) -> dict[str, int]:
    """How many collectives, slicing ops and transposes a compiled program contains.

    Transposes: in a jit-partitioned step the all-reduce of each kernel gradient sits
    between its dot and the transpose that JAX's dot rule emits, so XLA cannot fold the
    transpose into the dot (as it does under pmap) and copies the gradient once more.
    """
    return {op: hlo_text.count(f" {op}(") for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute",
                                                     "dynamic-slice", "gather", "transpose")}


# ----------------------------------------------------------------------------- main
BENCHMARKS = {"mlp_step": mlp_step, "cnn_step": cnn_step, "tiny_fused": tiny_fused, "population": population,
              "data_parallel": data_parallel}


MULTI_PROCESS = ("cnn_step", "data_parallel")
#: Set (by --default-malloc) for this process and its workers: keep glibc's defaults.
DEFAULT_MALLOC_ENV = "JAXNETS_BENCHMARK_DEFAULT_MALLOC"


def table(results: list[dict]) -> str:
    """A markdown table of the headline ratio of each benchmark against its goal."""
    lines = ["| benchmark | measured | goal | met |", "| --- | --- | --- | --- |"]

    def row(name, value, goal, higher_is_better=True, spread=None):
        met = value >= goal if higher_is_better else value <= goal
        shown = f"{value:.3g}"
        if spread:  # the median of fresh processes, and each of them
            shown += f" (median of {len(spread['per_process'])} processes: " \
                     + ", ".join(f"{v:.3g}" for v in spread["per_process"]) + ")"
        lines.append(f"| {name} | {shown} | {'>=' if higher_is_better else '<='} {goal:g} | {'yes' if met else 'no'} |")

    for r in results:
        b = r["benchmark"]
        if r.get("skipped"):
            lines.append(f"| {b} | skipped: {r['skipped']} | | |")
        elif b in ("mlp_step", "cnn_step"):
            row(f"{b}: jaxnets / hand-written JAX (steps/s)", r["ratio_vs_hand_jax"], 0.95,
                spread=r.get("ratio_vs_hand_jax_spread"))
            if "ratio_vs_torch_eager" in r:
                row(f"{b}: jaxnets / PyTorch eager (steps/s)", r["ratio_vs_torch_eager"],
                    r.get("goal_ratio_vs_torch_eager", 1.0), spread=r.get("ratio_vs_torch_eager_spread"))
            if b == "mlp_step":
                lines.append(f"| mlp_step: fraction of measured matmul peak | {r['fraction_of_matmul_peak']:.3g} "
                             f"({r['achieved_gflops']:.0f} of {r['matmul_peak_gflops']:.0f} GFLOP/s) | | |")
        elif b == "tiny_fused":
            row("tiny_fused: scan-fused fit / Python-loop fit (speed-up)", r["fused_speedup_vs_python_loop"], 15.0)
            row("tiny_fused: scan-fused fit / hand-written scan (slowdown)", r["fused_slowdown_vs_hand_scan"], 1.5,
                higher_is_better=False)
        elif b == "population":
            row("population: 16 sequential fits / one vmapped population (wall time)", r["speedup"], 5.0)
        elif b == "data_parallel":
            for run in r["runs"]:
                rel = run["relative_to_one_device"]
                lines.append(f"| data_parallel, {run['devices']} devices: steps/s relative to one device"
                             f"{' (median of %d processes)' % r['processes'] if 'processes' in r else ''} | "
                             + ", ".join(f"{k} {v:.2f}" for k, v in rel.items() if not k.endswith("_none"))
                             + " | no worse than hand-written | "
                             + ("yes" if rel["jaxnets_pmap"] >= 0.95 * rel["hand_pmap"]
                                and rel["jaxnets_sharded"] >= 0.95 * rel["hand_sharded"] else "no") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats in 1 process: a smoke run, noisy numbers")
    parser.add_argument("--processes", type=int, default=PROCESSES,
                        help=f"fresh processes for the CNN and data-parallel benchmarks (default {PROCESSES})")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/execution.md (between its markers)")
    parser.add_argument("--worker-data-parallel", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-cnn", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's mmap/trim thresholds alone (by default every process of the "
                             "benchmark, PyTorch's included, keeps freed memory: jaxnets.host_memory)")
    parser.add_argument("--worker-torch", choices=("mlp", "cnn"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.default_malloc:
        os.environ[DEFAULT_MALLOC_ENV] = "1"  # the worker processes inherit the choice
    retained = False if os.environ.get(DEFAULT_MALLOC_ENV) else retain_freed_memory()
    processes = 1 if args.quick else args.processes
    if repeats < 1 or processes < 1:
        parser.error(f"--repeats, --processes: got {repeats}, {processes}; allowed: integers >= 1")
    if args.worker_torch:
        torch_worker(args.worker_torch, args.steps)
        return 0
    if args.worker_data_parallel:
        print(json.dumps(data_parallel_worker(repeats)))
        return 0
    if args.worker_cnn:
        print(json.dumps(cnn_step_worker(repeats)))
        return 0
    results = []
    for name in args.only or list(BENCHMARKS):
        tick = time.perf_counter()
        result = BENCHMARKS[name](repeats, processes) if name in MULTI_PROCESS else BENCHMARKS[name](repeats)
        result["seconds"] = time.perf_counter() - tick
        print(json.dumps(result), flush=True)
        results.append(result)
    out = Path(args.out)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "repeats": repeats,
            "processes": processes, "host_memory_retained": retained,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(out / "results.json", {"meta": meta, "results": results})
    atomic_write_text(out / "table.md", table(results))
    print(table(results))
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")
    if args.update_docs:
        update_docs(out)
    return 0


def update_docs(out: Path) -> None:
    """Write a run's table (and its machine) into docs/execution.md between the benchmark markers."""
    from jaxnets.io import replace_marked_block

    saved = json.loads((out / "results.json").read_text())
    meta = saved["meta"]
    head = (f"Generated by `python -m experiments.benchmarks --update-docs` on {meta['date']}: backend "
            f"{meta['backend']} ({meta['device']}), {meta['cpu_count']} CPU cores, JAX {meta['jax']}, "
            f"medians of {meta['repeats']} repeats"
            + (f"; the CNN and data-parallel rows in {meta['processes']} fresh processes each"
               if meta.get("processes", 1) > 1 else "")
            + ("; every process keeps freed host memory (`jaxnets.host_memory`)"
               if meta.get("host_memory_retained") else "") + ".\n\n")
    replace_marked_block(ROOT / "docs" / "execution.md", "benchmarks", head + table(saved["results"]))
    print("updated docs/execution.md")


if __name__ == "__main__":
    sys.exit(main())
