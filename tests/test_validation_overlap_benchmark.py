"""benchmarks/validation_overlap.py: the share of a validation slice seen in training slices of other planes."""

import pytest

from conftest import load_benchmark


def test_the_share_seen_is_one_minus_the_unseen_rows_times_the_unseen_columns():
    script = load_benchmark("validation_overlap")
    shape = (4, 6, 8)  # (z, y, x)
    training = {("coronal", 0), ("coronal", 2), ("coronal", 4), ("axial", 1), ("axial", 7)}
    # an axial slice: rows y (coronal 0, 2, 4 of 6: 1/2), columns x (no sagittal slice: 0)
    assert script.seen_share("axial", shape, training) == pytest.approx(0.5)
    # a sagittal slice: rows z (axial 1 of 4; axial 7 lies outside), columns y (1/2): 1 - 3/4 · 1/2
    assert script.seen_share("sagittal", shape, training) == pytest.approx(0.625)
    assert script.seen_share("coronal", shape, {("coronal", 1)}) == 0.0


def test_the_table_lists_each_plane_and_the_slices_tune_picks():
    script = load_benchmark("validation_overlap")
    meta = {"training_source": {"templates": [{"file": "dir/t.nii.gz", "shape": [4, 6, 8]}]},
            "slices": {"train": [{"source": "t.nii.gz:coronal:0"}, {"source": "t.nii.gz:coronal:2"},
                                 {"source": "t.nii.gz:coronal:4"}],
                       "val": [{"source": "t.nii.gz:axial:2"}, {"source": "t.nii.gz:sagittal:3"}]}}
    text = script.table(meta, [1])
    assert "| t.nii.gz | axial | 1 | 50% | 50% | 50% |" in text and "| t.nii.gz | sagittal | 1 | 50% |" in text
    assert text.endswith("picks: t.nii.gz:sagittal:3 50%")
