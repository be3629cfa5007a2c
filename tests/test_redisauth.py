"""Redis by Microsoft Entra ID (tokens/redisauth.py): which URL signs in with the app's managed
identity, and redis-entraid's provider doing so against a stand-in for the platform's identity
endpoint on loopback. Nothing here talks to Azure or to a Redis (tests/test_ratelimit_redis.py does
the counting in a real one)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.auth.token import TokenInterface
from redis.credentials import (
    CredentialProvider,
    StreamingCredentialProvider,
    UsernamePasswordCredentialProvider,
)

from tests.conftest import ROOT
from tests.identity_endpoint import HEADER, OBJECT_ID, ManagedIdentityEndpoint, installed
from tokens import redisauth
from tokens.redisauth import (
    REDIS_RESOURCE,
    IdentityTokenError,
    connection_options,
    credential_provider_for,
    uses_entra_id,
)

CLIENT_ID = "5f2b9a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
AZURE_MANAGED_REDIS = "rediss://redis-abc123.westeurope.redis.azure.net:10000"
AZURE_CACHE_FOR_REDIS = "rediss://cache-abc123.redis.cache.windows.net:6380"


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[ManagedIdentityEndpoint]:
    """The platform's identity endpoint, as msal finds it in Azure Functions."""
    with installed(monkeypatch) as server:
        yield server


def _provider(client_id: str | None = CLIENT_ID) -> StreamingCredentialProvider:
    """The app's provider; `client_id` is AZURE_CLIENT_ID as the settings read it (the template sets
    it to the app's user-assigned identity)."""
    provider = credential_provider_for(AZURE_MANAGED_REDIS, client_id)
    assert isinstance(provider, StreamingCredentialProvider)
    return provider


# -- which URL signs in how -----------------------------------------------------------------------


@pytest.mark.parametrize("url", [AZURE_MANAGED_REDIS, AZURE_CACHE_FOR_REDIS, "rediss://X.EastUS.Redis.Azure.Net:10000/0"])
def test_a_password_less_tls_url_to_azures_redis_signs_in_with_entra_id(url: str) -> None:
    assert uses_entra_id(url)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://:access-key@redis-abc123.westeurope.redis.azure.net:10000",
        "rediss://app:access-key@cache-abc123.redis.cache.windows.net:6380",
        "rediss://app@redis-abc123.westeurope.redis.azure.net:10000",
        "redis://redis-abc123.westeurope.redis.azure.net:10000",
        "redis://127.0.0.1:6379/0",
        "rediss://localhost:6380",
        "rediss://redis.azure.net:10000",
        "rediss://redis-abc123.westeurope.redis.azure.net.evil.example:10000",
        "rediss://evilredis.azure.net:10000",
        "memory://",
    ],
    ids=[
        "key in the url", "user and key", "user only", "no tls", "local", "local tls", "bare domain",
        "look-alike suffix", "look-alike label", "memory",
    ],
)
def test_any_other_url_signs_in_as_it_is_written(url: str) -> None:
    """A password in the URL works as it always did; the identity's token goes to Azure's hosts only."""
    assert not uses_entra_id(url)
    assert credential_provider_for(url) is None


def test_redis_options_pass_through_untouched_when_the_url_says_how_to_sign_in() -> None:
    options = connection_options("redis://:password@127.0.0.1:6379/0", socket_timeout=0.5)
    assert options == {"socket_timeout": 0.5}


def test_a_credential_provider_comes_with_a_pool_built_with_the_options_and_goes_to_the_client_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py re-authenticates a pool's connections on a renewed token only for a client given both."""
    provider = UsernamePasswordCredentialProvider("app", "password")
    monkeypatch.setattr(redisauth, "credential_provider_for", lambda url, client_id=None: provider)
    options = connection_options("redis://127.0.0.1:6379/0", socket_timeout=0.5, socket_connect_timeout=0.5)
    assert set(options) == {"connection_pool", "credential_provider"}
    assert options["credential_provider"] is provider
    pool = options["connection_pool"]
    assert pool.connection_kwargs["credential_provider"] is provider
    assert (pool.connection_kwargs["socket_timeout"], pool.connection_kwargs["socket_connect_timeout"]) == (0.5, 0.5)
    pool.close()


