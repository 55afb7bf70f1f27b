"""benchmarks/denoiser_layout.py: both layouts give the same denoised images, and the table says so."""

import torch

from scorerecon.priors.registry import load_prior

from conftest import load_benchmark


def test_the_two_layouts_agree_and_every_time_gets_a_row(tmp_path):
    bench = load_benchmark("denoiser_layout")
    out = tmp_path / "layout.md"
    threads = torch.get_num_threads()
    try:
        bench.main(["--priors", "head-ct", "--times", "0.1,0.6", "--batch", "2", "--size", "64", "--repeats", "1",
                    "-o", str(out)])
    finally:
        torch.set_num_threads(threads)
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| head-ct |")]
    assert [row[1] for row in rows] == ["0.1", "0.6"]
    assert all(float(row[5].rstrip(" |")) < 1e-3 for row in rows)  # same arithmetic, other order of the sums


def test_set_layout_moves_every_expert_s_convolutions():
    bench = load_benchmark("denoiser_layout")
    prior = load_prior("head-ct")

    def convolution_weights():
        return [p for member in prior.members for p in member.network.parameters() if p.dim() == 4]

    bench.set_layout(prior, torch.channels_last)
    assert len(prior.members) > 1 and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolution_weights())
    bench.set_layout(prior, torch.contiguous_format)
    assert all(w.is_contiguous() for w in convolution_weights())
