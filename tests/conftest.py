"""Shared fixtures: a fake Direct Line on loopback, services built on it, audit capture, and the
hosted server (`python -m tokens serve`) started as a real process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes import SECRET, FakeDirectLine
from tokens.http import Request, Response
from tokens.service import TokenService, build_service
from tokens.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
ALLOWED = "https://www.contoso.com"


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


# -- the hosted server as a real process --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServedApp:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def audit_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            if " tokens.audit " in line:
                records.append(json.loads(line.split(" tokens.audit ", 1)[1]))
        return records


@contextlib.contextmanager
def served(
    env: Mapping[str, str], tmp_path: Path, *, demo: bool = False, name: str = "serve"
) -> Iterator[ServedApp]:
    port = free_port()
    log_path = tmp_path / f"{name}-{port}.log"
    command = [sys.executable, "-m", "tokens", "serve", "--port", str(port)]
    if demo:
        command.append("--demo")
    child_env = {key: value for key, value in os.environ.items() if not key.startswith(("DIRECT_LINE", "AUTH_", "RATE_", "ALLOWED_"))}
    child_env.update(env)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=log_file, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base_url, process, log_path)
        yield ServedApp(base_url, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited early:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/api/health", timeout=1).status_code in (200, 503):
                return
        time.sleep(0.1)
    raise RuntimeError(f"serve did not start:\n{log_path.read_text(errors='replace')}")
