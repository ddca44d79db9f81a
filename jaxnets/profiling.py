"""Measuring speed: FLOPs of a compiled step, timing medians, the machine's matmul peak, and its state.

Every speed claim in jaxnets comes from these functions, measured in the same run
as its baseline, because shared machines are noisy.
"""
from __future__ import annotations

import os
import queue
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
    import resource
except ImportError:  # not on Windows
    resource = None


def compiled_flops(fn: Callable, *args, **kwargs) -> float:
    """Floating-point operations of one call of ``jax.jit(fn)(*args)``, from XLA's cost analysis.

    This is what the compiled program does (after fusion and simplification), not a
    count by hand; for a dense layer's forward pass it is 2·batch·fan_in·fan_out.

    >>> compiled_flops(lambda a, b: a @ b, jnp.ones((8, 4)), jnp.ones((4, 3)))
    192.0
    """
    compiled = jax.jit(fn).lower(*args, **kwargs).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX returned one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def block(tree: Any) -> Any:
    """Wait for every array in ``tree`` (asynchronous dispatch returns before the work is done)."""
    return jax.block_until_ready(tree)


def median_time(run: Callable[[], Any], *, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time in seconds of ``run()`` over ``repeats`` calls, after ``warmup`` calls.

    ``run`` must block on its results (see ``block``) so the time covers the work.
    """
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        samples.append(time.perf_counter() - tick)
    return statistics.median(samples)


def round_robin_medians(candidates: dict[str, Callable[[], Any]], *, repeats: int = 7,
                        warmup: int = 2, warm_each_turn: bool = False,
                        between_rounds: Callable[[], Any] | None = None) -> dict[str, float]:
    """Median wall seconds of each candidate over the rounds of ``round_robin_samples`` (same arguments).

    >>> sorted(round_robin_medians({"a": lambda: None, "b": lambda: None}, repeats=3))
    ['a', 'b']
    """
    return medians(round_robin_samples(candidates, repeats=repeats, warmup=warmup, warm_each_turn=warm_each_turn,
                                       between_rounds=between_rounds))


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    """Each candidate's median over its rounds (of ``round_robin_samples``).

    >>> medians({"a": [3.0, 1.0, 2.0]})
    {'a': 2.0}
    """
    return {name: statistics.median(values) for name, values in samples.items()}


def round_robin_samples(candidates: dict[str, Callable[[], Any]], *, repeats: int = 7,
                        warmup: int = 2, warm_each_turn: bool = False,
                        between_rounds: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each zero-argument callable in each round, timed in turns (A, B, C, A, B, C, ...).

    Every candidate is warmed up first (compilation), then each round runs each
    candidate once, so a change of machine load during the measurement hits all
    of them alike and their ratios stay meaningful on a noisy machine. Each
    callable must block on its results (see ``block``).

    Args:
      candidates: name -> callable.
      repeats: rounds timed.
      warmup: untimed calls of each candidate before the first round.
      warm_each_turn: also one untimed call at the start of each turn, so every turn
        times the steady state (caches and thread pools warm again after the other
        candidates ran), as a training loop or a script timing itself alone sees it.
      between_rounds: called, untimed, after each round (``repeats`` times), for what
        must not run beside the candidates yet should meet the same drift of the machine
        (a baseline timing itself alone, a measurement of the machine's state).

    Returns:
      name -> seconds of each round (``repeats`` of them), in the order of ``candidates``.

    >>> [len(times) for times in round_robin_samples({"a": lambda: None, "b": lambda: None}, repeats=3).values()]
    [3, 3]
    """
    if repeats < 1:
        raise ValueError(f"repeats: got {repeats!r}; allowed: an int >= 1")
    for run in candidates.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            if warm_each_turn:
                run()
            tick = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - tick)
        if between_rounds is not None:
            between_rounds()
    return samples


