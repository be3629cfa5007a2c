"""The app under Microsoft's own Python 3.13 worker, `azure-functions-runtime`, driven with the
Functions host's messages (tests/functions_host/host.py says how, and what it leaves out): the
functions the runtime indexes from function_app.py, and HTTP and timer invocations converted into
`func.HttpRequest` and `func.TimerRequest` by the runtime's code rather than by our tests'.

The worker runs in `.venv-py313`, built by `.ci/runtime-venv`; Direct Line is the fake, on loopback
in this process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALLOWED, ROOT, base_env
from tests.fakes import SECRET, FakeDirectLine, Recorded
from tests.functions_host.host import (
    RUNTIME_PYTHON,
    FunctionsHost,
    HttpAnswer,
    IndexedFunction,
    Invocation,
    Message,
    worker_environment,
)
from tests.prerequisites import missing_prerequisite
from tests.served import free_port

# -- what the runtime must index: one row per function, compared exactly -------------------------


@dataclass(frozen=True)
class Http:
    route: str
    methods: frozenset[str]
    auth_level: str = "ANONYMOUS"


@dataclass(frozen=True)
class Timer:
    schedule: str
    run_on_startup: bool = False


def http(route: str, *methods: str) -> Http:
    return Http(route, frozenset(methods))


EXPECTED_FUNCTIONS: dict[str, Http | Timer] = {
    "directline_token": http("directline/token", "POST", "OPTIONS"),
    "directline_refresh": http("directline/refresh", "POST", "OPTIONS"),
    "health": http("health", "GET"),
    "warmup_timer": Timer("0 */5 * * * *"),
}


def as_indexed(function: IndexedFunction) -> Http | Timer:
    """A function's trigger, from the metadata the runtime sent the host, in the table's terms."""
    trigger = function.trigger
    if trigger.type == "httpTrigger":
        settings = trigger.settings
        return Http(settings["route"], frozenset(settings["methods"]), settings["authLevel"])
    if trigger.type == "timerTrigger":
        return Timer(trigger.settings["schedule"], trigger.settings.get("runOnStartup", False))
    raise AssertionError(f"{function.name} has a trigger this table does not describe: {trigger.type}")


# -- the worker, and one request of each kind ------------------------------------------------------

TOKEN_HEADERS = {
    "Origin": ALLOWED,
    "Content-Type": "application/json",
    "X-Forwarded-For": "203.0.113.7:50000",
}
CALLER_TOKEN = "dl-token-of-the-caller-" + "y" * 40


@dataclass(frozen=True)
class Exchange:
    """One HTTP invocation through the runtime, and what it sent to Direct Line meanwhile."""

    answer: HttpAnswer
    upstream: list[Recorded]

    @property
    def invocation(self) -> Invocation:
        return self.answer.invocation


@pytest.fixture(scope="module")
def directline() -> Iterator[FakeDirectLine]:
    server = FakeDirectLine()
    yield server
    server.close()


@pytest.fixture(scope="module")
def host(directline: FakeDirectLine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionsHost]:
    if not RUNTIME_PYTHON.exists():
        missing_prerequisite(
            f"{RUNTIME_PYTHON} is missing: run .ci/runtime-venv to build the Python 3.13 "
            "environment with azure-functions-runtime"
        )
    # Nothing listens on the warm-up URL: the timer's ping is refused.
    settings = base_env(directline.base_url, WARMUP_URL=f"http://127.0.0.1:{free_port()}/api/health")
    stderr_path: Path = tmp_path_factory.mktemp("functions-runtime") / "worker-stderr.log"
    with FunctionsHost.started(ROOT, worker_environment(settings, ROOT), stderr_path) as started:
        yield started


def call(
    host: FunctionsHost, directline: FakeDirectLine, name: str, method: str,
    headers: dict[str, str], body: bytes = b"",
) -> Exchange:
    before = len(directline.requests)
    answer = host.invoke_http(name, method, headers, body)
    return Exchange(answer, directline.requests[before:])


def audit_records(host: FunctionsHost, invocation: Invocation) -> list[dict[str, Any]]:
    """The `tokens.audit` records that name this invocation."""

    def names_invocation(message: str) -> bool:
        try:
            record = json.loads(message)
        except ValueError:
            return False
        return isinstance(record, dict) and record.get("invocationId") == invocation.invocation_id

    return [json.loads(log["message"]) for log in host.logs(invocation, "tokens.audit", names_invocation)]


def messages(logs: list[Message]) -> str:
    return "\n".join(log["message"] for log in logs)


@pytest.fixture(scope="module")
def token(host: FunctionsHost, directline: FakeDirectLine) -> Exchange:
    return call(host, directline, "directline_token", "POST", TOKEN_HEADERS, b'{"userName": "Ann"}')


# -- start-up and indexing --------------------------------------------------------------------------


def test_runtime_initializes_indexes_and_loads_every_function(host: FunctionsHost) -> None:
    assert host.init_response["workerMetadata"]["runtimeVersion"] == "3.13"
    assert host.metadata_response["useDefaultMetadataIndexing"] is False
    loaded = {name: response["result"]["status"] for name, response in host.load_responses.items()}
    assert loaded == dict.fromkeys(host.functions, "Success")


def test_indexed_functions_are_exactly_the_expected_ones(host: FunctionsHost) -> None:
    indexed = {name: as_indexed(function) for name, function in host.functions.items()}
    assert indexed == EXPECTED_FUNCTIONS


# -- a token request, converted by the runtime --------------------------------------------------------


def test_token_request_answers_200_with_the_token_and_the_services_fields(
    token: Exchange, directline: FakeDirectLine
) -> None:
    assert token.answer.status == 200
    data = token.answer.json()
    assert {"conversationId", "token", "expires_in", "userId", "domain", "userHandle"} <= set(data)
    assert data["token"].startswith("dl-token-")
    assert data["expires_in"] == 1800
    assert data["userId"].startswith("dl_")
    assert data["domain"] == directline.base_url
    assert data["userHandle"]


def test_token_answer_is_not_cached_and_allows_the_callers_origin(token: Exchange) -> None:
    assert token.answer.header("Cache-Control") == "no-store"
    assert token.answer.header("Access-Control-Allow-Origin") == ALLOWED
    assert "Origin" in (token.answer.header("Vary") or "")


def test_token_request_reaches_direct_line_with_the_secret_the_name_and_the_origin(token: Exchange) -> None:
    (upstream,) = token.upstream
    assert upstream.path == "/v3/directline/tokens/generate"
    assert upstream.headers["Authorization"] == f"Bearer {SECRET}"
    assert upstream.body["user"]["name"] == "Ann"
    assert upstream.body["user"]["id"] == token.answer.json()["userId"]
    assert upstream.body["trustedOrigins"] == [ALLOWED]


def test_token_request_leaves_one_audit_record_with_the_hosts_invocation_id(
    token: Exchange, host: FunctionsHost
) -> None:
    (record,) = audit_records(host, token.invocation)
    assert (record["event"], record["outcome"], record["status"]) == ("directline.token", "issued", 200)
    assert record["invocationId"] == token.invocation.invocation_id
    assert record["userId"] == token.answer.json()["userId"]
    assert record["origin"] == ALLOWED
    assert record["clientIp"] == "203.0.113.0"


# -- the other HTTP functions -------------------------------------------------------------------------


def test_preflight_answers_204_with_cors_headers_and_no_direct_line_call(
    host: FunctionsHost, directline: FakeDirectLine
) -> None:
    headers = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
    preflight = call(host, directline, "directline_token", "OPTIONS", headers)
    assert preflight.answer.status == 204
    assert preflight.answer.header("Access-Control-Allow-Origin") == ALLOWED
    assert preflight.upstream == []


def test_health_answers_ok_without_direct_line(host: FunctionsHost, directline: FakeDirectLine) -> None:
    health = call(host, directline, "health", "GET", {})
    assert (health.answer.status, health.answer.json()) == (200, {"status": "ok"})
    assert health.upstream == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"userName": 42}'], ids=["not-json", "array", "number-name"])
def test_bad_body_is_400_invalid_request_in_the_error_shape(
    host: FunctionsHost, directline: FakeDirectLine, body: bytes
) -> None:
    refused = call(host, directline, "directline_token", "POST", TOKEN_HEADERS, body)
    assert refused.answer.status == 400
    error = refused.answer.json()
    assert set(error) == {"error"}
    assert set(error["error"]) == {"code", "message"}
    assert error["error"]["code"] == "invalid_request"
    assert error["error"]["message"]
    assert refused.upstream == []


def test_refresh_passes_the_callers_token_to_direct_line(host: FunctionsHost, directline: FakeDirectLine) -> None:
    headers = {"Origin": ALLOWED, "Authorization": f"Bearer {CALLER_TOKEN}"}
    refreshed = call(host, directline, "directline_refresh", "POST", headers)
    assert refreshed.answer.status == 200
    assert set(refreshed.answer.json()) == {"conversationId", "token", "expires_in", "domain"}
    (upstream,) = refreshed.upstream
    assert upstream.path == "/v3/directline/tokens/refresh"
    assert upstream.headers["Authorization"] == f"Bearer {CALLER_TOKEN}"


# -- the timer ------------------------------------------------------------------------------------


def test_timer_logs_the_refused_ping_and_completes(host: FunctionsHost, directline: FakeDirectLine) -> None:
    before = len(directline.requests)
    tick = host.invoke_timer("warmup_timer")
    assert tick.status == "Success", tick.exception
    assert "Warm-up ping failed" in messages(host.logs(tick, None, where=lambda m: "Warm-up" in m))
    assert directline.requests[before:] == []


def test_past_due_tick_is_logged_as_a_warning(host: FunctionsHost) -> None:
    tick = host.invoke_timer("warmup_timer", past_due=True)
    assert tick.status == "Success", tick.exception
    warnings = host.logs(tick, None, where=lambda message: "past due" in message)
    assert [log["level"] for log in warnings] == ["Warning"]


# -- the environment it runs in -------------------------------------------------------------------


def _requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def test_the_library_worker_is_never_deployed() -> None:
    """On Python 3.13 the platform's worker brings azure-functions-runtime, as it brings the worker
    on earlier versions."""
    names = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in _requirement_lines("requirements.txt")}
    assert "azure-functions-runtime" not in names


def test_the_python_3_13_environment_is_pinned_exactly() -> None:
    requirements = [line.split(";", 1)[0].strip() for line in _requirement_lines("requirements-runtime.txt")]
    unpinned = [line for line in requirements if not re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line)]
    assert unpinned == []
