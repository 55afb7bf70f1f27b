"""benchmarks/prior_cards.py --denoising-only: a card's denoising table is measured again in place."""

import pytest

from conftest import load_benchmark
from scorerecon.errors import UserError

OLD = "Denoising on 4 held-out evaluation slices of `head-ct`:\n\n| σ | prior |\n|---|---|\n| 0.1 | 36.16 |\n"
NEW = OLD.replace("36.16", "36.40")


def _card(folder, readme: str):
    folder.mkdir()
    (folder / "denoising.md").write_text(OLD)
    (folder / "README.md").write_text(readme)
    return folder


def test_the_new_table_takes_the_old_ones_place_in_the_card_and_its_file(tmp_path):
    script = load_benchmark("prior_cards")
    card = _card(tmp_path / "card", "# Card\n\n" + OLD + "\n## Samples\n")
    script.replace_denoising_table(card, NEW)
    assert (card / "README.md").read_text() == "# Card\n\n" + NEW + "\n## Samples\n"
    assert (card / "denoising.md").read_text() == NEW


def test_a_card_without_the_old_table_is_left_alone_with_a_clear_error(tmp_path):
    script = load_benchmark("prior_cards")
    card = _card(tmp_path / "card", "# Card edited by hand\n")
    with pytest.raises(UserError, match="write the whole card again"):
        script.replace_denoising_table(card, NEW)
    assert (card / "denoising.md").read_text() == OLD
    assert (card / "README.md").read_text() == "# Card edited by hand\n"


def test_a_folder_without_a_card_gets_a_clear_error(tmp_path):
    script = load_benchmark("prior_cards")
    with pytest.raises(UserError, match="holds no card"):
        script.replace_denoising_table(tmp_path / "missing", NEW)
    assert not (tmp_path / "missing").exists()


def test_no_slices_is_refused_before_any_work(tmp_path, capsys):
    script = load_benchmark("prior_cards")
    with pytest.raises(SystemExit) as stop:
        script.main(["--prior", "head-ct", "--dataset", "head-ct", "--out", str(tmp_path / "card"), "--slices", "0"])
    assert stop.value.code == 2 and "must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "card").exists()
