"""Direct Line as its users run it, through both adapters: the function app's registered functions
(called as the Functions host calls them) and `python -m tokens serve` over real HTTP, each in front
of the fake Direct Line over real HTTP playing the variant (see tests/fakes.py for the public sources
of each): Enhanced authentication, a regional bot asked through another region's host, the site's
two keys during a rotation, and Copilot Studio's 3600 s tokens."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import azure.functions as func
import pytest
import requests

from tests.conftest import ALLOWED, base_env, served
from tests.fakes import SECRET, FakeDirectLine
from tests.hostcontext import InvocationContext
from tests.served import ServedApp

# `app.get_functions()` may be read only once per process: the adapter tests' reading.
from tests.test_function_app import FUNCTIONS
from tokens import routes

SECONDARY = "fake-directline-secret-key2-Wq4uPz8s"
ROUTE_FUNCTIONS = {"directline/token": "directline_token", "directline/resume": "directline_resume", "health": "health"}
HEADERS = {"Origin": ALLOWED, "Content-Type": "application/json", "X-Forwarded-For": "203.0.113.7:50000"}
# What Direct Line itself says in its error bodies (tests/fakes.py); none of it may reach a page or a log.
DIRECT_LINES_WORDS = ("unitedkingdom", "belongs to europe", "Missing user ID", "MissingProperty")


class Adapter(Protocol):
    def call(self, route: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]: ...
    def audit_records(self) -> list[dict[str, Any]]: ...
    def log_text(self) -> str: ...


class InProcess:
    """The function app's functions, called as the Functions host calls them."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def call(self, route: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        method = "GET" if route == "health" else "POST"
        raw = b"" if body is None else json.dumps(body).encode()
        request = func.HttpRequest(method=method, url=f"http://localhost/api/{route}", headers=HEADERS, body=raw)
        answer: func.HttpResponse = FUNCTIONS[ROUTE_FUNCTIONS[route]].get_user_function()(request, InvocationContext())
        return answer.status_code, json.loads(answer.get_body())

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in self._caplog.records if r.name == "tokens.audit"]

    def log_text(self) -> str:
        return "\n".join(record.getMessage() for record in self._caplog.records)


class OverHttp:
    """`python -m tokens serve` as a process; only what happened since this test opened it counts."""

    def __init__(self, app: ServedApp) -> None:
        self._app = app
        self._audit_seen = len(app.audit_records())
        self._log_seen = len(app.log_text())

    def call(self, route: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        url = f"{self._app.base_url}/api/{route}"
        if route == "health":
            answer = requests.get(url, headers={"Origin": ALLOWED}, timeout=10)
        else:
            answer = requests.post(url, data=json.dumps(body or {}), headers=HEADERS, timeout=10)
        return answer.status_code, answer.json()

    def audit_records(self) -> list[dict[str, Any]]:
        return self._app.audit_records()[self._audit_seen :]

    def log_text(self) -> str:
        return self._app.log_text()[self._log_seen :]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeDirectLine]:
    fake = FakeDirectLine()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: FakeDirectLine) -> Iterator[None]:
    """The module's fake plays the plain Direct Line again for every test."""
    upstream.keys = {SECRET, SECONDARY}
    upstream.enhanced_auth = upstream.region_not_allowed = False
    upstream.token_ttl = 1800
    upstream.requests.clear()
    yield


class LazyServers:
    """One `serve` process per settings variant, started when a test first needs it."""

    def __init__(self, stack: contextlib.ExitStack, upstream: FakeDirectLine, logs: Path) -> None:
        self._started: dict[str, ServedApp] = {}
        self._stack, self._upstream, self._logs = stack, upstream, logs

    def for_settings(self, overrides: dict[str, str]) -> ServedApp:
        key = json.dumps(overrides, sort_keys=True)
        if key not in self._started:
            env = base_env(self._upstream.base_url, **overrides)
            self._started[key] = self._stack.enter_context(served(env, self._logs))
        return self._started[key]


