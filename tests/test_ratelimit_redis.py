"""Rate limits shared through a real Redis server: two `python -m tokens serve` processes count
together, and when Redis goes away each process keeps answering and keeps its own limits."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    STORAGE_ERROR,
    ServiceFactory,
    base_env,
    payload,
    served,
    storage_errors,
    token_request,
)
from tests.fakes import FakeClock, FakeDirectLine
from tests.redis_server import RedisServer, running_redis
from tests.served import ServedApp
from tokens.ratelimit import RateLimiter, parse_limits
from tokens.service import TokenService

pytestmark = pytest.mark.redis

TIMEOUT = 5


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def shared_service(make_service: ServiceFactory, redis_server: RedisServer) -> ServiceFactory:
    """Services in this process that count in the test's Redis (make_service closes them)."""

    def factory(**overrides: str) -> TokenService:
        return make_service(RATE_LIMIT_STORAGE=redis_server.url, **overrides)

    return factory


@contextlib.contextmanager
def two_servers(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[ServedApp, ServedApp]]:
    """Two separate server processes of the app, as two instances of a scaled-out Function app."""
    with (
        served(env, tmp_path, name="first", workers=1) as first,
        served(env, tmp_path, name="second", workers=1) as second,
    ):
        yield first, second


def post(base_url: str, **headers: str) -> int:
    return requests.post(f"{base_url}/api/directline/token", headers=headers, timeout=TIMEOUT).status_code


def fire(targets: list[tuple[str, dict[str, str]]]) -> list[int]:
    """Send every (base URL, headers) request at once from a pool of threads; the statuses, in order."""
    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(lambda target: post(target[0], **target[1]), targets))


def issue(service: TokenService) -> int:
    return service.issue_token(token_request()).status


# -- shared counting ----------------------------------------------------------------------------


def test_two_server_processes_share_one_per_caller_limit(
    redis_server: RedisServer, fake: FakeDirectLine, tmp_path: Path
) -> None:
    """One caller (the peer address 127.0.0.1, appended by the server) spreads 20 parallel requests
    over both processes: exactly the limit of 5 is issued."""
    env = base_env(
        fake.base_url, RATE_LIMIT="5/minute", RATE_LIMIT_STORAGE=redis_server.url, TRUSTED_PROXY_HOPS="1"
    )
    with two_servers(env, tmp_path) as (first, second):
        statuses = fire([((first, second)[n % 2].base_url, {}) for n in range(20)])
        logs = first.log_text() + second.log_text()
        served_counts = [len(first.audit_records()), len(second.audit_records())]
    assert Counter(statuses) == {200: 5, 429: 15}
    assert len(fake.requests) == 5
    assert served_counts == [10, 10]
    assert STORAGE_ERROR not in logs


def test_two_server_processes_share_one_global_limit(
    redis_server: RedisServer, fake: FakeDirectLine, tmp_path: Path
) -> None:
    """Twenty different signed-in users, each well under their own limit: the global cap of 5 holds
    across both processes."""
    env = base_env(
        fake.base_url,
        AUTH_MODE="easyauth",
        GLOBAL_RATE_LIMIT="5/minute",
        RATE_LIMIT_STORAGE=redis_server.url,
    )
    with two_servers(env, tmp_path) as (first, second):
        statuses = fire(
            [((first, second)[n % 2].base_url, {"X-MS-CLIENT-PRINCIPAL-ID": f"user-{n}"}) for n in range(20)]
        )
    assert Counter(statuses) == {200: 5, 429: 15}
    assert len(fake.requests) == 5


def test_retry_after_from_the_shared_store_is_at_most_two_windows(shared_service: ServiceFactory) -> None:
    service = shared_service(RATE_LIMIT="3/minute")
    assert [issue(service) for _ in range(3)] == [200, 200, 200]
    denied = service.issue_token(token_request())
    assert payload(denied)["error"]["code"] == "rate_limited"
    assert 1 <= int(denied.all_headers()["Retry-After"]) <= 120


# -- Redis going away ---------------------------------------------------------------------------


def test_redis_stopped_mid_run_each_process_keeps_answering_within_its_own_limit(
    redis_server: RedisServer, fake: FakeDirectLine, tmp_path: Path
) -> None:
    env = base_env(
        fake.base_url, RATE_LIMIT="3/minute", RATE_LIMIT_STORAGE=redis_server.url, TRUSTED_PROXY_HOPS="1"
    )
    with two_servers(env, tmp_path) as (first, second):
        # Shared while Redis is up: the third request is the last one, whichever process takes it.
        before = [post(first.base_url), post(second.base_url), post(first.base_url), post(second.base_url)]
        redis_server.stop()
        after_first = fire([(first.base_url, {}) for _ in range(6)])
        after_second = fire([(second.base_url, {}) for _ in range(6)])
        logs = [first.log_text(), second.log_text()]
    assert before == [200, 200, 200, 429]
    # No 500: each process falls back to its own count, where the limit of 3 holds again.
    assert Counter(after_first) == Counter(after_second) == {200: 3, 429: 3}
    assert len(fake.requests) == 3 + 3 + 3
    for log in logs:
        assert log.count(STORAGE_ERROR) == 1  # six failing requests at once, one line
        assert "Traceback" not in log


def test_hung_redis_costs_a_request_at_most_the_storage_timeout(
    redis_server: RedisServer, shared_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that accepts connections but never answers must not hold requests for long."""
    service = shared_service(RATE_LIMIT="3/minute")
    assert issue(service) == 200
    redis_server.pause()
    started = time.monotonic()
    assert issue(service) == 200
    first_wait = time.monotonic() - started
    started = time.monotonic()
    assert [issue(service), issue(service), issue(service)] == [200, 200, 429]
    then_wait = time.monotonic() - started
    assert first_wait < 2.0
    assert then_wait < 0.5  # the store is left alone for a few seconds after it failed
    errors = storage_errors(caplog)
    assert len(errors) == 1
    assert "TimeoutError" in errors[0].getMessage()


def test_counting_returns_to_redis_once_it_is_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokens.ratelimit")
    clock = FakeClock()
    limiter = RateLimiter(parse_limits("100/minute"), parse_limits("100/minute"), redis_server.url, clock=clock)
    limiter.admit(["ip:203.0.113.7"])
    redis_server.stop()
    limiter.admit(["ip:203.0.113.7"])  # fails over to this process's count
    redis_server.start()  # same port, empty
    client = redis_server.client()
    try:
        clock.advance(4.0)
        limiter.admit(["ip:203.0.113.7"])
        assert client.dbsize() == 0  # still counting locally: Redis is retried after 5 s only
        clock.advance(1.0)
        limiter.admit(["ip:203.0.113.7"])
        assert client.dbsize() == 2  # one key for the caller, one for everyone
        limiter.admit(["ip:203.0.113.7"])
        failed, back = [r.getMessage() for r in caplog.records if r.name == "tokens.ratelimit"]
        assert failed.startswith(STORAGE_ERROR)
        assert back.startswith("Rate-limit storage reachable again")
    finally:
        client.close()
        limiter.close()
