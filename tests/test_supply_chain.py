"""Every runtime dependency is pinned exactly, and PyJWT is at a release without known advisories.
A package may be pinned more than once only under environment markers that split the Python
versions between its pins (azure-functions: 1.x below 3.13, 2.x from 3.13)."""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

# Every Python the app supports (pyproject's requires-python) and the next two, so that a release of
# Python finds exactly one pin of each package waiting for it.
PYTHON_VERSIONS = [f"3.{minor}" for minor in range(11, 16)]


def _requirement_lines() -> list[Requirement]:
    found = []
    for raw in (ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            found.append(Requirement(line))  # raises on a line pip could not read either
    return found


def _requirements() -> dict[str, list[Requirement]]:
    """Each package's pins, by canonical name: usually one, several only under markers."""
    pins: dict[str, list[Requirement]] = {}
    for requirement in _requirement_lines():
        pins.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return pins


def _pin_for(pins: list[Requirement], python_version: str) -> list[str]:
    """The exact versions pinned for this Python (one, if the markers partition the versions)."""
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    return [
        str(spec.version)
        for pin in pins
        if pin.marker is None or pin.marker.evaluate(environment)
        for spec in pin.specifier
    ]


def _is_exact(requirement: Requirement) -> bool:
    specs = list(requirement.specifier)
    return len(specs) == 1 and specs[0].operator == "==" and re.fullmatch(r"[0-9][0-9A-Za-z.]*", specs[0].version) is not None


def test_every_runtime_dependency_is_pinned_to_an_exact_version() -> None:
    unpinned = [str(requirement) for requirement in _requirement_lines() if not _is_exact(requirement)]
    assert unpinned == []


def test_markers_give_each_python_version_exactly_one_pin_of_each_package() -> None:
    per_version = {
        (name, version): _pin_for(pins, version) for name, pins in _requirements().items() for version in PYTHON_VERSIONS
    }
    assert {key: found for key, found in per_version.items() if len(found) != 1} == {}


def test_azure_functions_is_pinned_once_below_python_3_13_and_once_from_it() -> None:
    """1.26.0 declares Requires-Python <3.13 and every 2.x release >=3.13."""
    pins = _requirements()["azure-functions"]
    assert all(_is_exact(pin) for pin in pins)
    assert {version: _pin_for(pins, version) for version in ("3.11", "3.12", "3.13", "3.14")} == {
        "3.11": ["1.26.0"], "3.12": ["1.26.0"], "3.13": ["2.3.0"], "3.14": ["2.3.0"],
    }


def test_this_interpreter_runs_the_pinned_release_for_its_version() -> None:
    """pip honoured the markers: what is installed is the pin for the Python running the tests."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name, pins in _requirements().items():
        assert [metadata.version(name)] == _pin_for(pins, running), name


PRODUCT = ["azure-functions", "requests", "pyjwt", "python-dotenv", "limits", "redis", "redis-entraid", "waitress"]


def test_the_products_dependencies_are_all_present() -> None:
    assert set(PRODUCT) <= set(_requirements())


def test_pyjwt_is_2_13_0_or_later() -> None:
    (pin,) = _requirements()["pyjwt"]
    (spec,) = pin.specifier
    assert tuple(int(part) for part in spec.version.split(".")) >= (2, 13, 0)


def test_the_worker_is_never_deployed() -> None:
    assert "azure-functions-worker" not in _requirements()


def test_transitive_runtime_dependencies_are_pinned_too() -> None:
    """Walk what the installed runtime packages require: each of those must be pinned as well."""
    pins = _requirements()
    pending = [*PRODUCT, "cryptography"]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not _marker_applies(requirement.marker):
                continue
            pending.append(canonicalize_name(requirement.name))
    assert sorted(seen - set(pins)) == []


def _marker_applies(marker: Marker) -> bool:
    # "extra" is empty: what a package needs only with an extra is not what the app installs.
    return marker.evaluate({"extra": ""})


def test_only_the_app_is_deployed() -> None:
    """.funcignore keeps everything that is not the app out of the package sent to Azure: the demo's
    emulator, the tests, benchmarks, docs, the sample page and local settings."""
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert {
        "demo/", "requirements-demo.txt", "tests/", "benchmarks/", "docs/", "web/", "local.settings.json", ".env", ".venv/"
    } <= ignored
    deployed = {path.name for path in ROOT.iterdir()} - {entry.rstrip("/") for entry in ignored}
    assert {"function_app.py", "host.json", "requirements.txt", "tokens"} <= deployed


def test_the_other_pythons_environments_are_neither_committed_nor_deployed() -> None:
    """.ci/run builds .venv-py312 and .venv-py313 beside .venv to run the suite under each Python."""
    venvs = {".venv-py312/", ".venv-py313/"}
    assert venvs <= set((ROOT / ".gitignore").read_text().splitlines())
    assert venvs <= set((ROOT / ".funcignore").read_text().splitlines())
