"""Why does the CNN step sometimes run slow? Time it run by run in fresh processes, with the machine's cross-core state.

    python -m experiments.cnn_process_probe                  # 5 processes each of retained and default (about 3 minutes)
    python -m experiments.cnn_process_probe --processes 5 --update-docs

Each process builds the benchmark CNN (``experiments.benchmarks.cnn_candidate``,
``conv_impl="auto"``), warms it up, then times ``RUNS`` runs of 5 steps; after each run it
measures what it costs one CPU to take over a buffer the other CPU worked on last, against
reworking its own (``jaxnets.profiling.cross_core_cost``); at ``SLOW_CROSS_CORE_RATIO`` or
more the run counts as in the "slow cross-core" state. The table splits the runs by state. Variants (processes alternate between them):

- ``retained``: ``retain_freed_memory()`` as the benchmark and the CLI call it;
- ``default``: glibc's default allocator settings (what a script that never calls it gets);
- ``default_huge_pages``: ``default`` with glibc's ``glibc.malloc.hugetlb=1`` tunable (transparent
  huge pages for malloc's memory), to see what a script that never calls ``retain_freed_memory``
  gets from starting Python with that setting;
- ``no_aslr``: ``retained`` with address-space randomization off (``setarch -R``);
- ``huge_pages``: ``retained`` with glibc's ``glibc.malloc.hugetlb=1`` tunable;
- ``small_chunks``: ``retained`` with 1 MiB patch chunks instead of ``PATCH_CHUNK_BYTES``;
- ``one_arena``: ``retained`` with ``MALLOC_ARENA_MAX=1`` (one glibc arena for every thread);
- ``one_cpu``: ``retained`` with XLA's thread pool on one CPU (the process is kept to its first
  CPU while JAX starts and while it runs; the cross-core measurement still uses both), to see
  what the second CPU adds to jaxnets' step in each state;
- ``one_cpu_huge_pages``: ``one_cpu`` with glibc's ``glibc.malloc.hugetlb=1`` tunable, to see
  whether the slower of its two per-process speeds comes from address translation (TLB misses);
- ``pytorch``: PyTorch's step of the same CNN (``experiments.torch_baseline``) with freed
  memory retained, timed the same way, to see whether the slow state slows it too (JAX is
  imported for the cross-core measurement but never runs there). In the defaults when
  PyTorch is installed;
- ``pytorch_one_thread``: ``pytorch`` with one thread (``torch.set_num_threads(1)``), to see
  what PyTorch's second thread adds in each state, against what the second CPU adds to jaxnets
  (``one_cpu``).

``no_aslr``, ``huge_pages``, ``small_chunks`` and ``one_arena`` tested placement hypotheses for
the slow runs (virtual addresses, TLB misses, cache-sized chunks, per-thread arenas); none
removed them (docs/architectures/cnn.md).

Writes ``results/cnn_process_probe/results.json`` and ``table.md``; ``--update-docs`` puts the
table into docs/architectures/cnn.md; ``--publish DIR`` writes an earlier run's table there
(the state is the machine's to choose: a run that met the slow state shows both).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # only for the annotations: jaxnets (and JAX) load inside the measuring process
    from jaxnets.profiling import CrossCore

ROOT = Path(__file__).resolve().parents[1]
#: What each variant changes against ``retained`` (the module docstring says why); ``command`` builds it.
VARIANT_TRAITS: dict[str, tuple[str, ...]] = {
    "retained": (), "default": ("default_malloc",), "default_huge_pages": ("default_malloc", "huge_pages"),
    "no_aslr": ("no_aslr",), "huge_pages": ("huge_pages",), "small_chunks": ("small_chunks",),
    "one_arena": ("one_arena",), "one_cpu": ("one_cpu",), "one_cpu_huge_pages": ("one_cpu", "huge_pages"),
    "pytorch": ("pytorch",), "pytorch_one_thread": ("pytorch", "one_thread")}
VARIANTS = tuple(VARIANT_TRAITS)
_TRAIT_FLAGS = {"pytorch": ["--pytorch"], "default_malloc": ["--default-malloc"], "small_chunks": ["--small-chunks"],
                "one_cpu": ["--one-cpu"], "one_thread": ["--torch-threads", "1"]}
_TRAIT_ENV = {"huge_pages": ("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"), "one_arena": ("MALLOC_ARENA_MAX", "1")}
DEFAULT_VARIANTS = ("retained", "default", "pytorch")
RUNS = 12
SMALL_CHUNK_BYTES = 2**20
DOCS_PAGE = ROOT / "docs" / "architectures" / "cnn.md"


def keep_to_one_cpu() -> Callable[[], CrossCore]:
    """Start JAX's CPU client on this thread's first CPU (its thread pool is sized and placed from
    the affinity it starts with); returns the cross-core measurement, taken on both CPUs."""
    import jax

    from jaxnets.profiling import cross_core_cost, two_cpus

    both = os.sched_getaffinity(0)
    one = {two_cpus()[0]}  # the CPU the cross-core measurement starts on, too
    os.sched_setaffinity(0, one)  # 0: this thread; XLA's pool threads inherit it when created
    jax.devices()

    def measured_on_both() -> CrossCore:
        os.sched_setaffinity(0, both)
        try:
            return cross_core_cost()
        finally:
            os.sched_setaffinity(0, one)

    return measured_on_both


def set_torch_threads(threads: int | None) -> int:
    """Give PyTorch ``threads`` intra-op threads (None: its own default); returns the number it uses."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def measure(retained: bool, small_chunks: bool, pytorch: bool = False, one_cpu: bool = False,
            torch_threads: int | None = None) -> dict:
    """In this process: each of ``RUNS`` timed runs' steps/s and the cross-core ratio right after it."""
    on_one_cpu = keep_to_one_cpu() if one_cpu else None  # before anything can start JAX's client
    torch_threads = set_torch_threads(torch_threads) if pytorch else None
    from experiments.benchmarks import CNN_STEPS, cnn_candidate
    from experiments.torch_baseline import RUNNERS, batch
    from jaxnets.host_memory import retain_freed_memory
    from jaxnets.kernels import conv
    from jaxnets.profiling import cpu_snapshot, cross_core_cost, other_load

    if retained and not pytorch:  # PyTorch's process gets the same thresholds from its environment
        retain_freed_memory()
    if small_chunks:  # read when the step is traced
        conv.PATCH_CHUNK_BYTES = conv.PATCH_WHOLE_BATCH_BYTES = SMALL_CHUNK_BYTES
    cross_core = on_one_cpu or cross_core_cost
    run = RUNNERS["cnn"](*batch("cnn"), CNN_STEPS) if pytorch else cnn_candidate("jaxnets_auto")[0]
    for _ in range(3):
        run()
    start, rates, ratios = cpu_snapshot(), [], []
    for _ in range(RUNS):
        tick = time.perf_counter()
        run()
        rates.append(CNN_STEPS / (time.perf_counter() - tick))
        ratios.append(cross_core().ratio)
    threads = {} if torch_threads is None else {"torch_threads": torch_threads}
    return {"steps_per_s": rates, "cross_core_ratio": ratios, **threads, **other_load(start, cpu_snapshot())}


