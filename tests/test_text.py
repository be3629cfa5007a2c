"""The one control-character rule (tokens/text.py), shared by bodies, names, the audit and settings."""

from __future__ import annotations

import pytest

from tokens.text import has_control, one_line, without_control


@pytest.mark.parametrize(
    "character",
    ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\u200b", "\u202e", "\u2028", "\u2029", "\ufeff", "\ue000", "\u0378"],
)
def test_controls_format_characters_and_separators_are_controls(character: str) -> None:
    assert has_control(f"Ann{character}Lee")
    assert without_control(f"Ann{character}Lee") == "AnnLee"


@pytest.mark.parametrize("text", ["Ann Lee", "Zoë", "李雷", "Ann\u00a0Lee", "https://www.contoso.com"])
def test_letters_and_spaces_are_not(text: str) -> None:
    assert not has_control(text)
    assert without_control(text) == text


def test_one_log_line_also_drops_odd_spaces_but_keeps_the_plain_one() -> None:
    assert one_line("Ann\u00a0Lee\u2003\n is here") == "AnnLee is here"
