"""A small identity provider over real HTTP on loopback, and the tokens a test signs with its keys.

`IdentityProvider` serves an OpenID configuration at `/.well-known/openid-configuration` and the
public halves of its keys at `/jwks`, counts every GET by path, and can be told to hang, so that the
JWKS cache's refetch limit, discovery and timeout are tested against real sockets. The helpers at the
bottom build the hostile tokens that PyJWT's own advisory tests use: unsigned, and HMAC-signed with a
public key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.fakes import LoopbackServer, QuietHandler

CONFIG_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, algorithm: str = "RS256") -> str:
        return jwt.encode(claims, self.private_key, algorithm=algorithm, headers={"kid": kid or self.kid})


@functools.cache
def signing_key(kid: str) -> SigningKey:
    """One RSA key per name, generated once per test run (key generation is the slow part)."""
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


class IdentityProvider:
    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.hits: Counter[str] = Counter()
        self.hang_seconds = 0.0  # > 0: take each request, then answer nothing for this long
        self.status = 200
        self.jwks_uri: str | None = None  # what discovery advertises; None: this server's /jwks
        self.raw_jwks: bytes | None = None  # served verbatim at /jwks instead of the published keys
        self._lock = threading.Lock()
        self._stop = threading.Event()
        provider = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                provider._handle(self)

        self._http = LoopbackServer(Handler)
        self.issuer = f"http://127.0.0.1:{self._http.port}"
        self.jwks_url = self.issuer + JWKS_PATH

    def publish(self, *keys: SigningKey) -> None:
        with self._lock:
            self.keys.extend(keys)

    @property
    def jwks_hits(self) -> int:
        return self.hits[JWKS_PATH]

    def close(self) -> None:
        self._stop.set()
        self._http.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.hits[path] += 1
            keys = list(self.keys)
        if self.hang_seconds:
            self._stop.wait(self.hang_seconds)
            handler.close_connection = True
            return
        if path == CONFIG_PATH:
            document = {"issuer": self.issuer, "jwks_uri": self.jwks_uri or self.jwks_url}
            self._send(handler, self.status, document)
        elif path == JWKS_PATH and self.raw_jwks is not None:
            self._send_raw(handler, self.status, self.raw_jwks)
        elif path == JWKS_PATH:
            self._send(handler, self.status, {"keys": [key.jwk() for key in keys]})
        else:
            self._send(handler, 404, {"error": "not found"})

    @classmethod
    def _send(cls, handler: BaseHTTPRequestHandler, status: int, document: dict[str, Any]) -> None:
        cls._send_raw(handler, status, json.dumps(document).encode())

    @staticmethod
    def _send_raw(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


# -- hostile tokens that PyJWT will not make ------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(document: dict[str, Any]) -> str:
    return _b64(json.dumps(document, separators=(",", ":")).encode())


def unsigned_token(claims: dict[str, Any], **header: str) -> str:
    """`alg: none` with an empty signature."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT', **header})}.{_segment(claims)}."


def hmac_token(claims: dict[str, Any], key: bytes, **header: str) -> str:
    """HS256 over the claims with any bytes as the key, a public key's PEM included (PyJWT refuses)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', **header})}.{_segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"
