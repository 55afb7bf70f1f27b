"""benchmarks/denoiser_layout.py: both layouts give the same denoised images, and the table says so."""

from conftest import load_benchmark


def test_the_two_layouts_agree_and_every_time_gets_a_row(tmp_path):
    bench = load_benchmark("denoiser_layout")
    out = tmp_path / "layout.md"
    bench.main(["--priors", "head-ct", "--times", "0.1,0.6", "--batch", "2", "--size", "64", "--repeats", "1",
                "-o", str(out)])
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| head-ct |")]
    assert [row[1] for row in rows] == ["0.1", "0.6"]
    assert all(float(row[5].rstrip(" |")) < 1e-3 for row in rows)  # same arithmetic, other order of the sums
