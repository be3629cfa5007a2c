"""The resume contract over real HTTP: `python -m tokens serve` in front of the fake Direct Line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ALLOWED, base_env, served
from tests.fakes import FakeDirectLine
from tests.served import ServedApp


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeDirectLine]:
    fake = FakeDirectLine()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def app(upstream: FakeDirectLine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with served(base_env(upstream.base_url), tmp_path_factory.mktemp("resume")) as running:
        yield running


def post(app: ServedApp, route: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(
        f"{app.base_url}/api/directline/{route}", json=body, headers={"Origin": ALLOWED, **headers}, timeout=10
    )


def started(app: ServedApp) -> dict[str, Any]:
    answer: dict[str, Any] = post(app, "token", {}).json()
    return answer


def code(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_the_owner_resumes_and_one_audit_record_says_so(app: ServedApp) -> None:
    answer = started(app)
    response = post(app, "resume", {"userHandle": answer["userHandle"], "conversationTicket": answer["conversationTicket"]})
    assert response.status_code == 200
    assert response.json()["conversationId"] == answer["conversationId"]
    record = app.audit_records()[-1]
    assert (record["event"], record["outcome"], record["conversationId"]) == (
        "directline.resume", "issued", answer["conversationId"]
    )


def test_someone_elses_ticket_is_403_ticket_not_yours(app: ServedApp, upstream: FakeDirectLine) -> None:
    ann, bob = started(app), started(app)
    calls = len(upstream.requests)
    response = post(app, "resume", {"userHandle": bob["userHandle"], "conversationTicket": ann["conversationTicket"]})
    assert code(response) == (403, "ticket_not_yours")
    assert len(upstream.requests) == calls  # Direct Line never heard of it


def test_a_forged_ticket_is_401_invalid_ticket(app: ServedApp) -> None:
    answer = started(app)
    header, body, signature = answer["conversationTicket"].split(".")
    forged = f"{header}.{body}.{signature[::-1]}"
    response = post(app, "resume", {"userHandle": answer["userHandle"], "conversationTicket": forged})
    assert code(response) == (401, "invalid_ticket")


def test_a_conversation_direct_line_forgot_is_410_conversation_gone(app: ServedApp, upstream: FakeDirectLine) -> None:
    answer = started(app)
    upstream.conversations.discard(answer["conversationId"])
    response = post(app, "resume", {"userHandle": answer["userHandle"], "conversationTicket": answer["conversationTicket"]})
    assert code(response) == (410, "conversation_gone")


def test_an_expired_ticket_is_401_invalid_ticket(upstream: FakeDirectLine, tmp_path: Path) -> None:
    """A server whose tickets last 300 s, given one whose time is up (signed here with its key)."""
    from tokens.settings import Settings
    from tokens.tickets import Tickets

    env = base_env(upstream.base_url, CONVERSATION_TTL="300")
    with served(env, tmp_path) as running:
        answer = started(running)
        key = Settings.from_env(env).user_handle_key
        old = Tickets(key, 300, clock=lambda: 1_000_000.0).issue(answer["conversationId"], answer["userId"])
        assert old is not None
        response = post(running, "resume", {"userHandle": answer["userHandle"], "conversationTicket": old})
    assert code(response) == (401, "invalid_ticket")


def test_resumes_count_against_the_token_allowance(upstream: FakeDirectLine, tmp_path: Path) -> None:
    with served(base_env(upstream.base_url, RATE_LIMIT="2/minute"), tmp_path) as running:
        answer = started(running)
        body = {"userHandle": answer["userHandle"], "conversationTicket": answer["conversationTicket"]}
        statuses = [post(running, "resume", body).status_code for _ in range(2)]
    assert statuses == [200, 429]
