"""Hosted mode: a WSGI adapter that serves the function app's own HTTP functions under `/api`.

The routes come from `function_app.http_routes()`, i.e. from `app.get_functions()`, so Azure and
this server run one code path. This module knows nothing of Azure: it maps WSGI to `HostedRequest`
and back, answers 404/405 for what no function serves, and serves the sample page's files.

The server counts as one trusted front end: it appends the connection's peer address to
X-Forwarded-For, exactly as Azure's front end does, so `TRUSTED_PROXY_HOPS=1` is right when the
server faces the clients directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tokens.body import MAX_BODY_BYTES
from tokens.errors import (
    InvalidRequest,
    MethodNotAllowed,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    ServiceError,
)
from tokens.http import JSON_HEADERS, error_response

log = logging.getLogger("tokens.server")

API_PREFIX = "/api/"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_FILES = {"/": "index.html", "/index.html": "index.html", "/token-client.js": "token-client.js"}
OPENAPI_PATH = "/api/openapi.yaml"
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "openapi.yaml"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass(frozen=True)
class HostedRequest:
    method: str
    route: str  # the path after /api/
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str


@dataclass(frozen=True)
class HostedResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    handler: Callable[[HostedRequest], HostedResponse]


@dataclass
class HostedApp:
    routes: Mapping[str, Route]
    static_dir: Path | None = None
    extra_static: Mapping[str, Path] = field(default_factory=dict)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "") or "/"
        if path in self.extra_static:
            response = self._static(environ, path)
        elif path.startswith(API_PREFIX):
            response = self._api(environ, path[len(API_PREFIX) :])
        else:
            response = self._static(environ, path)
        reason = _REASONS.get(response.status, "Unknown")
        start_response(f"{response.status} {reason}", response.headers)
        return [response.body]

    def _api(self, environ: dict[str, Any], route: str) -> HostedResponse:
        method = environ["REQUEST_METHOD"].upper()
        found = self.routes.get(route)
        if found is None:
            return _error(NotFound())
        if method not in found.methods:
            allowed = ", ".join(sorted(found.methods))
            answer = _error(MethodNotAllowed())
            return HostedResponse(answer.status, [*answer.headers, ("Allow", allowed)], answer.body)
        try:
            return found.handler(_hosted_request(environ, method, route))
        except Exception:  # a crash must still answer in the documented shape, as the service's own do
            log.exception("Unhandled error in %s %s", method, route)
            return _error(Misconfigured("The service failed unexpectedly."))

    def _static(self, environ: dict[str, Any], path: str) -> HostedResponse:
        source = self.extra_static.get(path)
        if source is None and self.static_dir is not None and path in STATIC_FILES:
            source = self.static_dir / STATIC_FILES[path]
        if source is None or not source.is_file():
            return _error(NotFound())
        if environ["REQUEST_METHOD"].upper() not in ("GET", "HEAD"):
            return _error(MethodNotAllowed())
        content_type = _CONTENT_TYPES.get(source.suffix) or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("yaml"):
            content_type += "; charset=utf-8"
        headers = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
        body = b"" if environ["REQUEST_METHOD"].upper() == "HEAD" else source.read_bytes()
        return HostedResponse(200, headers, body)


def _hosted_request(environ: dict[str, Any], method: str, route: str) -> HostedRequest:
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    peer = environ.get("REMOTE_ADDR")
    if peer:
        forwarded = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
    # Read one byte past the limit at most: enough for the core to answer 413, never a huge body.
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(min(length, MAX_BODY_BYTES + 1)) if length > 0 else b""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    return HostedRequest(method, route, query, headers, body, f"{scheme}://{host}")


def run_waitress(app: WsgiApp, *, host: str, port: int, threads: int, max_body: int) -> None:
    """Serve `app` with waitress until interrupted.

    waitress answers a request it cannot parse itself (a bad Content-Length, a body over
    `max_body`, oversized headers), before the app sees it, in plain text. Those answers are
    given in the service's JSON error shape instead, so that every client meets one shape.
    """
    # Imported here: only `serve` needs waitress.
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer, create_server
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            # waitress' own message can quote the request; a fixed one echoes nothing.
            parsed: Any = self.request  # the stubs type it as the error; it is the parsed request
            too_large = parsed.error.code == 413
            error = PayloadTooLarge() if too_large else InvalidRequest("The HTTP request is malformed.")
            answer = _error(error)
            self.status = f"{answer.status} {_REASONS[answer.status]}"
            self.response_headers = [*self.response_headers, *answer.headers]
            self.set_close_on_finish()
            self.content_length = len(answer.body)
            self.write(answer.body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    server: Any = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        max_request_body_size=max_body,
        ident="tokens",
        # Keep X-Forwarded-For: TRUSTED_PROXY_HOPS, not waitress, decides which entries to believe.
        clear_untrusted_proxy_headers=False,
    )
    # One listening server, or several (a host name with IPv4 and IPv6 addresses) in one map.
    listeners = [server] if isinstance(server, BaseWSGIServer) else list(server.map.values())
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = JsonErrorChannel
    server.run()


def _error(error: ServiceError) -> HostedResponse:
    response = error_response(error)
    headers = list(response.all_headers().items())
    return HostedResponse(response.status, headers, response.body)


_CONTENT_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".yaml": "application/yaml",
    ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json",
}

_REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}

__all__ = ["JSON_HEADERS", "HostedApp", "HostedRequest", "HostedResponse", "Route"]
