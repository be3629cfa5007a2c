"""Strict JSON for everything that crosses the boundary: request bodies and Direct Line's answers.

RFC 8259 and nothing more: UTF-8, no NaN or Infinity (Python's json reads them, and would write them
back out, making the service's own answer invalid JSON), no duplicate keys (which value wins depends
on the parser), no lone surrogates (`\\ud800` spells half a character that no UTF-8 text can carry),
and, where `max_depth` is given, nesting no deeper than that (Direct Line's answers: a token answer is
flat). Nesting deeper than Python's recursion allows is refused everywhere.
"""

from __future__ import annotations

import json
from typing import Any


class NotStrictJson(ValueError):
    """The text is not strict JSON; the message says why, for a person, without quoting it."""


def loads(raw: bytes, *, max_depth: int | None = None) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotStrictJson("it is not valid UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
    except NotStrictJson:
        raise
    except (ValueError, RecursionError):
        raise NotStrictJson("it is not valid JSON") from None
    _check_values(data, max_depth)
    return data


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise NotStrictJson(f"the key {key[:32]!r} appears more than once")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not JSON")


def _check_values(data: Any, max_depth: int | None) -> None:
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            # Only a lone surrogate makes a str impossible to encode as UTF-8 (a pair escaped in
            # JSON is decoded to the one character it spells); both checks run in C, where a
            # look at every character in Python cost a token answer about 50 µs.
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise NotStrictJson("it escapes a lone surrogate") from None
        elif isinstance(item, dict | list):
            if max_depth is not None and depth > max_depth:
                raise NotStrictJson(f"it is nested more than {max_depth} deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
