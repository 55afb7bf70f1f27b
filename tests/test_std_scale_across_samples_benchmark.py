"""benchmarks/std_scale_across_samples.py: a calibrated std scale at other numbers of samples K."""

import pytest

from conftest import load_benchmark


def test_each_k_gets_a_row_with_the_coverage_of_the_three_factors(tmp_path, capsys):
    script = load_benchmark("std_scale_across_samples")
    out = tmp_path / "table.md"
    script.main(["--samples", "2,4", "--slices", "1", "--size", "64", "--steps", "2", "-o", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 4 |")]
    assert len(rows) == 2 and "calibrated at K = 4" in text
    cells = rows[1].strip("| ").split(" | ")
    fitted = script.settings_for("fast", "ct-sparse-view", {})["std_scale"]
    assert cells[1] == f"{fitted:.2f}" and cells[5] == cells[6]  # at the preset's own K, carried = unchanged
    assert cells[3] == "1.55"  # a calibrated sampler's factor at K = 4
    for k in ("1", "2,1"):
        with pytest.raises(SystemExit):
            script.main(["--samples", k, "-o", str(tmp_path / "x.md")])
    assert "a std map needs K >= 2" in capsys.readouterr().err
