"""The app under Microsoft's own Python 3.13 worker, `azure-functions-runtime`, driven with the
Functions host's messages (tests/functions_host/host.py says how, and what it leaves out): the
functions the runtime indexes from function_app.py, and HTTP and timer invocations converted into
`func.HttpRequest` and `func.TimerRequest` by the runtime's code rather than by our tests'.

The worker runs in `.venv-py313`, built by `.ci/python-venv 3.13 requirements-runtime.txt`; Direct
Line is the fake, on loopback in this process. Where the runtime's conversion must agree with the
adapter tests' own `func.HttpRequest` (tests/test_function_app.py), the same request goes both ways
against the same fake and the answers and audit records are compared."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.decorators.http import HttpTrigger

from tests.conftest import ALLOWED, ROOT, AuditLog, base_env
from tests.fakes import SECRET, FakeDirectLine, Recorded
from tests.functions_host.host import (
    BASE_URL,
    ROUTE_PREFIX,
    RUNTIME_PYTHON,
    FunctionsHost,
    HttpAnswer,
    IndexedFunction,
    Invocation,
    Message,
    worker_environment,
)
from tests.hostcontext import InvocationContext
from tests.prerequisites import missing_prerequisite
from tests.served import free_port

# The adapter tests' view of the same app: `app.get_functions()` may be read only once per process,
# so the functions come from that module rather than a second reading here.
from tests.test_function_app import FUNCTIONS
from tokens import routes

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
    "directline_resume": http("directline/resume", "POST", "OPTIONS"),
    "speech_token": http("speech/token", "POST", "OPTIONS"),
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
TOKEN_BODY = b'{"userName": "Ann"}'
CALLER_TOKEN = "dl-token-of-the-caller-" + "y" * 40
# What differs between two answers to the same request: new conversation, token and user each time.
VARYING_ANSWER_FIELDS = ("conversationId", "token", "userId", "userHandle", "conversationTicket")
VARYING_AUDIT_FIELDS = ("userId", "conversationId", "durationMs", "invocationId")


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
            f"{RUNTIME_PYTHON} is missing: `bash .ci/python-venv 3.13 requirements-runtime.txt` builds "
            "the Python 3.13 environment with azure-functions-runtime"
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
    return call(host, directline, "directline_token", "POST", TOKEN_HEADERS, TOKEN_BODY)


@pytest.fixture(scope="module")
def resumed(host: FunctionsHost, directline: FakeDirectLine, token: Exchange) -> Exchange:
    """The token's conversation resumed with its ticket, by the same caller (its user handle)."""
    issued = token.answer.json()
    body = {"userHandle": issued["userHandle"], "conversationTicket": issued["conversationTicket"]}
    return call(host, directline, "directline_resume", "POST", TOKEN_HEADERS, json.dumps(body).encode())


# -- the same request through the adapter tests' own func.HttpRequest -------------------------------


