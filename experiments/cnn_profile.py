"""Where the benchmark CNN's training step spends its time, operation by operation.

    python -m experiments.cnn_profile                    # conv_impl="auto", 10 traced steps
    python -m experiments.cnn_profile --impl xla --top 15
    python -m experiments.cnn_profile --update-docs      # the table into docs/architectures/cnn.md
    python -m experiments.cnn_profile --docs-from DIR    # an earlier run's table (DIR: its --out) instead
    python -m experiments.cnn_profile --by-state --steps 5 --update-docs   # normal against slow cross-core state

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

``--by-state`` traces the same step once while the machine is in its normal cross-core state
and once while it is in the slow one (``jaxnets.profiling.cross_core_cost``, measured before
and after each trace; a trace during which the state changed is dropped), in one process,
waiting up to ``--wait`` seconds, and lists the operations whose time grew most. It also
gives the share of operations that ran on another thread than the one started before them:
the traces show XLA's CPU runtime running consecutive operations on either thread of its pool,
so a chain of operations moves between the CPUs.
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
from typing import Any, Callable

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


def operation_events(trace_file: Path, names: set[str]) -> list[dict]:
    """The trace's complete events ("X") of the operations in ``names``, while loops left out.

    A while loop's entry spans its body's operations, which count themselves.
    """
    with gzip.open(trace_file, "rt") as handle:
        trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X" and e.get("name") in names and not e["name"].startswith("while")]


def recorded_times(events: list[dict]) -> dict[str, tuple[float, int]]:
    """Per operation of ``operation_events``: total microseconds the trace records for it, and how many times it ran."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        totals[event["name"]][0] += float(event.get("dur", 0.0))
        totals[event["name"]][1] += 1
    return {name: (total, int(count)) for name, (total, count) in totals.items()}


def thread_switches(events: list[dict]) -> float:
    """The share of ``operation_events`` that ran on another thread than the operation that started before them.

    When consecutive operations run on different threads (so, unpinned, often on different
    CPUs), their data moves between the CPUs' caches.
    """
    ops = sorted((float(e.get("ts", 0.0)), e.get("tid")) for e in events)
    if len(ops) < 2:
        return 0.0
    return sum(a[1] != b[1] for a, b in zip(ops, ops[1:])) / (len(ops) - 1)


def warmed_step(impl: str) -> tuple[Callable, Any, dict, dict[str, str]]:
    """The benchmark's jaxnets step with ``conv_impl=impl``, compiled and run 3 times: (step, state, batch, op metadata)."""
    step_fn, state, batch = jaxnets_cnn(impl)
    step = jax.jit(step_fn, donate_argnums=0)
    metadata = op_metadata(step.lower(state, batch).compile().as_text())
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return step, state, batch, metadata


def traced_steps(step: Callable, state: Any, batch: dict, steps: int, names: set[str]) -> tuple[Any, dict]:
    """Run ``steps`` steps under ``jax.profiler.trace``: (new state, {"traced_ms_per_step", "times", "thread_switches"})."""
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
        events = operation_events(files[0], names)  # the trace is read once for both
        return state, {"traced_ms_per_step": traced_ms, "times": recorded_times(events),
                       "thread_switches": thread_switches(events)}


def profile(impl: str = "auto", steps: int = 10) -> dict:
    """Time ``steps`` steps, trace as many, and group the traced time by operation (``describe``)."""
    step, state, batch, metadata = warmed_step(impl)
    tick = time.perf_counter()
    for _ in range(steps):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    untraced_ms = 1e3 * (time.perf_counter() - tick) / steps
    cross_before = cross_core_cost().ratio
    state, traced = traced_steps(step, state, batch, steps, set(metadata))
    cross_after = cross_core_cost().ratio
    rows = []
    for name, (total_us, count) in traced["times"].items():
        layer, direction, primitive = describe(metadata[name])
        rows.append({"operation": name, "layer": layer, "pass": direction, "primitive": primitive,
                     "ms_per_step": total_us / 1e3 / steps, "calls_per_step": count / steps,
                     "asynchronous": name.startswith("dot")})
    rows.sort(key=lambda row: -row["ms_per_step"])
    return {"impl": impl, "steps": steps, "untraced_ms_per_step": untraced_ms,
            "traced_ms_per_step": traced["traced_ms_per_step"],
            "recorded_ms_per_step": sum(row["ms_per_step"] for row in rows), "operations": rows,
            "cross_core_ratio_before_after": [cross_before, cross_after],
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "jax": jax.__version__}


def cross_core_state(before: float, after: float) -> str | None:
    """"slow" or "normal" when the cross-core ratios before and after a trace agree, else None (it changed)."""
    slow = [ratio >= SLOW_CROSS_CORE_RATIO for ratio in (before, after)]
    return ("slow" if slow[0] else "normal") if slow[0] == slow[1] else None


