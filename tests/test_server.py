"""Hosted mode's WSGI adapter and sockets (tokens/server.py), in process."""

from __future__ import annotations

import io
import json
import socket
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from tests.fakes import FakeDirectLine
from tokens.body import MAX_BODY_BYTES
from tokens.server import OPENAPI_FILE, HostedApp, core_request, listen, listeners


def environ(path: str = "/api/health", method: str = "GET", body: bytes = b"", **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "PATH_INFO": path, "REQUEST_METHOD": method, "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "198.51.100.9", **extra,
    }
    setup_testing_defaults(env)
    return env


def call(app: HostedApp, env: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    body = b"".join(app(env, start_response))
    status, headers = started[0]
    return status, dict(headers), body


def test_the_request_carries_the_peer_and_the_peer_is_appended_to_x_forwarded_for() -> None:
    request = core_request(environ(HTTP_X_FORWARDED_FOR="203.0.113.7"))
    assert request.peer == "198.51.100.9"
    assert request.header("X-Forwarded-For") == "203.0.113.7, 198.51.100.9"


def test_a_request_without_x_forwarded_for_gets_the_peer_alone() -> None:
    assert core_request(environ()).header("x-forwarded-for") == "198.51.100.9"


def test_header_names_are_lower_cased_and_the_content_type_kept() -> None:
    request = core_request(environ(method="POST", CONTENT_TYPE="application/json", HTTP_ORIGIN="https://a.example"))
    assert request.header("content-type") == "application/json"
    assert request.headers["origin"] == "https://a.example"


def test_at_most_one_byte_past_the_body_limit_is_read() -> None:
    request = core_request(environ(method="POST", body=b"x" * (MAX_BODY_BYTES + 5000)))
    assert len(request.body) == MAX_BODY_BYTES + 1


def test_each_request_gets_its_own_invocation_id() -> None:
    assert core_request(environ()).invocation_id != core_request(environ()).invocation_id


def test_api_paths_are_answered_from_the_route_table(configured: FakeDirectLine) -> None:
    status, headers, body = call(HostedApp(), environ())
    assert (status, json.loads(body)) == ("200 OK", {"status": "ok", "directLine": "available"})
    assert headers["Cache-Control"] == "no-store"


def test_the_openapi_description_is_served_in_every_mode() -> None:
    status, headers, body = call(HostedApp(), environ("/api/openapi.yaml"))
    assert status == "200 OK" and body == OPENAPI_FILE.read_bytes()
    assert headers["Content-Type"].startswith("application/yaml")


def test_the_sample_page_is_served_only_in_demo_mode() -> None:
    assert call(HostedApp(serve_pages=False), environ("/"))[0] == "404 Not Found"
    status, headers, body = call(HostedApp(serve_pages=True), environ("/"))
    assert status == "200 OK" and b"token-client.js" in body
    assert headers["Content-Type"].startswith("text/html")


def test_files_answer_head_without_a_body_and_refuse_other_methods() -> None:
    assert call(HostedApp(), environ("/api/openapi.yaml", "HEAD"))[2] == b""
    status, _, body = call(HostedApp(), environ("/api/openapi.yaml", "POST"))
    assert status == "405 Method Not Allowed"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_a_port_in_use_is_an_error_before_anything_is_served() -> None:
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listen("127.0.0.1", taken[0].getsockname()[1])
    finally:
        for sock in taken:
            sock.close()


def test_each_worker_gets_its_own_socket_on_one_port() -> None:
    groups = listeners("127.0.0.1", 0, 3)
    try:
        socks = [group[0] for group in groups]
        assert len({id(sock) for sock in socks}) == 3
        assert len({sock.getsockname()[1] for sock in socks}) == 1
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in socks)
    finally:
        for group in groups:
            for sock in group:
                sock.close()


def test_one_worker_binds_without_sharing_its_port() -> None:
    groups = listeners("127.0.0.1", 0, 1)
    try:
        assert len(groups) == 1
        assert not groups[0][0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        groups[0][0].close()


def test_every_status_the_service_answers_has_its_reason_phrase() -> None:
    """The status line names the status (`409 Conflict`), never `Unknown`."""
    from tokens import errors
    from tokens.server import _REASONS

    statuses = {200, 204} | {
        kind.status for kind in vars(errors).values() if isinstance(kind, type) and issubclass(kind, errors.ServiceError)
    }
    assert sorted(statuses - set(_REASONS)) == []
