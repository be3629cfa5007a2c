"""Shared fixtures: a fake Direct Line on loopback, services built on it, audit capture, and the
hosted server (`python -m tokens serve`) started as a real process."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import SECRET, FakeDirectLine
from tests.served import ServedApp, serving
from tokens import routes
from tokens.http import Request, Response
from tokens.service import TokenService, build_service
from tokens.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DATA = ROOT / "tests" / "data"
ALLOWED = "https://www.contoso.com"


@pytest.fixture(autouse=True, scope="session")
def _outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run the tests in an empty directory: the settings are read from the working directory's
    local.settings.json and .env, and a developer's own copies in the repository must not apply."""
    with contextlib.chdir(tmp_path_factory.mktemp("cwd")):
        yield


def corpus_lines(name: str) -> list[str]:
    """The cases of a one-per-line corpus in tests/data, without blank lines and # comments."""
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def base_env(endpoint: str, **overrides: str) -> dict[str, str]:
    env = {
        "DIRECT_LINE_SECRET": SECRET,
        "DIRECT_LINE_ENDPOINT": endpoint,
        "ALLOWED_ORIGINS": f"{ALLOWED},https://*.contoso.com",
        "UPSTREAM_TIMEOUT": "1",
        "RATE_LIMIT": "1000/minute",
        "GLOBAL_RATE_LIMIT": "100000/minute",
    }
    env.update(overrides)
    return env


@pytest.fixture
def fake() -> Iterator[FakeDirectLine]:
    server = FakeDirectLine()
    yield server
    server.close()


ServiceFactory = Callable[..., TokenService]


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeDirectLine]:
    """One fake Direct Line for a module's served apps, which outlive a test."""
    server = FakeDirectLine()
    yield server
    server.close()


@pytest.fixture
def make_service(fake: FakeDirectLine) -> Iterator[ServiceFactory]:
    built: list[TokenService] = []

    def factory(endpoint: str | None = None, **overrides: str) -> TokenService:
        service = build_service(Settings.from_env(base_env(endpoint or fake.base_url, **overrides)))
        built.append(service)
        return service

    yield factory
    for service in built:
        service.client.close()
        service.limiter.close()


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service()


@pytest.fixture
def configured(fake: FakeDirectLine, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDirectLine]:
    """The process's own service (tokens.routes, as both adapters use it) set up from the
    environment, against the fake Direct Line; built afresh before and after the test."""
    for key, value in base_env(fake.base_url).items():
        monkeypatch.setenv(key, value)
    routes.reset()
    yield fake
    routes.reset()


def token_request(
    body: bytes | dict[str, Any] | None = None,
    *,
    origin: str | None = ALLOWED,
    content_type: str | None = "application/json",
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> Request:
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    all_headers: dict[str, str] = {"X-Forwarded-For": "203.0.113.7:50000"}
    if origin is not None:
        all_headers["Origin"] = origin
    if content_type is not None and raw:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    return Request.build(method, all_headers, raw, invocation_id="test-invocation")


def payload(response: Response) -> dict[str, Any]:
    data = json.loads(response.body)
    assert isinstance(data, dict)
    return data


class AuditLog:
    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    @property
    def records(self) -> list[dict[str, Any]]:
        return [
            json.loads(record.getMessage())
            for record in self._caplog.records
            if record.name == "tokens.audit"
        ]

    @property
    def all_text(self) -> str:
        """Every captured log line of every logger, formatted, for leak checks."""
        return "\n".join(
            f"{record.name} {record.getMessage()} {record.exc_text or ''}" for record in self._caplog.records
        )

    def only(self) -> dict[str, Any]:
        records = self.records
        assert len(records) == 1, records
        return records[0]


def assert_denied(
    response: Response, status: int, code: str, fake: FakeDirectLine, audit: AuditLog
) -> dict[str, Any]:
    """The request was refused with this status and code, minted nothing, and left one audit record
    saying so; returns that record for further checks."""
    assert response.status == status
    assert payload(response)["error"]["code"] == code
    assert fake.requests == []
    record = audit.only()
    assert (record["outcome"], record["status"], record["reason"]) == ("denied", status, code)
    return record


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> AuditLog:
    caplog.set_level(logging.DEBUG)
    return AuditLog(caplog)


STORAGE_ERROR = "Rate-limit storage unreachable"


def storage_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The rate limiter's lines saying that its shared store could not be reached."""
    return [
        record
        for record in caplog.records
        if record.name == "tokens.ratelimit" and record.getMessage().startswith(STORAGE_ERROR)
    ]


# -- the hosted server as a real process --------------------------------------------------------


_log_serial = itertools.count(1)


@contextlib.contextmanager
def served(
    env: Mapping[str, str],
    tmp_path: Path,
    *,
    demo: bool = False,
    name: str = "serve",
    workers: int | None = None,
    args: Sequence[str] = (),
    cwd: Path | None = None,
    module: str = "tokens",
) -> Iterator[ServedApp]:
    """`python -m tokens serve` (or `module`'s) with these settings, logging into tmp_path; a
    misconfigured app (health 503) counts as started, since some tests serve one on purpose."""
    log_path = tmp_path / f"{name}-{next(_log_serial)}.log"
    with serving(
        env, log_path, demo=demo, workers=workers, args=args, ready_statuses=(200, 503), cwd=cwd, module=module
    ) as app:
        yield app