def command(variant: str) -> tuple[list[str], dict]:
    """The command line and environment of one fresh process of ``variant``."""
    traits = VARIANT_TRAITS[variant]
    argv = [sys.executable, "-m", "experiments.cnn_process_probe", "--measure"]
    env = dict(os.environ)
    if "pytorch" in traits:  # PyTorch keeps freed memory through glibc's thresholds, as in the benchmark
        from experiments.benchmarks import torch_env

        env = torch_env(retained=True)
    argv += [flag for trait in traits for flag in _TRAIT_FLAGS.get(trait, [])]
    env.update(_TRAIT_ENV[trait] for trait in traits if trait in _TRAIT_ENV)
    if "no_aslr" in traits:
        argv = ["setarch", os.uname().machine, "-R", *argv]
    return argv, env


def available(variant: str) -> bool:
    from experiments.benchmarks import torch_available

    traits = VARIANT_TRAITS[variant]
    if "pytorch" in traits:
        return torch_available()
    if "one_cpu" in traits:  # needs two CPUs to keep one, and Linux's per-thread affinity
        return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    return "no_aslr" not in traits or shutil.which("setarch") is not None


def run_all(processes: int, variants: tuple[str, ...]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(processes):
        for variant in variants:
            argv, env = command(variant)
            proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-2000:])
            rows[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(variant, json.dumps(rows[variant][-1]), flush=True)
    return rows


def split_by_state(runs: list[dict]) -> dict[str, list[float]]:
    """Every run's steps/s, split by the cross-core state measured right after it."""
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    out: dict[str, list[float]] = {"normal": [], "slow": []}
    for process in runs:
        for rate, ratio in zip(process["steps_per_s"], process["cross_core_ratio"]):
            out["slow" if ratio >= SLOW_CROSS_CORE_RATIO else "normal"].append(rate)
    return out


def table(rows: dict[str, list[dict]]) -> str:
    """Per variant: runs and steps/s in each cross-core state, and each process's median."""
    def cell(rates):
        if not rates:
            return "0 runs"
        return (f"{len(rates)} run{'' if len(rates) == 1 else 's'}: median {statistics.median(rates):.1f} "
                f"({min(rates):.1f} to {max(rates):.1f})")

    lines = ["| variant | normal cross-core state: steps/s | slow cross-core state: steps/s | "
             "median steps/s of each process | others' share of the CPUs (max) |", "|---|---|---|---|---|"]
    for variant, runs in rows.items():
        split = split_by_state(runs)
        others = [r["other_processes"] for r in runs if r["other_processes"] is not None]
        lines.append(f"| {variant} | {cell(split['normal'])} | {cell(split['slow'])} | "
                     + ", ".join(f"{statistics.median(r['steps_per_s']):.1f}" for r in runs) + " | "
                     + (f"{100 * max(others):.1f}%" if others else "n/a") + " |")
    processes = [run for runs in rows.values() for run in runs]
    both = sum(all(split_by_state([run]).values()) for run in processes)
    lines += ["", f"Processes with runs in both states (the state changed while they ran): {both} of "
              f"{len(processes)}."]
    return "\n".join(lines) + "\n"


def publish(saved: dict) -> None:
    """Write a run's table (its saved ``results.json``) into docs/architectures/cnn.md."""
    from jaxnets.io import replace_marked_block
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    rows = saved["rows"]
    processes = max(len(runs) for runs in rows.values())
    runs = max(len(run["steps_per_s"]) for variant in rows.values() for run in variant)
    head = (f"Generated by `python -m experiments.cnn_process_probe` on {saved['date']}, {saved['cpu_count']} CPU "
            f"cores, {processes} fresh processes per variant (alternating), {runs} runs of 5 steps each; a run counts "
            "as \"slow cross-core\" when, right after it, taking over a buffer from the other CPU cost at least "
            f"{SLOW_CROSS_CORE_RATIO:g} times reworking one's own:\n\n")
    replace_marked_block(DOCS_PAGE, "process-probe", head + table(rows))
    print(f"updated {DOCS_PAGE}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per variant (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "cnn_process_probe")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/architectures/cnn.md")
    parser.add_argument("--publish", type=Path, default=None, metavar="DIR",
                        help="write the table of an earlier run (DIR/results.json) into the docs; measure nothing")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-malloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--small-chunks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pytorch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(retained=not args.default_malloc, small_chunks=args.small_chunks,
                                 pytorch=args.pytorch, one_cpu=args.one_cpu, torch_threads=args.torch_threads)))
        return 0
    if args.processes < 1:
        parser.error(f"--processes: got {args.processes}; allowed: an integer >= 1")
    if args.publish is not None and not (args.publish / "results.json").is_file():
        parser.error(f"--publish: got {str(args.publish)!r}; allowed: the --out directory of an earlier run "
                     "(with its results.json)")
    from jaxnets.io import atomic_write_json, atomic_write_text

    if args.publish is not None:
        publish(json.loads((args.publish / "results.json").read_text()))
        return 0
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = run_all(args.processes, tuple(v for v in args.variants if available(v)))
    saved = {"date": started, "cpu_count": os.cpu_count(), "rows": rows}
    atomic_write_json(args.out / "results.json", saved)
    atomic_write_text(args.out / "table.md", table(rows))
    print(table(rows))
    if args.update_docs:
        publish(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