def profile_by_state(impl: str = "auto", steps: int = 5, wait_s: float = 600.0,
                     measure: Callable[[], float] | None = None) -> dict:
    """Trace ``steps`` steps once in each cross-core state, in one process, waiting up to ``wait_s`` in all.

    A trace counts for a state when the cross-core ratio (``measure``, by default
    ``cross_core_cost().ratio``) is in that state both before and after it. Returns per state
    the ratios, the traced time and each operation's recorded ms per step; a state the machine
    did not enter within ``wait_s`` is missing.
    """
    measure = measure or (lambda: cross_core_cost().ratio)
    step, state, batch, metadata = warmed_step(impl)
    states: dict[str, dict] = {}
    start = time.monotonic()
    while len(states) < 2 and time.monotonic() - start < wait_s:
        before = measure()
        if cross_core_state(before, before) in states:
            time.sleep(1.0)  # a state already traced is not traced again: wait for the other one
            continue
        state, traced = traced_steps(step, state, batch, steps, set(metadata))
        after = measure()
        kind = cross_core_state(before, after)
        if kind is None:
            continue  # the state changed during the trace
        states[kind] = {"cross_core_ratio_before_after": [before, after],
                        "traced_ms_per_step": traced["traced_ms_per_step"],
                        "thread_switches": traced["thread_switches"],
                        "ms_per_step": {name: total_us / 1e3 / steps for name, (total_us, _) in traced["times"].items()},
                        "minutes_after_start": (time.monotonic() - start) / 60}
    return {"impl": impl, "steps": steps, "wait_s": wait_s, "states": states,
            "operations": {name: list(describe(metadata[name])) for name in metadata},
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


def state_table(result: dict, top: int = 12) -> str:
    """Markdown: the same operations traced in the normal and in the slow cross-core state, largest increase first."""
    states = result["states"]
    missing = [kind for kind in ("normal", "slow") if kind not in states]
    if missing:
        return (f"The machine was not in the {' nor the '.join(missing)} cross-core state within "
                f"{result['wait_s']:g} s: nothing to compare.\n")
    normal, slow = states["normal"]["ms_per_step"], states["slow"]["ms_per_step"]

    def total(kind: str, products: bool) -> float:
        times = states[kind]["ms_per_step"]
        return sum(ms for name, ms in times.items() if (result["operations"][name][2] == "dot_general") == products)

    def ratios(kind: str) -> str:
        return " and ".join(f"{r:.2f}" for r in states[kind]["cross_core_ratio_before_after"])

    lines = [f"Step of the benchmark CNN with `conv_impl=\"{result['impl']}\"`, {result['steps']} steps traced in "
             f"each state in one process: normal (cross-core ratio {ratios('normal')} before and after) and slow "
             f"({ratios('slow')}; the slow state starts at {SLOW_CROSS_CORE_RATIO:g}).", "",
             "| | normal state | slow state |", "|---|---|---|",
             f"| traced step, ms | {states['normal']['traced_ms_per_step']:.1f} | {states['slow']['traced_ms_per_step']:.1f} |",
             f"| recorded: matrix products, ms per step | {total('normal', True):.1f} | {total('slow', True):.1f} |",
             f"| recorded: all other operations, ms per step | {total('normal', False):.1f} | {total('slow', False):.1f} |",
             f"| operations run on another thread than the one started before them | "
             f"{states['normal']['thread_switches']:.0%} | {states['slow']['thread_switches']:.0%} |", "",
             "| operation | layer | pass | primitive | normal: ms per step | slow: ms per step | slow / normal |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted(slow, key=lambda n: -(slow[n] - normal.get(n, 0.0)))[:top]:
        layer, direction, primitive = result["operations"][name]
        before = normal.get(name, 0.0)
        change = f"{slow[name] / before:.2f}" if before else "-"
        lines.append(f"| `{name}` | {layer} | {direction or '-'} | {primitive} | {before:.2f} | {slow[name]:.2f} | {change} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="auto", choices=CONV_IMPLS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--by-state", action="store_true",
                        help="trace once in each cross-core state (waiting up to --wait seconds) and compare")
    parser.add_argument("--wait", type=float, default=None,
                        help="with --by-state: seconds to wait for the two states in all (default 600)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default results/cnn_profile, or results/cnn_profile_by_state)")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/architectures/cnn.md")
    parser.add_argument("--docs-from", type=Path, default=None, metavar="DIR",
                        help="measure nothing: write the table of an earlier run (its --out) into the docs")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps, --top: got {args.steps}, {args.top}; allowed: integers >= 1")
    if args.wait is not None and not args.by_state:
        parser.error(f"--wait: got {args.wait:g} without --by-state; allowed: only with --by-state")
    wait = 600.0 if args.wait is None else args.wait
    if not wait > 0:
        parser.error(f"--wait: got {wait:g}; allowed: seconds > 0")
    if args.docs_from is not None:
        if not (args.docs_from / "results.json").is_file():
            parser.error(f"--docs-from: got {str(args.docs_from)!r}; allowed: the --out folder of an earlier run")
        update_docs(json.loads((args.docs_from / "results.json").read_text()), args.top)
        return 0
    out = args.out or ROOT / "results" / ("cnn_profile_by_state" if args.by_state else "cnn_profile")
    retain_freed_memory()  # as the benchmark and the CLI
    if args.by_state:
        result = profile_by_state(args.impl, args.steps, wait)
        text = state_table(result, args.top)
    else:
        result = profile(args.impl, args.steps)
        text = table(result, args.top)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "table.md", text)
    print(text)
    if args.update_docs:
        update_docs(result, args.top)
    return 0


def update_docs(result: dict, top: int) -> None:
    """Write a run's table into docs/architectures/cnn.md: ``cnn-profile``, or ``state-profile`` for a --by-state run."""
    if "states" in result:
        if len(result["states"]) < 2:
            print("docs not updated: the run did not trace both cross-core states")
            return
        head = (f"Generated by `python -m experiments.cnn_profile --by-state` on {result['date']} "
                f"(JAX {result['jax']}, freed memory retained):\n\n")
        replace_marked_block(DOCS_PAGE, "state-profile", head + state_table(result, top))
    else:
        head = (f"Generated by `python -m experiments.cnn_profile` on {result['date']} (JAX {result['jax']}, "
                f"{result['steps']} traced steps, freed memory retained):\n\n")
        replace_marked_block(DOCS_PAGE, "cnn-profile", head + table(result, top))
    print(f"updated {DOCS_PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
