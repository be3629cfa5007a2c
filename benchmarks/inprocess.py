"""Measurement 1: latency of one token request through the app's HTTP function, in process.

The function is the one `function_app.app.get_functions()` registers as `directline_token`, called
with a `func.HttpRequest` and a `func.Context` as the Functions host would. It is timed side by side
with the naive baseline and with two floors that have no app code at all: a bare pooled
`requests.Session`, and `http.client` on one kept-alive TLS connection (what the fake and the wire
cost by themselves). The kinds are interleaved in short blocks so that noise from other processes
falls on all alike.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func
import requests

from benchmarks.naive import naive_token
from benchmarks.stats import Latencies
from tests.hostcontext import InvocationContext

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "https://www.contoso.com"
TOKEN_BODY = json.dumps({"userName": "Ann"}).encode()
TOKEN_HEADERS = {
    "Content-Type": "application/json",
    "Origin": ORIGIN,
    "X-Forwarded-For": "203.0.113.7:50000",  # as Azure's front end adds it
}

Call = Callable[[], bool]


@dataclass(frozen=True)
class OverheadResult:
    app: Latencies
    naive: Latencies
    floor: Latencies
    raw: Latencies


@functools.cache
def token_function() -> Callable[[func.HttpRequest, func.Context], func.HttpResponse]:
    """The app's `directline_token` function, exactly as registered with Azure Functions (looked up
    once: `app.get_functions()` refuses a second call in one process)."""
    import function_app

    functions = {function.get_function_name(): function for function in function_app.app.get_functions()}
    user_function: Callable[[func.HttpRequest, func.Context], func.HttpResponse] = functions[
        "directline_token"
    ].get_user_function()
    return user_function


def app_token_call() -> Call:
    """One call of the app's token function, as the Functions host makes it."""
    user_function = token_function()

    def call() -> bool:
        request = func.HttpRequest(
            method="POST",
            url="https://bench.azurewebsites.net/api/directline/token",
            headers=TOKEN_HEADERS,
            params={},
            route_params={},
            body=TOKEN_BODY,
        )
        context = InvocationContext(uuid.uuid4().hex, "directline_token")
        status: int = user_function(request, context).status_code
        return status == 200

    return call


def naive_call(endpoint: str, secret: str) -> Call:
    def call() -> bool:
        return "token" in naive_token(endpoint, secret, "Ann")

    return call


def floor_call(endpoint: str, secret: str, session: requests.Session) -> Call:
    """A pooled session posting straight to the fake: no app code, the least a proxy can cost."""

    def call() -> bool:
        response = session.post(
            f"{endpoint}/tokens/generate",
            headers={"Authorization": f"Bearer {secret}"},
            json={"user": {"id": "dl_floor", "name": "Ann"}},
            timeout=10,
        )
        return response.status_code == 200 and "token" in response.json()

    return call


class RawClient:
    """`http.client` on one kept-alive TLS connection, reopened after an error."""

    def __init__(self, endpoint: str, secret: str, ca_file: Path) -> None:
        parts = urlsplit(endpoint)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 443
        self._path = f"{parts.path}/tokens/generate"
        self._headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self._body = json.dumps({"user": {"id": "dl_raw", "name": "Ann"}}).encode()
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._conn = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self._host, self._port, timeout=10, context=self._context)

    def __call__(self) -> bool:
        try:
            self._conn.request("POST", self._path, body=self._body, headers=self._headers)
            response = self._conn.getresponse()
            return response.status == 200 and b"token" in response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            self._conn = self._connect()
            return False

    def close(self) -> None:
        self._conn.close()


@contextmanager
def audit_to_file(path: Path) -> Iterator[None]:
    """Audit records written at INFO to a file, as the Functions host would ship them somewhere."""
    logger = logging.getLogger("tokens")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def time_calls(calls: dict[str, Call], samples: int, *, warmup: int, block: int = 10) -> dict[str, Latencies]:
    """Each call `samples` times, interleaved in blocks of `block`, after `warmup` untimed calls."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    timed: dict[str, list[tuple[float, float, bool]]] = {name: [] for name in calls}
    names = list(calls)
    for round_number in range(-(-samples // block)):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(min(block, samples - len(timed[name]))):
                timed[name].append(_timed(calls[name]))
    return {
        name: Latencies(
            name,
            tuple(wall for wall, _, _ in runs),
            tuple(cpu for _, cpu, _ in runs),
            sum(1 for _, _, ok in runs if not ok),
        )
        for name, runs in timed.items()
    }


def _timed(call: Call) -> tuple[float, float, bool]:
    """(wall ms, this thread's CPU ms, succeeded) of one call."""
    cpu_started = time.thread_time()
    started = time.perf_counter()
    try:
        ok = call()
    except Exception:
        ok = False
    elapsed = time.perf_counter() - started
    return elapsed * 1000, (time.thread_time() - cpu_started) * 1000, ok


def measure_overhead(
    endpoint: str, secret: str, *, ca_file: Path, samples: int, warmup: int, log_dir: Path
) -> OverheadResult:
    raw = RawClient(endpoint, secret, ca_file)
    with audit_to_file(log_dir / "inprocess-audit.log"), requests.Session() as session:
        try:
            results = time_calls(
                {
                    "app": app_token_call(),
                    "naive": naive_call(endpoint, secret),
                    "floor": floor_call(endpoint, secret, session),
                    "raw": raw,
                },
                samples,
                warmup=warmup,
            )
        finally:
            raw.close()
    return OverheadResult(results["app"], results["naive"], results["floor"], results["raw"])


def profile_app(samples: int, warmup: int, log_dir: Path) -> str:
    """The app's token function under pyinstrument: the call tree as text."""
    from pyinstrument import Profiler

    call = app_token_call()
    with audit_to_file(log_dir / "profile-audit.log"):
        for _ in range(warmup):
            call()
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(samples):
            call()
        profiler.stop()
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return text
