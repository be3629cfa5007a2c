"""Abuse protection: per-caller and global rate limits on both POST routes, through the service and over
HTTP against `python -m tokens serve`, and the fallback to per-process counting when the shared store
cannot be reached."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse_many

from tests.conftest import (
    ALLOWED,
    AuditLog,
    ServiceFactory,
    base_env,
    payload,
    served,
    storage_errors,
    token_request,
)
from tests.fakes import FakeClock, FakeDirectLine
from tests.served import free_port
from tokens.errors import RateLimited
from tokens.http import Response
from tokens.ratelimit import Limit, LocalCounter, RateLimiter, parse_limits
from tokens.service import TokenService

TIMEOUT = 5
WHOLE_SECONDS = re.compile(r"[1-9][0-9]*")


def issue(service: TokenService, address: str = "203.0.113.7", **headers: str) -> Response:
    """One token request from `address`, as Azure's front end reports it (one trusted hop)."""
    return service.issue_token(token_request(headers={"X-Forwarded-For": f"{address}:50000", **headers}))


def statuses(responses: list[Response]) -> list[int]:
    return [response.status for response in responses]


def retry_after(response: Response) -> int:
    value = response.all_headers()["Retry-After"]
    assert WHOLE_SECONDS.fullmatch(value), value
    return int(value)


# -- per caller, through the service ------------------------------------------------------------


def test_caller_over_its_limit_gets_429_rate_limited(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="3/minute")
    responses = [issue(service) for _ in range(5)]
    assert statuses(responses) == [200, 200, 200, 429, 429]
    assert payload(responses[3])["error"]["code"] == "rate_limited"


def test_retry_after_is_whole_seconds_at_most_two_windows(make_service: ServiceFactory) -> None:
    """A sliding-window counter weighs the previous window as if its requests were spread evenly,
    so the wait after a burst is longer than one window at most by one window."""
    service = make_service(RATE_LIMIT="3/minute")
    for _ in range(3):
        issue(service)
    assert 1 <= retry_after(issue(service)) <= 120


def test_denial_is_audited_as_denied_rate_limited(make_service: ServiceFactory, audit: AuditLog) -> None:
    service = make_service(RATE_LIMIT="1/minute")
    issue(service)
    issue(service)
    issued, denied = audit.records
    assert issued["outcome"] == "issued"
    assert denied["event"] == "directline.token"
    assert denied["outcome"] == "denied"
    assert denied["status"] == 429
    assert denied["reason"] == "rate_limited"
    assert denied["conversationId"] is None
    assert denied["clientIp"] == "203.0.113.0"


def test_limit_is_checked_before_the_upstream_call(make_service: ServiceFactory, fake: FakeDirectLine) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    for _ in range(6):
        issue(service)
    assert len(fake.requests) == 2


