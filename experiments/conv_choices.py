"""Which algorithm and chunk size for each convolution? The benchmark CNN's step under each setting, timed.

    python -m experiments.conv_choices                          # every setting, 3 processes each (about 3 minutes)
    python -m experiments.conv_choices --settings library jax-kernels --update-docs
    python -m experiments.conv_choices --docs-from results/conv_choices   # re-render a saved run into the docs

On the CPU the "patches" path runs its C++ kernels where they apply (``jaxnets.kernels.native``;
the ``library`` setting); the ``jax-*`` settings turn them off and time the JAX kernels, which run
where the library could not be built, under three knobs, all read when a step is traced:
``jaxnets.kernels.conv.PATCH_CHUNK_BYTES`` (examples per chunk of the patch products),
``jaxnets.kernels.winograd.WINOGRAD_CHUNK_BYTES`` (examples per chunk of Winograd's
transforms) and ``winograd.WINOGRAD_MIN_CHANNELS`` (fewest input channels for which a 3×3
convolution + 2×2 max pooling runs by Winograd's algorithm). Each setting in ``SETTINGS``
changes some of them. Each runs the benchmark's CNN step
(``experiments.benchmarks.cnn_candidate("jaxnets_auto")``, freed memory retained) in
``--processes`` fresh processes; every process, and PyTorch's step when it is installed,
takes turns in one round-robin (``jaxnets.profiling.round_robin_medians``, one untimed run
at the start of each turn), so the machine's drift hits all of them, and one process's luck
(a process can run slower than the next for its whole life) shows as the spread between
processes of the same setting. After each round the machine's cross-core state is measured;
only rounds in the normal state count (the slow state is the machine's, docs/architectures/cnn.md).

Writes ``results/conv_choices/results.json`` and ``table.md``; ``--update-docs`` puts the
table into docs/architectures/cnn.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS_PAGE = ROOT / "docs" / "architectures" / "cnn.md"
#: Setting name -> the knobs it changes (MiB for chunk targets; "winograd_from": input channels;
#: "cpp": 0 turns the C++ kernels off, so the JAX kernels and their constants run).
SETTINGS: dict[str, dict[str, float]] = {
    "library": {},
    "jax-kernels": {"cpp": 0},
    "jax-no-winograd": {"cpp": 0, "winograd_from": 10**9},
    "jax-winograd-first-layer-too": {"cpp": 0, "winograd_from": 1},
    "jax-winograd-5mib": {"cpp": 0, "winograd_mib": 5},
    "jax-winograd-20mib": {"cpp": 0, "winograd_mib": 20},
    "jax-patch-2mib": {"cpp": 0, "patch_mib": 2},
    "jax-patch-8mib": {"cpp": 0, "patch_mib": 8},
}
#: The benchmark CNN's convolutions: (input shape, kernel shape).
LAYERS = (((256, 28, 28, 1), (3, 3, 1, 32)), ((256, 14, 14, 32), (3, 3, 32, 64)))


def apply_setting(name: str) -> None:
    """Set the kernels' knobs for setting ``name`` in this process (before a step is traced)."""
    from jaxnets.kernels import conv, native, winograd

    knobs = SETTINGS[name]
    if knobs.get("cpp", 1) == 0:
        native.AVAILABLE = False
    if "patch_mib" in knobs:
        conv.PATCH_CHUNK_BYTES = int(knobs["patch_mib"] * 2**20)
    if "winograd_mib" in knobs:
        winograd.WINOGRAD_CHUNK_BYTES = int(knobs["winograd_mib"] * 2**20)
    if "winograd_from" in knobs:
        winograd.WINOGRAD_MIN_CHANNELS = int(knobs["winograd_from"])


def serve(name: str) -> None:
    """Build the benchmark CNN under setting ``name``, then answer the round-robin's requests."""
    from experiments.benchmarks import cnn_candidate
    from experiments.torch_baseline import answer_requests
    from jaxnets.host_memory import retain_freed_memory

    retain_freed_memory()
    apply_setting(name)
    run, info = cnn_candidate("jaxnets_auto")
    answer_requests(run, {**info, "layers": layer_choices()})


def layer_choices() -> list[str]:
    """How each of the benchmark CNN's convolutions (fused with its pooling) runs: algorithm and examples per chunk."""
    import jax.numpy as jnp

    from jaxnets.kernels import conv, native, winograd

    out = []
    for x_shape, k_shape in LAYERS:
        x = jnp.zeros(x_shape)
        if winograd.applies(k_shape, (1, 1), (2, 2)):
            out.append("C++ Winograd" if native.winograd_applies(x_shape, k_shape[-1], x.dtype)
                       else f"Winograd {winograd.examples_per_chunk(x, k_shape[-1], 'SAME')}")
        elif native.first_layer_applies(x_shape, k_shape, x.dtype, (1, 1), (2, 2)):
            out.append("C++ conv + pool")
        else:
            out.append(f"patches {conv.examples_per_chunk(x, jnp.zeros(k_shape), (1, 1), 'SAME', with_output=True)}")
    return out


