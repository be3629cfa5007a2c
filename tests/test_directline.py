"""Every way Direct Line can fail maps to the SPEC's status and code, with an audit line, the one
retry where the SPEC allows it, and nothing secret or upstream-made in the answer or the logs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import make_certificate
from tests.conftest import AuditLog, ServiceFactory, payload, token_request
from tests.fakes import (
    SECRET,
    Behaviour,
    FakeClock,
    FakeDirectLine,
    LoopbackServer,
    QuietHandler,
    refused_url,
)
from tokens import trust
from tokens.breaker import Breaker
from tokens.directline import DirectLineClient, new_session
from tokens.errors import (
    ResumeUnavailable,
    SecretRefused,
    ServiceError,
    UpstreamTimeout,
    UpstreamUnavailable,
    WrongRegion,
)
from tokens.service import TokenService

UPSTREAM_SECRET_BODY = b'{"error":{"code":"BadArgument","message":"internal detail 9f8e7d"}}'


@dataclass(frozen=True)
class Fault:
    name: str
    script: Callable[[FakeDirectLine], None]
    status: int
    code: str
    retry_after: str | None = None
    upstream_calls: int = 1


def _twice(action: Callable[[FakeDirectLine], None]) -> Callable[[FakeDirectLine], None]:
    def script(fake: FakeDirectLine) -> None:
        action(fake)
        action(fake)

    return script


FAULTS = [
    Fault("400", lambda f: f.then_status(400, UPSTREAM_SECRET_BODY), 502, "upstream_error"),
    Fault("401", lambda f: f.then_status(401, UPSTREAM_SECRET_BODY), 502, "upstream_error"),
    Fault("403", lambda f: f.then_status(403, UPSTREAM_SECRET_BODY), 502, "upstream_error"),
    Fault("404", lambda f: f.then_status(404, UPSTREAM_SECRET_BODY), 502, "upstream_error"),
    Fault("429 with Retry-After", lambda f: f.then_status(429, Retry_After="7"), 503, "upstream_unavailable", "7"),
    Fault("429 with a long Retry-After", lambda f: f.then_status(429, Retry_After="3600"), 503, "upstream_unavailable", "60"),
    Fault("429 without Retry-After", lambda f: f.then_status(429), 503, "upstream_unavailable"),
    Fault("500", _twice(lambda f: f.then_status(500, UPSTREAM_SECRET_BODY)), 502, "upstream_error", None, 2),
    Fault("502", _twice(lambda f: f.then_status(502, UPSTREAM_SECRET_BODY)), 502, "upstream_error", None, 2),
    Fault("503", _twice(lambda f: f.then_status(503, Retry_After="5")), 503, "upstream_unavailable", "5", 2),
    Fault("hang past the timeout", lambda f: f.then_hang(5), 504, "upstream_timeout"),
    Fault("reset mid-response", _twice(lambda f: f.then_reset()), 503, "upstream_unavailable", None, 2),
    Fault("200 with malformed JSON", lambda f: f.then_body(b'{"token": "abc", '), 502, "upstream_error"),
    Fault("200 with JSON lacking token", lambda f: f.then_body(b'{"conversationId": "c"}'), 502, "upstream_error"),
    Fault("200 with a JSON array", lambda f: f.then_body(b"[1, 2]"), 502, "upstream_error"),
    Fault("200 with a 10 MB body", lambda f: f.then_body(b'{"token":"' + b"a" * 10_000_000 + b'"}'), 502, "upstream_error"),
    Fault("302 redirect", lambda f: f.then_status(302, b"", Location="https://evil.example/"), 502, "upstream_error"),
    # Only strict JSON (RFC 8259) of a sane depth is an answer: anything else would be passed on.
    Fault("200 with NaN", lambda f: f.then_body(b'{"conversationId": "c", "token": "t", "expires_in": NaN}'), 502, "upstream_error"),
    Fault("200 with Infinity", lambda f: f.then_body(b'{"conversationId": "c", "token": "t", "x": -Infinity}'), 502, "upstream_error"),
    Fault("200 nested 1,500 deep", lambda f: f.then_body(b'{"conversationId": "c", "token": "t", "x": ' + b"[" * 1500 + b"]" * 1500 + b"}"), 502, "upstream_error"),
    Fault("200 nested 9 deep", lambda f: f.then_body(b'{"conversationId": "c", "token": "t", "x": ' + b"[" * 8 + b"]" * 8 + b"}"), 502, "upstream_error"),
    Fault("200 with a duplicate key", lambda f: f.then_body(b'{"conversationId": "c", "token": "t", "token": "u"}'), 502, "upstream_error"),
    Fault("200 with a lone surrogate", lambda f: f.then_body(b'{"conversationId": "c", "token": "\\ud800"}'), 502, "upstream_error"),
    Fault("200 that is not UTF-8", lambda f: f.then_body(b'{"conversationId": "c", "token": "\xff"}'), 502, "upstream_error"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_upstream_fault_is_answered_as_the_spec_says(
    fault: Fault, make_service: ServiceFactory, fake: FakeDirectLine, audit: AuditLog
) -> None:
    service = make_service()
    fault.script(fake)
    response = service.issue_token(token_request())
    assert response.status == fault.status
    assert payload(response)["error"]["code"] == fault.code
    assert response.all_headers().get("Retry-After") == fault.retry_after
    assert len(fake.requests) == fault.upstream_calls
    record = audit.only()
    assert record["status"] == fault.status
    assert record["reason"] == fault.code
    assert record["outcome"] == "failed"
    _assert_nothing_leaked(response.body, audit)


def _assert_nothing_leaked(body: bytes, audit: AuditLog) -> None:
    text = body.decode()
    for forbidden in (SECRET, "internal detail", "BadArgument", "evil.example"):
        assert forbidden not in text
        assert forbidden not in audit.all_text
    assert set(json.loads(body)) == {"error"}


def test_connection_refused_is_503_after_one_retry(make_service: ServiceFactory, audit: AuditLog) -> None:
    service = make_service(endpoint=refused_url())
    response = service.issue_token(token_request())
    assert response.status == 503
    assert payload(response)["error"]["code"] == "upstream_unavailable"
    assert audit.only()["reason"] == "upstream_unavailable"
    _assert_nothing_leaked(response.body, audit)


def test_hang_is_cut_at_the_upstream_timeout(make_service: ServiceFactory, fake: FakeDirectLine) -> None:
    service = make_service(UPSTREAM_TIMEOUT="0.5")
    fake.then_hang(5)
    started = time.monotonic()
    response = service.issue_token(token_request())
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert elapsed < 2.5  # the deadline, not the fake's 5 s hang, ended the call


def test_one_failure_then_success_is_retried_transparently(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service()
    fake.then_status(503)
    response = service.issue_token(token_request())
    assert response.status == 200
    assert len(fake.requests) == 2


def test_retry_after_is_never_slept_on(make_service: ServiceFactory, fake: FakeDirectLine) -> None:
    service = make_service(UPSTREAM_TIMEOUT="5")
    fake.then_status(503, Retry_After="30")
    fake.then_status(503, Retry_After="30")
    started = time.monotonic()
    response = service.issue_token(token_request())
    assert time.monotonic() - started < 2
    assert response.all_headers()["Retry-After"] == "30"


def test_no_retry_when_the_deadline_is_spent(make_service: ServiceFactory, fake: FakeDirectLine) -> None:
    service = make_service(UPSTREAM_TIMEOUT="0.5")
    fake.delay = 0.4  # the first attempt uses most of the budget: no second one fits
    fake.then_status(503)
    response = service.issue_token(token_request())
    assert response.status == 503
    assert len(fake.requests) == 1


def test_a_flat_enough_answer_with_unknown_fields_is_passed_on(service: TokenService, fake: FakeDirectLine) -> None:
    fake.then_body(b'{"conversationId": "c", "token": "t", "expires_in": 1800, "x": [[[["deep enough"]]]]}')
    assert payload(service.issue_token(token_request()))["x"] == [[[["deep enough"]]]]


def test_upstream_connections_are_pooled(make_service: ServiceFactory, fake: FakeDirectLine) -> None:
    service = make_service()
    for _ in range(5):
        assert service.issue_token(token_request()).status == 200
    assert fake.connections == 1


def test_trickling_answer_is_cut_at_the_deadline(make_service: ServiceFactory, fake: FakeDirectLine) -> None:
    service = make_service(UPSTREAM_TIMEOUT="0.5")
    fake.then_trickle(0.05)  # a ~100-byte answer would take ~5 s
    started = time.monotonic()
    response = service.issue_token(token_request())
    assert response.status == 504
    assert time.monotonic() - started < 2.5


def test_a_body_that_stalls_after_late_headers_ends_at_the_deadline(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service(UPSTREAM_TIMEOUT="2")
    fake.delay = 1.8  # headers arrive with little of the budget left, then the body stalls
    fake.then_trickle(10)
    started = time.monotonic()
    response = service.issue_token(token_request())
    assert response.status == 504
    assert time.monotonic() - started < 3.0  # the deadline, not a whole second read timeout


@pytest.mark.parametrize("value", ["²", "9" * 400, "soon", "-5", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_strange_retry_after_never_breaks_the_answer(
    value: str, make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service()
    fake.then_status(429, Retry_After=value)
    response = service.issue_token(token_request())
    assert response.status == 503
    assert payload(response)["error"]["code"] == "upstream_unavailable"
    retry_after = response.all_headers().get("Retry-After")
    assert retry_after is None or 1 <= int(retry_after) <= 60


def test_tls_to_direct_line_is_verified_against_the_settings_bundle_once_per_process(tmp_path: Path) -> None:
    certs = make_certificate(tmp_path)
    upstream = FakeDirectLine(tls=certs)
    bundle = str(certs.ca_bundle)
    try:
        session = new_session(upstream.base_url, 2, ca_bundle=bundle)
        client = DirectLineClient(upstream.base_url, SECRET, 5.0, session=session)
        first = client.generate({"id": "dl_a"}, []).answer
        client.session.close()  # the next call opens a new connection: verified with the same store
        assert client.generate({"id": "dl_b"}, []).answer["token"] != first["token"]
        assert trust.context(bundle) is trust.context(bundle)
        # certifi's roots (the default) do not know the fake's certificate
        stranger = DirectLineClient(upstream.base_url, SECRET, 5.0, session=new_session(upstream.base_url, 2))
        with pytest.raises(UpstreamUnavailable):
            stranger.generate({"id": "dl_c"}, [])
    finally:
        upstream.close()


def test_a_proxy_from_the_environment_carries_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY, read once when the session is made, as requests reads it: every call goes through it."""
    seen: list[str] = []

    class Proxy(QuietHandler):
        def do_POST(self) -> None:  # an HTTP proxy gets the whole URL in the request line
            seen.append(self.requestline)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    proxy = LoopbackServer(Proxy)
    endpoint = "http://directline.invalid/v3/directline"  # reachable only through the proxy
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = DirectLineClient(endpoint, SECRET, 2.0, session=new_session(endpoint))
        with pytest.raises(UpstreamUnavailable):
            client.generate({"id": "dl_a"}, [])
    finally:
        proxy.close()
    assert seen and seen[0] == f"POST {endpoint}/tokens/generate HTTP/1.1"


