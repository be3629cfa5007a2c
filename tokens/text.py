"""What counts as a control character, and how long a display name may be: one rule for the whole
service (request bodies, names from identity providers, the audit trail, settings).

A control character is anything that can break, hide or reorder text when it is shown or logged:
C0/C1 controls and DEL (Cc), format characters such as bidi overrides and zero-width joiners (Cf),
surrogates (Cs), private-use (Co) and unassigned code points (Cn), and the line and paragraph
separators (Zl, Zp). Ordinary spaces, including non-breaking ones, are not controls.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_LENGTH = 64  # a user name, from the body or from an identity provider
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def is_control(character: str) -> bool:
    return unicodedata.category(character) in _CONTROL_CATEGORIES


def _plain(text: str) -> bool:
    """Printable ASCII, spaces included: no control character, nothing to look up one by one (the
    case of nearly every id, origin and address, on every request)."""
    return text.isascii() and text.isprintable()


def has_control(text: str) -> bool:
    return not _plain(text) and any(is_control(character) for character in text)


def without_control(text: str) -> str:
    if _plain(text):
        return text
    return "".join(character for character in text if not is_control(character))


def one_line(text: str) -> str:
    """Text fit for one log line: no control characters, and no spaces but the plain one, since an
    odd space (U+00A0, U+2003...) can make two different values look alike to a reader."""
    if _plain(text):
        return text
    return "".join(
        character
        for character in text
        if not is_control(character) and (character == " " or unicodedata.category(character) != "Zs")
    )