def matmul_peak_gflops(size: int = 2048, dtype=jnp.float32, repeats: int = 7) -> float:
    """Measured GFLOP/s of one (size x size) @ (size x size) product on the default device.

    A practical peak for this machine and dtype, against which a model's achieved
    GFLOP/s is a utilization.
    """
    a = jnp.ones((size, size), dtype)
    b = jnp.ones((size, size), dtype)
    product = jax.jit(lambda x, y: x @ y)
    seconds = median_time(lambda: block(product(a, b)), repeats=repeats, warmup=2)
    return 2.0 * size ** 3 / seconds / 1e9


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the whole machine and by this process (with its waited children).

    Two snapshots bracket a measurement; :func:`other_load` turns them into the share of
    the machine that something else used meanwhile. ``machine_busy`` and ``steal`` are
    None where ``/proc/stat`` is missing (not Linux).
    """

    wall: float
    ours: float
    machine_busy: float | None
    steal: float | None


def cpu_snapshot(pids: Sequence[int] = ()) -> CpuSnapshot:
    """Now: wall clock, the CPU seconds of this process, its waited-for children and ``pids``, and ``/proc/stat``.

    Args:
      pids: running processes to count as ours as well (children not yet waited for,
        such as workers serving requests); give the same ones to both snapshots.

    >>> cpu_snapshot().wall > 0
    True
    """
    if resource is None:  # Windows: no rusage, no /proc
        return CpuSnapshot(time.perf_counter(), 0.0, None, None)
    ours = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))
    busy = steal = None
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:  # utime and stime: fields 14 and 15
                fields = stat.read().rsplit(")", 1)[1].split()
            ours += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait, steal
        busy = (sum(fields[:8]) - fields[3] - fields[4] - fields[7]) / ticks
        steal = fields[7] / ticks
    except (OSError, ValueError, IndexError):
        pass
    return CpuSnapshot(time.perf_counter(), ours, busy, steal)


def other_load(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, float | None]:
    """Share of the machine's CPU time between two snapshots used by others than this process tree.

    ``other_processes``: CPU time of every other process, over wall time x CPU count;
    ``steal``: time the hypervisor gave this virtual machine's CPUs to other guests, on
    the same scale. A timing is trustworthy only when both are near zero. Children count
    only once they have been waited for, so take ``end`` after they exit. None where the
    machine's totals cannot be read.
    """
    capacity = (end.wall - start.wall) * (os.cpu_count() or 1)
    if start.machine_busy is None or end.machine_busy is None or capacity <= 0:
        return {"other_processes": None, "steal": None}
    others = (end.machine_busy - start.machine_busy) - (end.ours - start.ours)
    return {"other_processes": max(others, 0.0) / capacity, "steal": (end.steal - start.steal) / capacity}



#: When taking over a buffer the other CPU touched last costs this many times more than
#: reworking one's own, the machine is in its "slow cross-core" state (docs/architectures/cnn.md).
SLOW_CROSS_CORE_RATIO = 1.6


@dataclass(frozen=True)
class CrossCore:
    """The same memory-bound work on a buffer the other CPU touched last, and on one's own."""

    cross_us: float  #: median microseconds when the other CPU wrote and read the buffer last
    local_us: float  #: median microseconds when this CPU did
    cpus: tuple[int, ...]  #: the two CPUs (one, or none where threads cannot be pinned: ratio 1)

    @property
    def ratio(self) -> float:
        return self.cross_us / self.local_us

    @property
    def slow(self) -> bool:
        return self.ratio >= SLOW_CROSS_CORE_RATIO


class _PinnedWorker:
    """A daemon thread kept on one CPU that runs ``work`` once per request and reports to ``done``."""

    def __init__(self, cpu: int | None, work: Callable[[], Any], done: queue.Queue):
        self.requests: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, args=(cpu, work, done), daemon=True).start()

    def _serve(self, cpu, work, done) -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # 0: the calling thread (Linux)
        while self.requests.get():
            work()
            done.put(None)

    def run(self, done: queue.Queue) -> None:
        self.requests.put(True)
        done.get()

    def stop(self) -> None:
        self.requests.put(False)


def two_cpus() -> tuple[int, ...]:
    """The first two CPUs this process may run on (fewer when fewer are allowed; none where unknown)."""
    return tuple(sorted(os.sched_getaffinity(0))[:2]) if hasattr(os, "sched_getaffinity") else ()


def cross_core_cost(nbytes: int = 4 * 2**20, rounds: int = 15) -> CrossCore:
    """Time writing then summing ``nbytes`` of float32 on one CPU right after the other CPU did, and again.

    Two threads, pinned to two CPUs, take turns: each works on the buffer twice in a
    row, the first time taking it over from the other CPU's cache, the second time
    from its own. On a virtual machine the host decides where its virtual CPUs run, and
    at times that handover gets much slower, with no "steal" time showing in the guest.
    Multi-threaded steps whose consecutive operations split the work differently between
    threads hand data over all the time and slow with it (our reading of XLA's CPU runtime).
    NumPy only: it measures the machine, not JAX.

    >>> cross_core_cost(2**16, rounds=3).local_us > 0
    True
    """
    if nbytes < 4 or rounds < 1:
        raise ValueError(f"nbytes, rounds: got {nbytes}, {rounds}; allowed: nbytes >= 4 and rounds >= 1")
    cpus = two_cpus()
    buffer, source = np.zeros(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32)

    def write_then_read() -> None:
        np.copyto(buffer, source)
        buffer.sum()

    done: queue.Queue = queue.Queue()
    # With one CPU allowed both threads share it; where affinity is unknown they are not pinned.
    pins = [cpus[i % len(cpus)] if cpus else None for i in range(2)]
    workers = [_PinnedWorker(cpu, write_then_read, done) for cpu in pins]
    cross, local = [], []
    try:
        workers[1].run(done)
        for _ in range(rounds):
            for worker in workers:
                for times in (cross, local):
                    tick = time.perf_counter()
                    worker.run(done)
                    times.append(time.perf_counter() - tick)
    finally:
        for worker in workers:
            worker.stop()
    return CrossCore(1e6 * statistics.median(cross), 1e6 * statistics.median(local), cpus)


__all__ = ["SLOW_CROSS_CORE_RATIO", "CpuSnapshot", "CrossCore", "block", "compiled_flops", "cpu_snapshot",
           "cross_core_cost", "matmul_peak_gflops", "median_time", "medians", "other_load",
           "round_robin_medians", "round_robin_samples"]
