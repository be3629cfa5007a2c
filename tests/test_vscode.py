""".vscode/ is what `func init` and the Azure Functions extension make for a Python v2 app: F5 runs
`func host start` in the project's virtual environment and attaches the debugger to the Python worker.

These files are committed and read by every developer's editor, so each must be strict JSON (VS Code
would accept comments and trailing commas; the tests and other tools would not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

VSCODE = ROOT / ".vscode"
FILES = ("extensions.json", "launch.json", "settings.json", "tasks.json")
# The Azure Functions extension starts the host with languageWorkers__python__arguments set so that
# the Python worker waits for debugpy on the port of the attach configuration; 9091 is its default.
PYTHON_WORKER_DEBUG_PORT = 9091
VENV_SETTING = "${config:azureFunctions.pythonVenv}"


def strict_json(path: Path) -> Any:
    """JSON as RFC 8259 has it: no comments, no trailing commas, no NaN, no repeated keys, no BOM."""

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"{path.name}: a key appears twice"
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise AssertionError(f"{path.name}: {name} is not JSON")

    text = path.read_text(encoding="utf-8")
    return json.loads(text, object_pairs_hook=no_repeats, parse_constant=no_constants)


def _launch() -> list[dict[str, Any]]:
    configurations: list[dict[str, Any]] = strict_json(VSCODE / "launch.json")["configurations"]
    return configurations


def _attach() -> dict[str, Any]:
    return next(config for config in _launch() if config["request"] == "attach")


def _tasks() -> dict[str, dict[str, Any]]:
    return {task["label"]: task for task in strict_json(VSCODE / "tasks.json")["tasks"]}


def _settings() -> dict[str, Any]:
    settings: dict[str, Any] = strict_json(VSCODE / "settings.json")
    return settings


def _host_task() -> dict[str, Any]:
    return next(task for task in _tasks().values() if task["type"] == "func" and task["command"] == "host start")


def _ignored(name: str) -> set[str]:
    return {line.strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines()}


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_strict_json(name: str) -> None:
    assert isinstance(strict_json(VSCODE / name), dict)


def test_the_editor_recommends_the_functions_and_python_extensions() -> None:
    recommended = strict_json(VSCODE / "extensions.json")["recommendations"]
    assert {"ms-azuretools.vscode-azurefunctions", "ms-python.python"} <= set(recommended)


def test_f5_attaches_debugpy_to_the_python_workers_debug_port_on_this_machine() -> None:
    first = _launch()[0]
    assert first == _attach(), "F5 runs the first configuration: it is the attach to the worker"
    assert first["type"] == "debugpy"
    assert first["connect"] == {"host": "localhost", "port": PYTHON_WORKER_DEBUG_PORT}


def test_nothing_sets_the_workers_debug_arguments_to_another_port() -> None:
    """The extension passes the attach configuration's port to the worker through
    languageWorkers__python__arguments; a value set in a task or in local.settings.json would win
    and leave the debugger waiting on a port nobody listens on."""
    places = [json.dumps(task) for task in _tasks().values()]
    places.append((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))
    assert not any("languageWorkers__python__arguments" in text for text in places)


def test_the_attach_configuration_starts_the_host_first() -> None:
    assert _attach()["preLaunchTask"] in _tasks()


def test_the_host_task_runs_func_host_start_in_the_background_with_the_python_watch_matcher() -> None:
    """isBackground with the extension's matcher: VS Code attaches once the host says it is up,
    rather than waiting for a task that never ends."""
    task = _host_task()
    assert task["label"] == _attach()["preLaunchTask"]
    assert task["isBackground"] is True
    assert task["problemMatcher"] == "$func-python-watch"


def test_the_host_task_installs_the_requirements_first() -> None:
    assert _host_task()["dependsOn"] == "pip install (functions)"
    assert "pip install (functions)" in _tasks()


@pytest.mark.parametrize(
    ("platform", "python"),
    [("linux", f"{VENV_SETTING}/bin/python"), ("osx", f"{VENV_SETTING}/bin/python"),
     ("windows", f"{VENV_SETTING}\\Scripts\\python")],
)
def test_the_pip_task_installs_requirements_txt_with_the_venvs_own_python(platform: str, python: str) -> None:
    task = _tasks()[_host_task()["dependsOn"]]
    assert task["type"] == "shell"
    assert task[platform]["command"] == f"{python} -m pip install -r requirements.txt"
    assert (ROOT / "requirements.txt").is_file()


def test_the_settings_describe_a_python_v2_app_on_functions_4_deployed_with_a_remote_build() -> None:
    settings = _settings()
    assert settings["azureFunctions.projectLanguage"] == "Python"
    assert settings["azureFunctions.projectLanguageModel"] == 2
    assert settings["azureFunctions.projectRuntime"] == "~4"
    assert settings["azureFunctions.deploySubpath"] == "."
    assert settings["azureFunctions.scmDoBuildDuringDeployment"] is True


def test_the_venv_named_in_the_settings_is_ignored_by_git_and_never_deployed() -> None:
    venv = _settings()["azureFunctions.pythonVenv"]
    assert venv == ".venv"
    assert f"{venv}/" in _ignored(".gitignore")
    assert f"{venv}/" in _ignored(".funcignore")


def test_vscode_is_committed_but_never_deployed() -> None:
    assert ".vscode/" in _ignored(".funcignore")
    assert not {".vscode", ".vscode/", ".vscode/*"} & _ignored(".gitignore")


def test_the_editors_test_explorer_runs_the_same_tests_as_the_command_line() -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    settings = _settings()
    assert settings["python.testing.pytestEnabled"] is True
    assert settings["python.testing.pytestArgs"] == pyproject["tool"]["pytest"]["ini_options"]["testpaths"]


def test_a_second_configuration_debugs_the_demo_without_core_tools() -> None:
    demo = next(config for config in _launch() if config["request"] == "launch")
    assert demo["type"] == "debugpy"
    assert (demo["module"], demo["args"]) == ("tokens", ["serve", "--demo"])
    assert demo["cwd"] == "${workspaceFolder}"
    assert (ROOT / "tokens" / "__main__.py").is_file()
