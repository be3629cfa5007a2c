"""The settings files of a developer's machine: `local.settings.json`, as Core Tools reads it, and
`.env`.

Precedence is the SPEC's: a real environment variable always wins, then the `Values` of
`local.settings.json`, then `.env`. Both files are looked for in the directory the command runs in,
then in each directory above it, as python-dotenv looks.

`local.settings.json` is read by the command line only (`check`, `serve`). Under `func start` Core
Tools reads it itself, into the worker's environment, before the app runs; the app then reads `.env`
alone, under those values, so `func start`, `check` and `serve` agree. In Azure neither file exists
(both are kept out of the deployment by .funcignore).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import NamedTuple

from tokens.settings import SETTINGS, Problem

LOCAL_SETTINGS = "local.settings.json"
DOTENV = ".env"
ENVIRONMENT = "environment"
# A settings file holds a few dozen lines. These bound what a hostile or mistaken one (a build
# output, a log pasted over it) costs to read: it is a problem named after the file, found at once.
MAX_FILE_BYTES = 1024 * 1024
MAX_VALUES = 1000

_CLOSES_NEXT = re.compile(r"\s*[}\]]")  # after a comma: it was the last of its object or array


class LocalFiles(NamedTuple):
    """What the files hold: name -> (value, the file it came from), `local.settings.json` first;
    and what is wrong with a file, as problems named after it."""

    values: dict[str, tuple[str, str]]
    problems: list[Problem]

    def apply(self, environ: MutableMapping[str, str]) -> None:
        """Set every value that no real environment variable sets already, as Core Tools does."""
        for name, (value, _) in self.values.items():
            environ.setdefault(name, value)

    def value(self, name: str, environ: Mapping[str, str]) -> str:
        """The value `name` will have once applied: the environment's, else a file's, else ""."""
        return environ[name] if name in environ else self.values.get(name, ("", ""))[0]

    def source(self, name: str, environ: Mapping[str, str]) -> str | None:
        """Where `name` comes from, asked before `apply`: the environment, a file, or None (unset)."""
        if name in environ:
            return ENVIRONMENT
        found = self.values.get(name)
        return found[1] if found is not None else None


def read_local_files(start: Path | None = None, *, local_settings_json: bool = True) -> LocalFiles:
    """Read the files nearest to `start` (the working directory), without applying them;
    `local_settings_json=False` reads `.env` only (inside the Functions host, which owns the other)."""
    values: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    local_settings = find_upward(LOCAL_SETTINGS, start) if local_settings_json else None
    if local_settings is not None:
        read, problem = _values_of(local_settings)
        values.update((name, (value, str(local_settings))) for name, value in read.items())
        if problem is not None:
            problems.append(Problem(LOCAL_SETTINGS, f"{problem} ({local_settings})"))
    dotenv = find_upward(DOTENV, start)
    if dotenv is not None:
        found, problem = _dotenv_values(dotenv)
        if problem is not None:
            problems.append(Problem(DOTENV, f"{problem} ({dotenv})"))
        for name, value in found.items():
            values.setdefault(name, (value, str(dotenv)))
    return LocalFiles(values, problems)


def find_upward(name: str, start: Path | None = None) -> Path | None:
    """The file called `name` in `start` (the working directory) or the nearest directory above it."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / name).is_file():
            return directory / name
    return None


def _can_be_set(name: str, value: str) -> bool:
    """What an environment variable can hold: a name without `=`, no NUL anywhere, and text the
    system can encode (JSON can spell a lone surrogate, which no file name encoding takes)."""
    if not name or "=" in name or "\0" in name + value:
        return False
    try:
        os.fsencode(name + value)
    except UnicodeError:
        return False
    return True


def _cannot_be_set(names: list[str]) -> str:
    return f"has names or values no environment variable can hold (empty, with = or NUL): {_names(names)}"


def _names(names: list[str]) -> str:
    """Names fit for a message: up to five, each cut at a `=` (a pasted `NAME=secret` shows NAME
    only) and quoted with escapes, so that nothing odd in them reaches a terminal."""
    return ", ".join(repr(name.partition("=")[0][:40]) for name in sorted(names)[:5])