def measure(settings: list[str], processes: int, rounds: int) -> dict:
    """Steps/s of every process in every round, each setting's layer choices, and each round's cross-core ratio."""
    from experiments.benchmarks import CNN_STEPS, Served, torch_available, torch_served
    from jaxnets.profiling import cross_core_cost, round_robin_medians

    served: dict[str, Served] = {}
    samples: dict[str, list[float]] = {}
    cross: list[float] = []
    try:
        for i in range(processes):
            for name in settings:  # alternate settings, so none gets all the late (or early) processes
                served[f"{name}/{i}"] = Served([sys.executable, "-m", "experiments.conv_choices", "--serve", name])
        if torch_available():
            served["pytorch"] = torch_served("cnn", CNN_STEPS, retained=True)
        for _ in range(rounds):
            # One round per call, to keep each round's rates; the warm-up (compilation) only once.
            times = round_robin_medians(served, repeats=1, warmup=0 if cross else 1, warm_each_turn=True)
            for name, seconds in times.items():
                samples.setdefault(name, []).append(CNN_STEPS / seconds)
            cross.append(cross_core_cost().ratio)
    finally:
        for worker in served.values():
            worker.close()
    layers = {name: served[f"{name}/0"].info["layers"] for name in settings}
    return {"steps_per_s": samples, "cross_core_ratio": cross, "layers": layers}


def table(result: dict) -> str:
    """Per setting: each layer's algorithm and chunk, each process's median steps/s in the normal rounds, their median."""
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    normal = [i for i, r in enumerate(result["cross_core_ratio"]) if r < SLOW_CROSS_CORE_RATIO]
    if not normal:
        return "No round in the normal cross-core state: nothing to compare.\n"

    def rate(name: str) -> float:
        return statistics.median(result["steps_per_s"][name][i] for i in normal)

    torch_rate = rate("pytorch") if "pytorch" in result["steps_per_s"] else None
    lines = ["| setting | conv 1, conv 2: algorithm and examples per chunk | steps/s of each process | median | "
             "median / PyTorch |", "|---|---|---|---|---|"]
    for name, layers in result["layers"].items():
        rates = [rate(key) for key in result["steps_per_s"] if key.split("/")[0] == name]
        middle = statistics.median(rates)
        lines.append(f"| {name} | {'; '.join(layers)} | " + ", ".join(f"{r:.1f}" for r in rates)
                     + f" | {middle:.1f} | " + (f"{middle / torch_rate:.2f}" if torch_rate else "n/a") + " |")
    lines += ["", f"Rounds in the normal cross-core state: {len(normal)} of {len(result['cross_core_ratio'])}"
              + (f"; PyTorch's step in them: {torch_rate:.1f} steps/s." if torch_rate else ".")]
    return "\n".join(lines) + "\n"


def describe_settings(names: list[str]) -> str:
    """One line per setting: what it changes from the library's constants."""
    from jaxnets.kernels import conv, winograd

    library = ("the library as installed: its C++ kernels where they apply (jaxnets.kernels.native), and "
               f"patch chunks of {conv.PATCH_CHUNK_BYTES / 2**20:g} MiB, Winograd chunks of "
               f"{winograd.WINOGRAD_CHUNK_BYTES / 2**20:g} MiB, Winograd from {winograd.WINOGRAD_MIN_CHANNELS} input "
               "channels in JAX")
    words = {"cpp": "the JAX kernels only", "patch_mib": "patch chunks of {:g} MiB",
             "winograd_mib": "Winograd chunks of {:g} MiB", "winograd_from": "Winograd from {:g} input channels"}
    lines = []
    for name in names:
        knobs = SETTINGS[name]
        change = library if not knobs else ", ".join(
            "no Winograd" if key == "winograd_from" and value >= 10**9 else words[key].format(value)
            for key, value in knobs.items())
        lines.append(f"- `{name}`: {change}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS),
                        help=f"of {', '.join(SETTINGS)} (default: all)")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per setting (default 3)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the round-robin (default 8)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "conv_choices")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/architectures/cnn.md")
    parser.add_argument("--docs-from", type=Path, default=None, metavar="DIR",
                        help="write the docs from DIR/results.json (an earlier run) without measuring")
    parser.add_argument("--serve", choices=list(SETTINGS), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown or args.processes < 1 or args.rounds < 1:
        parser.error(f"--settings, --processes, --rounds: got {args.settings}, {args.processes}, {args.rounds}; "
                     f"allowed: settings of {', '.join(SETTINGS)} and integers >= 1")
    from jaxnets.io import atomic_write_json, atomic_write_text

    if args.docs_from is not None:
        saved = args.docs_from / "results.json"
        try:
            result = json.loads(saved.read_text())
            update_docs(result)
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"--docs-from: got {str(args.docs_from)!r} ({type(error).__name__}: {error}); "
                         "allowed: a folder with the results.json of an earlier run")
        return 0
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    measured = measure(list(dict.fromkeys(args.settings)), args.processes, args.rounds)
    result = {"date": started, "cpu_count": os.cpu_count(), "processes": args.processes, "rounds": args.rounds,
              **measured}
    atomic_write_json(args.out / "results.json", result)
    atomic_write_text(args.out / "table.md", describe_settings(list(result["layers"])) + "\n" + table(result))
    print(json.dumps(result["layers"]))
    print(describe_settings(list(result["layers"])) + "\n" + table(result))
    if args.update_docs:
        update_docs(result)
    return 0


def update_docs(result: dict) -> None:
    """Put a run's settings and table into docs/architectures/cnn.md (the ``conv-choices`` block)."""
    from jaxnets.io import replace_marked_block

    head = (f"Generated by `python -m experiments.conv_choices --update-docs` on {result['date']}, "
            f"{result['cpu_count']} CPU cores, {result['processes']} fresh processes per setting, {result['rounds']} "
            "rounds of 5 steps, freed memory retained:\n\n")
    replace_marked_block(DOCS_PAGE, "conv-choices", head + describe_settings(list(result["layers"])) + "\n"
                         + table(result))
    print(f"updated {DOCS_PAGE}")


if __name__ == "__main__":
    sys.exit(main())
