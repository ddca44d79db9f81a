"""Measuring speed: FLOPs of a compiled step, timing medians, and the machine's matmul peak.

Every speed claim in jaxnets comes from these functions, measured in the same run
as its baseline, because shared machines are noisy.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


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


__all__ = ["compiled_flops", "block", "median_time", "matmul_peak_gflops", "round_robin_medians"]