_IMPORTED = """
import json, sys
from tokens.ratelimit import RateLimiter, parse_limits
for url in sys.argv[1:]:
    RateLimiter(parse_limits("1/minute"), parse_limits("1/minute"), url).close()
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("redis_entraid", "msal", "azure"))))
"""


def test_a_limiter_without_entra_id_never_imports_redis_entraid_msal_or_azure_identity() -> None:
    """Cold start: only a deployment that signs in with its identity loads them (nothing connects here)."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTED, "memory://", "redis://:password@127.0.0.1:9/0"],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )
    assert json.loads(result.stdout) == []


# -- the managed identity's provider, against the stand-in endpoint ----------------------------------


def test_an_azure_url_gets_the_managed_identity_provider_without_asking_for_a_token_yet(
    endpoint: ManagedIdentityEndpoint,
) -> None:
    assert isinstance(_provider(), CredentialProvider)
    assert endpoint.requests == []


def test_the_provider_signs_in_as_the_identitys_object_id_with_its_token(endpoint: ManagedIdentityEndpoint) -> None:
    assert _provider().get_credentials() == (OBJECT_ID, endpoint.issued[0])


def test_the_token_is_asked_for_redis_as_the_user_assigned_identity_of_azure_client_id(
    endpoint: ManagedIdentityEndpoint,
) -> None:
    _provider().get_credentials()
    first = endpoint.requests[0]
    assert (first["resource"], first["client_id"], first["header"]) == (REDIS_RESOURCE, CLIENT_ID, HEADER)


def test_without_azure_client_id_the_system_assigned_identity_is_asked(endpoint: ManagedIdentityEndpoint) -> None:
    _provider(None).get_credentials()
    assert "client_id" not in endpoint.requests[0]


def test_an_identity_endpoint_that_does_not_answer_is_a_redis_connection_error_within_two_timeouts(
    endpoint: ManagedIdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ConnectionError: redis-py closes the connection, the rate limiter counts locally meanwhile."""
    monkeypatch.setattr(redisauth, "IDENTITY_TIMEOUT", 0.2)
    endpoint.hang = True
    started = time.monotonic()
    with pytest.raises(IdentityTokenError) as caught:
        _provider().get_credentials()
    assert time.monotonic() - started < 1.0
    assert isinstance(caught.value, redis.exceptions.ConnectionError)
    assert len(endpoint.requests) == 1 + redisauth.IDENTITY_RETRIES


def test_a_refused_token_request_is_a_connection_error_that_quotes_nothing_of_the_answer(
    endpoint: ManagedIdentityEndpoint,
) -> None:
    endpoint.refuse = True
    with pytest.raises(IdentityTokenError) as caught:
        _provider().get_credentials()
    assert str(caught.value) == "no Microsoft Entra ID token for Redis (RequestTokenErr)"
    assert caught.value.__cause__ is None


def test_the_token_is_renewed_in_the_background_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-entraid's renewal, as redis-py subscribes to it: a new token arrives on its own, well
    before the first one expires (tokens of two seconds here; the identity's live for hours)."""
    with installed(monkeypatch, lifetimes=(2.0, 2.0, 2.0, 3600.0)) as server:
        provider = _provider()
        renewed: list[str] = []
        arrived = threading.Event()

        def on_next(token: TokenInterface) -> None:
            renewed.append(token.get_value())
            arrived.set()

        provider.on_next(on_next)
        first = provider.get_credentials()[-1]
        first_expires = time.time() + 2.0
        assert arrived.wait(5.0)
        assert time.time() < first_expires
        assert renewed[0] != first
        assert renewed[0] in server.issued
