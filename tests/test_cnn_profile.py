"""experiments.cnn_profile: naming operations from their HLO metadata and adding up a trace's times."""
import gzip
import json

import pytest

from experiments import cnn_profile

HLO = """
  %ynn_fusion.1 = f32[1568,64]{1,0} fusion(%a, %b), kind=kCustom, metadata={op_name="jit(train_step)/jvp(CNN)/conv_1/while/body/closed_call/dot_general" stack_frame_id=1}
  ROOT %dot_general.11 = f32[288,64]{1,0} dot(%c, %d), metadata={op_name="jit(train_step)/transpose(jvp(CNN))/conv_1/while/body/closed_call/dot_general"}
  %while.8 = (s32[]) while(%t), condition=%cond, body=%body, metadata={op_name="jit(train_step)/jvp(CNN)/conv_1/while"}
  %add.3 = f32[10]{0} add(%e, %f), metadata={op_name="jit(train_step)/add"}
  %copy.1 = f32[10]{0} copy(%g)
"""


def test_operations_are_named_by_layer_pass_and_primitive():
    metadata = cnn_profile.op_metadata(HLO)
    assert set(metadata) == {"ynn_fusion.1", "dot_general.11", "while.8", "add.3"}  # copy.1 has no metadata
    assert cnn_profile.describe(metadata["ynn_fusion.1"]) == ("conv_1", "forward", "dot_general")
    assert cnn_profile.describe(metadata["dot_general.11"]) == ("conv_1", "backward", "dot_general")
    assert cnn_profile.describe(metadata["add.3"]) == ("optimizer and loss", "", "add")
    assert cnn_profile.describe("jit(f)/jvp(MLP)/mul") == ("between layers", "forward", "mul")


def test_trace_times_add_up_per_operation_without_counting_while_loops_twice(tmp_path):
    events = [{"ph": "X", "name": "ynn_fusion.1", "dur": 100.0}, {"ph": "X", "name": "ynn_fusion.1", "dur": 50.0},
              {"ph": "X", "name": "while.8", "dur": 1000.0}, {"ph": "i", "name": "add.3", "dur": 7.0},
              {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9999.0}]
    trace = tmp_path / "host.trace.json.gz"
    with gzip.open(trace, "wt") as handle:
        json.dump({"traceEvents": events}, handle)
    names = set(cnn_profile.op_metadata(HLO))
    assert cnn_profile.recorded_times(cnn_profile.operation_events(trace, names)) == {"ynn_fusion.1": (150.0, 2)}


def test_a_profile_of_the_benchmark_step_names_both_passes_of_both_convolutions(tmp_path):
    result = cnn_profile.profile("auto", steps=1)
    layers = cnn_profile.by_layer(result)
    for layer in ("conv_0", "conv_1"):
        assert layers.get((layer, "forward"), 0) > 0 and layers.get((layer, "backward"), 0) > 0
    assert result["untraced_ms_per_step"] > 0 and result["recorded_ms_per_step"] > 0
    assert len(result["cross_core_ratio_before_after"]) == 2
    text = cnn_profile.table(result, top=5)
    assert text.count("\n| `") == 5 and "| conv_1 | backward |" in text


def test_the_command_line_refuses_a_step_count_below_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        cnn_profile.main(["--steps", "0"])
    assert exit_.value.code == 2 and "--steps, --top: got 0" in capsys.readouterr().err


def test_docs_from_refuses_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cnn_profile.main(["--docs-from", str(tmp_path)])
    assert exit_.value.code == 2 and "--docs-from: got" in capsys.readouterr().err


def test_a_trace_counts_for_a_state_only_when_the_ratio_before_and_after_agree():
    slow = cnn_profile.SLOW_CROSS_CORE_RATIO
    assert cnn_profile.cross_core_state(1.0, 1.1) == "normal"
    assert cnn_profile.cross_core_state(slow, slow + 1) == "slow"
    assert cnn_profile.cross_core_state(1.0, slow) is None and cnn_profile.cross_core_state(slow, 1.0) is None


