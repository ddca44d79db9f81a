"""The benchmark harness: what the docs promise about how it measures (not the speeds themselves)."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from experiments import benchmarks, cnn_process_probe

ROOT = Path(__file__).resolve().parents[1]


def test_the_pytorch_script_imports_no_jax():
    code = "import sys, experiments.torch_baseline as t; t.batch('cnn'); print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pytorch_gets_the_same_allocator_thresholds_through_the_environment():
    retained = benchmarks.torch_env(True)
    assert retained["MALLOC_MMAP_THRESHOLD_"] == retained["MALLOC_TRIM_THRESHOLD_"] \
        == str(benchmarks.DEFAULT_THRESHOLD_BYTES)
    default = benchmarks.torch_env(False)
    assert "MALLOC_MMAP_THRESHOLD_" not in default and benchmarks.DEFAULT_MALLOC_ENV not in default


def test_a_served_candidate_runs_on_request_and_reports_its_faults():
    code = "from experiments.torch_baseline import answer_requests as a; a(lambda: None, {'candidate': 'noop'})"
    worker = benchmarks.Served([sys.executable, "-c", code])
    try:
        assert worker.info == {"candidate": "noop"}
        worker()
        worker()
        assert json.loads(worker.ask("stats"))["minor_page_faults_per_run"] >= 0
    finally:
        worker.close()
    assert worker.proc.returncode == 0


class _FakeWorker:
    """Stands in for a served process: each run only writes its name into ``order``."""

    def __init__(self, name, order):
        self.name, self.order = name, order

    def __call__(self):
        self.order.append(self.name)

    def close(self):
        pass


def _fake_standalone_script(monkeypatch, order, rates):
    """``subprocess.run`` answering as ``experiments.torch_baseline`` would, one rate per call; the calls."""
    calls = []

    def run(command, **kwargs):
        calls.append((command, kwargs["env"]))
        order.append("standalone")
        rate = rates[len(calls) - 1]
        answer = {"model": command[3], "steps_per_s": rate, "per_repeat_steps_per_s": [rate],
                  "minor_page_faults_per_step": float(len(calls)), "torch": "fake", "threads": 2}
        return subprocess.CompletedProcess(command, 0, stdout="a warning\n" + json.dumps(answer) + "\n", stderr="")

    monkeypatch.setattr(benchmarks.subprocess, "run", run)
    return calls


def test_the_standalone_script_runs_in_a_fresh_process_after_each_round(monkeypatch):
    order, workers = [], []

    def torch_served(model, steps, retained=None):
        workers.append(_FakeWorker(f"torch{len(workers)}", order))
        return workers[-1]

    monkeypatch.setattr(benchmarks, "torch_available", lambda: True)
    monkeypatch.setattr(benchmarks, "torch_served", torch_served)
    calls = _fake_standalone_script(monkeypatch, order, [30.0, 10.0, 20.0])
    times, standalone = benchmarks.round_robin_with_torch({"jax": lambda: order.append("jax")}, "mlp", 4, repeats=3)
    # Warm-up; then each round, and after it PyTorch alone and a fresh worker warmed up twice.
    assert order == ["jax", "jax", "torch0", "torch0", "jax", "torch0", "standalone", "torch1", "torch1",
                     "jax", "torch1", "standalone", "torch2", "torch2", "jax", "torch2", "standalone"]
    assert list(times) == ["jax", "torch_eager"]
    for command, env in calls:  # one timed run each (the script warms up first), with the benchmark's allocator
        assert command[1:] == ["-m", "experiments.torch_baseline", "mlp", "--steps", "4", "--repeats", "1"]
        assert env == benchmarks.torch_env()
    assert standalone["steps_per_s"] == 20.0 and standalone["per_round_steps_per_s"] == [30.0, 10.0, 20.0]
    assert standalone["minor_page_faults_per_step"] == 2.0 and standalone["threads"] == 2
    assert len(standalone["worker_per_round_steps_per_s"]) == 3  # the worker's rate in each round, beside it
    # Each round's worker rate over the standalone run right after it: 27/30, 9/10, 18/20, all 0.9.
    paired = {**standalone, "worker_per_round_steps_per_s": [27.0, 9.0, 18.0]}
    columns = benchmarks.torch_columns({"jax": 1 / 40, "torch_eager": 1 / 18}, paired, "jax")
    assert columns["torch_worker_vs_standalone"] == pytest.approx(0.9) and columns["torch_worker_vs_standalone_paired"]
    assert columns["torch_worker_vs_standalone_of_medians"] == pytest.approx(0.9)
    assert columns["ratio_vs_torch_eager"] == pytest.approx(40 / 18)
    # Ratios 1.0, 1.0, 1.1 round by round; the medians, 22 and 20, meet in different rounds.
    drifting = {**standalone, "worker_per_round_steps_per_s": [30.0, 10.0, 22.0]}
    columns = benchmarks.torch_columns({"jax": 1 / 40, "torch_eager": 1 / 22}, drifting, "jax")
    assert columns["torch_worker_vs_standalone"] == pytest.approx(1.0)
    assert columns["torch_worker_vs_standalone_of_medians"] == pytest.approx(1.1)


def test_a_cnn_set_measures_the_machine_then_pytorch_alone_after_each_round(monkeypatch):
    order, ratios = [], iter([1.1, 2.0, 1.2])

    class FakeServed(_FakeWorker):
        def __init__(self, command, env=None):
            super().__init__(command[-1], order)
            self.proc = types.SimpleNamespace(pid=os.getpid())
            self.info = {"step_gflop": 1.0, "temp_mib": 2.0}

        def ask(self, request):
            return json.dumps({"minor_page_faults_per_run": 0.0})

    def cross_core_cost():
        order.append("cross_core")
        return types.SimpleNamespace(ratio=next(ratios))

    monkeypatch.setattr(benchmarks, "Served", FakeServed)
    monkeypatch.setattr(benchmarks, "torch_available", lambda: True)
    monkeypatch.setattr(benchmarks, "torch_served", lambda model, steps, retained=None: FakeServed(["torch"]))
    monkeypatch.setattr(benchmarks, "cross_core_cost", cross_core_cost)
    _fake_standalone_script(monkeypatch, order, [30.0, 10.0, 20.0])
    out = benchmarks.cnn_set(3, retained=True)
    turns = [name for name in (*benchmarks.CNN_CANDIDATES, "torch") for _ in range(2)]  # warm run, timed run
    fresh_worker = ["torch", "torch"]  # a new PyTorch worker's two untimed warm-up runs
    assert order == turns + (turns + ["cross_core", "standalone"] + fresh_worker) * 2 \
        + turns + ["cross_core", "standalone"]
    assert out["cross_core_ratio"] == [1.1, 2.0, 1.2]
    assert out["torch_standalone_steps_per_s"] == 20.0
    assert out["torch_standalone_per_round_steps_per_s"] == [30.0, 10.0, 20.0]
    # every candidate's rate in each round is kept, beside that round's cross-core ratio
    assert set(out["per_round_steps_per_s"]) == {*benchmarks.CNN_CANDIDATES, "torch_eager"}
    assert all(len(rates) == 3 for rates in out["per_round_steps_per_s"].values())


def test_a_fresh_each_round_worker_is_a_new_process_per_round_and_closes_the_old_one():
    order, started, closed = [], [], []

    class Worker(_FakeWorker):
        def close(self):
            closed.append(self.name)

    def start():
        started.append(Worker(f"w{len(started)}", order))
        return started[-1]

    worker = benchmarks.FreshEachRound(start, rounds=3)
    for _ in range(3):
        worker()
        worker.replace()
    worker.close()
    assert order == ["w0", "w1", "w1", "w1", "w2", "w2", "w2"]  # timed, then the next one's two warm-ups
    assert closed == ["w0", "w1", "w2"] and worker.processes == 3


def _cnn_result(ratios, fair):
    spread = lambda values: benchmarks.spread(values)  # noqa: E731
    summary = {"ratio_vs_hand_jax": 3.0, "ratio_vs_hand_jax_spread": spread([3.0] * len(ratios)),
               "ratio_vs_torch_eager": float(sorted(ratios)[len(ratios) // 2]),
               "ratio_vs_torch_eager_spread": spread(ratios),
               "torch_worker_vs_standalone": float(sorted(fair)[len(fair) // 2]),
               "torch_worker_vs_standalone_spread": spread(fair)}
    return {"benchmark": "cnn_step", "goal_ratio_vs_torch_eager": 1.0, "allocators": {"retained": summary},
            "other_load": {"other_processes": 0.01, "steal": 0.0}}


def test_a_bound_is_met_only_when_every_process_meets_it():
    lines = benchmarks.table([_cnn_result([1.6, 1.7, 0.9], [1.0, 1.0, 1.0])]).splitlines()
    torch_row = next(line for line in lines if "PyTorch eager (steps/s)" in line)
    assert torch_row.endswith("| >= 1 | no |")  # median 1.6, but one process at 0.9
    median_row = next(line for line in lines if "median of the processes" in line)
    assert median_row.endswith("| >= 1.5 | yes |")
    fair_row = next(line for line in lines if "standalone PyTorch script" in line)
    assert fair_row.endswith("| 0.9 to 1.1 | yes |")
    lines = benchmarks.table([_cnn_result([1.6, 1.7, 1.2], [1.0, 0.8, 1.0])]).splitlines()
    assert next(line for line in lines if "PyTorch eager (steps/s)" in line).endswith("| yes |")
    assert next(line for line in lines if "standalone PyTorch script" in line).endswith("| no |")
    assert lines[-1].startswith("Share of the CPUs used by other processes") and "cnn_step 1.0% / 0.0%" in lines[-1]


def test_the_bounds_count_every_round_not_only_the_normal_state_ones():
    result = _cnn_result([1.6, 1.7, 0.9], [1.0, 1.0, 1.0])
    # the set at 0.9 was 2.0 over its one normal-state round: the table shows it, the bound ignores it
    per_round = {"jaxnets_auto": [20.0, 40.0, 20.0], "torch_eager": [25.0, 20.0, 25.0]}
    result["allocators"]["retained"].update(cross_core_ratio_per_process=[[1.0] * 3, [1.0] * 3, [2.6, 1.0, 2.6]],
                                            per_round_steps_per_s_per_process=[None, None, per_round])
    assert benchmarks.normal_rounds_ratio(per_round, [2.6, 1.0, 2.6]) == 2.0
    torch_row = next(line for line in benchmarks.table([result]).splitlines() if "PyTorch eager (steps/s)" in line)
    assert torch_row.endswith("| >= 1 | no |")


def test_pytorch_fairness_over_several_sets_is_judged_on_every_round_pooled():
    # Set 1's rounds: 1.0, 1.0, 1.0; set 2's: 0.85, 0.85, 1.0 (its own median 0.85, outside the band).
    summary = {"torch_worker_per_round_steps_per_s_per_process": [[20.0, 10.0, 30.0], [17.0, 8.5, 30.0]],
               "torch_standalone_per_round_steps_per_s_per_process": [[20.0, 10.0, 30.0], [20.0, 10.0, 30.0]]}
    pooled = benchmarks.pooled_worker_vs_standalone(summary)
    assert pooled == {"median": pytest.approx(1.0), "rounds": 6}  # 0.85, 0.85, 1, 1, 1, 1
    result = _cnn_result([1.6, 1.7], [1.0, 0.85])
    result["allocators"]["retained"]["torch_worker_vs_standalone_all_rounds"] = pooled
    fair_row = next(line for line in benchmarks.table([result]).splitlines() if "standalone PyTorch" in line)
    assert "over the 6 rounds of all sets) | 1 (each set's median: 1, 0.85) | 0.9 to 1.1 | yes |" in fair_row
    summary["torch_worker_per_round_steps_per_s_per_process"] = [[17.0, 8.5, 30.0], [17.0, 8.5, 30.0]]
    result["allocators"]["retained"]["torch_worker_vs_standalone_all_rounds"] = \
        benchmarks.pooled_worker_vs_standalone(summary)  # 0.85 in 4 of the 6 rounds
    fair_row = next(line for line in benchmarks.table([result]).splitlines() if "standalone PyTorch" in line)
    assert fair_row.endswith("| 0.85 (each set's median: 1, 0.85) | 0.9 to 1.1 | no |")
    assert benchmarks.pooled_worker_vs_standalone({}) is None  # without PyTorch: no row of this kind


def test_a_busy_machine_is_reported(capsys):
    benchmarks.warn_if_busy("mlp_step", {"other_processes": 0.3, "steal": 0.0})
    assert "mlp_step: the machine was not quiet (other_processes used 30% of the CPUs)" in capsys.readouterr().err
    benchmarks.warn_if_busy("mlp_step", {"other_processes": 0.01, "steal": None})
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("variant", cnn_process_probe.VARIANTS)  # a new variant fails here until described
def test_each_probe_variant_changes_what_it_says(variant):
    argv, env = cnn_process_probe.command(variant)
    huge = env.get("GLIBC_TUNABLES") == "glibc.malloc.hugetlb=1"
    flags = [a for a in argv if a.startswith("--") and a != "--measure"]
    torch_env = benchmarks.torch_env(retained=True)  # PyTorch keeps freed memory through glibc's thresholds
    assert {"retained": flags == [] and env == dict(os.environ),
            "default": flags == ["--default-malloc"] and not huge,
            "default_huge_pages": flags == ["--default-malloc"] and huge,
            "no_aslr": argv[0] == "setarch" and "-R" in argv and flags == [],
            "huge_pages": flags == [] and huge,
            "small_chunks": flags == ["--small-chunks"],
            "one_arena": flags == [] and env.get("MALLOC_ARENA_MAX") == "1",
            "one_cpu": flags == ["--one-cpu"] and not huge,
            "one_cpu_huge_pages": flags == ["--one-cpu"] and huge,
            "pytorch": flags == ["--pytorch"] and env == torch_env,
            "pytorch_one_thread": flags == ["--pytorch", "--torch-threads"] and argv[-1] == "1" and env == torch_env,
            }[variant]


_ONE_CPU_CHECK = """
import os, json
from experiments.cnn_process_probe import keep_to_one_cpu
cross_core = keep_to_one_cpu()
import jax.numpy as jnp
x = jnp.ones((256, 256)); (x @ x).block_until_ready()
pool = [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")
        if open(f"/proc/self/task/{t}/comm").read().startswith("tf_XLAEigen")]
