"""local.settings.json.example: what a developer copies to local.settings.json for Core Tools (and for
`python -m tokens check` and `serve`, which read the same file). It lists every app setting, runs the
Python worker, and points the timer's storage at Azurite."""

from __future__ import annotations

from typing import Any

from tests.conftest import ROOT
from tests.test_vscode import strict_json
from tokens.settings import SETTINGS, Settings

EXAMPLE = ROOT / "local.settings.json.example"
# What the Functions host itself reads, as opposed to the app's own settings.
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags"}


def _values() -> dict[str, Any]:
    values: dict[str, Any] = strict_json(EXAMPLE)["Values"]
    return values


def _ignored(name: str) -> set[str]:
    return {line.strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines()}


def test_the_example_is_strict_json_and_not_encrypted() -> None:
    assert strict_json(EXAMPLE)["IsEncrypted"] is False


def test_every_app_setting_is_listed() -> None:
    assert sorted(set(SETTINGS) - set(_values())) == []


def test_every_listed_name_is_an_app_setting_or_one_the_host_reads() -> None:
    """A misspelt name would be silently ignored by the app."""
    assert sorted(set(_values()) - set(SETTINGS) - HOST_SETTINGS) == []


def test_every_value_is_a_string_as_core_tools_requires() -> None:
    assert {name: value for name, value in _values().items() if not isinstance(value, str)} == {}


def test_the_host_runs_the_python_worker() -> None:
    assert _values()["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_the_timers_storage_is_azurite() -> None:
    assert _values()["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_the_placeholders_are_valid_settings_once_the_secret_is_filled_in() -> None:
    values = {name: value for name, value in _values().items() if name in SETTINGS}
    values["DIRECT_LINE_SECRET"] = "a-real-looking-secret-0123456789"
    Settings.from_env(values)


def test_local_settings_and_azurite_data_are_never_committed() -> None:
    assert {"local.settings.json", ".azurite/"} <= _ignored(".gitignore")


def test_local_settings_the_example_and_azurite_data_are_never_deployed() -> None:
    assert {"local.settings.json", "local.settings.json.example", ".azurite/"} <= _ignored(".funcignore")
