"""A stand-in for the managed-identity endpoint of App Service and Azure Functions, over real HTTP on
loopback, so that the app's Redis sign-in (tokens/redisauth.py: redis-entraid, msal) runs as in Azure
without Azure.

msal reads the endpoint from `IDENTITY_ENDPOINT` and the secret header from `IDENTITY_HEADER`, then
asks `GET ?api-version=2019-08-01&resource=…[&client_id=…]` with `X-IDENTITY-HEADER`, and gets
`{"access_token", "expires_on", "resource", "token_type"}` back. Each token here is a JWT for one
object id, signed with a test key (redis-entraid reads its claims without checking the signature,
as Redis does the checking in Azure). `on_issue` sees each token before it is handed out, so that a
test can make it a password its Redis accepts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest

from tests.fakes import FakeDirectLine, LoopbackServer, QuietHandler

HEADER = "test-identity-header-value"
OBJECT_ID = "0b6c5c3a-6f1e-4b7e-9a56-1d2f3c4b5a69"
_SIGNING_KEY = "a test key that signs nothing that matters" * 2
# Variables that would make msal take another managed-identity flavour than App Service's.
OTHER_FLAVOURS = ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT")


class ManagedIdentityEndpoint:
    def __init__(
        self,
        *,
        object_id: str = OBJECT_ID,
        lifetimes: Sequence[float] = (3600.0,),
        on_issue: Callable[[str, str], None] | None = None,
    ) -> None:
        """`lifetimes`: seconds each token lives, in the order issued; the last one repeats."""
        self.object_id = object_id
        self.requests: list[dict[str, str]] = []  # each request's query, and its header as "header"
        self.issued: list[str] = []
        self.hang = False  # take each request, then answer nothing until closed
        self.refuse = False  # answer 400 with an error body, as for an unknown client id
        self._lifetimes = lifetimes
        self._on_issue = on_issue
        self._serial = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        endpoint = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                endpoint._handle(self)

        self._http = LoopbackServer(Handler)
        self.url = f"http://127.0.0.1:{self._http.port}/msi/token"

    def environment(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": HEADER}

    def close(self) -> None:
        self._stop.set()
        self._http.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        query = dict(parse_qsl(urlsplit(handler.path).query))
        with self._lock:
            self.requests.append({**query, "header": handler.headers.get("X-IDENTITY-HEADER", "")})
        if self.hang:
            self._stop.wait()
            handler.close_connection = True
            return
        if self.refuse or handler.headers.get("X-IDENTITY-HEADER") != HEADER:
            self._send(handler, 400, {"statusCode": 400, "message": "refused: secret-detail-of-the-endpoint"})
            return
        serial = next(self._serial)
        lifetime = self._lifetimes[min(serial, len(self._lifetimes) - 1)]
        now = time.time()
        claims = {"oid": self.object_id, "iat": int(now), "exp": now + lifetime, "serial": serial}
        token = jwt.encode(claims, _SIGNING_KEY, algorithm="HS256")
        if self._on_issue is not None:
            self._on_issue(self.object_id, token)
        with self._lock:
            self.issued.append(token)
        answer = {
            "access_token": token,
            "expires_on": str(int(now + lifetime)),
            "resource": query.get("resource", ""),
            "token_type": "Bearer",
        }
        self._send(handler, 200, answer)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, document: dict[str, Any]) -> None:
        FakeDirectLine._send(handler, status, {}, json.dumps(document).encode())


@contextlib.contextmanager
def installed(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[ManagedIdentityEndpoint]:
    """An endpoint (`options` as ManagedIdentityEndpoint takes them) in the environment, as the
    platform sets it, and no other managed-identity flavour there; closed afterwards."""
    endpoint = ManagedIdentityEndpoint(**options)
    try:
        for name in OTHER_FLAVOURS:
            monkeypatch.delenv(name, raising=False)
        for name, value in endpoint.environment().items():
            monkeypatch.setenv(name, value)
        yield endpoint
    finally:
        endpoint.close()
