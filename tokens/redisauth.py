"""Redis through Microsoft Entra ID: the app's managed identity instead of an access key.

Which URL signs in how needs no setting of its own. A `rediss://` URL with neither user name nor
password, to a host of Azure's Redis services (`*.redis.azure.net`: Azure Managed Redis;
`*.redis.cache.windows.net`: Azure Cache for Redis), is reached with the app's managed identity: the
user-assigned one whose client id is in `AZURE_CLIENT_ID` (the Azure SDKs' own variable, which the
template sets, read with the settings), else the system-assigned one. Any other URL goes to
redis-py exactly as written, so a password in it (a developer's machine, the tests, a cache that
still takes keys) works as it always did, and the identity's token is only ever sent, over TLS, to
Azure's own Redis hosts.

The token comes from redis-entraid, Microsoft's credential provider for redis-py, through its
managed-identity provider (msal asks the platform's identity endpoint). It renews the token in the
background before it expires, and redis-py then re-authenticates the pool's open connections
(`AUTH <object id> <token>`), as Azure requires before the old token runs out. redis-py wires that
renewal to a pool only when its client is given both the pool and the provider, so the pool is built
here (`connection_options`) rather than left to `redis.from_url`.

Without a token (the identity endpoint down, slow or refusing) a connection fails as an unreachable
Redis would: the rate limiter counts in this process meanwhile and asks again a few seconds later
(tokens/ratelimit.py). A failed background renewal is logged; a connection that Azure then closes at
its token's expiry reconnects with a fresh one.

redis-entraid, msal and azure-identity are imported only when that rule applies: a deployment with
`memory://` or a password in its URL does not pay for them at cold start.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

import redis
import requests
from redis.credentials import CredentialProvider, StreamingCredentialProvider

log = logging.getLogger("tokens.redisauth")

# Azure Managed Redis and Azure Cache for Redis: the only hosts the identity's token is sent to.
AZURE_REDIS_HOST_SUFFIXES = (".redis.azure.net", ".redis.cache.windows.net")
# What the token is for: Azure's Redis services (the resource redis-entraid documents).
REDIS_RESOURCE = "https://redis.azure.com/"
# Seconds for each call to the identity endpoint, which msal makes without a timeout of its own. A
# request that opens a connection waits for the token, at most two calls (one retry).
IDENTITY_TIMEOUT = 2.0
IDENTITY_RETRIES = 1


class IdentityTokenError(redis.exceptions.ConnectionError):
    """No Microsoft Entra ID token for Redis. A ConnectionError, so that redis-py closes the half-open
    connection and the rate limiter takes the store for unreachable instead of failing the request."""


def uses_entra_id(url: str) -> bool:
    """A password-less `rediss://` URL to one of Azure's Redis services."""
    parts = urlsplit(url)
    return (
        parts.scheme == "rediss"
        and not parts.username
        and not parts.password
        and (parts.hostname or "").endswith(AZURE_REDIS_HOST_SUFFIXES)
    )


def connection_options(url: str, client_id: str | None = None, **options: Any) -> dict[str, Any]:
    """The keyword arguments for limits' RedisStorage at `url`, from redis-py's `options` (such as
    timeouts): those options as they are when the URL says how to sign in; otherwise a pool built
    with them and a credential provider (the identity `client_id` names), and the provider again
    for the client."""
    provider = credential_provider_for(url, client_id)
    if provider is None:
        return options
    pool = redis.ConnectionPool.from_url(url, credential_provider=provider, **options)
    return {"connection_pool": pool, "credential_provider": provider}


def credential_provider_for(url: str, client_id: str | None = None) -> CredentialProvider | None:
    """What signs redis-py in at `url`, or None when the URL itself does; `client_id` picks a
    user-assigned identity (AZURE_CLIENT_ID, read with the settings). The tests replace this
    function, to count through a provider of their own in a Redis of their own."""
    if not uses_entra_id(url):
        return None
    return managed_identity_provider(client_id)


def managed_identity_provider(client_id: str | None) -> StreamingCredentialProvider:
    """redis-entraid's provider for the managed identity with this client id (None: the
    system-assigned one). Nothing is asked of the identity endpoint until the first connection."""
    from msal import ManagedIdentityClient, SystemAssignedManagedIdentity, UserAssignedManagedIdentity
    from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
    from redis_entraid import cred_provider
    from redis_entraid.identity_provider import ManagedIdentityProvider

    if client_id:
        identity = UserAssignedManagedIdentity(client_id=client_id)
    else:
        identity = SystemAssignedManagedIdentity()
    # Assembled from redis-entraid's parts rather than by create_from_managed_identity(), which gives
    # msal an HTTP client without timeouts; renewal timing stays redis-entraid's own.
    client = ManagedIdentityClient(identity, http_client=_IdentityHttp())
    config = TokenManagerConfig(
        cred_provider.DEFAULT_EXPIRATION_REFRESH_RATIO,
        cred_provider.DEFAULT_LOWER_REFRESH_BOUND_MILLIS,
        cred_provider.DEFAULT_TOKEN_REQUEST_EXECUTION_TIMEOUT_IN_MS,
        RetryPolicy(IDENTITY_RETRIES, cred_provider.DEFAULT_DELAY_IN_MS),
    )
    tokens = ManagedIdentityProvider(client, REDIS_RESOURCE)
    return _FailingAsConnectionErrors(cred_provider.EntraIdCredentialsProvider(tokens, config))


class _IdentityHttp:
    """msal's HTTP client: requests, with a timeout on every call."""

    def __init__(self) -> None:
        self._session = requests.Session()

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.get(url, timeout=IDENTITY_TIMEOUT, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.post(url, timeout=IDENTITY_TIMEOUT, **kwargs)

    def close(self) -> None:
        self._session.close()


class _FailingAsConnectionErrors(StreamingCredentialProvider):
    """redis-entraid's provider, whose failures reach redis-py as IdentityTokenError and whose
    failed background renewals are logged: redis-py's own handler raises them on the renewal
    thread, where nothing catches them."""

    def __init__(self, provider: StreamingCredentialProvider) -> None:
        self._provider = provider
        # The first call starts the renewal thread; concurrent first connections must start one.
        self._lock = threading.Lock()

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            with self._lock:
                return self._provider.get_credentials()
        except Exception as error:
            # The type only: msal's and requests' messages may quote the identity endpoint's answer.
            name = type(error).__name__
            raise IdentityTokenError(f"no Microsoft Entra ID token for Redis ({name})") from None

    def on_next(self, callback: Any) -> None:
        self._provider.on_next(callback)

    def on_error(self, callback: Any) -> None:
        self._provider.on_error(_renewal_failed)

    def is_streaming(self) -> bool:
        return self._provider.is_streaming()


def _renewal_failed(error: Exception) -> None:
    log.error(
        "Could not renew the Microsoft Entra ID token for Redis (%s); connections sign in again with a "
        "new token when they reconnect",
        type(error).__name__,
    )
