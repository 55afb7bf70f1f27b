"""benchmarks/training_throughput.py measures the variants asked for, fp32 among them."""

import json
from pathlib import Path

import pytest

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_a_subset_of_variants_is_measured_and_named_in_the_json(tmp_path):
    script = load_benchmark("training_throughput")
    out = tmp_path / "rates.json"
    assert script.main(["--config", str(ROOT / "configs" / "head-ct.toml"), "--quick", "--processes", "1",
                        "--variants", "fp32,channels_last", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert [r["variant"] for r in summary["results"]] == ["fp32", "channels_last"]
    assert all(r["images_per_s"] > 0 for r in summary["results"])


@pytest.mark.parametrize("emulated", [True, False])
def test_the_hardware_line_says_whether_bf16_is_emulated(monkeypatch, emulated):
    script = load_benchmark("training_throughput")
    import prior_cards
    monkeypatch.setattr(prior_cards, "bf16_is_emulated", lambda device: emulated)
    assert ("bf16 emulated" in script.hardware()) == emulated


@pytest.mark.parametrize("variants", ["bf16", "fp32,fp16"])
def test_variants_without_fp32_or_unknown_are_refused(tmp_path, capsys, variants):
    script = load_benchmark("training_throughput")
    with pytest.raises(SystemExit) as stop:
        script.main(["--quick", "--variants", variants, "--json", str(tmp_path / "x.json")])
    assert stop.value.code == 2 and "--variants" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