def test_thread_switches_counts_operations_that_start_on_another_thread_than_the_one_before(tmp_path):
    events = [{"ph": "X", "name": "ynn_fusion.1", "ts": 0, "tid": 1}, {"ph": "X", "name": "add.3", "ts": 5, "tid": 2},
              {"ph": "X", "name": "while.8", "ts": 6, "tid": 1}, {"ph": "X", "name": "add.3", "ts": 7, "tid": 2},
              {"ph": "X", "name": "ynn_fusion.1", "ts": 9, "tid": 1}, {"ph": "X", "name": "other", "ts": 10, "tid": 2}]
    trace = tmp_path / "host.trace.json.gz"
    with gzip.open(trace, "wt") as handle:
        json.dump({"traceEvents": events}, handle)
    # ynn(1) -> add(2) -> add(2) -> ynn(1): two of three successions change thread; while and unknown names ignored
    events = cnn_profile.operation_events(trace, set(cnn_profile.op_metadata(HLO)))
    assert cnn_profile.thread_switches(events) == pytest.approx(2 / 3)


def test_profile_by_state_keeps_one_trace_per_state_and_drops_one_during_which_the_state_changed(tmp_path, monkeypatch):
    slow = cnn_profile.SLOW_CROSS_CORE_RATIO + 1
    # normal; changed during the trace (dropped); normal again (not traced); slow
    ratios = iter([1.0, 1.05, slow, 1.0, 1.0, slow, slow])
    result = cnn_profile.profile_by_state("auto", steps=1, wait_s=300, measure=lambda: next(ratios))
    assert set(result["states"]) == {"normal", "slow"}
    assert result["states"]["normal"]["cross_core_ratio_before_after"] == [1.0, 1.05]
    assert result["states"]["slow"]["cross_core_ratio_before_after"] == [slow, slow]
    text = cnn_profile.state_table(result, top=4)
    assert text.count("\n| `") == 4 and "| traced step, ms |" in text and "| conv_" in text
    page = tmp_path / "cnn.md"
    page.write_text("x\n<!-- state-profile:start -->\nold\n<!-- state-profile:end -->\n")
    monkeypatch.setattr(cnn_profile, "DOCS_PAGE", page)
    monkeypatch.setattr(cnn_profile, "ROOT", tmp_path)
    cnn_profile.update_docs(result, top=4)
    assert "--by-state" in page.read_text() and "old" not in page.read_text()


def test_a_by_state_run_that_missed_a_state_says_so_and_leaves_the_docs_alone(tmp_path, monkeypatch, capsys):
    result = {"impl": "auto", "steps": 1, "wait_s": 5.0, "operations": {}, "date": "d", "jax": "j",
              "states": {"normal": {"ms_per_step": {}}}}
    assert cnn_profile.state_table(result) == ("The machine was not in the slow cross-core state within 5 s: "
                                               "nothing to compare.\n")
    page = tmp_path / "cnn.md"
    page.write_text("<!-- state-profile:start -->\nold\n<!-- state-profile:end -->\n")
    monkeypatch.setattr(cnn_profile, "DOCS_PAGE", page)
    cnn_profile.update_docs(result, top=4)
    assert "old" in page.read_text() and "docs not updated" in capsys.readouterr().out


def test_the_command_line_refuses_a_wait_that_is_not_positive_or_comes_without_by_state(capsys):
    with pytest.raises(SystemExit) as exit_:
        cnn_profile.main(["--by-state", "--wait", "0"])
    assert exit_.value.code == 2 and "--wait: got 0; allowed: seconds > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cnn_profile.main(["--wait", "60"])
    assert exit_.value.code == 2 and "--wait: got 60 without --by-state; allowed: only with --by-state" \
        in capsys.readouterr().err