def test_callers_have_separate_allowances(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    first = [issue(service, "203.0.113.7") for _ in range(3)]
    second = [issue(service, "198.51.100.20") for _ in range(3)]
    assert statuses(first) == statuses(second) == [200, 200, 429]


def test_forged_forwarded_for_entries_share_one_counter(make_service: ServiceFactory) -> None:
    """With one trusted hop, whatever the client wrote left of it does not make it a new caller."""
    service = make_service(RATE_LIMIT="2/minute", TRUSTED_PROXY_HOPS="1")
    responses = [
        service.issue_token(token_request(headers={"X-Forwarded-For": f"192.0.2.{n}, 203.0.113.7:5000"}))
        for n in range(1, 6)
    ]
    assert statuses(responses) == [200, 200, 429, 429, 429]


def test_ipv6_caller_rotating_addresses_in_its_64_shares_one_allowance(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    responses = [issue(service, f"[2001:db8:1:2::{n:x}]") for n in range(1, 6)]
    assert statuses(responses) == [200, 200, 429, 429, 429]


def test_rate_limited_answer_carries_cors_headers_for_an_allowed_origin(make_service: ServiceFactory) -> None:
    """Without them the page's fetch() would see a network error instead of the 429."""
    service = make_service(RATE_LIMIT="1/minute")
    issue(service)
    headers = issue(service).all_headers()
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert headers["Cache-Control"] == "no-store"


# -- global -------------------------------------------------------------------------------------


def test_global_limit_caps_all_callers_together(make_service: ServiceFactory, audit: AuditLog) -> None:
    service = make_service(RATE_LIMIT="10/minute", GLOBAL_RATE_LIMIT="3/minute")
    responses = [issue(service, f"198.51.100.{n}") for n in range(1, 6)]
    assert statuses(responses) == [200, 200, 200, 429, 429]
    assert payload(responses[3])["error"]["code"] == "rate_limited"
    assert 1 <= retry_after(responses[3]) <= 120
    assert [record["reason"] for record in audit.records[3:]] == ["rate_limited", "rate_limited"]


def test_refused_caller_does_not_use_up_the_global_allowance(make_service: ServiceFactory) -> None:
    """The caller's own limit is checked first, so one noisy caller cannot lock everyone else out."""
    service = make_service(RATE_LIMIT="1/minute", GLOBAL_RATE_LIMIT="3/minute")
    noisy = [issue(service, "192.0.2.66") for _ in range(10)]
    others = [issue(service, f"198.51.100.{n}") for n in range(1, 4)]
    assert statuses(noisy) == [200] + [429] * 9
    assert statuses(others) == [200, 200, 429]


# -- identity as the key ------------------------------------------------------------------------


def easyauth(service: TokenService, principal: str, address: str) -> Response:
    return issue(service, address, **{"X-MS-CLIENT-PRINCIPAL-ID": principal})


def test_signed_in_caller_is_limited_by_user_id_not_address(make_service: ServiceFactory) -> None:
    service = make_service(AUTH_MODE="easyauth", RATE_LIMIT="2/minute")
    ann = [easyauth(service, "ann", "203.0.113.7"), easyauth(service, "ann", "198.51.100.1")]
    assert statuses(ann) == [200, 200]
    # A new address does not give Ann a fresh allowance ...
    assert easyauth(service, "ann", "192.0.2.99").status == 429
    # ... and Bob behind Ann's address (one office, one NAT) keeps his own.
    assert easyauth(service, "bob", "203.0.113.7").status == 200


def test_valid_user_handle_is_limited_by_user_id_across_addresses(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    handle = payload(issue(service, "203.0.113.7"))["userHandle"]
    assert issue_with_handle(service, handle, "198.51.100.1").status == 200
    assert issue_with_handle(service, handle, "198.51.100.2").status == 200
    # The user id has now used its two; a fresh address does not buy it more.
    assert issue_with_handle(service, handle, "192.0.2.9").status == 429


def test_collected_handles_buy_no_extra_allowance_from_one_address(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    handles = [payload(issue(service, "203.0.113.7"))["userHandle"] for _ in range(2)]
    # The address has used its two; handles gathered from it are counted against it as well.
    assert statuses([issue_with_handle(service, handle, "203.0.113.7") for handle in handles]) == [429, 429]


def issue_with_handle(service: TokenService, handle: str, address: str) -> Response:
    request = token_request({"userHandle": handle}, headers={"X-Forwarded-For": address})
    return service.issue_token(request)


def test_forged_handles_count_against_the_address_and_turn_into_429s(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    """Denials count: a flood of forged credentials from one address is throttled like tokens are."""
    service = make_service(RATE_LIMIT="3/minute")
    forged = [issue_with_handle(service, "not-a-handle", "203.0.113.7") for _ in range(5)]
    assert statuses(forged) == [401, 401, 401, 429, 429]
    assert issue(service, "203.0.113.7").status == 429
    assert issue(service, "198.51.100.1").status == 200  # another address is untouched
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"origin": "https://evil.example"},
        {"body": b"[]"},
        {"body": b"x" * 5000},
        {"content_type": "text/plain", "body": b"{}"},
    ],
    ids=["origin", "body", "size", "media type"],
)
def test_every_kind_of_denial_counts_against_the_address(make_service: ServiceFactory, bad: dict[str, Any]) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    headers = {"X-Forwarded-For": "203.0.113.7:50000"}
    denied = [service.issue_token(token_request(headers=headers, **bad)).status for _ in range(3)]
    assert denied[-1] == 429
    assert issue(service, "203.0.113.7").status == 429


def test_denials_never_use_up_the_global_allowance(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute", GLOBAL_RATE_LIMIT="3/minute")
    for n in range(20):
        issue_with_handle(service, "not-a-handle", f"192.0.2.{n}")
    assert statuses([issue(service, f"198.51.100.{n}") for n in range(4)]) == [200, 200, 200, 429]


def test_a_signed_in_users_denied_neighbours_do_not_spend_their_successes(make_service: ServiceFactory) -> None:
    """Signed-in callers are counted by user id: only denials are charged to their address."""
    service = make_service(AUTH_MODE="easyauth", RATE_LIMIT="2/minute")
    successes = [easyauth(service, f"user-{n}", "203.0.113.7").status for n in range(5)]
    assert successes == [200] * 5  # five people behind one office address


# -- refresh ------------------------------------------------------------------------------------


def refresh(service: TokenService, address: str = "203.0.113.7") -> Response:
    headers = {"Authorization": "Bearer dl-token-to-refresh", "X-Forwarded-For": address}
    return service.refresh_token(token_request(headers=headers))


def test_refresh_route_is_limited_too(
    make_service: ServiceFactory, fake: FakeDirectLine, audit: AuditLog
) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    responses = [refresh(service) for _ in range(4)]
    assert statuses(responses) == [200, 200, 429, 429]
    assert payload(responses[2])["error"]["code"] == "rate_limited"
    assert 1 <= retry_after(responses[2]) <= 120
    assert len(fake.requests) == 2
    denied = audit.records[2]
    assert (denied["event"], denied["outcome"], denied["reason"]) == (
        "directline.refresh", "denied", "rate_limited",
    )


def test_refresh_has_its_own_global_allowance(make_service: ServiceFactory) -> None:
    service = make_service(GLOBAL_RATE_LIMIT="2/minute")
    assert statuses([refresh(service, f"198.51.100.{n}") for n in range(3)]) == [200, 200, 429]
    # Refreshes, which need no sign-in, did not use up the allowance for new tokens.
    assert statuses([issue(service, f"192.0.2.{n}") for n in range(3)]) == [200, 200, 429]


# -- over HTTP, against the hosted server as a real process -------------------------------------


def post(base_url: str, route: str = "token", **headers: str) -> requests.Response:
    return requests.post(f"{base_url}/api/directline/{route}", headers=headers, timeout=TIMEOUT)


def test_over_http_caller_over_its_limit_gets_429_with_retry_after(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    with served(base_env(fake.base_url, RATE_LIMIT="3/minute"), tmp_path) as app:
        answers = [post(app.base_url, Origin=ALLOWED) for _ in range(4)]
        records = app.audit_records()
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    denied = answers[3]
    assert denied.json()["error"]["code"] == "rate_limited"
    assert WHOLE_SECONDS.fullmatch(denied.headers["Retry-After"])
    assert 1 <= int(denied.headers["Retry-After"]) <= 120
    assert denied.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert len(fake.requests) == 3
    assert [(r["outcome"], r["status"], r["reason"]) for r in records] == [
        ("issued", 200, None), ("issued", 200, None), ("issued", 200, None),
        ("denied", 429, "rate_limited"),
    ]


def test_over_http_forged_forwarded_for_gives_no_fresh_allowance(fake: FakeDirectLine, tmp_path: Path) -> None:
    """The server appends the peer address as the trusted hop, so the client's entries never count."""
    env = base_env(fake.base_url, RATE_LIMIT="2/minute", TRUSTED_PROXY_HOPS="1")
    with served(env, tmp_path) as app:
        answers = [
            post(app.base_url, **{"X-Forwarded-For": f"192.0.2.{n}, 198.51.100.{n}:443"})
            for n in range(1, 7)
        ]
        records = app.audit_records()
    assert [answer.status_code for answer in answers] == [200, 200, 429, 429, 429, 429]
    assert len(fake.requests) == 2
    assert {record["clientIp"] for record in records} == {"127.0.0.0"}


def test_over_http_global_limit_caps_distinct_callers(fake: FakeDirectLine, tmp_path: Path) -> None:
    """Five signed-in users, each under their own limit, and the global cap of three still holds."""
    env = base_env(fake.base_url, AUTH_MODE="easyauth", GLOBAL_RATE_LIMIT="3/minute")
    with served(env, tmp_path) as app:
        answers = [post(app.base_url, **{"X-MS-CLIENT-PRINCIPAL-ID": f"user-{n}"}) for n in range(1, 6)]
        records = app.audit_records()
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert answers[3].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 120
    assert [record["userId"] for record in records] == [f"dl_user-{n}" for n in range(1, 6)]
    assert len(fake.requests) == 3


def test_over_http_behind_one_more_proxy_each_forwarded_address_is_its_own_caller(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    """TRUSTED_PROXY_HOPS=2: a reverse proxy's entry, then the peer address the server appends."""
    env = base_env(fake.base_url, RATE_LIMIT="1/minute", TRUSTED_PROXY_HOPS="2")
    with served(env, tmp_path) as app:
        answers = [
            post(app.base_url, **{"X-Forwarded-For": f"192.0.2.1, 198.51.100.{n}"}) for n in (1, 2, 1)
        ]
        records = app.audit_records()
    assert [record["clientIp"] for record in records] == ["198.51.100.0"] * 3
    assert [answer.status_code for answer in answers] == [200, 200, 429]


def test_over_http_refresh_route_is_limited(fake: FakeDirectLine, tmp_path: Path) -> None:
    with served(base_env(fake.base_url, RATE_LIMIT="1/minute"), tmp_path) as app:
        answers = [
            post(app.base_url, "refresh", Authorization="Bearer dl-token-to-refresh") for _ in range(2)
        ]
    assert [answer.status_code for answer in answers] == [200, 429]
    assert answers[1].json()["error"]["code"] == "rate_limited"
    assert len(fake.requests) == 1


# -- the shared store unreachable ---------------------------------------------------------------


class ClosingListener:
    """A loopback port that accepts connections and closes them at once: a counter store that is
    there but broken. Counts the connection attempts."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def broken_store() -> Iterator[ClosingListener]:
    listener = ClosingListener()
    yield listener
    listener.close()


def refused_redis_url() -> str:
    return f"redis://:not-a-real-password-7c1@127.0.0.1:{free_port()}/0"


def test_unreachable_store_falls_back_to_per_process_limits(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service = make_service(RATE_LIMIT="3/minute", RATE_LIMIT_STORAGE=refused_redis_url())
    responses = [issue(service) for _ in range(5)]
    assert statuses(responses) == [200, 200, 200, 429, 429]
    assert 1 <= retry_after(responses[3]) <= 120
    assert len(storage_errors(caplog)) == 1
    assert storage_errors(caplog)[0].levelno == logging.ERROR


def test_storage_error_log_never_shows_the_store_password(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service = make_service(RATE_LIMIT_STORAGE=refused_redis_url())
    issue(service)
    assert storage_errors(caplog)
    assert "not-a-real-password-7c1" not in caplog.text


def test_storage_error_is_logged_at_most_once_a_minute(
    broken_store: ClosingListener, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        parse_limits("1000/minute"), parse_limits("1000/minute"),
        f"redis://127.0.0.1:{broken_store.port}/0", clock=clock,
    )
    logged = []
    for _ in range(26):  # two minutes and a bit, one request every five seconds
        limiter.admit(["ip:203.0.113.7"])
        logged.append(len(storage_errors(caplog)))
        clock.advance(5.0)
    assert logged[0] == 1
    assert logged[11] == 1  # 55 s later: the store was tried again and again, but no new line
    assert logged[12] == 2  # 60 s after the first line
    assert logged[-1] == 3


def test_store_is_tried_again_only_after_five_seconds(broken_store: ClosingListener) -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        parse_limits("1000/minute"), parse_limits("1000/minute"),
        f"redis://127.0.0.1:{broken_store.port}/0", clock=clock,
    )
    limiter.admit(["ip:203.0.113.7"])
    attempts = wait_for_accepts(broken_store, 1)
    for _ in range(20):
        clock.advance(0.2)  # 4 s in all: the store is left alone
        limiter.admit(["ip:203.0.113.7"])
    assert broken_store.accepted == attempts
    clock.advance(1.0)
    limiter.admit(["ip:203.0.113.7"])
    assert wait_for_accepts(broken_store, attempts + 1) > attempts


def wait_for_accepts(listener: ClosingListener, at_least: int) -> int:
    """The listener counts on its own thread; give it up to a second to catch up with the client."""
    for _ in range(100):
        if listener.accepted >= at_least:
            break
        time.sleep(0.01)
    return listener.accepted


def test_limits_still_hold_while_the_store_is_broken(broken_store: ClosingListener) -> None:
    limiter = RateLimiter(
        parse_limits("2/minute"), parse_limits("1000/minute"), f"redis://127.0.0.1:{broken_store.port}/0"
    )
    limiter.admit(["ip:203.0.113.7"])
    limiter.admit(["ip:203.0.113.7"])
    with pytest.raises(RateLimited) as denied:
        limiter.admit(["ip:203.0.113.7"])
    assert denied.value.retry_after is not None
    assert 1 <= denied.value.retry_after <= 120
    limiter.admit(["ip:198.51.100.1"])


# -- the notation and the counters, unit by unit ------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["10/minute", "10 per minute", "10/2 minutes", "10 per 2 hours", "5/second;100/day", "1/YEAR|2/month",
     " 7 / 3 days , 9/hour "],
)
def test_the_notation_reads_as_the_limits_library_reads_it(text: str) -> None:
    ours = [(limit.amount, limit.window) for limit in parse_limits(text)]
    theirs = [(item.amount, item.get_expiry()) for item in parse_many(text)]
    assert ours == theirs


@pytest.mark.parametrize(
    "text", ["", "lots", "10", "10/fortnight", "10/minute;", "/minute", "0/minute", "10/0 minutes", "ten/minute"]
)
def test_what_is_not_in_the_notation_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        parse_limits(text)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(st.sampled_from("0123456789 /;,|persecondminutehourdayyearmonths"), max_size=30))
def test_what_we_accept_the_limits_library_accepts_the_same_way(text: str) -> None:
    """So that a limit validated by `check` means the same in Redis (counted by `limits`)."""
    try:
        ours = [(limit.amount, limit.window) for limit in parse_limits(text)]
    except ValueError:
        return
    assert ours == [(item.amount, item.get_expiry()) for item in parse_many(text)]


def test_a_counter_refuses_the_request_over_the_limit_and_charges_nothing_for_it() -> None:
    clock = FakeClock(0.0)
    counter, limit = LocalCounter(clock), Limit(2, 1, "minute")
    assert [counter.take(limit, "k") for _ in range(2)] == [0.0, 0.0]
    assert counter.take(limit, "k") > 0
    assert counter.wait(limit, "k") > 0
    clock.advance(120)  # two windows later, nothing of the burst is left
    assert counter.take(limit, "k") == 0.0


@pytest.mark.parametrize("start", [0.0, 1.0, 30.0, 59.5])
@pytest.mark.parametrize(("amount", "burst"), [(3, 3), (10, 10), (10, 4)])
def test_waiting_the_retry_after_is_enough(start: float, amount: int, burst: int) -> None:
    clock = FakeClock(start)
    limiter = RateLimiter(parse_limits(f"{amount}/minute"), parse_limits("1000/minute"), clock=clock)
    for _ in range(burst):
        limiter.admit(["ip:a"])
    clock.advance(30)
    while True:  # use up what the window still allows, then be refused
        try:
            limiter.admit(["ip:a"])
        except RateLimited as refused:
            seconds = refused.retry_after
            break
    assert seconds is not None and 1 <= seconds <= 120
    clock.advance(seconds)
    limiter.admit(["ip:a"])


def test_a_caller_refused_by_the_global_limit_is_neither_charged_nor_remembered() -> None:
    limiter = RateLimiter(parse_limits("1/minute"), parse_limits("2/minute"), clock=FakeClock())
    limiter.admit(["ip:a"])
    limiter.admit(["ip:b"])
    before = len(limiter.local)
    for caller in ("ip:c", "ip:d", "ip:e"):
        with pytest.raises(RateLimited):
            limiter.admit([caller])
    assert len(limiter.local) == before


def test_counter_memory_is_dropped_once_both_windows_have_passed() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(parse_limits("5/minute"), parse_limits("100000/minute"), clock=clock)
    for n in range(100):
        limiter.admit([f"ip:{n}"])
    assert len(limiter.local) == 101  # a hundred callers and everyone
    clock.advance(180)
    limiter.admit(["ip:late"])
    assert len(limiter.local) == 2


def test_rotating_through_a_56_gains_nothing_where_the_site_counts_by_56(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute", RATE_LIMIT_IPV6_PREFIX="56", TRUSTED_PROXY_HOPS="1")
    addresses = [f"[2001:db8:0:{n:x}::1]" for n in range(4)]  # four /64s of one /56
    assert statuses([issue(service, address) for address in addresses]) == [200, 200, 429, 429]


# -- the limiter's promises, under interleaving, several limits and floods -------------------------


def test_two_requests_interleaved_at_the_limiter_keep_the_global_refusal_rule() -> None:
    """Both look before either counts: without one lock around look-then-count, both pass the
    global look, both are charged, and the one the global limit then refuses was charged anyway."""
    per_caller, everyone = parse_limits("10/minute"), parse_limits("1/minute")
    limiter = RateLimiter(per_caller, everyone, clock=FakeClock())
    both_looking = threading.Barrier(2)
    real_wait = limiter.local.wait

    def wait_for_the_other(limit: Limit, key: str) -> float:
        seen = real_wait(limit, key)
        if key.endswith("all-callers"):
            # Having looked, hold here until the other request has looked too, if the limiter lets it.
            with contextlib.suppress(threading.BrokenBarrierError):
                both_looking.wait(timeout=0.5)
        return seen

    limiter.local.wait = wait_for_the_other  # type: ignore[method-assign]
    refused: list[str] = []

    def admit(caller: str) -> None:
        try:
            limiter.admit([caller])
        except RateLimited:
            refused.append(caller)

    threads = [threading.Thread(target=admit, args=(caller,)) for caller in ("ip:a", "ip:b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(refused) == 1
    assert real_wait(per_caller[0], f"token:{refused[0]}") == 0
    assert len(limiter.local) == 2  # the admitted caller and everyone: the refused left no counter


def test_retry_after_with_several_limits_is_the_longest_wait_and_waiting_it_is_enough() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(parse_limits("2/5second;5/minute"), parse_limits("1000/minute"), clock=clock)
    waits: list[int] = []
    for _ in range(30):  # a request a second, for half a minute
        try:
            limiter.admit(["ip:a"])
        except RateLimited as refused:
            assert refused.retry_after is not None
            waits.append(refused.retry_after)
            clock.advance(refused.retry_after)
            limiter.admit(["ip:a"])  # waiting the Retry-After was enough, whichever limit refused
        clock.advance(1)
    assert max(waits) > 5  # the minute's wait was told, not only the five seconds'


def test_a_caller_refused_by_its_own_limit_is_told_the_wait_of_every_limit_that_refuses() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(parse_limits("1/5second;1/hour"), parse_limits("1000/minute"), clock=clock)
    limiter.admit(["ip:a"])
    with pytest.raises(RateLimited) as refused:
        limiter.refuse_if_spent("ip:a")
    assert refused.value.retry_after is not None and refused.value.retry_after > 5


def test_the_counters_of_callers_only_ever_denied_stay_under_their_stated_figure() -> None:
    """MAX_DENIED_SLOTS counters of about 0.3 KiB: about 6 MiB, whatever the limits' windows (a
    /day limit keeps a counter two days)."""
    import tracemalloc

    from tokens.ratelimit import MAX_DENIED_SLOTS

    limiter = RateLimiter(parse_limits("10/minute;100/day"), parse_limits("600/minute"), clock=FakeClock())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(50_000):
            limiter.count_denial(f"ip:2001:db8:{n // 65536:x}:{n % 65536:x}::/64")
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(limiter.local) <= MAX_DENIED_SLOTS
    assert used < 6.5 * 2**20


def test_a_caller_once_admitted_keeps_its_counters_through_a_flood_of_denials() -> None:
    """Evicting the oldest denied-only counters must not let a flood reset an admitted caller's."""
    limiter = RateLimiter(parse_limits("2/minute"), parse_limits("600/minute"), clock=FakeClock())
    limiter.admit(["ip:a"])
    limiter.count_denial("ip:a")
    for n in range(30_000):
        limiter.count_denial(f"ip:flood-{n}")
    with pytest.raises(RateLimited):
        limiter.admit(["ip:a"])


def test_resume_denials_leave_everyones_allowance_alone(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="1000/minute", GLOBAL_RATE_LIMIT="2/minute")
    started = payload(service.issue_token(token_request({})))
    other = payload(service.issue_token(token_request({})))
    forged = {"userHandle": started["userHandle"], "conversationTicket": "forged"}
    not_theirs = {"userHandle": started["userHandle"], "conversationTicket": other["conversationTicket"]}
    for body in (forged, not_theirs, forged, not_theirs):
        assert service.resume(token_request(body)).status in (401, 403)
    service.limiter.give_back("token")  # make room for one more, as a refused reconnect would
    assert service.issue_token(token_request({})).status == 200


def test_a_reconnect_direct_line_refuses_gives_its_global_count_back(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service(RATE_LIMIT="1000/minute", GLOBAL_RATE_LIMIT="2/minute")
    started = payload(service.issue_token(token_request({})))
    fake.enhanced_auth = True
    body = {"userHandle": started["userHandle"], "conversationTicket": started["conversationTicket"]}
    assert [service.resume(token_request(body)).status for _ in range(3)] == [409, 409, 409]
    assert service.issue_token(token_request({})).status == 200  # the second of two: still allowed