@pytest.fixture(scope="module")
def servers(upstream: FakeDirectLine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LazyServers]:
    with contextlib.ExitStack() as stack:
        yield LazyServers(stack, upstream, tmp_path_factory.mktemp("variants"))


@pytest.fixture(params=["function_app", "serve"])
def open_adapter(
    request: pytest.FixtureRequest,
    upstream: FakeDirectLine,
    servers: LazyServers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Any]:
    """`open_adapter(**settings)`: the adapter of this run, with the base settings plus these."""
    caplog.set_level(logging.INFO)

    def open_(**overrides: str) -> Adapter:
        settings = {"DIRECT_LINE_SECRET_SECONDARY": SECONDARY, **overrides}
        if request.param == "serve":
            return OverHttp(servers.for_settings(settings))
        for name, value in base_env(upstream.base_url, **settings).items():
            monkeypatch.setenv(name, value)
        routes.reset()
        return InProcess(caplog)

    yield open_
    routes.reset()


def _bearers(upstream: FakeDirectLine) -> list[str]:
    return [recorded.headers["Authorization"].removeprefix("Bearer ") for recorded in upstream.requests]


def _assert_nothing_of_direct_lines_own(*texts: str) -> None:
    for text in texts:
        for words in DIRECT_LINES_WORDS:
            assert words not in text


# -- the site's two keys -----------------------------------------------------------------------------


def test_the_second_key_is_never_sent_while_the_first_works(open_adapter: Any, upstream: FakeDirectLine) -> None:
    adapter = open_adapter()
    status, _ = adapter.call("directline/token", {})
    assert status == 200
    assert _bearers(upstream) == [SECRET]
    assert "secretSlot" not in adapter.audit_records()[-1]


def test_a_token_refused_to_the_first_key_is_minted_with_the_second_and_audited_so(
    open_adapter: Any, upstream: FakeDirectLine
) -> None:
    adapter = open_adapter()
    upstream.keys = {SECONDARY}  # key 1 was regenerated before the app was told
    status, answer = adapter.call("directline/token", {})
    assert status == 200
    assert answer["token"].startswith("dl-token-")
    assert _bearers(upstream) == [SECRET, SECONDARY]
    record = adapter.audit_records()[-1]
    assert (record["outcome"], record["secretSlot"]) == ("issued", "secondary")
    log = adapter.log_text()
    assert "DIRECT_LINE_SECRET_SECONDARY is tried" in log
    assert SECRET not in log and SECONDARY not in log


def test_a_resume_refused_to_the_first_key_reconnects_with_the_second(
    open_adapter: Any, upstream: FakeDirectLine
) -> None:
    adapter = open_adapter()
    _, started = adapter.call("directline/token", {})
    upstream.keys = {SECONDARY}
    upstream.requests.clear()
    resume = {"userHandle": started["userHandle"], "conversationTicket": started["conversationTicket"]}
    status, answer = adapter.call("directline/resume", resume)
    assert (status, answer["conversationId"]) == (200, started["conversationId"])
    assert _bearers(upstream) == [SECRET, SECONDARY]
    assert adapter.audit_records()[-1]["secretSlot"] == "secondary"


def test_both_keys_refused_is_502_and_audited_as_failed(open_adapter: Any, upstream: FakeDirectLine) -> None:
    adapter = open_adapter()
    upstream.keys = {"a-third-key-nobody-holds"}
    status, answer = adapter.call("directline/token", {})
    assert (status, answer["error"]["code"]) == (502, "upstream_error")
    assert _bearers(upstream) == [SECRET, SECONDARY]
    record = adapter.audit_records()[-1]
    assert (record["outcome"], record["reason"]) == ("failed", "upstream_error")
    assert "secretSlot" not in record


# -- a regional bot ----------------------------------------------------------------------------------


