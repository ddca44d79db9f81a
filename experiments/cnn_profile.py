"""Where the benchmark CNN's training step spends its time, operation by operation.

    python -m experiments.cnn_profile                    # conv_impl="auto", 10 traced steps
    python -m experiments.cnn_profile --impl xla --top 15
    python -m experiments.cnn_profile --update-docs      # the table into docs/architectures/cnn.md
    python -m experiments.cnn_profile --docs-from DIR    # an earlier run's table (DIR: its --out) instead

Builds the step that ``python -m experiments.benchmarks`` times (``jaxnets_cnn``), keeps
freed memory as the benchmark does, warms it up, times ``--steps`` steps, then traces as
many with ``jax.profiler.trace`` and adds up, per compiled operation, the time the trace
records for it. Each operation is named by what it computes: the layer and the pass, from
the operation's HLO metadata (``jvp(...)/conv_1/...`` is the forward pass,
``transpose(jvp(...))/conv_1/...`` the backward), and the JAX primitive.

Read with care: XLA's own matrix products (operations named ``dot...``, those YNNPACK does
not run) return before they finish, so the trace shows part of their time and the rest
lands in whatever waits for them; a while loop's own entry is left out (its body's
operations are counted one by one); and tracing slows the step (the table gives the step's
time with and without it).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import jax

from experiments.benchmarks import jaxnets_cnn
from jaxnets.host_memory import retain_freed_memory
from jaxnets.io import atomic_write_json, atomic_write_text, replace_marked_block
from jaxnets.kernels import CONV_IMPLS
from jaxnets.profiling import SLOW_CROSS_CORE_RATIO, cross_core_cost

ROOT = Path(__file__).resolve().parents[1]
DOCS_PAGE = ROOT / "docs" / "architectures" / "cnn.md"
#: Path segments of an operation's metadata that say where it runs, not what it computes.
PLUMBING = {"while", "body", "cond", "closed_call", "checkpoint", "remat"}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"')


def op_metadata(hlo_text: str) -> dict[str, str]:
    """Compiled operation name -> the ``op_name`` of its HLO metadata (the JAX call path)."""
    out = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def describe(op_name: str) -> tuple[str, str, str]:
    """(layer, pass, primitive) from an HLO ``op_name``; outside the model: ("optimizer and loss", "", primitive).

    Operations of the model outside any layer (a flatten, say) get the layer "between layers".

    >>> describe("jit(train_step)/transpose(jvp(CNN))/conv_1/while/body/closed_call/dot_general")
    ('conv_1', 'backward', 'dot_general')
    """
    parts = [p for p in op_name.split("/") if p]
    primitive = parts[-1] if parts else "?"
    model = next((i for i, p in enumerate(parts) if p.startswith(("jvp(", "transpose(jvp("))), None)
    if model is None:
        return "optimizer and loss", "", primitive
    direction = "backward" if parts[model].startswith("transpose(") else "forward"
    inside = [p for p in parts[model + 1:-1] if p not in PLUMBING and not p.startswith("jit(")]
    return (inside[0] if inside else "between layers"), direction, primitive


def recorded_times(trace_file: Path, names: set[str]) -> dict[str, tuple[float, int]]:
    """Per operation in ``names``: total microseconds the trace records for it, and how many times it ran.

    While loops are left out: their entry spans their body's operations, which count themselves.
    """
    with gzip.open(trace_file, "rt") as handle:
        trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        name = event.get("name")
        if event.get("ph") == "X" and name in names and not name.startswith("while"):
            totals[name][0] += float(event.get("dur", 0.0))
            totals[name][1] += 1
    return {name: (total, int(count)) for name, (total, count) in totals.items()}


def profile(impl: str = "auto", steps: int = 10) -> dict:
    """Time ``steps`` steps, trace as many, and group the traced time by operation (``describe``)."""
    step_fn, state, batch = jaxnets_cnn(impl)
    step = jax.jit(step_fn, donate_argnums=0)
    metadata = op_metadata(step.lower(state, batch).compile().as_text())
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    tick = time.perf_counter()
    for _ in range(steps):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    untraced_ms = 1e3 * (time.perf_counter() - tick) / steps
    cross_before = cross_core_cost().ratio
    with tempfile.TemporaryDirectory() as folder:
        tick = time.perf_counter()
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(steps):
                state, _ = step(state, batch)
            jax.block_until_ready(state)
        traced_ms = 1e3 * (time.perf_counter() - tick) / steps
        files = sorted(Path(folder).glob("**/*.trace.json.gz"))
        if not files:
            raise RuntimeError(f"jax.profiler.trace wrote no *.trace.json.gz under {folder}")
        times = recorded_times(files[0], set(metadata))
    cross_after = cross_core_cost().ratio
    rows = []
    for name, (total_us, count) in times.items():
        layer, direction, primitive = describe(metadata[name])
        rows.append({"operation": name, "layer": layer, "pass": direction, "primitive": primitive,
                     "ms_per_step": total_us / 1e3 / steps, "calls_per_step": count / steps,
                     "asynchronous": name.startswith("dot")})
    rows.sort(key=lambda row: -row["ms_per_step"])
    return {"impl": impl, "steps": steps, "untraced_ms_per_step": untraced_ms, "traced_ms_per_step": traced_ms,
            "recorded_ms_per_step": sum(row["ms_per_step"] for row in rows), "operations": rows,
            "cross_core_ratio_before_after": [cross_before, cross_after],
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "jax": jax.__version__}


def by_layer(result: dict) -> dict[tuple[str, str], float]:
    """Recorded ms per step summed by (layer, pass), largest first."""
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for row in result["operations"]:
        sums[(row["layer"], row["pass"])] += row["ms_per_step"]
    return dict(sorted(sums.items(), key=lambda item: -item[1]))


def table(result: dict, top: int = 12) -> str:
    """Markdown: the step's times, the time by layer and pass, then the ``top`` operations."""
    lines = [f"Step of the benchmark CNN with `conv_impl=\"{result['impl']}\"`: "
             f"{result['untraced_ms_per_step']:.1f} ms untraced, {result['traced_ms_per_step']:.1f} ms while traced; "
             f"the trace records {result['recorded_ms_per_step']:.1f} ms of operations per step. "
             "The machine's cross-core ratio before and after the trace: "
             + " and ".join(f"{r:.2f}" for r in result["cross_core_ratio_before_after"])
             + f" (the slow state starts at {SLOW_CROSS_CORE_RATIO:g}: see the section on slow runs).", "",
             "| layer | pass | ms per step | share of recorded |", "|---|---|---|---|"]
    total = result["recorded_ms_per_step"] or 1.0
    for (layer, direction), ms in by_layer(result).items():
        lines.append(f"| {layer} | {direction or '-'} | {ms:.2f} | {ms / total:.0%} |")
    lines += ["", "| operation | layer | pass | primitive | ms per step | calls per step |", "|---|---|---|---|---|---|"]
    for row in result["operations"][:top]:
        note = " (asynchronous: part of its time shows elsewhere)" if row["asynchronous"] else ""
        lines.append(f"| `{row['operation']}`{note} | {row['layer']} | {row['pass'] or '-'} | {row['primitive']} | "
                     f"{row['ms_per_step']:.2f} | {row['calls_per_step']:g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="auto", choices=CONV_IMPLS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "cnn_profile")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/architectures/cnn.md")
    parser.add_argument("--docs-from", type=Path, default=None, metavar="DIR",
                        help="measure nothing: write the table of an earlier run (its --out) into the docs")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps, --top: got {args.steps}, {args.top}; allowed: integers >= 1")
    if args.docs_from is not None:
        if not (args.docs_from / "results.json").is_file():
            parser.error(f"--docs-from: got {str(args.docs_from)!r}; allowed: the --out folder of an earlier run")
        update_docs(json.loads((args.docs_from / "results.json").read_text()), args.top)
        return 0
    retain_freed_memory()  # as the benchmark and the CLI
    result = profile(args.impl, args.steps)
    atomic_write_json(args.out / "results.json", result)
    atomic_write_text(args.out / "table.md", table(result, args.top))
    print(table(result, args.top))
    if args.update_docs:
        update_docs(result, args.top)
    return 0


def update_docs(result: dict, top: int) -> None:
    """Write a run's table into docs/architectures/cnn.md between the ``cnn-profile`` markers."""
    head = (f"Generated by `python -m experiments.cnn_profile` on {result['date']} (JAX {result['jax']}, "
            f"{result['steps']} traced steps, freed memory retained):\n\n")
    replace_marked_block(DOCS_PAGE, "cnn-profile", head + table(result, top))
    print(f"updated {DOCS_PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
