"""The hostile corpora under tests/data/: each case is answered with its SPEC status, through the
service and, for the cases marked `served` (and every origin), through `python -m tokens serve`.

- bad_bodies.json: deep nesting, duplicate keys, huge numbers, invalid UTF-8, BOM, NaN, lone surrogates...
- bad_names.json: newlines, ANSI escapes, bidi marks, zero-width characters, 10,000 characters...
- bad_origins.txt / good_origins.txt: look-alikes refused; mixed case and default ports allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import ALLOWED, DATA, AuditLog, base_env, corpus_lines, payload, served, token_request
from tests.fakes import SECRET, FakeDirectLine
from tests.served import ServedApp
from tokens.service import TokenService

TOKEN_ROUTE = "/api/directline/token"


def _cases(name: str, *, served_only: bool = False) -> list[Any]:
    document = json.loads((DATA / name).read_text(encoding="utf-8"))
    return [
        pytest.param(case, id=case["name"])
        for case in document["cases"]
        if case.get("served") or not served_only
    ]


def _text(value: str | list[Any]) -> str:
    """A corpus string, or its segments joined: strings, and {"repeat": text, "times": n}."""
    if isinstance(value, str):
        return value
    return "".join(part if isinstance(part, str) else part["repeat"] * part["times"] for part in value)


def _bytes(segments: list[Any]) -> bytes:
    """A body from its segments: strings as UTF-8, {"hex": ".."} raw, {"repeat", "times"} repeated."""
    chunks = []
    for part in segments:
        if isinstance(part, dict) and "hex" in part:
            chunks.append(bytes.fromhex(part["hex"]))
        else:
            chunks.append(_text([part]).encode("utf-8"))
    return b"".join(chunks)


def _name_body(case: dict[str, Any]) -> bytes:
    return json.dumps({"userName": _text(case["userName"])}).encode()  # ASCII, \\u escapes


def _assert_answer(status: int, body: dict[str, Any], case: dict[str, Any]) -> None:
    assert status == case["status"], body
    if case["code"] is None:
        assert "error" not in body
    else:
        assert body["error"]["code"] == case["code"]


def _assert_audited(record: dict[str, Any], case: dict[str, Any]) -> None:
    expected_outcome = "issued" if case["status"] < 400 else "denied"
    assert (record["status"], record["reason"], record["outcome"]) == (
        case["status"], case["code"], expected_outcome
    )


# -- through the service ------------------------------------------------------------------------


def test_the_corpora_cover_what_issue_7_asks_for() -> None:
    bodies = {case.values[0]["name"] for case in _cases("bad_bodies.json")}
    names = {case.values[0]["name"] for case in _cases("bad_names.json")}
    assert {"duplicate userName", "NaN literal", "byte order mark", "10**5000 as a 5001-digit number"} <= bodies
    assert {"newline", "ANSI colour", "right-to-left override", "10,000 characters", "lone high surrogate"} <= names


@pytest.mark.parametrize("case", _cases("bad_bodies.json"))
def test_hostile_body_gets_its_spec_status(
    case: dict[str, Any], service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    response = service.issue_token(token_request(_bytes(case["body"]), content_type=case["contentType"]))
    _assert_answer(response.status, payload(response), case)
    assert len(fake.requests) == (1 if case["status"] == 200 else 0)
    _assert_audited(audit.only(), case)


@pytest.mark.parametrize("case", _cases("bad_names.json"))
def test_hostile_user_name_gets_its_spec_status(
    case: dict[str, Any], service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    response = service.issue_token(token_request(_name_body(case)))
    _assert_answer(response.status, payload(response), case)
    if case["status"] == 200:
        assert fake.requests[0].body["user"].get("name") == case["sent"]
    else:
        assert fake.requests == []
    _assert_audited(audit.only(), case)


@pytest.mark.parametrize("origin", corpus_lines("good_origins.txt"))
def test_allowed_origin_in_any_case_is_served_and_echoed(
    origin: str, service: TokenService, fake: FakeDirectLine
) -> None:
    response = service.issue_token(token_request(origin=origin))
    assert response.status == 200
    assert response.all_headers()["Access-Control-Allow-Origin"] == origin
    assert fake.requests[0].body["trustedOrigins"] == [origin]


# -- through `python -m tokens serve` -----------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeDirectLine]:
    server = FakeDirectLine()
    yield server
    server.close()


@pytest.fixture(scope="module")
def app(upstream: FakeDirectLine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with served(base_env(upstream.base_url), tmp_path_factory.mktemp("corpora"), name="corpora") as running:
        yield running


def _post(app: ServedApp, body: bytes, content_type: str | None, origin: str | bytes = ALLOWED) -> requests.Response:
    headers: dict[str, str | bytes] = {"Origin": origin}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(f"{app.base_url}{TOKEN_ROUTE}", data=body, headers=headers, timeout=10)


def _assert_served(response: requests.Response, app: ServedApp, case: dict[str, Any]) -> None:
    _assert_answer(response.status_code, response.json(), case)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    _assert_audited(app.audit_records()[-1], case)


@pytest.mark.parametrize("case", _cases("bad_bodies.json", served_only=True))
def test_hostile_body_gets_its_spec_status_through_the_server(case: dict[str, Any], app: ServedApp) -> None:
    _assert_served(_post(app, _bytes(case["body"]), case["contentType"]), app, case)


@pytest.mark.parametrize("case", _cases("bad_names.json", served_only=True))
def test_hostile_user_name_gets_its_spec_status_through_the_server(
    case: dict[str, Any], app: ServedApp, upstream: FakeDirectLine
) -> None:
    before = len(upstream.requests)
    _assert_served(_post(app, _name_body(case), "application/json"), app, case)
    if case["status"] == 200:
        assert upstream.requests[-1].body["user"].get("name") == case["sent"]
    else:
        assert len(upstream.requests) == before


@pytest.mark.parametrize("origin", [line for line in corpus_lines("bad_origins.txt") if line == line.strip()])
def test_bad_origin_is_403_through_the_server(origin: str, app: ServedApp, upstream: FakeDirectLine) -> None:
    """Sent as its UTF-8 bytes, as a client that ignores the header rules would."""
    before = len(upstream.requests)
    response = _post(app, b"", None, origin.encode("utf-8"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert len(upstream.requests) == before


@pytest.mark.parametrize("origin", corpus_lines("good_origins.txt"))
def test_allowed_origin_in_any_case_is_served_through_the_server(origin: str, app: ServedApp) -> None:
    response = _post(app, b"", None, origin)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin


def test_no_corpus_case_put_the_secret_or_a_token_in_the_server_log(app: ServedApp) -> None:
    """Runs after the served cases above."""
    log = app.log_text()
    assert SECRET not in log
    assert "dl-token-" not in log
    assert " ERROR " not in log
