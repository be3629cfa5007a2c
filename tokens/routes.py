"""The route table, and the one set of settings and the one service per process that answer it.

Both adapters serve exactly this table: `function_app.py` declares one Azure function per route and
calls `answer`, and the hosted server (`tokens/server.py`) dispatches to it directly. A test compares
the table with what `app.get_functions()` registers, so hosted mode cannot drift from Azure.

The environment is read once per process, into one `Settings` (or the `SettingsError` that lists
every problem), here: everything the app acts on comes from it, the timer's schedule included. The
service is built on first use from those settings and reused by every request of the process, as
Azure's documentation recommends for clients: one pooled Direct Line session per process. Hosted
mode reads the settings once in its first process and hands them to its workers (`configure`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Final

from tokens.errors import MethodNotAllowed, Misconfigured, NotFound
from tokens.http import Request, Response, error_response
from tokens.settings import DEFAULT_CONCURRENCY, DEFAULT_WARMUP_SCHEDULE, Problem, Settings, SettingsError

if TYPE_CHECKING:
    from tokens.service import Service

log = logging.getLogger("tokens.routes")

# route (under /api/) -> HTTP method -> the Service method that answers it
ROUTES: Final[dict[str, dict[str, str]]] = {
    "directline/token": {"POST": "issue_token", "OPTIONS": "preflight"},
    "directline/refresh": {"POST": "refresh_token", "OPTIONS": "preflight"},
    "directline/resume": {"POST": "resume", "OPTIONS": "preflight"},
    "speech/token": {"POST": "speech_token", "OPTIONS": "preflight"},
    "health": {"GET": "health"},
}

_settings: Settings | SettingsError | None = None
_service: Service | None = None
_lock = threading.RLock()
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


def settings() -> Settings | SettingsError:
    """The process's settings, read once (with .env, as in the Functions host), their problems and
    warnings logged once."""
    global _settings  # noqa: PLW0603 - the process's one reading of its environment
    with _lock:
        if _settings is None:
            from tokens.settings import load_settings, log_loaded

            try:
                _settings = load_settings()
            except SettingsError as error:
                _settings = error
            except Exception as exc:  # whatever else: this must not stop the functions being indexed
                why = f"the settings could not be read ({type(exc).__name__})"
                _settings = SettingsError([Problem("STARTUP", why)])
            log_loaded(_settings, peer_known=False)
        return _settings


def timer_schedule() -> str:
    """The warm-up timer's schedule: WARMUP_SCHEDULE when it is valid, else the default (an invalid
    one is a settings problem, which health and check report; the timer keeps running meanwhile)."""
    loaded = settings()
    values = loaded._asdict() if isinstance(loaded, Settings) else loaded.values
    schedule = values.get("warmup_schedule")
    return schedule if isinstance(schedule, str) else DEFAULT_WARMUP_SCHEDULE


def service() -> Service:
    """The process's service, built on first use."""
    global _service  # noqa: PLW0603 - the process-wide client cache that Azure's docs recommend
    if _service is None:
        with _lock:
            if _service is None:
                from tokens.service import service_for

                _service = service_for(settings(), concurrency=_concurrency)
    return _service


def configure(concurrency: int, loaded: Settings | SettingsError | None = None) -> None:
    """How many requests the process answers at once (hosted mode's --threads), so that the Direct
    Line pool keeps a connection for each, and the settings the first process read (hosted mode's
    workers read no environment of their own); forgets the service built so far."""
    global _concurrency, _settings  # noqa: PLW0603
    with _lock:
        _concurrency = concurrency
        _settings = loaded
    _forget_service()


def reset() -> None:
    """Forget the process's settings and service, so the next request reads the environment again."""
    global _settings  # noqa: PLW0603
    with _lock:
        _settings = None
    _forget_service()


def _forget_service() -> None:
    global _service  # noqa: PLW0603
    with _lock:
        _service = None
