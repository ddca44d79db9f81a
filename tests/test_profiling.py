"""FLOP counts from XLA's cost analysis, against the closed form of a dense layer; timing helpers."""
import os
import time

import jax.numpy as jnp
import pytest

import jaxnets as jn
from jaxnets import profiling
from jaxnets.profiling import compiled_flops, matmul_peak_gflops, median_time


def test_matmul_flops_are_2mnk():
    assert compiled_flops(lambda a, b: a @ b, jnp.ones((16, 8)), jnp.ones((8, 4))) == 2 * 16 * 8 * 4


def test_mlp_forward_flops_cover_the_dense_products():
    model = jn.models.MLP(hidden=(32,), output_dim=10)
    x = jnp.ones((64, 20))
    variables = model.init({"params": jn.state.run_keys(0).init}, x)
    flops = compiled_flops(lambda v, x: model.apply(v, x), variables, x)
    dense = 2 * 64 * (20 * 32 + 32 * 10)
    assert dense <= flops <= 1.2 * dense  # plus bias adds and the ReLU


def test_median_time_and_peak_are_positive():
    assert median_time(lambda: None, repeats=3) >= 0
    assert matmul_peak_gflops(size=128, repeats=3) > 0


def test_round_robin_medians_times_each_candidate_in_turns():
    order = []
    medians = jn.profiling.round_robin_medians(
        {"slow": lambda: (order.append("slow"), time.sleep(0.02)), "fast": lambda: order.append("fast")},
        repeats=3, warmup=1)
    assert list(medians) == ["slow", "fast"]
    assert order == ["slow", "fast"] + ["slow", "fast"] * 3  # warm-up, then alternating rounds
    assert medians["slow"] >= 0.02 > medians["fast"] >= 0.0
    with pytest.raises(ValueError, match=r"^repeats: got 0; allowed: an int >= 1"):
        jn.profiling.round_robin_medians({"a": lambda: None}, repeats=0)


def test_warm_turns_run_each_candidate_once_untimed_before_its_timed_call():
    order, calls = [], {"a": 0}

    def first_call_of_a_turn_is_slow():
        calls["a"] += 1
        order.append("a")
        time.sleep(0.03 if calls["a"] % 2 == 0 else 0.0)  # calls 2, 4, 6: the untimed warm calls

    medians = jn.profiling.round_robin_medians({"a": first_call_of_a_turn_is_slow, "b": lambda: order.append("b")},
                                               repeats=3, warmup=1, warm_each_turn=True)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert medians["a"] < 0.03


def test_between_rounds_runs_once_after_each_round_untimed():
    order = []

    def slow_between():
        order.append("between")
        time.sleep(0.03)

    medians = jn.profiling.round_robin_medians({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                               repeats=3, warmup=1, warm_each_turn=True, between_rounds=slow_between)
    assert order == ["a", "b"] + ["a", "a", "b", "b", "between"] * 3  # never before the first round
    assert max(medians.values()) < 0.03


def test_other_load_is_the_share_others_used_by_closed_form(monkeypatch):
    from jaxnets.profiling import CpuSnapshot, other_load

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    start, end = CpuSnapshot(10.0, 1.0, 100.0, 5.0), CpuSnapshot(12.0, 2.0, 103.0, 5.4)
    load = other_load(start, end)  # 3 s busy, 1 s ours, over 2 s x 2 CPUs
    assert load["other_processes"] == pytest.approx(0.5) and load["steal"] == pytest.approx(0.1)
    assert other_load(CpuSnapshot(0.0, 0.0, None, None), end) == {"other_processes": None, "steal": None}


def test_other_load_sees_a_busy_process_that_is_not_ours():
    import os
    import subprocess
    import sys

    from jaxnets.profiling import cpu_snapshot, other_load

    if not os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat (Linux)")
    start = cpu_snapshot()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"])
    time.sleep(1.2)
    end = cpu_snapshot()  # before wait(): the child is still "another process"
    busy.wait()
    assert other_load(start, end)["other_processes"] > 0.3 / os.cpu_count()
    quiet = cpu_snapshot()
    assert cpu_snapshot().ours >= quiet.ours


def test_cross_core_cost_times_both_handovers_and_refuses_nonsense():
    cost = profiling.cross_core_cost(2**16, rounds=3)
    assert cost.cross_us > 0 and cost.local_us > 0
    assert len(cost.cpus) == min(2, len(os.sched_getaffinity(0)))
    assert cost.ratio == cost.cross_us / cost.local_us
    with pytest.raises(ValueError, match=r"^nbytes, rounds: got 2, 3; allowed"):
        profiling.cross_core_cost(2, rounds=3)


def test_a_slow_handover_is_flagged():
    assert profiling.CrossCore(500.0, 240.0, (0, 1)).slow
    assert not profiling.CrossCore(260.0, 245.0, (0, 1)).slow
