"""benchmarks/denoising_by_noise_level.py: several priors, one noise draw, a table per σ."""


import numpy as np

from conftest import load_benchmark


def test_the_same_prior_twice_gives_equal_columns_that_fall_with_noise(monkeypatch, tmp_path):
    data = tmp_path / "head-ct"
    data.mkdir()
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    disc = (xx ** 2 + yy ** 2 < 0.6).astype(np.float32)
    np.save(data / "eval.npy", np.stack([disc * 0.5, disc * 0.8]))
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path))
    out = tmp_path / "table.md"
    script = load_benchmark("denoising_by_noise_level")
    assert script.main(["--dataset", "head-ct", "--priors", "head-ct-v1", "head-ct-v1",
                        "--sigmas", "3", "-o", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3 and "2 eval slices" in out.read_text()
    columns = [[float(cell.strip(" *")) for cell in row.split("|")[2:4]] for row in rows]
    assert all(a == b for a, b in columns)              # same prior, same noise: same numbers
    assert columns[0][0] > columns[1][0] > columns[2][0]   # σ = 0.01, 0.9, 80


def test_an_unprepared_dataset_is_one_line(monkeypatch, tmp_path):
    import pytest
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path))
    script = load_benchmark("denoising_by_noise_level")
    with pytest.raises(SystemExit) as stop:
        script.main(["--dataset", "head-ct", "--priors", "head-ct-v1"])
    assert str(stop.value.code).startswith("denoising_by_noise_level: ") and "data prepare head-ct" in str(stop.value.code)
