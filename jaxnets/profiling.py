"""Measuring speed: FLOPs of a compiled step, timing medians, and the machine's matmul peak.

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
                        warmup: int = 2) -> dict[str, float]:
    """Median wall seconds of each zero-argument callable, timed in turns (A, B, C, A, B, C, ...).

    Every candidate is warmed up first (compilation), then each round runs each
    candidate once, so a change of machine load during the measurement hits all
    of them alike and their ratios stay meaningful on a noisy machine. Each
    callable must block on its results (see ``block``).

    Args:
      candidates: name -> callable.
      repeats: rounds timed.
      warmup: untimed calls of each candidate before the first round.

    Returns:
      name -> median seconds, in the order of ``candidates``.

    >>> sorted(round_robin_medians({"a": lambda: None, "b": lambda: None}, repeats=3))
    ['a', 'b']
    """
    if repeats < 1:
        raise ValueError(f"repeats: got {repeats!r}; allowed: an int >= 1")
    for run in candidates.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            tick = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - tick)
    return {name: statistics.median(values) for name, values in samples.items()}


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


__all__ = ["CpuSnapshot", "block", "compiled_flops", "cpu_snapshot", "matmul_peak_gflops", "median_time",
           "other_load", "round_robin_medians"]


#: When the same memory-bound work takes this many times longer on one of the process's
#: CPUs than on another, the machine is in its "uneven CPUs" state (docs/architectures/cnn.md).
UNEVEN_CPU_RATIO = 1.5


@dataclass(frozen=True)
class CpuBalance:
    """The same memory-bound work timed on each CPU the process may use."""

    per_cpu_us: tuple[float, ...]  #: median microseconds on each CPU, in the order of ``cpus``
    cpus: tuple[int, ...]

    @property
    def ratio(self) -> float:
        """Slowest CPU's time / fastest CPU's time (1.0 when all run it alike)."""
        return max(self.per_cpu_us) / min(self.per_cpu_us)

    @property
    def uneven(self) -> bool:
        return self.ratio >= UNEVEN_CPU_RATIO


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


def cpu_balance(nbytes: int = 4 * 2**20, rounds: int = 15) -> CpuBalance:
    """Time writing then summing ``nbytes`` of float32 on each CPU this process may use, in turns.

    A virtual machine's CPUs are threads of its host, which may at times run one of them
    much slower than the other (sharing a physical core, say) without any "steal" time
    showing in the guest. A multi-threaded step whose work is split evenly between the
    CPUs then waits for the slow one. NumPy only: it measures the machine, not JAX.
    Where the process cannot be pinned to CPUs (not Linux), there is one entry: ratio 1.

    >>> cpu_balance(2**16, rounds=3).ratio >= 1.0
    True
    """
    if nbytes < 4 or rounds < 1:
        raise ValueError(f"nbytes, rounds: got {nbytes}, {rounds}; allowed: nbytes >= 4 and rounds >= 1")
    cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else (None,)
    buffer, source = np.zeros(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32)

    def write_then_read() -> None:
        np.copyto(buffer, source)
        buffer.sum()

    done: queue.Queue = queue.Queue()
    workers = [_PinnedWorker(cpu, write_then_read, done) for cpu in cpus]
    samples: list[list[float]] = [[] for _ in cpus]
    try:
        for _ in range(rounds):
            for worker, times in zip(workers, samples):
                tick = time.perf_counter()
                worker.run(done)
                times.append(time.perf_counter() - tick)
    finally:
        for worker in workers:
            worker.stop()
    return CpuBalance(tuple(1e6 * statistics.median(t) for t in samples),
                      tuple(cpu for cpu in cpus if cpu is not None))
