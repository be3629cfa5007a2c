"""The route table, and the one service per process that answers it.

Both adapters serve exactly this table: `function_app.py` declares one Azure function per route and
calls `answer`, and the hosted server (`tokens/server.py`) dispatches to it directly. A test compares
the table with what `app.get_functions()` registers, so hosted mode cannot drift from Azure.

The service is built on first use, from the settings, and reused by every request of the process,
as Azure's documentation recommends for clients: one pooled Direct Line session per process.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Final

from tokens.errors import MethodNotAllowed, Misconfigured, NotFound
from tokens.http import Request, Response, error_response

if TYPE_CHECKING:
    from tokens.service import Service

log = logging.getLogger("tokens.routes")

# route (under /api/) -> HTTP method -> the Service method that answers it
ROUTES: Final[dict[str, dict[str, str]]] = {
    "directline/token": {"POST": "issue_token", "OPTIONS": "preflight"},
    "directline/refresh": {"POST": "refresh_token", "OPTIONS": "preflight"},
    "directline/resume": {"POST": "resume", "OPTIONS": "preflight"},
    "health": {"GET": "health"},
}
DEFAULT_CONCURRENCY = 32  # the Functions Python worker's default thread count on a small instance

_service: Service | None = None
_lock = threading.Lock()
_concurrency = DEFAULT_CONCURRENCY


def answer(route: str, request: Request) -> Response:
    """The answer to `request` for `route`; 404 or 405 (with Allow) for what the table lacks."""
    methods = ROUTES.get(route)
    if methods is None:
        return error_response(NotFound())
    name = methods.get(request.method)
    if name is None:
        response = error_response(MethodNotAllowed())
        response.headers["Allow"] = ", ".join(methods)
        return response
    try:
        result: Response = getattr(service(), name)(request)
    except Exception:  # a crash must still answer in the documented shape, as the service's own do
        log.exception("Unhandled error in %s %s", request.method, route)
        return error_response(Misconfigured("The service failed unexpectedly."))
    return result


def service() -> Service:
    """The process's service, built on first use."""
    global _service  # noqa: PLW0603 - the process-wide client cache that Azure's docs recommend
    if _service is None:
        with _lock:
            if _service is None:
                from tokens.service import service_from_env

                _service = service_from_env(concurrency=_concurrency)
    return _service


def configure(concurrency: int) -> None:
    """How many requests the process answers at once (hosted mode's --threads), so that the Direct
    Line pool keeps a connection for each; forgets the service built so far."""
    global _concurrency  # noqa: PLW0603
    _concurrency = concurrency
    reset()


def reset() -> None:
    """Forget the process's service so the next request reads the settings again."""
    global _service  # noqa: PLW0603
    with _lock:
        _service = None
