"""Hostile input for the property tests (hypothesis): characters that hide, reorder or break text,
and the settings every property runs with (derandomized, so CI sees the same inputs every time)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Characters that hide, reorder or break text: controls, ANSI, bidi, zero-width, separators, BOM,
# lone surrogates, private use, unassigned, tags.
HOSTILE_CHARACTERS = (
    "\x00\t\n\r\x1b\x7f\x85\x9b\xad\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202e"
    "\u2060\u2066\u2069\ufeff\ufff9\ud800\udfff\ue000\u0378\uffff\U000e0001\U0010ffff"
)
CONTROL_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
characters = st.characters() | st.sampled_from(HOSTILE_CHARACTERS) | st.characters(
    min_codepoint=0xD800, max_codepoint=0xDFFF
)
any_text = st.text(characters, max_size=80)
ascii_text = st.text(st.characters(max_codepoint=127), max_size=40)