# -- the circuit breaker ---------------------------------------------------------------------------


def test_after_five_failing_calls_direct_line_is_left_alone_and_callers_get_a_fast_503(
    make_service: ServiceFactory, fake: FakeDirectLine, audit: AuditLog
) -> None:
    service = make_service()
    clock = FakeClock()
    service.client.breaker = Breaker(clock=clock)
    fake.fail_where(lambda recorded: Behaviour("status", 503))
    for _ in range(5):
        assert service.issue_token(token_request()).status == 503
    calls = len(fake.requests)
    refused = service.issue_token(token_request())
    assert (refused.status, payload(refused)["error"]["code"]) == (503, "upstream_unavailable")
    assert refused.all_headers()["Retry-After"] == "10"
    assert len(fake.requests) == calls  # not called
    assert audit.records[-1]["outcome"] == "failed"
    assert payload(service.health(token_request(method="GET")))["directLine"] == "unavailable"

    fake.fail_where(lambda recorded: None)  # Direct Line is back
    clock.advance(10)
    assert service.issue_token(token_request()).status == 200  # the probe
    assert service.issue_token(token_request()).status == 200
    assert payload(service.health(token_request(method="GET")))["directLine"] == "available"


def test_answers_that_show_direct_line_is_up_never_open_the_breaker(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    """A refused secret or throttling is an answer: Direct Line is there."""
    service = make_service()
    fake.fail_where(lambda recorded: Behaviour("status", 429))
    assert [service.issue_token(token_request()).status for _ in range(8)] == [503] * 8
    assert len(fake.requests) == 8
    assert service.client.breaker.available


# -- the variants users meet: two keys, regions, Enhanced authentication ------------------------------

SECONDARY = "fake-directline-secret-key2-Wq4uPz8s"


def _client(fake: FakeDirectLine, clock: FakeClock | None = None, secondary: str | None = SECONDARY) -> DirectLineClient:
    return DirectLineClient(fake.base_url, SECRET, 2.0, secondary=secondary, clock=clock or time.monotonic)


def test_a_refused_first_key_and_a_served_second_never_open_the_breaker(fake: FakeDirectLine) -> None:
    fake.keys = {SECONDARY}
    client = _client(fake)
    minted = [client.generate({"id": "dl_a"}, []) for _ in range(8)]
    assert all(answer.by_secondary for answer in minted)
    assert client.breaker.available
    assert len(fake.requests) == 16  # each call: the first key refused, then the second


@pytest.mark.parametrize("status", [401, 403])
def test_the_second_key_is_tried_on_a_refusal_of_either_kind(status: int, fake: FakeDirectLine) -> None:
    fake.keys = {SECRET, SECONDARY}
    fake.then_status(status, UPSTREAM_SECRET_BODY)
    assert _client(fake).generate({"id": "dl_a"}, []).by_secondary


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_the_second_key_is_not_tried_when_direct_line_did_not_refuse_the_first(status: int, fake: FakeDirectLine) -> None:
    fake.fail_where(lambda recorded: Behaviour("status", status, body=UPSTREAM_SECRET_BODY))
    with pytest.raises(ServiceError):
        _client(fake).generate({"id": "dl_a"}, [])
    assert {recorded.headers["Authorization"] for recorded in fake.requests} == {f"Bearer {SECRET}"}


def test_both_keys_share_one_deadline(fake: FakeDirectLine) -> None:
    fake.then_status(403)
    fake.then_hang(5)
    client = DirectLineClient(fake.base_url, SECRET, 0.5, secondary=SECONDARY)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        client.generate({"id": "dl_a"}, [])
    assert time.monotonic() - started < 2.0


def test_a_refused_first_key_is_logged_once_a_minute_without_either_key(
    fake: FakeDirectLine, caplog: pytest.LogCaptureFixture
) -> None:
    fake.keys = {SECONDARY}
    clock = FakeClock()
    client = _client(fake, clock)
    for _ in range(3):
        client.generate({"id": "dl_a"}, [])
    clock.advance(60)
    client.generate({"id": "dl_a"}, [])
    notices = [r.getMessage() for r in caplog.records if "DIRECT_LINE_SECRET_SECONDARY is tried" in r.getMessage()]
    assert len(notices) == 2
    assert SECRET not in caplog.text and SECONDARY not in caplog.text


def test_region_not_allowed_is_a_wrong_region_logged_once_a_minute_in_the_services_words(
    fake: FakeDirectLine, caplog: pytest.LogCaptureFixture
) -> None:
    fake.region_not_allowed = True
    clock = FakeClock()
    client = _client(fake, clock)
    for _ in range(3):
        with pytest.raises(WrongRegion) as refused:
            client.generate({"id": "dl_a"}, [])
    assert refused.value.status == 502 and refused.value.code == "upstream_error"
    lines = [r.getMessage() for r in caplog.records if "RegionNotAllowed" in r.getMessage()]
    assert len(lines) == 1
    assert f"({fake.base_url})" in lines[0]
    assert "europe.directline.botframework.com" in lines[0] and "india.directline.botframework.com" in lines[0]
    assert "unitedkingdom" not in caplog.text and "unitedkingdom" not in refused.value.message
    assert client.breaker.available


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"error": "RegionNotAllowed"}', b'{"error": {"code": 7}}', b"[" * 100 + b"]" * 100],
    ids=["empty", "not JSON", "code not in an object", "code not a string", "deep"],
)
def test_a_403_whose_body_says_nothing_usable_is_a_refused_key(body: bytes, fake: FakeDirectLine) -> None:
    fake.then_status(403, body)
    with pytest.raises(SecretRefused):
        _client(fake, secondary=None).generate({"id": "dl_a"}, [])


