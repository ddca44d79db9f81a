"""Is the CNN step's speed fixed per process? Time it in many fresh processes under several settings.

    python -m experiments.cnn_process_probe                  # 6 processes per variant (about 6 minutes)
    python -m experiments.cnn_process_probe --processes 3 --update-docs

Each process builds the benchmark CNN (``experiments.benchmarks.cnn_candidate``,
``conv_impl="auto"``), warms it up, times 9 runs of 5 steps and reports the median steps/s,
its runs' spread, how many cores it kept busy, and the share of the machine other
processes used meanwhile. Variants (processes alternate between them):

- ``retained``: ``retain_freed_memory()`` as the benchmark and the CLI call it;
- ``default``: glibc's default allocator settings (what a script that never calls it gets);
- ``no_aslr``: ``retained`` with address-space randomization off (``setarch -R``): if
  buffer placement in virtual memory decided the speed, every process would be alike;
- ``huge_pages``: ``retained`` with glibc's ``glibc.malloc.hugetlb=1`` tunable (transparent
  huge pages for malloc's memory): if TLB misses decided it, slow processes would vanish;
- ``small_chunks``: ``retained`` with 1 MiB patch chunks instead of ``PATCH_CHUNK_BYTES``
  (chunks that fit the L2 cache): if the shared L3 cache decided it, they would help;
- ``one_arena``: ``retained`` with ``MALLOC_ARENA_MAX=1`` (every thread allocates from glibc's
  main arena, which can grow, instead of per-thread arenas whose heaps are 64 MiB at most).

Writes ``results/cnn_process_probe/results.json`` and ``table.md``; ``--update-docs`` puts the
table into docs/architectures/cnn.md.
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

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("retained", "default", "no_aslr", "huge_pages", "small_chunks", "one_arena")
SMALL_CHUNK_BYTES = 2**20
DOCS_PAGE = ROOT / "docs" / "architectures" / "cnn.md"


def measure(retained: bool, small_chunks: bool) -> dict:
    """In this process: the CNN step's median steps/s over 9 timed runs, with load and cores busy."""
    from experiments.benchmarks import CNN_STEPS, cnn_candidate
    from jaxnets.host_memory import retain_freed_memory
    from jaxnets.kernels import conv
    from jaxnets.profiling import cpu_snapshot, other_load

    if retained:
        retain_freed_memory()
    if small_chunks:  # read when the step is traced
        conv.PATCH_CHUNK_BYTES = conv.PATCH_WHOLE_BATCH_BYTES = SMALL_CHUNK_BYTES
    run, _ = cnn_candidate("jaxnets_auto")
    for _ in range(3):
        run()
    start, rates = cpu_snapshot(), []
    for _ in range(9):
        tick = time.perf_counter()
        run()
        rates.append(CNN_STEPS / (time.perf_counter() - tick))
    end = cpu_snapshot()
    return {"steps_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "cores_busy": (end.ours - start.ours) / (end.wall - start.wall), **other_load(start, end)}


def command(variant: str) -> tuple[list[str], dict]:
    """The command line and environment of one fresh process of ``variant``."""
    argv = [sys.executable, "-m", "experiments.cnn_process_probe", "--measure"]
    env = dict(os.environ)
    if variant == "default":
        argv.append("--default-malloc")
    if variant == "no_aslr":
        argv = ["setarch", os.uname().machine, "-R", *argv]
    if variant == "huge_pages":
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    if variant == "small_chunks":
        argv.append("--small-chunks")
    if variant == "one_arena":
        env["MALLOC_ARENA_MAX"] = "1"
    return argv, env


def available(variant: str) -> bool:
    return variant != "no_aslr" or shutil.which("setarch") is not None


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


def table(rows: dict[str, list[dict]]) -> str:
    lines = ["| variant | steps/s of each process (median of its 9 runs) | slowest / fastest | cores busy | "
             "others' share of the CPUs (max) |", "|---|---|---|---|---|"]
    for variant, runs in rows.items():
        rates = [r["steps_per_s"] for r in runs]
        others = [r["other_processes"] for r in runs if r["other_processes"] is not None]
        lines.append(f"| {variant} | " + ", ".join(f"{v:.1f}" for v in rates)
                     + f" | {min(rates) / max(rates):.2f} | "
                     + f"{min(r['cores_busy'] for r in runs):.2f} to {max(r['cores_busy'] for r in runs):.2f} | "
                     + (f"{100 * max(others):.1f}%" if others else "n/a") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--processes", type=int, default=6, help="fresh processes per variant (default 6)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "cnn_process_probe")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/architectures/cnn.md")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-malloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--small-chunks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(retained=not args.default_malloc, small_chunks=args.small_chunks)))
        return 0
    if args.processes < 1:
        parser.error(f"--processes: got {args.processes}; allowed: an integer >= 1")
    from jaxnets.io import atomic_write_json, atomic_write_text, replace_marked_block

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = run_all(args.processes, tuple(v for v in args.variants if available(v)))
    text = table(rows)
    atomic_write_json(args.out / "results.json", {"date": started, "cpu_count": os.cpu_count(), "rows": rows})
    atomic_write_text(args.out / "table.md", text)
    print(text)
    if args.update_docs:
        head = (f"Generated by `python -m experiments.cnn_process_probe --update-docs` on {started}, "
                f"{os.cpu_count()} CPU cores, {args.processes} fresh processes per variant (alternating):\n\n")
        replace_marked_block(DOCS_PAGE, "process-probe", head + text)
        print(f"updated {DOCS_PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
