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
    assert cnn_profile.recorded_times(trace, names) == {"ynn_fusion.1": (150.0, 2)}


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
