"""Every runtime dependency is pinned exactly, and PyJWT is at a release without known advisories."""

from __future__ import annotations

import re
from importlib import metadata

from tests.conftest import ROOT

REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[[^\]]+\])?(?P<spec>.*)$")


def _requirements() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in (ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = REQUIREMENT.match(line)
        assert match, f"unreadable requirement: {raw!r}"
        pins[match["name"].lower().replace("_", "-")] = match["spec"].strip()
    return pins


def test_every_runtime_dependency_is_pinned_to_an_exact_version() -> None:
    unpinned = {name: spec for name, spec in _requirements().items() if not re.fullmatch(r"==[0-9][0-9A-Za-z.]*", spec)}
    assert unpinned == {}


def test_the_products_dependencies_are_all_present() -> None:
    assert {"azure-functions", "requests", "pyjwt", "python-dotenv", "limits", "redis", "waitress"} <= set(_requirements())


def test_pyjwt_is_2_13_0_or_later() -> None:
    version = tuple(int(part) for part in _requirements()["pyjwt"].removeprefix("==").split("."))
    assert version >= (2, 13, 0)


def test_the_worker_is_never_deployed() -> None:
    assert "azure-functions-worker" not in _requirements()


def test_transitive_runtime_dependencies_are_pinned_too() -> None:
    """Walk what the installed runtime packages require: each of those must be pinned as well."""
    pins = _requirements()
    pending = ["azure-functions", "requests", "pyjwt", "python-dotenv", "limits", "redis", "waitress", "cryptography"]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in metadata.requires(name) or []:
            if "extra ==" in requirement:
                continue
            if ";" in requirement and not _marker_applies(requirement.split(";", 1)[1]):
                continue
            match = REQUIREMENT.match(requirement.split(";")[0].strip())
            assert match
            pending.append(re.split(r"[<>=!~ (]", match["name"])[0].lower().replace("_", "-"))
    assert sorted(seen - set(pins)) == []


def _marker_applies(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker.strip()).evaluate()


def test_only_the_app_is_deployed() -> None:
    """.funcignore keeps everything that is not the app out of the package sent to Azure: the demo's
    emulator, the tests, benchmarks, docs, the sample page and local settings."""
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert {"demo/", "tests/", "benchmarks/", "docs/", "web/", "local.settings.json", ".env", ".venv/"} <= ignored
    deployed = {path.name for path in ROOT.iterdir()} - {entry.rstrip("/") for entry in ignored}
    assert {"function_app.py", "host.json", "requirements.txt", "tokens"} <= deployed
