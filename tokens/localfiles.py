"""The settings files of a developer's machine: `local.settings.json`, as Core Tools reads it, and
`.env`.

Precedence is the SPEC's: a real environment variable always wins, then the `Values` of
`local.settings.json`, then `.env`. Both files are looked for in the directory the command runs in,
then in each directory above it (where `func start` and python-dotenv look too), so `check`, `serve`
and `func start` run from the project agree on every value. In Azure neither file exists (both are
kept out of the deployment by .funcignore) and reading them costs two failed look-ups.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import NamedTuple

from tokens.settings import Problem

LOCAL_SETTINGS = "local.settings.json"
DOTENV = ".env"
ENVIRONMENT = "environment"


class LocalFiles(NamedTuple):
    """What the files hold: name -> (value, the file it came from), `local.settings.json` first;
    and what is wrong with a file, as problems named after it."""

    values: dict[str, tuple[str, str]]
    problems: list[Problem]

    def apply(self, environ: MutableMapping[str, str]) -> None:
        """Set every value that no real environment variable sets already, as Core Tools does."""
        for name, (value, _) in self.values.items():
            environ.setdefault(name, value)

    def source(self, name: str, environ: MutableMapping[str, str]) -> str | None:
        """Where `name` comes from, asked before `apply`: the environment, a file, or None (unset)."""
        if name in environ:
            return ENVIRONMENT
        found = self.values.get(name)
        return found[1] if found is not None else None


def read_local_files(start: Path | None = None) -> LocalFiles:
    """Read both files, nearest to `start` (the working directory) first, without applying them."""
    values: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    local_settings = find_upward(LOCAL_SETTINGS, start)
    if local_settings is not None:
        read, problem = _values_of(local_settings)
        values.update((name, (value, str(local_settings))) for name, value in read.items())
        if problem is not None:
            problems.append(Problem(LOCAL_SETTINGS, f"{problem} ({local_settings})"))
    dotenv = find_upward(DOTENV, start)
    if dotenv is not None:
        from dotenv import dotenv_values  # only when there is a file: it costs a cold start

        try:
            found = dotenv_values(dotenv, encoding="utf-8")
        except UnicodeDecodeError:
            found = {}
            problems.append(
                Problem(
                    DOTENV,
                    f"is not UTF-8 text ({dotenv}); Windows PowerShell's > and Out-File write UTF-16: "
                    "save it as UTF-8",
                )
            )
        for name, value in found.items():
            if value is not None:
                values.setdefault(name, (value, str(dotenv)))
    return LocalFiles(values, problems)


def find_upward(name: str, start: Path | None = None) -> Path | None:
    """The file called `name` in `start` (the working directory) or the nearest directory above it."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / name).is_file():
            return directory / name
    return None


def _values_of(path: Path) -> tuple[dict[str, str], str | None]:
    """The `Values` of a local.settings.json, and what is wrong with the file, if anything. Core
    Tools refuses a file it cannot read; so does this, rather than run with half a configuration."""
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as error:
        return {}, f"cannot be read: {type(error).__name__}"
    except json.JSONDecodeError as error:
        return {}, f"is not valid JSON (line {error.lineno}, column {error.colno}): fix or remove it"
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
    if wrong:
        return values, f'"Values" must hold text: {", ".join(sorted(wrong)[:5])} do not'
    return values, None
