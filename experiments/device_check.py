"""Device check: what this machine is, whether every parallel mode agrees, and how fast jaxnets runs on it.

    python -m experiments.device_check                 # the default for this backend
    python -m experiments.device_check --size large    # Transformer LM d_model 1024, 12 layers, sequence 1024
    python -m experiments.device_check --tiny          # seconds: what the tests run
    python -m experiments.device_check --update-docs   # also writes the table into docs/accelerators.md

On whatever backend JAX finds, it
1. lists the devices, the backend and the jax/jaxlib versions;
2. checks that one device, ``pmap`` and sharded ``jit`` over all local devices give
   equal parameters (within 1e-5, the tests' tolerance): an MLP with dropout (one
   device against sharded jit: pmap draws a dropout mask per device by design, so
   pmap is checked on the same MLP without dropout) and a CNN with batch norm
   (parameters and batch statistics, both modes);
3. measures the matmul peak (float32 and bfloat16) and, for an MLP, a CNN, a
   Transformer LM and a 64-member population, the training step rate, the FLOPs of a
   step (XLA's cost analysis) and the achieved fraction of the measured peak (MFU);
4. runs the quick optimizer comparison's population (MNIST-1D, MLP (100, 100), batch
   100, 7 learning rates x 2 selection seeds of SGD) once and reports runs per second;
5. writes ``results/device_check/<backend>.json`` and ``<backend>.md`` atomically, and
   exits with status 1 if an equality check failed.

``--size`` picks the workload: ``small`` (the CPU default, under 3 minutes on 2 cores),
``large`` (the GPU/TPU default: sizes that fill an accelerator) or ``tiny``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

import jaxnets as jn
from jaxnets.io import atomic_write_json, atomic_write_text, replace_marked_block
from jaxnets.objective import objective_for
from jaxnets.population import fit_population
from jaxnets.profiling import compiled_flops, matmul_peak_gflops
from jaxnets.steps import make_train_step

ROOT = Path(__file__).resolve().parents[1]
DOCS_PAGE = ROOT / "docs" / "accelerators.md"
#: Parameters of one device and of pmap / sharded jit must agree this closely (as in tests/test_parallel.py).
TOLERANCE = 1e-5
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Size:
    """One workload setting of the check."""

    peak_size: int             # n of the n x n matmul whose rate is the peak
    mlp: tuple[int, ...]       # hidden widths
    mlp_rows: int              # features 64, this many training rows
    mlp_batch: int
    cnn_channels: tuple[int, ...]
    cnn_image: int             # square images, 3 channels
    cnn_rows: int
    cnn_batch: int
    lm: dict                   # TransformerLM options
    lm_seq: int
    lm_rows: int
    lm_batch: int
    members: int               # population members
    epochs: int                # timed epochs are all but the first (which compiles)
    comparison_epochs: int     # epochs of the comparison's population (its budget is 172)
    comparison_points: int = 7  # learning rates of its grid (x 2 selection seeds)
    speed_models: tuple[str, ...] = ("mlp", "cnn", "transformer_lm")
    population_dtypes: tuple[str, ...] = DTYPES


SIZES = {
    "tiny": Size(128, (32,), 256, 64, (4, 8), 8, 64, 16,
                 dict(d_model=32, num_heads=2, num_layers=1, mlp_dim=64, max_len=16), 16, 32, 8, 8, 2, 1,
                 comparison_points=1, speed_models=("mlp",), population_dtypes=("float32",)),
    "small": Size(1024, (512, 512), 4096, 256, (32, 64), 16, 512, 64,
                  dict(d_model=128, num_heads=4, num_layers=2, mlp_dim=512, max_len=64), 64, 256, 32, 64, 3, 4),
    "large": Size(8192, (4096, 4096), 65536, 4096, (64, 128), 32, 8192, 256,
                  dict(d_model=1024, num_heads=16, num_layers=12, mlp_dim=4096, max_len=1024), 1024, 512, 16,
                  64, 3, 172),
}
VOCAB = 256


# ----------------------------------------------------------------------------- 1. the machine
def environment() -> dict[str, Any]:
    """Backend, devices and versions."""
    devices = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "devices": [str(d) for d in devices], "device_count": len(devices),
            "local_device_count": jax.local_device_count(), "process_count": jax.process_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__}


# ----------------------------------------------------------------------------- 2. equality
def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _classes(rng, shape, rows: int, classes: int = 4) -> jn.data.Dataset:
    x = rng.normal(size=(rows, *shape)).astype(np.float32)
    return jn.data.from_arrays(x, rng.integers(0, classes, rows).astype(np.int32), num_classes=classes)


def equality_checks(size: Size) -> list[dict[str, Any]]:
    """One device against pmap and sharded jit, on all local devices: parameter and model-state gaps."""
    rng = np.random.default_rng(0)
    devices = jax.local_device_count()
    mlp_data = _classes(rng, (16,), 32 * devices)
    image = max(8, size.cnn_image // 2)
    cnn_data = _classes(rng, (image, image, 3), 16 * devices)
    cases = [
        ("mlp, dropout 0.3", jn.models.get_model("mlp", output_dim=4, hidden=(32,), dropout_rate=0.3), mlp_data,
         ("sharded",)),
        ("mlp, no dropout", jn.models.get_model("mlp", output_dim=4, hidden=(32,)), mlp_data, ("pmap",)),
        ("cnn, batch norm", jn.models.get_model("cnn", output_dim=4, channels=(4, 8), dense=(16,), batch_norm=True),
         cnn_data, ("pmap", "sharded")),
    ]
    checks = []
    for name, model, data, modes in cases:
        batch = 4 * devices
        runs = {mode: jn.fit(model, data, jn.optim.create("adam", 1e-2),
                             jn.TrainConfig(epochs=2, batch_size=batch, parallel=mode, eval_train=False))
                for mode in ("none", *modes)}
        base = runs["none"].state
        for mode in modes:
            state = runs[mode].state
            gap = max(_max_diff(base.params, state.params),
                      _max_diff(base.model_state, state.model_state) if base.model_state else 0.0)
            checks.append({"model": name, "mode": mode, "devices": devices, "max_abs_diff": gap,
                           "tolerance": TOLERANCE, "ok": bool(gap <= TOLERANCE)})
    return checks


# ----------------------------------------------------------------------------- 3. speed
def timed_fit(model, data, batch: int, epochs: int) -> dict[str, float]:
    """Step rate (the epochs after the first, which compiles) and FLOPs of one step."""
    config = jn.TrainConfig(epochs=epochs, batch_size=batch, eval_train=False, shuffle=False)
    result = jn.fit(model, data, jn.optim.create("adam", 1e-3), config)
    return {"steps_per_s": result.steps_per_s, "flops_per_step": result.flops_per_step,
            "gflops_per_s": result.gflops_per_s}


def _models(size: Size, dtype: str) -> dict[str, tuple[Any, jn.data.Dataset, int]]:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, size=(size.lm_rows, size.lm_seq + 1)).astype(np.int32)
    lm_data = jn.data.from_arrays(tokens[:, :-1], tokens[:, 1:], num_classes=VOCAB)
    image = (size.cnn_image, size.cnn_image, 3)
    return {
        "mlp": (jn.models.get_model("mlp", output_dim=10, hidden=size.mlp, dtype=dtype),
                _classes(rng, (64,), size.mlp_rows, 10), size.mlp_batch),
        "cnn": (jn.models.get_model("cnn", output_dim=10, channels=size.cnn_channels, dense=(128,), dtype=dtype),
                _classes(rng, image, size.cnn_rows, 10), size.cnn_batch),
        "transformer_lm": (jn.models.get_model("transformer_lm", output_dim=VOCAB, dtype=dtype, **size.lm),
                           lm_data, size.lm_batch),
    }


def population_speed(size: Size, dtype: str) -> dict[str, float]:
    """A population of ``size.members`` MLPs (hidden (100, 100), batch 100) over all local devices."""
    rng = np.random.default_rng(2)
    data = _classes(rng, (40,), 1000, 10)
    model = jn.models.get_model("mlp", output_dim=10, hidden=(100, 100), dtype=dtype)
    stamps: list[float] = []
    config = jn.TrainConfig(epochs=size.epochs, batch_size=100, eval_train=False)
    result = fit_population(model, data, jn.optim.create("sgd", 0.1), config, seeds=list(range(size.members)),
                            on_epoch_end=lambda entry: stamps.append(time.perf_counter()))
    seconds = float(np.median(np.diff(stamps))) if len(stamps) > 1 else result.train_time_s
    steps_per_epoch = -(-data.num_train // 100)
    state = jn.create_state(model, jn.optim.create("sgd", 0.1), data.x_train[:1])
    batch = {"x": data.x_train[:100], "y": data.y_train[:100], "mask": np.ones(100, np.float32)}
    flops = size.members * compiled_flops(make_train_step(objective_for("multiclass")), state, batch)
    steps_per_s = steps_per_epoch / seconds
    return {"steps_per_s": steps_per_s, "flops_per_step": flops, "gflops_per_s": flops * steps_per_s / 1e9,
            "members": size.members, "devices": result.num_devices}


def speed_rows(size: Size, peaks: dict[str, float]) -> list[dict[str, Any]]:
    """Every model in every dtype: step rate, FLOPs per step, achieved GFLOP/s and MFU."""
    rows = []
    for dtype in DTYPES:
        for name, (model, data, batch) in _models(size, dtype).items():
            if name not in size.speed_models:
                continue
            rows.append({"model": name, "dtype": dtype, "batch": batch, **timed_fit(model, data, batch, size.epochs)})
        if dtype in size.population_dtypes:
            rows.append({"model": f"population x{size.members}", "dtype": dtype, "batch": 100,
                         **population_speed(size, dtype)})
    for row in rows:
        row["mfu"] = row["gflops_per_s"] / peaks[row["dtype"]]
    return rows


# ----------------------------------------------------------------------------- 4. the comparison's population
def comparison_population(epochs: int, points: int = 7) -> dict[str, Any]:
    """The quick optimizer comparison's population (one grid round of SGD: ``points`` learning
    rates x 2 selection seeds), once: runs per second."""
    from jaxnets import compare

    data = jn.data.load("mnist1d", validation=500 / 4000)
    model = jn.models.get_model("mlp", output_dim=data.output_dim, hidden=(100, 100))
    grid = compare.lr_grid("sgd", points=points)
    seeds, rates = [s for _ in grid for s in (0, 1)], [lr for lr in grid for _ in (0, 1)]
    config = jn.TrainConfig(epochs=epochs, batch_size=100, eval_every=4, nonfinite="ignore")
    started = time.perf_counter()
    result = fit_population(model, data, jn.optim.create("sgd", grid[0]), config, seeds=seeds,
                            hyperparams={"learning_rate": rates})
    seconds = time.perf_counter() - started
    return {"members": len(seeds), "epochs": epochs, "devices": result.num_devices, "wall_time_s": seconds,
            "runs_per_s": len(seeds) / seconds, "member_epochs_per_s": len(seeds) * epochs / seconds}


# ----------------------------------------------------------------------------- 5. report
def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    env = results["environment"]
    lines = [f"Backend `{env['backend']}` ({env['device_kind']}), {env['device_count']} device(s), "
             f"jax {env['jax']}, jaxlib {env['jaxlib']}; size `{results['size']}`; "
             f"{results['wall_time_s']:.0f} s in all.", "",
             "| equality check | mode | devices | max abs diff | tolerance | ok |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['model']} | {c['mode']} | {c['devices']} | {c['max_abs_diff']:.2e} | {c['tolerance']:g} | "
              f"{'yes' if c['ok'] else 'NO'} |" for c in results["equality"]]
    peaks = results["peak_gflops"]
    lines += ["", f"Measured matmul peak: float32 {peaks['float32']:.1f} GFLOP/s, bfloat16 {peaks['bfloat16']:.1f} "
              "GFLOP/s.", "", "| model | dtype | batch | steps/s | GFLOP per step | GFLOP/s | MFU |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['steps_per_s']:.3g} | "
              f"{r['flops_per_step'] / 1e9:.3g} | {r['gflops_per_s']:.3g} | {r['mfu']:.1%} |"
              for r in results["speed"]]
    comp = results["comparison_population"]
    lines += ["", f"Quick optimizer comparison's population ({comp['members']} members, {comp['epochs']} "
              f"epochs, {comp['devices']} device(s)): {comp['wall_time_s']:.1f} s, {comp['runs_per_s']:.3g} runs/s "
              f"({comp['member_epochs_per_s']:.3g} member-epochs/s)."]
    return "\n".join(lines)


def run(size_name: str, out: Path) -> dict[str, Any]:
    """Every section of the check; writes ``out/<backend>.json`` and ``out/<backend>.md``."""
    started = time.perf_counter()
    size = SIZES[size_name]
    results: dict[str, Any] = {"size": size_name, "environment": environment(), "section_s": {}}

    def section(name: str, compute: Callable[[], Any]) -> None:
        tick = time.perf_counter()
        results[name] = compute()
        results["section_s"][name] = time.perf_counter() - tick

    section("equality", lambda: equality_checks(size))
    section("peak_gflops", lambda: {dtype: matmul_peak_gflops(size.peak_size, getattr(jnp, dtype), repeats=5)
                                    for dtype in DTYPES})
    section("speed", lambda: speed_rows(size, results["peak_gflops"]))
    section("comparison_population", lambda: comparison_population(size.comparison_epochs, size.comparison_points))
    results["ok"] = all(check["ok"] for check in results["equality"])
    results["wall_time_s"] = time.perf_counter() - started
    backend = results["environment"]["backend"]
    atomic_write_json(Path(out) / f"{backend}.json", results)
    atomic_write_text(Path(out) / f"{backend}.md", markdown(results) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line; returns 0 if every equality check passed, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m experiments.device_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="workload (default: small on CPU, large on GPU/TPU)")
    parser.add_argument("--tiny", action="store_true", help="same as --size tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "device_check")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/accelerators.md (block device_check_<backend>)")
    args = parser.parse_args(argv)
    size = "tiny" if args.tiny else args.size or ("small" if jax.default_backend() == "cpu" else "large")
    results = run(size, args.out)
    text = markdown(results)
    print(text)
    backend = results["environment"]["backend"]
    if args.update_docs:
        replace_marked_block(DOCS_PAGE, f"device_check_{backend}",
                             f"Generated by `python -m experiments.device_check --size {size} --update-docs` "
                             f"on {time.strftime('%Y-%m-%d')}:\n\n{text}")
    failed = [f"{c['model']} ({c['mode']})" for c in results["equality"] if not c["ok"]]
    if failed:
        print(f"equality check failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
