"""experiments/population_scaling.py in a tiny setting: every (D, P) row, one trace each."""
import json

from experiments import population_scaling


def test_tiny_scaling_writes_every_row_and_compiles_once(tmp_path, capsys):
    assert population_scaling.main(["--sizes", "1,3", "--devices", "1,2", "--epochs", "1",
                                    "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["devices"], r["members"]) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert all(r["traces"] == 1 and r["seconds_per_member"] > 0 for r in rows)
    assert [r["num_devices_used"] for r in rows] == [1, 1, 1, 2]  # at most one device per member
    assert "| 2 |" in (tmp_path / "table.md").read_text()