@pytest.fixture
def adapter(directline: FakeDirectLine, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's service, as tests/test_function_app.py runs it, against this module's fake
    Direct Line (so that `domain` and everything else that comes from the settings is the same)."""
    for key, value in base_env(directline.base_url).items():
        monkeypatch.setenv(key, value)
    routes.reset()
    yield
    routes.reset()


def through_the_adapter(name: str, method: str, headers: Mapping[str, str], body: bytes = b"") -> func.HttpResponse:
    """What tests/test_function_app.py does: the registered function called with our own request."""
    trigger = FUNCTIONS[name].get_trigger()
    assert isinstance(trigger, HttpTrigger)
    url = f"{BASE_URL}/{ROUTE_PREFIX}/{trigger.route}"
    request = func.HttpRequest(method=method, url=url, headers=dict(headers), body=body)
    response: func.HttpResponse = FUNCTIONS[name].get_user_function()(request, InvocationContext())
    return response


def without(varying: tuple[str, ...], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that must be equal between two answers (or records); a varying one only has to be
    there, with a value."""
    assert all(fields.get(name) is not None for name in varying if name in fields), fields
    return {name: ("<varies>" if name in varying else value) for name, value in fields.items()}


def lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


# -- start-up and indexing --------------------------------------------------------------------------


def test_runtime_initializes_indexes_and_loads_every_function(host: FunctionsHost) -> None:
    assert host.init_response["workerMetadata"]["runtimeVersion"] == "3.13"
    assert host.metadata_response["useDefaultMetadataIndexing"] is False
    loaded = {name: response["result"]["status"] for name, response in host.load_responses.items()}
    assert loaded == dict.fromkeys(host.functions, "Success")


def test_indexed_functions_are_exactly_the_expected_ones(host: FunctionsHost) -> None:
    indexed = {name: as_indexed(function) for name, function in host.functions.items()}
    assert indexed == EXPECTED_FUNCTIONS


def test_the_runtime_indexes_every_function_the_app_registers(host: FunctionsHost) -> None:
    """What azure-functions registers in this process is what Microsoft's worker indexes there."""
    assert set(host.functions) == set(FUNCTIONS)


def test_the_indexed_http_functions_serve_exactly_the_route_table(host: FunctionsHost) -> None:
    """A route added to tokens/routes.py without its function (or the reverse) shows here too."""
    served = {
        function.trigger.settings["route"]: set(function.trigger.settings["methods"])
        for function in host.functions.values()
        if function.trigger.type == "httpTrigger"
    }
    assert served == {route: set(methods) for route, methods in routes.ROUTES.items()}


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


def test_token_answer_through_the_runtime_is_the_adapters_answer(token: Exchange, adapter: None) -> None:
    """Status, headers and body as when tests/test_function_app.py builds the func.HttpRequest itself;
    only the new conversation's own values differ."""
    direct = through_the_adapter("directline_token", "POST", TOKEN_HEADERS, TOKEN_BODY)
    assert token.answer.status == direct.status_code == 200
    assert lowered(token.answer.headers) == lowered(direct.headers)
    assert without(VARYING_ANSWER_FIELDS, token.answer.json()) == without(
        VARYING_ANSWER_FIELDS, json.loads(direct.get_body())
    )


def test_token_audit_record_through_the_runtime_is_the_adapters_record(
    token: Exchange, host: FunctionsHost, adapter: None, audit: AuditLog
) -> None:
    through_the_adapter("directline_token", "POST", TOKEN_HEADERS, TOKEN_BODY)
    direct = audit.only()
    (runtime,) = audit_records(host, token.invocation)
    assert (runtime["invocationId"], direct["invocationId"]) == (
        token.invocation.invocation_id, InvocationContext().invocation_id
    )
    assert without(VARYING_AUDIT_FIELDS, runtime) == without(VARYING_AUDIT_FIELDS, direct)


# -- resuming the token's conversation -----------------------------------------------------------------


def test_resume_with_the_tokens_ticket_gets_a_new_token_for_the_same_conversation_and_user(
    token: Exchange, resumed: Exchange
) -> None:
    issued, answer = token.answer.json(), resumed.answer.json()
    assert resumed.answer.status == 200
    assert set(answer) == {"conversationId", "token", "expires_in", "userId", "domain", "conversationTicket", "userHandle"}
    assert (answer["conversationId"], answer["userId"]) == (issued["conversationId"], issued["userId"])
    assert answer["token"] != issued["token"]
    assert resumed.answer.header("Access-Control-Allow-Origin") == ALLOWED


def test_resume_reconnects_with_direct_lines_documented_call_and_the_secret(token: Exchange, resumed: Exchange) -> None:
    (upstream,) = resumed.upstream
    assert upstream.path == f"/v3/directline/conversations/{token.answer.json()['conversationId']}"
    assert upstream.headers["Authorization"] == f"Bearer {SECRET}"


def test_resume_leaves_one_audit_record_with_the_hosts_invocation_id(
    token: Exchange, resumed: Exchange, host: FunctionsHost
) -> None:
    issued = token.answer.json()
    (record,) = audit_records(host, resumed.invocation)
    assert (record["event"], record["outcome"], record["status"]) == ("directline.resume", "issued", 200)
    assert (record["userId"], record["conversationId"]) == (issued["userId"], issued["conversationId"])


# -- many invocations at once, as under load ------------------------------------------------------------


def test_invocations_sent_from_many_threads_each_get_their_own_answer_and_audit_record(host: FunctionsHost) -> None:
    """The harness routes each answer to the caller of its request id, whatever order the worker
    answers in (benchmarks/flex.py keeps up to 64 invocations in flight)."""
    with ThreadPoolExecutor(max_workers=8) as callers:
        answers = list(
            callers.map(lambda _: host.invoke_http("directline_token", "POST", TOKEN_HEADERS, TOKEN_BODY), range(16))
        )
    assert [answer.status for answer in answers] == [200] * 16
    conversations = [answer.json()["conversationId"] for answer in answers]
    assert len(set(conversations)) == 16
    records = [audit_records(host, answer.invocation) for answer in answers]
    assert [[record["conversationId"] for record in found] for found in records] == [[c] for c in conversations]


# -- the other HTTP functions -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["directline_token", "directline_refresh", "directline_resume", "speech_token"])
def test_preflight_answers_204_with_cors_headers_and_no_direct_line_call(
    host: FunctionsHost, directline: FakeDirectLine, name: str
) -> None:
    headers = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
    preflight = call(host, directline, name, "OPTIONS", headers)
    assert preflight.answer.status == 204
    assert preflight.answer.header("Access-Control-Allow-Origin") == ALLOWED
    assert preflight.upstream == []


def test_health_answers_ok_without_direct_line(host: FunctionsHost, directline: FakeDirectLine) -> None:
    health = call(host, directline, "health", "GET", {})
    assert (health.answer.status, health.answer.json()) == (200, {"status": "ok", "directLine": "available"})
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
    requirements = _requirement_lines("requirements-runtime.txt")
    unpinned = [line for line in requirements if not re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line)]
    assert unpinned == []