measured = cross_core()
print(json.dumps({"pool": pool, "main": sorted(os.sched_getaffinity(0)), "cpus": list(measured.cpus)}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                    or not os.path.isdir("/proc/self/task"), reason="needs Linux and two CPUs")
def test_the_one_cpu_probe_variant_gives_xla_one_thread_on_one_cpu_and_measures_on_two():
    out = subprocess.run([sys.executable, "-c", _ONE_CPU_CHECK], cwd=benchmarks.ROOT, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    first = min(os.sched_getaffinity(0))
    assert seen["pool"] and all(cpus == [first] for cpus in seen["pool"])  # XLA's threads: the first CPU only
    assert seen["main"] == [first]    # kept there after the measurement on both CPUs
    assert len(seen["cpus"]) == 2 and first in seen["cpus"]


def test_cross_core_cell_counts_the_slow_rounds():
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    assert benchmarks.cross_core_cell([1.1, 1.2, SLOW_CROSS_CORE_RATIO, 3.0]) == "1.40 (3.00), 2 of 4"
    assert benchmarks.cross_core_cell([]) == "n/a"


def test_the_process_table_shows_each_set_with_its_cross_core_state():
    rates = {"jaxnets_auto": 30.0, "jaxnets_xla": 6.0, "hand_jax": 5.5, "torch_eager": 20.0}
    summary = {"steps_per_s_per_process": [rates, {**rates, "jaxnets_auto": 17.0}],
               "torch_standalone_steps_per_s_per_process": [21.0, 22.0],
               "cross_core_ratio_per_process": [[1.1, 1.2, 1.1], [2.6, 3.1, 1.2]],
               # the first set saved no per-round rates (an older run): its last cell says so
               "per_round_steps_per_s_per_process": [None, {"jaxnets_auto": [15.0, 16.0, 36.0],
                                                            "torch_eager": [20.0, 21.0, 18.0]}]}
    rows = benchmarks.cnn_process_table({"allocators": {"retained": summary}}).splitlines()[2:]
    assert rows[0] == ("| freed memory retained | 1 | 30.0 | 6.0 | 5.5 | 20.0 | 21.0 | 1.50 | 1.10 (1.20), 0 of 3 "
                       "| n/a |")
    assert rows[1].endswith("| 0.85 | 2.60 (3.10), 2 of 3 | 2.00 |")  # only the third round was normal: 36 / 18
    assert rows[-1] == ("- freed memory retained: jaxnets / PyTorch with no slow cross-core round (1 of the sets): 1.50 to 1.50; "
                        "with a slow cross-core round (1 of the sets): 0.85 to 0.85")


def test_the_normal_rounds_ratio_uses_only_rounds_in_the_normal_state():
    per_round = {"jaxnets_auto": [40.0, 20.0, 38.0, 42.0], "torch_eager": [25.0, 26.0, 24.0, 20.0]}
    assert benchmarks.normal_rounds_ratio(per_round, [1.0, 2.7, 1.1, 1.05]) == 40.0 / 24.0  # medians of rounds 0, 2, 3
    assert benchmarks.normal_rounds_ratio(per_round, [2.0, 2.7, 1.6, 3.0]) is None  # no normal round
    assert benchmarks.normal_rounds_ratio(None, [1.0]) is None
    assert benchmarks.normal_rounds_ratio({"jaxnets_auto": [40.0]}, [1.0]) is None  # no PyTorch


def test_the_probe_splits_runs_by_the_cross_core_state_measured_after_them():
    from experiments import cnn_process_probe as probe

    runs = [{"steps_per_s": [30.0, 17.0, 31.0], "cross_core_ratio": [1.1, 2.7, 1.5], "other_processes": 0.01},
            {"steps_per_s": [16.0], "cross_core_ratio": [1.6], "other_processes": None}]
    assert probe.split_by_state(runs) == {"normal": [30.0, 31.0], "slow": [17.0, 16.0]}
    lines = probe.table({"retained": runs}).splitlines()
    assert lines[2] == ("| retained | 2 runs: median 30.5 (30.0 to 31.0) | 2 runs: median 16.5 (16.0 to 17.0) | "
                        "30.0, 16.0 | 1.0% |")
    assert lines[-1] == "Processes with runs in both states (the state changed while they ran): 1 of 2."
    one_slow = probe.table({"default": runs[1:]}).splitlines()[2]
    assert one_slow.startswith("| default | 0 runs | 1 run: median 16.0 (16.0 to 16.0) | 16.0 | n/a |")


def test_the_docs_name_the_cross_core_threshold_the_code_uses():
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    text = (Path(__file__).resolve().parents[1] / "docs" / "architectures" / "cnn.md").read_text()
    assert f"`SLOW_CROSS_CORE_RATIO` ({SLOW_CROSS_CORE_RATIO:g})" in text


def test_the_choices_table_counts_only_normal_rounds_and_groups_processes_by_setting():
    from experiments import conv_choices
    from jaxnets.profiling import SLOW_CROSS_CORE_RATIO

    result = {"steps_per_s": {"library/0": [30.0, 10.0, 32.0], "library/1": [28.0, 9.0, 29.0],
                              "no-winograd/0": [33.0, 11.0, 35.0], "pytorch": [20.0, 19.0, 22.0]},
              "cross_core_ratio": [1.0, SLOW_CROSS_CORE_RATIO, 1.1],
              "layers": {"library": ["patches 32", "Winograd 32"], "no-winograd": ["patches 32", "patches 8"]}}
    lines = conv_choices.table(result).splitlines()
    assert lines[2] == "| library | patches 32; Winograd 32 | 31.0, 28.5 | 29.8 | 1.42 |"
    assert lines[3] == "| no-winograd | patches 32; patches 8 | 34.0 | 34.0 | 1.62 |"
    assert lines[-1] == "Rounds in the normal cross-core state: 2 of 3; PyTorch's step in them: 21.0 steps/s."
    assert conv_choices.table({**result, "cross_core_ratio": [2.0, 2.0, 2.0]}).startswith("No round in the normal")


def test_the_choices_experiment_reports_each_layer_as_the_library_runs_it(monkeypatch):
    from experiments import conv_choices
    from jaxnets.kernels import conv, native, winograd

    # 4 MiB: 32 examples of the first layer (784 positions x (9 + 32) floats); the second layer by
    # Winograd, 10 MiB: 32 examples (49 tiles x 16 positions x (32 + 64) floats)
    assert conv.PATCH_CHUNK_BYTES == 4 * 2**20 and winograd.WINOGRAD_CHUNK_BYTES == 10 * 2**20
    assert conv_choices.layer_choices() == (["C++ conv + pool", "C++ Winograd"] if native.AVAILABLE
                                            else ["patches 32", "Winograd 32"])
    for name, expected in [("jax-kernels", ["patches 32", "Winograd 32"]),
                           ("jax-no-winograd", ["patches 32", "patches 8"]),
                           ("jax-winograd-first-layer-too", ["Winograd 16", "Winograd 32"]),
                           ("jax-winograd-5mib", ["patches 32", "Winograd 16"]),
                           ("jax-patch-8mib", ["patches 64", "Winograd 32"])]:
        with monkeypatch.context() as patch:  # apply_setting assigns the module constants; undone after each
            for module, attribute in [(conv, "PATCH_CHUNK_BYTES"), (winograd, "WINOGRAD_CHUNK_BYTES"),
                                      (winograd, "WINOGRAD_MIN_CHANNELS"), (native, "AVAILABLE")]:
                patch.setattr(module, attribute, getattr(module, attribute))
            conv_choices.apply_setting(name)
            assert conv_choices.layer_choices() == expected, name
    assert conv_choices.describe_settings(["library", "jax-no-winograd"]).splitlines() == [
        "- `library`: the library as installed: its C++ kernels where they apply (jaxnets.kernels.native), and patch "
        "chunks of 4 MiB, Winograd chunks of 10 MiB, Winograd from 8 input channels in JAX",
        "- `jax-no-winograd`: the JAX kernels only, no Winograd"]


def test_the_choices_experiment_rejects_an_unknown_setting_in_one_line(capsys):
    from experiments import conv_choices

    with pytest.raises(SystemExit) as exit_info:
        conv_choices.main(["--settings", "fastest"])
    assert exit_info.value.code == 2
    assert "--settings, --processes, --rounds: got ['fastest'], 3, 8; allowed: settings of library" in \
        capsys.readouterr().err


def test_the_probe_publishes_an_earlier_run_with_its_own_date_and_size(tmp_path, monkeypatch):
    from experiments import cnn_process_probe as probe

    page = tmp_path / "cnn.md"
    page.write_text("before\n<!-- process-probe:start -->\nold\n<!-- process-probe:end -->\nafter\n")
    monkeypatch.setattr(probe, "DOCS_PAGE", page)
    run = {"steps_per_s": [30.0, 17.0], "cross_core_ratio": [1.1, 2.7], "other_processes": 0.01}
    saved = {"date": "2026-01-02 03:04:05", "cpu_count": 2, "rows": {"retained": [run, run], "pytorch": [run, run]}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(saved))
    assert probe.main(["--publish", str(tmp_path / "run")]) == 0
    text = page.read_text()
    assert "on 2026-01-02 03:04:05, 2 CPU cores, 2 fresh processes per variant (alternating), 2 runs of 5" in text
    assert "| pytorch | 2 runs: median 30.0 (30.0 to 30.0) | 2 runs: median 17.0 (17.0 to 17.0) |" in text
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text


def test_the_probe_refuses_to_publish_a_directory_without_a_run(tmp_path, capsys):
    from experiments import cnn_process_probe as probe

    with pytest.raises(SystemExit) as stop:
        probe.main(["--publish", str(tmp_path)])
    assert stop.value.code == 2 and "--publish: got" in capsys.readouterr().err


def test_the_cnn_summary_keeps_each_sets_standalone_rounds():
    run = {"steps_per_s": {}, "minor_page_faults_per_step": {}, "other_load": {},
           "torch_standalone_steps_per_s": 20.0, "torch_standalone_per_round_steps_per_s": [19.0, 20.0, 21.0]}
    summary = benchmarks.cnn_summary([run, {**run, "torch_standalone_per_round_steps_per_s": [22.0]}])
    assert summary["torch_standalone_per_round_steps_per_s_per_process"] == [[19.0, 20.0, 21.0], [22.0]]


def _data_parallel_run(per_process):
    rel = {k: float(np.median([p[k] for p in per_process])) for k in per_process[0]}
    return {"devices": 4, "relative_per_process": per_process, "relative_to_one_device": rel}


def test_data_parallel_compares_jaxnets_with_hand_written_within_each_process():
    # Medians taken mode by mode put jaxnets_pmap at 0.48 / 0.51 = 0.94 of hand_pmap, but in
    # every process but one jaxnets is at least as fast as the hand-written step beside it.
    rates = [(0.48, 0.51), (0.55, 0.55), (0.46, 0.42), (0.45, 0.455), (0.51, 0.57)]
    per_process = [{"jaxnets_none": 1.0, "jaxnets_pmap": j, "jaxnets_sharded": 0.42, "hand_none": 1.0,
                    "hand_pmap": h, "hand_sharded": 0.42} for j, h in rates]
    run = _data_parallel_run(per_process)
    assert run["relative_to_one_device"]["jaxnets_pmap"] < 0.95 * run["relative_to_one_device"]["hand_pmap"]
    assert benchmarks.jaxnets_vs_hand(run)["pmap"] == [j / h for j, h in rates]
    row = benchmarks.data_parallel_row(run, 5)
    assert row.endswith("| yes |") and "jaxnets / hand pmap 0.989" in row
    slower = [{**p, "jaxnets_sharded": 0.38} for p in per_process]  # 0.38 / 0.42 = 0.905 everywhere
    assert benchmarks.data_parallel_row(_data_parallel_run(slower), 5).endswith("| no |")


def test_docs_from_refuses_a_folder_without_results(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmarks.main(["--docs-from", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--docs-from: got" in capsys.readouterr().err
