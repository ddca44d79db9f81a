"""How large should the patch path's chunks be? The benchmark CNN's step with each target size, in processes of its own.

    python -m experiments.patch_chunks                        # 3, 4, 6, 8 and 10 MiB, 3 processes each
    python -m experiments.patch_chunks --mib 4 6 --update-docs

``jaxnets.kernels.conv.PATCH_CHUNK_BYTES`` sets how many examples each chunk of the patch
path holds (``examples_per_chunk``): small chunks stay in cache, large ones give the matrix
products more rows. Each target size runs the benchmark's CNN step
(``experiments.benchmarks.cnn_candidate("jaxnets_auto")``, freed memory retained) in
``--processes`` fresh processes; every process, and PyTorch's step when it is installed,
takes turns in one round-robin (``jaxnets.profiling.round_robin_medians``, one untimed run
at the start of each turn), so the machine's drift hits all of them, and one process's luck
(a process can run slower than the next for its whole life) shows as the spread between
processes of the same size. After each round the machine's cross-core state is measured;
only rounds in the normal state count (the slow state is the machine's, docs/architectures/cnn.md).

Writes ``results/patch_chunks/results.json`` and ``table.md``; ``--update-docs`` puts the
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
DEFAULT_MIB = (3.0, 4.0, 6.0, 8.0, 10.0)
DOCS_PAGE = ROOT / "docs" / "architectures" / "cnn.md"


def serve(mib: float) -> None:
    """Build the benchmark CNN with ``mib`` MiB chunks, then answer the round-robin's requests."""
    from experiments.benchmarks import cnn_candidate
    from experiments.torch_baseline import answer_requests
    from jaxnets.host_memory import retain_freed_memory
    from jaxnets.kernels import conv

    retain_freed_memory()
    conv.PATCH_CHUNK_BYTES = int(mib * 2**20)  # read when the step is traced, inside cnn_candidate
    run, info = cnn_candidate("jaxnets_auto")
    answer_requests(run, {**info, "chunks": layer_chunks()})


def layer_chunks() -> list[int]:
    """Examples per chunk of the benchmark CNN's two convolutions (fused with their pooling)."""
    import jax.numpy as jnp

    from jaxnets.kernels.conv import examples_per_chunk

    shapes = [((256, 28, 28, 1), (3, 3, 1, 32)), ((256, 14, 14, 32), (3, 3, 32, 64))]
    return [examples_per_chunk(jnp.zeros(x), jnp.zeros(k), (1, 1), "SAME", with_output=True) for x, k in shapes]


def measure(sizes: list[float], processes: int, rounds: int) -> dict:
    """Steps/s of every process in every round, the chunk sizes, and each round's cross-core ratio."""
    from experiments.benchmarks import CNN_STEPS, Served, torch_available, torch_served
    from jaxnets.profiling import cross_core_cost, round_robin_medians

    served: dict[str, Served] = {}
    samples: dict[str, list[float]] = {}
    cross: list[float] = []
    try:
        for i in range(processes):
            for mib in sizes:  # alternate sizes, so no size gets all the late (or early) processes
                served[f"{mib:g}/{i}"] = Served([sys.executable, "-m", "experiments.patch_chunks", "--serve",
                                                 f"{mib:g}"])
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
    chunks = {f"{mib:g}": served[f"{mib:g}/0"].info["chunks"] for mib in sizes}
    return {"steps_per_s": samples, "cross_core_ratio": cross, "chunks": chunks}


def table(result: dict) -> str:
    """Per size: examples per chunk, each process's median steps/s over the normal rounds, their median."""
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    normal = [i for i, r in enumerate(result["cross_core_ratio"]) if r < SLOW_CROSS_CORE_RATIO]
    if not normal:
        return "No round in the normal cross-core state: nothing to compare.\n"

    def rate(name: str) -> float:
        return statistics.median(result["steps_per_s"][name][i] for i in normal)

    torch_rate = rate("pytorch") if "pytorch" in result["steps_per_s"] else None
    lines = ["| target chunk | examples per chunk (conv 1, conv 2) | steps/s of each process | median | "
             "median / PyTorch |", "|---|---|---|---|---|"]
    for mib, chunks in result["chunks"].items():
        rates = [rate(name) for name in result["steps_per_s"] if name.split("/")[0] == mib]
        middle = statistics.median(rates)
        lines.append(f"| {mib} MiB | {chunks[0]}, {chunks[1]} | " + ", ".join(f"{r:.1f}" for r in rates)
                     + f" | {middle:.1f} | " + (f"{middle / torch_rate:.2f}" if torch_rate else "n/a") + " |")
    lines += ["", f"Rounds in the normal cross-core state: {len(normal)} of {len(result['cross_core_ratio'])}"
              + (f"; PyTorch's step in them: {torch_rate:.1f} steps/s." if torch_rate else ".")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, nargs="+", default=list(DEFAULT_MIB), help="target chunk sizes")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per size (default 3)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the round-robin (default 8)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "patch_chunks")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/architectures/cnn.md")
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.processes < 1 or args.rounds < 1 or min(args.mib) <= 0:
        parser.error(f"--processes, --rounds, --mib: got {args.processes}, {args.rounds}, {args.mib}; "
                     "allowed: integers >= 1 and sizes > 0")
    from jaxnets.io import atomic_write_json, atomic_write_text, replace_marked_block
    from jaxnets.kernels.conv import PATCH_CHUNK_BYTES

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    result = measure(sorted(set(args.mib)), args.processes, args.rounds)
    text = table(result)
    atomic_write_json(args.out / "results.json", {"date": started, "cpu_count": os.cpu_count(), **result})
    atomic_write_text(args.out / "table.md", text)
    print(json.dumps(result["chunks"]))
    print(text)
    if args.update_docs:
        head = (f"Generated by `python -m experiments.patch_chunks --update-docs` on {started}, "
                f"{os.cpu_count()} CPU cores, {args.processes} fresh processes per size, {args.rounds} rounds of "
                f"5 steps, freed memory retained; the library's target is {PATCH_CHUNK_BYTES / 2**20:g} MiB:\n\n")
        replace_marked_block(DOCS_PAGE, "patch-chunks", head + text)
        print(f"updated {DOCS_PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
