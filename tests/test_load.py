"""Load with faults: token requests at concurrency 32 through `python -m tokens serve`, against a fake
Direct Line that faults a known share of its calls. Nothing is lost, nothing leaks, nothing undocumented.

Every request's fate is planned from its number (the fake reads it back from the user name), so each
answer is checked exactly, the audit trail must hold one record per request with the same outcome,
and the fake must have seen exactly the calls the plan implies (one retry where the SPEC retries).

Size: LOAD_REQUESTS requests, 1,000 by default (CI). The full run is one command:

    LOAD_REQUESTS=20000 python -m pytest tests/test_load.py
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.conftest import ALLOWED, base_env, served
from tests.contract import assert_conforms, load_schema
from tests.fakes import SECRET, Behaviour, FakeDirectLine, Recorded
from tests.served import ServedApp

pytestmark = pytest.mark.slow

REQUESTS = int(os.environ.get("LOAD_REQUESTS", "1000"))
CONCURRENCY = 32
TOKEN_PATH = "/api/directline/token"
UPSTREAM_TIMEOUT = 4  # a hung call costs this long; far above a loaded machine's slowest normal call
HANG_SECONDS = 30.0  # ended early when the fake closes
LOAD_ENV = {
    "RATE_LIMIT": "1000000/minute",
    "GLOBAL_RATE_LIMIT": "1000000/minute",
    "UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT),
}
# What the token route may answer, per the SPEC's error table.
DOCUMENTED = {
    (200, None), (400, "invalid_request"), (401, "unauthorized"), (403, "origin_not_allowed"),
    (413, "payload_too_large"), (415, "unsupported_media_type"), (429, "rate_limited"),
    (500, "misconfigured"), (502, "upstream_error"), (503, "upstream_unavailable"), (504, "upstream_timeout"),
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What request `n` sends, what the fake does with its calls, and what must come back."""

    kind: str
    status: int
    code: str | None = None
    upstream_calls: int = 1
    retry_after: str | None = None
    origin: str = ALLOWED
    body: dict[str, Any] | list[Any] | None = None
    faults: tuple[Behaviour, ...] = ()  # the fake's answers to this request's calls, in order


def plan(n: int) -> Plan:
    """Request n's fate: the first rule that matches wins, so the shares noted are approximate, but
    every request's fate is known."""
    name = f"load-{n}"
    ok = {"userName": name}
    if n % 1000 == 500:  # 0.1%: Direct Line hangs -> 504 once UPSTREAM_TIMEOUT passes, no retry
        return Plan("hang", 504, "upstream_timeout", body=ok, faults=(Behaviour("hang", seconds=HANG_SECONDS),))
    if n % 50 == 7:  # 2%: a page that is not allowed -> 403 before anything else
        return Plan("bad origin", 403, "origin_not_allowed", 0, origin="https://evil.example", body=ok)
    if n % 50 == 19:  # 2%: not a JSON object -> 400
        return Plan("bad body", 400, "invalid_request", 0, body=[name])
    if n % 50 == 31:  # 2%: a name that would forge a log line -> 400
        return Plan("bad name", 400, "invalid_request", 0, body={"userName": f"{name}\nforged"})
    if n % 10 == 3:  # 10%: 500 once -> retried -> 200
        return Plan("500 once", 200, None, 2, body=ok, faults=(Behaviour("status", 500, body=b"{}"),))
    # 2%: 503 twice -> 503 with Direct Line's Retry-After. Rare enough that five such failures in a
    # row, which would open the circuit breaker (tokens/breaker.py), do not happen by chance here.
    if n % 50 == 45:
        busy = Behaviour("status", 503, {"Retry-After": "7"}, b"{}")
        return Plan("503 twice", 503, "upstream_unavailable", 2, "7", body=ok, faults=(busy, busy))
    if n % 20 == 9:  # 5%: connection reset once -> retried -> 200
        return Plan("reset once", 200, None, 2, body=ok, faults=(Behaviour("reset"),))
    if n % 20 == 1:  # 5%: the secret is refused -> 502, no retry
        return Plan("403 upstream", 502, "upstream_error", body=ok, faults=(Behaviour("status", 403, body=b"{}"),))
    if n % 40 == 13:  # 2.5%: throttled -> 503 with Retry-After, no retry
        throttled = Behaviour("status", 429, {"Retry-After": "3"}, b"{}")
        return Plan("429", 503, "upstream_unavailable", 1, "3", body=ok, faults=(throttled,))
    if n % 40 == 33:  # 2.5%: an answer that is not JSON -> 502, no retry
        return Plan("garbage", 502, "upstream_error", body=ok, faults=(Behaviour("raw", 200, body=b"<html>"),))
    return Plan("ok", 200, body=ok)


