"""Rate limits shared through a real Redis server: two `python -m tokens serve` processes count
together, and when Redis goes away each process keeps answering and keeps its own limits. Signing
in without a password in the URL, as the app does to Azure's Redis with its managed identity: through
a credential provider whose credentials rotate, and through the app's own provider against a
stand-in for the platform's identity endpoint."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from redis.auth.idp import IdentityProviderInterface
from redis.auth.token import SimpleToken, TokenInterface
from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
from redis_entraid.cred_provider import EntraIdCredentialsProvider

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
from tests.identity_endpoint import installed
from tests.redis_server import RedisServer, add_user, running_redis
from tests.served import ServedApp
from tokens import redisauth
from tokens.errors import RateLimited
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


# -- signing in with a credential provider (Azure's Redis takes Entra ID tokens, not passwords) -------


@pytest.fixture
def signed_in_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The test's Redis with no password-less user, as Azure's: an administrator's client."""
    admin = redis_server.require_sign_in()
    yield admin
    admin.close()


def limiter_users(admin: redis.Redis) -> dict[int, str]:
    """The connections of the rate limiter's users (named limiter-…), by client id."""
    return {int(c["id"]): c["user"] for c in admin.client_list() if c["user"].startswith("limiter-")}


class RotatingIdentity(IdentityProviderInterface):
    """An identity provider whose every token is a new Redis user and password, so that which token
    a connection signed in with shows in CLIENT LIST. The first `short` tokens live `lifetime`
    seconds, later ones an hour: redis-entraid renews a few times, then the rotation settles."""

    def __init__(self, admin: redis.Redis, lifetime: float, short: int) -> None:
        self._admin = admin
        self._lifetime = lifetime
        self._short = short
        self.issued: list[str] = []

    def request_token(self, force_refresh: bool = False) -> TokenInterface:
        user, password = f"limiter-{len(self.issued) + 1}", secrets.token_urlsafe(16)
        add_user(self._admin, user, password)
        self.issued.append(user)
        lifetime = self._lifetime if len(self.issued) <= self._short else 3600.0
        now_ms = time.time() * 1000
        return SimpleToken(password, now_ms + lifetime * 1000, now_ms, {"oid": user})


def test_a_password_in_the_url_still_signs_in_as_it_always_did(
    redis_server: RedisServer, signed_in_redis: redis.Redis
) -> None:
    add_user(signed_in_redis, "limiter-with-password", "its-password")
    url = f"redis://limiter-with-password:its-password@127.0.0.1:{redis_server.port}/0"
    limiter = RateLimiter(parse_limits("2/minute"), parse_limits("100/minute"), url)
    try:
        limiter.admit(["ip:203.0.113.7"])
        limiter.admit(["ip:203.0.113.7"])
        with pytest.raises(RateLimited):
            limiter.admit(["ip:203.0.113.7"])
        assert signed_in_redis.dbsize() == 2
    finally:
        limiter.close()