def _text_of(path: Path) -> tuple[str | None, str | None]:
    """A settings file's text, or what keeps it from being read. Windows PowerShell 5.1's `>` and
    `Out-File` write UTF-16, whose NUL bytes would otherwise turn into names no one can read."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        return None, f"cannot be read: {type(error).__name__}"
    if len(raw) > MAX_FILE_BYTES:
        return None, f"is over {MAX_FILE_BYTES // 1024} KiB, as no settings file is: is it the right file?"
    if b"\0" not in raw:
        try:
            return raw.decode("utf-8-sig"), None
        except UnicodeDecodeError:
            pass
    return None, (
        "is not UTF-8 text (NUL bytes or invalid sequences: Windows PowerShell's > and Out-File "
        "write UTF-16): save it as UTF-8, with an editor or Set-Content"
    )


def _said_in_the_problem(record: logging.LogRecord) -> bool:
    return False


def _dotenv_values(path: Path) -> tuple[dict[str, str], str | None]:
    """What python-dotenv reads from `path` (quotes, escapes, ${VAR} expansion and all), and what
    is wrong with it: a line it cannot parse is a problem here, not only a warning on the console."""
    text, problem = _text_of(path)
    if text is None:
        return {}, problem
    from dotenv import dotenv_values  # only when there is a file: it costs a cold start
    from dotenv.parser import parse_stream

    # newline=None: a CRLF file's line ends read as "\n", as open() would read them.
    bindings = parse_stream(io.StringIO(text, newline=None))
    unparsed = [str(binding.original.line) for binding in bindings if binding.error]
    dotenv_log = logging.getLogger("dotenv.main")
    dotenv_log.addFilter(_said_in_the_problem)  # its own warning for each such line
    try:
        found = dotenv_values(stream=io.StringIO(text, newline=None))
    finally:
        dotenv_log.removeFilter(_said_in_the_problem)
    values = {name: value for name, value in found.items() if value is not None}
    problems = []
    if len(values) > MAX_VALUES:
        return {}, f"holds more than {MAX_VALUES} settings, which no app has: is it the right file?"
    if unparsed:
        problems.append(
            f"cannot be parsed at line {', '.join(unparsed[:5])}: write NAME=value, and close every "
            "quote you open"
        )
    return _settable(values, problems)


def _values_of(path: Path) -> tuple[dict[str, str], str | None]:
    """The `Values` of a local.settings.json, and what is wrong with the file, if anything. Where
    Core Tools only warns about a file it cannot read and goes on without its values, `check` and
    `serve` stop: a typo must not run the service half configured. Comments and trailing commas are
    allowed, as Core Tools' JSON reader allows them."""
    text, problem = _text_of(path)
    if text is None:
        return {}, problem
    try:
        document = json.loads(lenient_json(text))
    except json.JSONDecodeError as error:
        return {}, f"is not valid JSON (line {error.lineno}, column {error.colno}): fix or remove it"
    except (ValueError, RecursionError):  # a number of thousands of digits, nesting past Python's limit
        return {}, "holds JSON no settings file holds (a huge number, or nesting too deep): fix or remove it"
    if not isinstance(document, dict):
        return {}, 'must be a JSON object with "Values"'
    if document.get("IsEncrypted") is True:
        return {}, (
            "is encrypted (IsEncrypted is true), which only Core Tools on the machine that encrypted it "
            "can read: run `func settings decrypt`, or set the values in the environment"
        )
    found = document.get("Values", {})
    if not isinstance(found, dict):
        return {}, '"Values" must be a JSON object of setting names and text values'
    if len(found) > MAX_VALUES:
        return {}, f'"Values" holds more than {MAX_VALUES} settings, which no app has: is it the right file?'
    values: dict[str, str] = {}
    wrong = []
    for name, value in found.items():
        if isinstance(value, str):
            values[name] = value
        elif isinstance(value, bool):  # before int: a bool is an int to Python
            values[name] = str(value)  # as Core Tools' JSON reader writes it: True, False
        elif isinstance(value, int | float):
            values[name] = json.dumps(value)  # Core Tools turns numbers into their text, too
        elif value is not None:
            wrong.append(name)
    problems = [f'"Values" must hold text, not lists or objects: {_names(wrong)}'] if wrong else []
    misplaced = [name for name in document if name in SETTINGS]
    if misplaced:
        example = '{"Values": {"DIRECT_LINE_SECRET": "..."}}'
        problems.append(f'{_names(misplaced)} must be inside "Values" to apply, as in {example}')
    return _settable(values, problems)


def _settable(values: dict[str, str], problems: list[str]) -> tuple[dict[str, str], str | None]:
    """The values an environment can hold, and the file's problems with those it cannot."""
    unusable = [name for name in values if not _can_be_set(name, values[name])]
    if unusable:
        problems = [*problems, _cannot_be_set(unusable)]
    kept = {name: value for name, value in values.items() if name not in unusable}
    return kept, "; ".join(problems) or None


def lenient_json(text: str) -> str:
    """JSON text as Core Tools' reader (Json.NET) takes it, made strict: // and /* */ comments and a
    comma before `}` or `]` become spaces, outside strings, so that an error's line and column still
    point into the file. An unclosed /* is a JSONDecodeError where it opens."""
    return _without_trailing_commas(_without_comments(text))


def _string_end(text: str, index: int) -> int:
    """Where the string that opens at `index` ends (after its closing quote, or the text's end)."""
    end = index + 1
    while end < len(text) and text[end] != '"':
        end += 2 if text[end] == "\\" else 1
    return min(end + 1, len(text))


def _without_comments(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == '"':  # copied whole: a // or /* in a string is text
            end = _string_end(text, index)
        elif text.startswith("//", index):
            found = text.find("\n", index)
            end = len(text) if found < 0 else found
        elif text.startswith("/*", index):
            found = text.find("*/", index + 2)
            if found < 0:
                raise json.JSONDecodeError("Unterminated comment", text, index)
            end = found + 2
        else:
            out.append(text[index])
            index += 1
            continue
        piece = text[index:end]
        out.append(piece if piece[0] == '"' else "".join(c if c in "\r\n" else " " for c in piece))
        index = end
    return "".join(out)


def _without_trailing_commas(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == '"':
            end = _string_end(text, index)
            out.append(text[index:end])
            index = end
            continue
        if text[index] == "," and _CLOSES_NEXT.match(text, index + 1):
            out.append(" ")
        else:
            out.append(text[index])
        index += 1
    return "".join(out)
