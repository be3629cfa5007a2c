"""The demo's one port for the browser: the service's routes and the emulator's, and Web Chat's
bundle when npm installed it, on the port the page was loaded from.

The service calls the emulator on a loopback port of its own; a browser may not be able to reach that
port (the page was opened through a forwarded port of a dev container or Codespaces, which forwards
one port only). So the demo answers the emulator's browser routes under `/v3/directline` on the
service's own port, and the token answers name that address as their `domain`, the Direct Line base
URL Web Chat talks to.

Only what Web Chat calls passes: conversations and token refresh. Minting (`tokens/generate`) stays
on the loopback port, where only the service calls it. The emulator's conversations route, like Direct
Line's, would also take the secret; the demo's secret is random, made at start and never shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication

from demo.bundle import BUNDLE_PATH, LocalBundle
from demo.emulator import PATH_PREFIX

# The emulator's routes a browser uses, under PATH_PREFIX; everything else there is 404.
_BROWSER_ROUTES = ("/conversations", "/tokens/refresh")
_SERVICE_ROUTES = "/api/directline/"
_PAGES = ("/", "/index.html", "/widget.html")  # the sample pages serve answers (tokens/server.py)


class BrowserGateway:
    """WSGI: the emulator's browser routes from `emulator`, the rest from `app`, whose token answers
    get `browser_endpoint` as their domain instead of `service_endpoint`; with `bundle`, Web Chat's
    bundle at BUNDLE_PATH and the pages pointed at it (demo/bundle.py)."""

    def __init__(
        self,
        app: WSGIApplication,
        emulator: WSGIApplication,
        service_endpoint: str,
        browser_endpoint: str,
        bundle: LocalBundle | None = None,
    ) -> None:
        self.app = app
        self.emulator = emulator
        self.service_endpoint = service_endpoint
        self.browser_endpoint = browser_endpoint
        self.bundle = bundle

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(PATH_PREFIX + "/"):
            route = path[len(PATH_PREFIX) :]
            if route.startswith(_BROWSER_ROUTES):
                return self.emulator(environ, start_response)
            return _not_found(start_response)
        if self.bundle is not None and path == BUNDLE_PATH:
            return _bundle(self.bundle, environ, start_response)
        if self.bundle is not None and path in _PAGES:
            return self._transformed(environ, start_response, self.bundle.rewrite)
        if path.startswith(_SERVICE_ROUTES):
            return self._transformed(environ, start_response, self._with_browser_domain)
        return self.app(environ, start_response)

    def _transformed(
        self, environ: dict[str, Any], start_response: StartResponse, transform: Callable[[bytes], bytes]
    ) -> list[bytes]:
        """The app's answer with its body passed through `transform`."""
        captured: list[Any] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            captured[:] = [status, headers]
            return lambda data: None

        answer = self.app(environ, capture)
        try:
            body = transform(b"".join(answer))
        finally:
            close = getattr(answer, "close", None)  # as a WSGI server would (PEP 3333)
            if close is not None:
                close()
        status, headers = captured
        headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _with_browser_domain(self, body: bytes) -> bytes:
        if b'"domain"' not in body:
            return body
        answer = json.loads(body)
        if not isinstance(answer, dict) or answer.get("domain") != self.service_endpoint:
            return body
        answer["domain"] = self.browser_endpoint
        return json.dumps(answer).encode()


def _bundle(bundle: LocalBundle, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    body = bundle.path.read_bytes()
    headers = [
        ("Content-Type", "text/javascript; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "public, max-age=86400"),  # one release, one file
    ]
    start_response("200 OK", headers)
    return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


def _not_found(start_response: StartResponse) -> list[bytes]:
    body = json.dumps({"error": {"code": "NotFound", "message": "Not found."}}).encode()
    start_response(
        "404 Not Found",
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]
