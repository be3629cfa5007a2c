"""The Azure Functions entry point (Python v2 programming model): declares the HTTP routes and the
keep-warm timer, and converts between Azure's request/response types and the core's. Logic lives
in `tokens/`; this is the only module that imports azure.functions.

Every function is ANONYMOUS on purpose: a public web page cannot keep a function key secret, so a
key would protect nothing. The allow-list of origins, the caller's identity and the rate limits
protect the endpoint instead (see the README's Security section).
"""

import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import azure.functions as func
from azure.functions._abc import RetryContext, TraceContext
from azure.functions.decorators.function_app import Function
from azure.functions.decorators.http import HttpTrigger
from dotenv import load_dotenv

from tokens.http import Request, Response
from tokens.settings import DEFAULT_WARMUP_SCHEDULE, is_ncrontab

# Imported where first used, not here: the service's modules pull in PyJWT and cryptography, and
# the hosted server's only matter to `serve`, so indexing the app at a cold start skips them (about
# 40 ms; see benchmarks/RESULTS.md). uuid is imported lazily for the same reason (it imports
# platform).
if TYPE_CHECKING:
    from tokens.server import HostedRequest, HostedResponse, Route
    from tokens.service import Service

load_dotenv(override=False)  # local runs; a real app setting always wins

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_service: "Service | None" = None
_service_lock = threading.Lock()


def get_service() -> "Service":
    """One service per process, built on first use: Azure reuses it across invocations."""
    global _service  # noqa: PLW0603 - the process-wide client cache that Azure's docs recommend
    if _service is None:
        with _service_lock:
            if _service is None:
                from tokens.service import service_from_env

                _service = service_from_env()
    return _service


def reset_service() -> None:
    """Forget the process's service so the next request reads the settings again (tests, serve)."""
    global _service  # noqa: PLW0603
    with _service_lock:
        _service = None


def warmup_schedule() -> str:
    schedule = os.environ.get("WARMUP_SCHEDULE", "").strip()
    # An invalid schedule is reported by the settings check; the timer keeps the default meanwhile.
    return schedule if is_ncrontab(schedule) else DEFAULT_WARMUP_SCHEDULE


class LocalContext(func.Context):
    """The invocation context for calls that do not come from the Functions host."""

    def __init__(self, invocation_id: str | None = None, function_name: str = "") -> None:
        self._invocation_id = invocation_id or _new_invocation_id()
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return os.path.dirname(os.path.abspath(__file__))

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local

    @property
    def trace_context(self) -> TraceContext:
        raise NotImplementedError("no trace context outside the Functions host")

    @property
    def retry_context(self) -> RetryContext:
        raise NotImplementedError("no retry context outside the Functions host")


def _new_invocation_id() -> str:
    import uuid

    return str(uuid.uuid4())


# A direct call without a context (a test, a script) still gets a fresh invocation id per call.
_NO_CONTEXT = LocalContext(invocation_id="-")


def to_core(req: func.HttpRequest, context: func.Context) -> Request:
    invocation_id = context.invocation_id
    if context is _NO_CONTEXT:
        invocation_id = _new_invocation_id()
    return Request.build(req.method, dict(req.headers), req.get_body(), invocation_id=invocation_id)


def to_azure(response: Response) -> func.HttpResponse:
    return func.HttpResponse(
        body=response.body, status_code=response.status, headers=response.all_headers()
    )


@app.route(route="directline/token", methods=["POST", "OPTIONS"])
def directline_token(req: func.HttpRequest, context: func.Context = _NO_CONTEXT) -> func.HttpResponse:
    request = to_core(req, context)
    service = get_service()
    if request.method == "OPTIONS":
        return to_azure(service.preflight(request))
    return to_azure(service.issue_token(request))


@app.route(route="directline/refresh", methods=["POST", "OPTIONS"])
def directline_refresh(
    req: func.HttpRequest, context: func.Context = _NO_CONTEXT
) -> func.HttpResponse:
    request = to_core(req, context)
    service = get_service()
    if request.method == "OPTIONS":
        return to_azure(service.preflight(request))
    return to_azure(service.refresh_token(request))


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return to_azure(get_service().health(to_core(req, _NO_CONTEXT)))


# The schedule monitor (the default) is what lets the host report a past-due tick.
@app.timer_trigger(schedule=warmup_schedule(), arg_name="timer", run_on_startup=False)
def warmup_timer(timer: func.TimerRequest) -> None:
    from tokens import warmup
    from tokens.service import TokenService

    service = get_service()
    url = service.settings.warmup_url if isinstance(service, TokenService) else None
    warmup.ping(url, past_due=timer.past_due)


# -- hosted mode: `python -m tokens serve` runs these very functions -----------------------------


def _hosted(
    function: Callable[..., func.HttpResponse], name: str
) -> "Callable[[HostedRequest], HostedResponse]":
    from tokens.server import HostedResponse

    # As the Functions host does: a parameter named `context` receives the invocation context.
    takes_context = "context" in inspect.signature(function).parameters

    def handle(hosted: "HostedRequest") -> HostedResponse:
        query = f"?{urlencode(hosted.query)}" if hosted.query else ""
        req = func.HttpRequest(
            method=hosted.method,
            url=f"{hosted.base_url}/api/{hosted.route}{query}",
            headers=hosted.headers,
            params=hosted.query,
            route_params={},
            body=hosted.body,
        )
        answer = function(req, LocalContext(function_name=name)) if takes_context else function(req)
        return HostedResponse(answer.status_code, list(answer.headers.items()), answer.get_body())

    return handle


@functools.cache
def registered_functions() -> tuple[Function, ...]:
    """`app.get_functions()`, once: the library refuses a second call as 'duplicate function names'."""
    return tuple(app.get_functions())


def http_routes() -> "dict[str, Route]":
    """The HTTP functions as `app.get_functions()` lists them: route -> (methods, handler)."""
    from tokens.server import Route

    routes: dict[str, Route] = {}
    for function in registered_functions():
        trigger = function.get_trigger()
        if not isinstance(trigger, HttpTrigger) or trigger.route is None:
            continue
        methods = frozenset(str(getattr(m, "value", m)) for m in trigger.methods or ())
        handler = _hosted(function.get_user_function(), function.get_function_name() or trigger.route)
        routes[trigger.route] = Route(methods, handler)
    return routes
