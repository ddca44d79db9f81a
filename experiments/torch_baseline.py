"""The PyTorch baselines of the benchmarks: a plain PyTorch script (it imports torch and NumPy only).

    python -m experiments.torch_baseline mlp            # time the step on its own, print one JSON line
    python -m experiments.torch_baseline cnn --serve    # a worker: build, say "ready", run on request

Standalone, it times ``--steps`` steps per repeat, ``--repeats`` times after two warm-up
repeats, and prints the median steps/s with its thread count. As a worker
(``experiments/benchmarks.py`` starts it), it runs ``--steps`` steps for each ``run`` line it
reads on stdin and answers ``done``, so the JAX side can time it in the same round-robin as its
own candidates while itself waiting idle. Both modes build the same network from the same
NumPy data: the benchmark checks that the worker's rate matches the standalone rate.

It never imports JAX, so no second runtime's thread pool exists in its process. The host
allocator's settings come from the environment (glibc's ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_``, which the benchmark sets to what ``jaxnets.host_memory`` sets
in its own processes).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np

#: The benchmarks' shapes: (inputs, labels) of each model's fixed batch, from the same seed.
MLP_WIDTHS = (784, 1024, 1024, 10)


def batch(model: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed batch the benchmark's JAX candidates also train on (same generator and seed)."""
    rng = np.random.default_rng(0)
    if model == "mlp":
        x = rng.normal(size=(512, 784)).astype(np.float32)
        y = rng.integers(0, 10, size=512).astype(np.int32)
    else:
        x = rng.normal(size=(256, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, size=256).astype(np.int32)
    return x, y


def mlp_runner(x: np.ndarray, y: np.ndarray, steps: int, lr: float = 0.01, mu: float = 0.9) -> Callable[[], None]:
    """MLP 784-1024-1024-10 with ReLU, SGD with momentum ``mu`` (dampening 0)."""
    import torch

    torch.manual_seed(0)
    layers: list = []
    for i, (a, b) in enumerate(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(MLP_WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    return training_loop(net, torch.optim.SGD(net.parameters(), lr=lr, momentum=mu), x, y, steps)


def cnn_runner(x: np.ndarray, y: np.ndarray, steps: int) -> Callable[[], None]:
    """conv3x3-32, ReLU, maxpool 2, conv3x3-64, ReLU, maxpool 2, dense 256, ReLU, dense 10; Adam 1e-3."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    # NCHW, PyTorch's native layout for Conv2d on CPU
    return training_loop(net, torch.optim.Adam(net.parameters(), lr=1e-3), x.transpose(0, 3, 1, 2), y, steps)


def training_loop(net, opt, x: np.ndarray, y: np.ndarray, steps: int) -> Callable[[], None]:
    """``steps`` eager training steps of ``net`` on one fixed batch (cross-entropy)."""
    import torch

    tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def run() -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(tx), ty).backward()
            opt.step()

    return run


RUNNERS = {"mlp": mlp_runner, "cnn": cnn_runner}


def minor_faults() -> int:
    """This process's minor page faults so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def standalone(model: str, steps: int, repeats: int) -> dict:
    """Median steps/s over ``repeats`` timed runs of ``steps`` steps, after two warm-up runs."""
    import torch

    run = RUNNERS[model](*batch(model), steps)
    for _ in range(2):
        run()
    samples, faults = [], minor_faults()
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        samples.append(time.perf_counter() - tick)
    faults = (minor_faults() - faults) / (repeats * steps)
    return {"model": model, "steps_per_s": steps / statistics.median(samples),
            "per_repeat_steps_per_s": [steps / s for s in samples], "minor_page_faults_per_step": faults,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def answer_requests(run: Callable[[], None], info: dict) -> None:
    """A benchmark worker's side of the pipe: print ``info``, then answer each stdin line.

    "run" runs ``run()`` and answers "done"; "stats" answers this process's minor page
    faults per run so far. ``experiments.benchmarks`` serves its JAX candidates with it too.
    """
    print(json.dumps(info), flush=True)
    runs, faults = 0, 0
    for line in sys.stdin:
        if line.strip() == "run":
            before = minor_faults()
            run()
            runs, faults = runs + 1, faults + minor_faults() - before
            print("done", flush=True)
        elif line.strip() == "stats":
            print(json.dumps({"minor_page_faults_per_run": faults / max(runs, 1)}), flush=True)


def serve(model: str, steps: int) -> None:
    """Build the model, then answer requests (:func:`answer_requests`) with ``steps`` steps per run."""
    import torch

    answer_requests(RUNNERS[model](*batch(model), steps),
                    {"torch": torch.__version__, "threads": torch.get_num_threads()})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(RUNNERS))
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run (default 20)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (default 7)")
    parser.add_argument("--serve", action="store_true", help="run as the benchmark's worker")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps, --repeats: got {args.steps}, {args.repeats}; allowed: integers >= 1")
    if args.serve:
        serve(args.model, args.steps)
    else:
        print(json.dumps(standalone(args.model, args.steps, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