def test_a_regional_bot_asked_through_another_host_is_502_and_the_log_names_the_setting_and_the_hosts(
    open_adapter: Any, upstream: FakeDirectLine
) -> None:
    adapter = open_adapter()
    upstream.region_not_allowed = True
    status, answer = adapter.call("directline/token", {})
    assert (status, answer["error"]["code"]) == (502, "upstream_error")
    assert _bearers(upstream) == [SECRET]  # a region mismatch is no refused key: the second is not tried
    log = adapter.log_text()
    assert "RegionNotAllowed" in log and "DIRECT_LINE_ENDPOINT" in log
    assert "https://europe.directline.botframework.com/v3/directline" in log
    assert "https://india.directline.botframework.com/v3/directline" in log
    _assert_nothing_of_direct_lines_own(json.dumps(answer), log)


# -- Enhanced authentication -------------------------------------------------------------------------


def test_a_reconnect_refused_under_enhanced_authentication_is_409_and_the_log_names_the_setting(
    open_adapter: Any, upstream: FakeDirectLine
) -> None:
    adapter = open_adapter()
    _, started = adapter.call("directline/token", {})
    upstream.enhanced_auth = True  # turned on in the portal; the setting still says false
    resume = {"userHandle": started["userHandle"], "conversationTicket": started["conversationTicket"]}
    status, answer = adapter.call("directline/resume", resume)
    assert (status, answer["error"]["code"]) == (409, "resume_unavailable")
    record = adapter.audit_records()[-1]
    assert (record["event"], record["outcome"], record["reason"]) == ("directline.resume", "denied", "resume_unavailable")
    assert record["userId"] == started["userId"]
    log = adapter.log_text()
    assert "DIRECT_LINE_ENHANCED_AUTH=true" in log
    _assert_nothing_of_direct_lines_own(json.dumps(answer), log)


def test_with_enhanced_authentication_set_no_ticket_is_issued(open_adapter: Any) -> None:
    adapter = open_adapter(DIRECT_LINE_ENHANCED_AUTH="true")
    status, answer = adapter.call("directline/token", {})
    assert status == 200
    assert "conversationTicket" not in answer
    assert answer["userHandle"]


def test_with_enhanced_authentication_set_resume_is_409_without_calling_direct_line(
    open_adapter: Any, upstream: FakeDirectLine
) -> None:
    adapter = open_adapter(DIRECT_LINE_ENHANCED_AUTH="true")
    _, started = adapter.call("directline/token", {})
    upstream.requests.clear()
    status, answer = adapter.call("directline/resume", {"userHandle": started["userHandle"], "conversationTicket": "x"})
    assert (status, answer["error"]["code"]) == (409, "resume_unavailable")
    assert upstream.requests == []
    assert adapter.audit_records()[-1]["reason"] == "resume_unavailable"


# -- Copilot Studio's token lifetime, and health -----------------------------------------------------


def test_copilot_studios_hour_long_tokens_pass_through_with_their_lifetime(
    open_adapter: Any, upstream: FakeDirectLine
) -> None:
    adapter = open_adapter()
    upstream.token_ttl = 3600
    status, answer = adapter.call("directline/token", {})
    assert (status, answer["expires_in"]) == (200, 3600)


def test_health_warns_when_every_browser_would_be_refused(open_adapter: Any) -> None:
    adapter = open_adapter(ALLOWED_ORIGINS="")
    status, answer = adapter.call("health")
    assert (status, answer["status"], answer["warnings"]) == (200, "ok", ["ALLOWED_ORIGINS"])


def test_health_has_no_warnings_when_pages_are_allowed(open_adapter: Any) -> None:
    status, answer = open_adapter().call("health")
    assert status == 200
    assert "warnings" not in answer


def test_health_has_no_warnings_when_no_browser_page_is_meant_to_call(open_adapter: Any) -> None:
    status, answer = open_adapter(ALLOWED_ORIGINS="none").call("health")
    assert (status, answer["status"]) == (200, "ok")
    assert "warnings" not in answer