def test_counting_goes_on_while_the_providers_credentials_rotate_open_connections_signing_in_again(
    redis_server: RedisServer,
    signed_in_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """redis-entraid's provider renews its token in the background, and redis-py signs the pool's
    open connection in again with each new one (AUTH), in place: once the old credentials are
    revoked, the same connection goes on counting where it was."""
    identity = RotatingIdentity(signed_in_redis, lifetime=0.6, short=3)
    config = TokenManagerConfig(0.5, 0, 100, RetryPolicy(1, 10))
    provider = EntraIdCredentialsProvider(identity, config)
    monkeypatch.setattr(redisauth, "credential_provider_for", lambda url, client_id=None: provider)
    limiter = RateLimiter(parse_limits("3/minute"), parse_limits("100/minute"), redis_server.url)
    try:
        limiter.admit(["ip:203.0.113.7"])
        [(connection, first_user)] = limiter_users(signed_in_redis).items()
        deadline = time.monotonic() + 5.0
        while limiter_users(signed_in_redis) != {connection: "limiter-4"} and time.monotonic() < deadline:
            time.sleep(0.05)
        for user in identity.issued[:-1]:
            signed_in_redis.acl_deluser(user)
        limiter.admit(["ip:203.0.113.7"])
        limiter.admit(["ip:203.0.113.7"])
        with pytest.raises(RateLimited):
            limiter.admit(["ip:203.0.113.7"])
        assert first_user == "limiter-1"
        assert limiter_users(signed_in_redis) == {connection: "limiter-4"}
        assert storage_errors(caplog) == []
    finally:
        limiter.close()


def test_the_apps_managed_identity_signs_in_with_the_identity_endpoints_token_and_counts_there(
    redis_server: RedisServer,
    signed_in_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The production path, Azure played by the test: redisauth's own provider (redis-entraid, msal)
    asks the stand-in identity endpoint, and the test's Redis takes each token it issues as the
    identity's password, as Azure's takes its Entra ID tokens."""
    with installed(monkeypatch, on_issue=lambda user, token: add_user(signed_in_redis, user, token)) as endpoint:
        monkeypatch.setenv("AZURE_CLIENT_ID", "5f2b9a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
        # As though the test's Redis were Azure's (a rediss:// URL to *.redis.azure.net).
        monkeypatch.setattr(redisauth, "uses_entra_id", lambda url: True)
        limiter = RateLimiter(parse_limits("2/minute"), parse_limits("100/minute"), redis_server.url)
        try:
            limiter.admit(["ip:203.0.113.7"])
            limiter.admit(["ip:203.0.113.7"])
            with pytest.raises(RateLimited):
                limiter.admit(["ip:203.0.113.7"])
            users = {c["user"] for c in signed_in_redis.client_list()}
        finally:
            limiter.close()
        assert users == {"admin", endpoint.object_id}
        assert signed_in_redis.dbsize() == 2
        assert storage_errors(caplog) == []


def test_an_identity_endpoint_that_does_not_answer_leaves_counting_to_this_process_briefly(
    redis_server: RedisServer,
    signed_in_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with installed(monkeypatch) as endpoint:
        endpoint.hang = True
        monkeypatch.setattr(redisauth, "uses_entra_id", lambda url: True)
        monkeypatch.setattr(redisauth, "IDENTITY_TIMEOUT", 0.2)
        limiter = RateLimiter(parse_limits("2/minute"), parse_limits("100/minute"), redis_server.url)
        try:
            started = time.monotonic()
            limiter.admit(["ip:203.0.113.7"])
            waited = time.monotonic() - started
            limiter.admit(["ip:203.0.113.7"])
            with pytest.raises(RateLimited):
                limiter.admit(["ip:203.0.113.7"])
        finally:
            limiter.close()
        assert waited < 2.0
        [error] = storage_errors(caplog)
        assert "IdentityTokenError" in error.getMessage()
        assert signed_in_redis.dbsize() == 0


def test_two_server_processes_count_together_through_a_credential_provider_with_no_password_in_the_url(
    redis_server: RedisServer, signed_in_redis: redis.Redis, fake: FakeDirectLine, tmp_path: Path
) -> None:
    """As two instances of the function app signing in to Azure's Redis with their identity: the
    URL names the database only, and one caller's 20 requests spread over both processes get 5."""
    add_user(signed_in_redis, "limiter-app", "its-token")
    env = base_env(
        fake.base_url,
        RATE_LIMIT="5/minute",
        RATE_LIMIT_STORAGE=redis_server.url,
        TRUSTED_PROXY_HOPS="1",
        TEST_REDIS_USERNAME="limiter-app",
        TEST_REDIS_PASSWORD="its-token",
    )
    assert "@" not in env["RATE_LIMIT_STORAGE"]
    with (
        served(env, tmp_path, name="first", workers=1, module="tests.serve_signed_in") as first,
        served(env, tmp_path, name="second", workers=1, module="tests.serve_signed_in") as second,
    ):
        statuses = fire([((first, second)[n % 2].base_url, {}) for n in range(20)])
        logs = first.log_text() + second.log_text()
        served_counts = [len(first.audit_records()), len(second.audit_records())]
        users = {c["user"] for c in signed_in_redis.client_list()}
    assert Counter(statuses) == {200: 5, 429: 15}
    assert len(fake.requests) == 5
    assert served_counts == [10, 10]
    assert STORAGE_ERROR not in logs
    assert "limiter-app" in users
