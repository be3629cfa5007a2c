"""`python -m tokens serve` as a real process: every SPEC route, status and header over HTTP."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ALLOWED, base_env, served
from tests.fakes import SECRET, FakeDirectLine
from tests.served import ServedApp


@pytest.fixture(scope="module")
def app(fake_upstream: FakeDirectLine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with served(base_env(fake_upstream.base_url), tmp_path_factory.mktemp("serve")) as running:
        yield running


def _post(app: ServedApp, route: str, **kwargs: object) -> requests.Response:
    return requests.post(f"{app.base_url}/api/{route}", timeout=10, **kwargs)  # type: ignore[arg-type]


def test_token_route_answers_200_with_the_spec_shape(app: ServedApp) -> None:
    response = _post(app, "directline/token", json={"userName": "Ann"}, headers={"Origin": ALLOWED})
    assert response.status_code == 200
    data = response.json()
    assert {"conversationId", "token", "expires_in", "userId", "domain", "userHandle"} <= set(data)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Vary"] == "Origin"


def test_refresh_route_answers_through_the_server(app: ServedApp, fake_upstream: FakeDirectLine) -> None:
    response = _post(app, "directline/refresh", headers={"Authorization": "Bearer dl-token-abc"})
    assert response.status_code == 200
    assert set(response.json()) == {"conversationId", "token", "expires_in", "domain"}
    assert fake_upstream.requests[-1].headers["Authorization"] == "Bearer dl-token-abc"


def test_resume_route_answers_through_the_server(app: ServedApp, fake_upstream: FakeDirectLine) -> None:
    started = _post(app, "directline/token", json={}, headers={"Origin": ALLOWED}).json()
    body = {"userHandle": started["userHandle"], "conversationTicket": started["conversationTicket"]}
    response = _post(app, "directline/resume", json=body, headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.json()["conversationId"] == started["conversationId"]
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert fake_upstream.requests[-1].path == f"/v3/directline/conversations/{started['conversationId']}"


def test_health_route(app: ServedApp) -> None:
    response = requests.get(f"{app.base_url}/api/health", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok", "directLine": "available"})
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("route", ["directline/token", "directline/refresh", "directline/resume"])
def test_preflight_through_the_server(app: ServedApp, route: str) -> None:
    response = requests.options(
        f"{app.base_url}/api/{route}",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
        timeout=5,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Vary"] == "Origin"


def test_disallowed_origin_is_403_through_the_server(app: ServedApp) -> None:
    response = _post(app, "directline/token", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_unknown_path_is_404_in_the_error_shape(app: ServedApp) -> None:
    for path in ("/api/nope", "/api/directline/token/extra", "/", "/etc/passwd", "/api/../README.md"):
        response = requests.get(f"{app.base_url}{path}", timeout=5)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("method", "route"), [("GET", "directline/token"), ("PUT", "directline/refresh"), ("POST", "health"), ("DELETE", "health")])
def test_wrong_method_is_405_with_allow(app: ServedApp, method: str, route: str) -> None:
    response = requests.request(method, f"{app.base_url}/api/{route}", timeout=5)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "Allow" in response.headers


def test_body_over_the_limit_is_413(app: ServedApp) -> None:
    response = _post(app, "directline/token", data=b"{" + b" " * 5000 + b"}", headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def _raw_error(app: ServedApp, headers: dict[str, str]) -> tuple[int, str, str, str]:
    """POST with these headers exactly (requests would correct framing ones); the answer's status,
    Cache-Control, error code and message."""
    port = app.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", "/api/directline/token", skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, response.getheader("Cache-Control") or "", body["error"]["code"], body["error"]["message"]


def test_a_malformed_content_length_is_400_in_the_error_shape(app: ServedApp) -> None:
    status, cache_control, code, message = _raw_error(app, {"Content-Length": "pKB"})
    assert (status, cache_control, code) == (400, "no-store", "invalid_request")
    assert "pKB" not in message


def test_a_body_over_the_servers_cap_is_413_in_the_error_shape(app: ServedApp) -> None:
    # Declared, not sent: the server refuses on the header alone, before reading any of it.
    status, cache_control, code, _ = _raw_error(
        app, {"Content-Type": "application/json", "Content-Length": str(2 * 1024 * 1024)}
    )
    assert (status, cache_control, code) == (413, "no-store", "payload_too_large")


def test_wrong_media_type_is_415(app: ServedApp) -> None:
    response = _post(app, "directline/token", data=b"userName=Ann", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_audit_lines_are_logged_one_per_post_without_secrets(app: ServedApp) -> None:
    before = len(app.audit_records())
    response = _post(app, "directline/token", json={})
    token = response.json()["token"]
    _post(app, "directline/token", data=b"[]", headers={"Content-Type": "application/json"})
    records = app.audit_records()[before:]
    assert [r["status"] for r in records] == [200, 400]
    assert records[0]["clientIp"] == "127.0.0.0"
    log = app.log_text()
    assert SECRET not in log and token not in log


def test_serve_without_a_secret_names_the_setting_and_exits(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as caught, served({"DIRECT_LINE_SECRET": ""}, tmp_path):
        pass
    assert "DIRECT_LINE_SECRET" in str(caught.value)


def test_openapi_description_is_served(app: ServedApp) -> None:
    response = requests.get(f"{app.base_url}/api/openapi.yaml", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/yaml")
    assert response.text.startswith("openapi: 3.1.0")


def test_health_answers_an_allowed_origin_with_cors_headers(app: ServedApp) -> None:
    response = requests.get(f"{app.base_url}/api/health", headers={"Origin": ALLOWED}, timeout=5)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_cors_exposes_retry_after_to_the_page(app: ServedApp) -> None:
    response = _post(app, "directline/token", json={}, headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"


# -- processes, sockets and the client address ------------------------------------------------------


def test_two_workers_answer_and_no_audit_line_is_lost_when_serve_stops(
    fake_upstream: FakeDirectLine, tmp_path: Path
) -> None:
    """Each request on a new connection, so that both workers take some; the log is read after the
    stop (SIGTERM), when every queued line must have been written."""
    with served(base_env(fake_upstream.base_url), tmp_path, workers=2) as running:
        statuses = [
            requests.post(f"{running.base_url}/api/directline/token", json={}, timeout=10).status_code
            for _ in range(60)
        ]
    assert statuses == [200] * 60
    log = running.log_path.read_text()
    assert "2 workers with RATE_LIMIT_STORAGE=memory://: each worker counts on its own" in log
    assert sum(1 for line in log.splitlines() if " tokens.audit " in line) == 60


def test_workers_stop_by_themselves_and_keep_every_audit_line_when_serve_is_killed_outright(
    fake_upstream: FakeDirectLine, tmp_path: Path
) -> None:
    """SIGKILL leaves the parent no chance to stop its workers: each notices on its own, stops as
    on Ctrl-C, and writes what it queued."""
    with served(base_env(fake_upstream.base_url), tmp_path, workers=2) as running:
        for _ in range(20):
            requests.post(f"{running.base_url}/api/directline/token", json={}, timeout=10)
        running.process.kill()
        running.process.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _still_answers(running):
            time.sleep(0.2)
        assert not _still_answers(running), "a worker outlived its parent"
    assert len(running.audit_records()) == 20


def _still_answers(app: ServedApp) -> bool:
    try:
        requests.get(f"{app.base_url}/api/health", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def test_zero_trusted_hops_counts_callers_by_the_connections_address(
    fake_upstream: FakeDirectLine, tmp_path: Path
) -> None:
    env = base_env(fake_upstream.base_url, TRUSTED_PROXY_HOPS="0", AUDIT_CLIENT_IP="full")
    with served(env, tmp_path) as running:
        requests.post(
            f"{running.base_url}/api/directline/token", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10
        )
        record = running.audit_records()[-1]
    assert record["clientIp"] == "127.0.0.1"