class PlannedFaults:
    """The fake's rule: the k-th call for request n meets plan(n).faults[k], or a normal answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[int] = Counter()

    def __call__(self, recorded: Recorded) -> Behaviour | None:
        match = re.fullmatch(r"load-(\d+)", str(recorded.body["user"].get("name", "")))
        if match is None:
            return None
        n = int(match.group(1))
        with self._lock:
            attempt = self._calls[n]
            self._calls[n] += 1
        faults = plan(n).faults
        return faults[attempt] if attempt < len(faults) else None

    def calls(self) -> Counter[int]:
        with self._lock:
            return Counter(self._calls)


@dataclass
class Answer:
    n: int
    status: int
    code: str | None
    retry_after: str | None
    cache_control: str | None
    user_id: str | None
    has_token: bool
    leaks_secret: bool
    raw: requests.Response = field(repr=False)


def _answer(n: int, response: requests.Response) -> Answer:
    data = response.json()
    error = data.get("error") if isinstance(data, dict) else None
    return Answer(
        n=n,
        status=response.status_code,
        code=error["code"] if isinstance(error, dict) else None,
        retry_after=response.headers.get("Retry-After"),
        cache_control=response.headers.get("Cache-Control"),
        user_id=data.get("userId"),
        has_token=bool(data.get("token")),
        leaks_secret=SECRET in response.text or SECRET in str(response.headers),
        raw=response,
    )


def run_load(base_url: str, count: int) -> list[Answer]:
    """`count` requests from CONCURRENCY threads, each with its own keep-alive session."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        http: requests.Session | None = getattr(local, "session", None)
        if http is None:
            http = requests.Session()
            local.session = http
            with lock:
                sessions.append(http)
        return http

    def send(n: int) -> Answer:
        planned = plan(n)
        response = session().post(
            f"{base_url}{TOKEN_PATH}",
            data=json.dumps(planned.body).encode(),
            headers={"Origin": planned.origin, "Content-Type": "application/json"},
            timeout=60,
        )
        return _answer(n, response)

    try:
        with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="load") as pool:
            return list(pool.map(send, range(count)))
    finally:
        for http in sessions:
            http.close()


@dataclass
class LoadRun:
    app: ServedApp
    upstream: FakeDirectLine
    faults: PlannedFaults
    answers: list[Answer]


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadRun]:
    upstream = FakeDirectLine()
    faults = PlannedFaults()
    upstream.fail_where(faults)
    try:
        env = base_env(upstream.base_url, **LOAD_ENV)
        with served(env, tmp_path_factory.mktemp("load"), name="load") as app:
            yield LoadRun(app, upstream, faults, run_load(app.base_url, REQUESTS))
    finally:
        upstream.close()


def test_every_answer_is_documented_and_the_planned_one(load: LoadRun) -> None:
    assert len(load.answers) == REQUESTS
    for answer in load.answers:
        planned = plan(answer.n)
        assert (answer.status, answer.code) in DOCUMENTED, answer
        assert (answer.status, answer.code, answer.retry_after) == (
            planned.status, planned.code, planned.retry_after
        ), (planned.kind, answer)
        assert answer.cache_control == "no-store"
        assert answer.has_token == (answer.status == 200)


def test_no_answer_is_a_crash(load: LoadRun) -> None:
    assert not [answer for answer in load.answers if answer.status == 500]


def test_each_kind_of_answer_matches_the_openapi_description(load: LoadRun) -> None:
    schema = load_schema()
    seen: set[tuple[int, str | None]] = set()
    for answer in load.answers:
        if (answer.status, answer.code) not in seen:
            seen.add((answer.status, answer.code))
            assert_conforms(schema, answer.raw, method="POST", path=TOKEN_PATH)
    assert seen == {(plan(n).status, plan(n).code) for n in range(REQUESTS)}


def test_one_audit_record_per_request_with_the_same_outcome(load: LoadRun) -> None:
    records = load.app.audit_records()
    assert len(records) == REQUESTS
    assert {record["event"] for record in records} == {"directline.token"}
    assert Counter((r["status"], r["reason"]) for r in records) == Counter(
        (a.status, a.code) for a in load.answers
    )
    outcomes = Counter(record["outcome"] for record in records)
    assert outcomes == Counter(
        "issued" if a.status < 400 else "denied" if a.status < 500 else "failed" for a in load.answers
    )
    issued_ids = {r["userId"] for r in records if r["outcome"] == "issued"}
    assert issued_ids == {a.user_id for a in load.answers if a.status == 200}
    assert len(issued_ids) == outcomes["issued"]  # a fresh user id for each anonymous caller


def test_the_fake_saw_exactly_the_planned_calls(load: LoadRun) -> None:
    """Retried once where the SPEC retries (500, 503, reset), never otherwise, and never for a request
    refused before Direct Line."""
    planned = {n: plan(n).upstream_calls for n in range(REQUESTS)}
    calls = load.faults.calls()
    assert {n: calls[n] for n in range(REQUESTS)} == planned
    assert len(load.upstream.requests) == sum(planned.values())


def test_the_secret_is_in_no_answer_and_no_log_line(load: LoadRun) -> None:
    assert not [answer for answer in load.answers if answer.leaks_secret]
    log = load.app.log_text()
    assert SECRET not in log
    assert "dl-token-" not in log  # no Direct Line token
    assert "eyJ" not in log  # no user handle (a JWT)
    assert "Traceback" not in log
    assert " ERROR " not in log