def test_a_reconnect_refused_with_400_is_resume_unavailable(fake: FakeDirectLine) -> None:
    client = _client(fake)
    conversation = client.generate({"id": "dl_a"}, []).answer["conversationId"]
    fake.enhanced_auth = True
    with pytest.raises(ResumeUnavailable):
        client.reconnect(conversation)
    assert client.breaker.available


def test_an_exception_nobody_foresaw_is_503_and_the_breaker_recovers_after_it(
    fake: FakeDirectLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain OSError from requests (a CA bundle path that vanished) used to leave the half-open probe
    taken for good: every later call 503 until restart."""
    clock = FakeClock()
    client = DirectLineClient(fake.base_url, SECRET, 2.0, breaker=Breaker(clock=clock), clock=clock)
    adapter = client.session.get_adapter(fake.base_url)  # requests' transport, which the client calls
    real_send = adapter.send

    def broken_send(*args: object, **kwargs: object) -> object:
        raise OSError("Could not find a suitable TLS CA certificate bundle")

    monkeypatch.setattr(adapter, "send", broken_send)
    for _ in range(5):
        with pytest.raises(UpstreamUnavailable):
            client.generate({"id": "dl_a"}, [])
    assert not client.breaker.available
    clock.advance(10)
    with pytest.raises(UpstreamUnavailable):  # the probe meets the same failure
        client.generate({"id": "dl_a"}, [])
    monkeypatch.setattr(adapter, "send", real_send)
    clock.advance(20)
    assert client.generate({"id": "dl_a"}, []).answer["token"]  # the next probe closes it
    assert client.breaker.available
