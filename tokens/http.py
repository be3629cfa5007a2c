"""The core's own request and response, so that nothing outside function_app.py knows Azure's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokens.errors import ServiceError

JSON_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Request:
    method: str
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes = b""
    peer: str | None = None  # the connection's remote address, where the host knows it
    invocation_id: str | None = None

    @classmethod
    def build(
        cls,
        method: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        peer: str | None = None,
        invocation_id: str | None = None,
    ) -> Request:
        lowered = {name.lower(): value for name, value in headers.items()}
        return cls(method.upper(), lowered, body, peer, invocation_id)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    payload: Any = None  # JSON-serializable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        if self.payload is None:
            return b""
        return json.dumps(self.payload, separators=(",", ":")).encode()

    def all_headers(self) -> dict[str, str]:
        headers = {**JSON_HEADERS, **self.headers}
        if self.payload is None:
            del headers["Content-Type"]
        return headers


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, payload, dict(headers or {}))


def error_response(error: ServiceError) -> Response:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return Response(error.status, error.to_json(), headers)
