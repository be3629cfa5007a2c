"""POST /api/directline/resume: a page resumes its conversation after the token expired, with the
conversationTicket of an earlier answer, as the ticket's own user only. In process, against the fake
Direct Line over real HTTP on loopback (it answers the documented reconnect for the conversations it
opened)."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from tests.conftest import ALLOWED, AuditLog, ServiceFactory, assert_denied, payload, token_request
from tests.fakes import SECRET, FakeClock, FakeDirectLine
from tokens.http import Response
from tokens.service import TokenService
from tokens.tickets import Tickets


def resume(service: TokenService, body: dict[str, Any], **headers: str) -> Response:
    return service.resume(token_request(body, headers=headers))


def started(service: TokenService) -> dict[str, Any]:
    """A new conversation, as the page starts one: its answer, ticket and handle included."""
    answer = payload(service.issue_token(token_request({})))
    assert isinstance(answer["conversationTicket"], str)
    return answer


def resume_body(answer: dict[str, Any]) -> dict[str, str]:
    return {"userHandle": answer["userHandle"], "conversationTicket": answer["conversationTicket"]}


# -- resumed ----------------------------------------------------------------------------------------


def test_the_token_answer_carries_a_ticket_for_its_conversation(service: TokenService) -> None:
    answer = started(service)
    ticket = service.tickets.read(answer["conversationTicket"])
    assert (ticket.conversation_id, ticket.user_id) == (answer["conversationId"], answer["userId"])


def test_the_ticket_owner_resumes_the_same_conversation_with_a_fresh_token(
    service: TokenService, fake: FakeDirectLine
) -> None:
    answer = started(service)
    response = resume(service, resume_body(answer))
    assert response.status == 200
    resumed = payload(response)
    assert resumed["conversationId"] == answer["conversationId"]
    assert resumed["userId"] == answer["userId"]
    assert resumed["token"] != answer["token"]
    assert resumed["domain"] == service.client.endpoint
    assert set(resumed) == {"conversationId", "token", "expires_in", "userId", "domain", "conversationTicket", "userHandle"}
    renewed = service.tickets.read(resumed["conversationTicket"])  # its time starts again
    assert (renewed.conversation_id, renewed.user_id) == (answer["conversationId"], answer["userId"])


def test_the_reconnect_is_direct_lines_documented_one_with_the_secret(
    service: TokenService, fake: FakeDirectLine
) -> None:
    answer = started(service)
    resume(service, resume_body(answer))
    reconnect = fake.requests[-1]
    assert reconnect.path == f"/v3/directline/conversations/{answer['conversationId']}"
    assert reconnect.headers["Authorization"] == f"Bearer {SECRET}"


def test_direct_lines_stream_url_is_not_passed_on(service: TokenService) -> None:
    assert "streamUrl" not in payload(resume(service, resume_body(started(service))))


def test_a_resume_writes_one_audit_record(service: TokenService, audit: AuditLog) -> None:
    answer = started(service)
    resume(service, resume_body(answer))
    record = audit.records[-1]
    assert (record["event"], record["outcome"], record["status"]) == ("directline.resume", "issued", 200)
    assert (record["userId"], record["conversationId"]) == (answer["userId"], answer["conversationId"])
    assert answer["conversationTicket"] not in audit.all_text
    assert len(audit.records) == 2


def test_an_allowed_origin_gets_the_cors_headers(service: TokenService) -> None:
    headers = resume(service, resume_body(started(service))).all_headers()
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert headers["Vary"] == "Origin"


def test_a_signed_in_user_resumes_their_own_conversation(make_service: ServiceFactory) -> None:
    service = make_service(AUTH_MODE="easyauth")
    ann = {"X-MS-CLIENT-PRINCIPAL-ID": "ann"}
    answer = payload(service.issue_token(token_request({}, headers=ann)))
    assert "userHandle" not in answer
    response = resume(service, {"conversationTicket": answer["conversationTicket"]}, **ann)
    assert payload(response)["conversationId"] == answer["conversationId"]


# -- refused ----------------------------------------------------------------------------------------


def test_another_users_ticket_is_403_ticket_not_yours_before_direct_line_hears_of_it(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    ann, bob = started(service), started(service)
    fake.requests.clear()
    audit_before = len(audit.records)
    response = resume(service, {"userHandle": bob["userHandle"], "conversationTicket": ann["conversationTicket"]})
    assert response.status == 403
    assert payload(response)["error"]["code"] == "ticket_not_yours"
    assert fake.requests == []
    record = audit.records[audit_before]
    assert (record["outcome"], record["reason"], record["userId"]) == ("denied", "ticket_not_yours", bob["userId"])


def test_a_ticket_without_its_users_handle_is_not_yours(service: TokenService) -> None:
    """In anonymous mode a caller without a handle is a new user, and so never the ticket's."""
    answer = started(service)
    response = resume(service, {"conversationTicket": answer["conversationTicket"]})
    assert payload(response)["error"]["code"] == "ticket_not_yours"


def test_another_signed_in_user_cannot_use_a_stolen_ticket(make_service: ServiceFactory) -> None:
    service = make_service(AUTH_MODE="easyauth")
    answer = payload(service.issue_token(token_request({}, headers={"X-MS-CLIENT-PRINCIPAL-ID": "ann"})))
    response = resume(service, {"conversationTicket": answer["conversationTicket"]}, **{"X-MS-CLIENT-PRINCIPAL-ID": "bob"})
    assert payload(response)["error"]["code"] == "ticket_not_yours"


@pytest.mark.parametrize(
    "ticket",
    ["", "not-a-ticket", "a.b.c", "x" * 3000],
    ids=["empty", "garbage", "three-parts", "huge"],
)
def test_a_forged_or_malformed_ticket_is_401_invalid_ticket(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog, ticket: str
) -> None:
    handle = started(service)["userHandle"]
    fake.requests.clear()
    audit_before = len(audit.records)
    response = resume(service, {"userHandle": handle, "conversationTicket": ticket})
    assert (response.status, payload(response)["error"]["code"]) == (401, "invalid_ticket")
    assert fake.requests == []
    assert audit.records[audit_before]["reason"] == "invalid_ticket"


def test_a_ticket_with_a_changed_conversation_under_its_old_signature_is_invalid(service: TokenService) -> None:
    answer = started(service)
    header, body, signature = answer["conversationTicket"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["cid"] = "conv-999"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = resume(service, {"userHandle": answer["userHandle"], "conversationTicket": f"{header}.{forged_body}.{signature}"})
    assert payload(response)["error"]["code"] == "invalid_ticket"


def test_an_expired_ticket_is_401_invalid_ticket(service: TokenService) -> None:
    clock = FakeClock(1_800_000_000)
    answer = started(service)
    service.tickets = Tickets(service.settings.user_handle_key, 3600, clock=clock)
    ticket = service.tickets.issue(answer["conversationId"], answer["userId"])
    assert ticket is not None
    clock.advance(3600)
    response = resume(service, {"userHandle": answer["userHandle"], "conversationTicket": ticket})
    assert payload(response)["error"]["code"] == "invalid_ticket"
    assert "expired" in payload(response)["error"]["message"]


def test_a_user_handle_is_never_accepted_as_a_ticket_nor_a_ticket_as_a_handle(service: TokenService) -> None:
    answer = started(service)
    as_ticket = resume(service, {"userHandle": answer["userHandle"], "conversationTicket": answer["userHandle"]})
    assert payload(as_ticket)["error"]["code"] == "invalid_ticket"
    as_handle = service.issue_token(token_request({"userHandle": answer["conversationTicket"]}))
    assert payload(as_handle)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "message"),
    [({}, "conversationTicket is required"), ({"conversationTicket": 7}, "conversationTicket must be a string")],
)
def test_a_missing_or_mistyped_ticket_is_400(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog, body: dict[str, Any], message: str
) -> None:
    response = resume(service, body)
    record = assert_denied(response, 400, "invalid_request", fake, audit)
    assert message in payload(response)["error"]["message"]
    assert record["event"] == "directline.resume"


def test_a_conversation_direct_line_no_longer_knows_is_410_conversation_gone(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service()
    answer = started(service)
    fake.conversations.clear()  # Direct Line forgot it (ended, or expired there)
    response = resume(service, resume_body(answer))
    assert (response.status, payload(response)["error"]["code"]) == (410, "conversation_gone")


def test_direct_line_refusing_the_secret_on_reconnect_is_502(service: TokenService, fake: FakeDirectLine) -> None:
    answer = started(service)
    fake.then_status(403)
    assert payload(resume(service, resume_body(answer)))["error"]["code"] == "upstream_error"


# -- Enhanced authentication: the secret may not reconnect (MicrosoftDocs/bot-docs #412) -------------


def enhanced_auth_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "DIRECT_LINE_ENHANCED_AUTH" in r.getMessage()]


def test_a_reconnect_refused_with_400_is_409_resume_unavailable_not_an_upstream_error(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    answer = started(service)
    fake.enhanced_auth = True
    response = resume(service, resume_body(answer))
    assert (response.status, payload(response)["error"]["code"]) == (409, "resume_unavailable")
    assert "new conversation for the same user" in payload(response)["error"]["message"]
    record = audit.records[-1]
    assert (record["outcome"], record["reason"], record["userId"]) == ("denied", "resume_unavailable", answer["userId"])


def test_the_operator_is_told_to_set_enhanced_auth_once_a_minute_not_once_a_request(
    service: TokenService, fake: FakeDirectLine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = started(service)
    fake.enhanced_auth = True
    for _ in range(3):
        resume(service, resume_body(answer))
    [line] = enhanced_auth_lines(caplog)
    assert line.levelno == logging.ERROR
    assert "Missing user ID" not in caplog.text  # Direct Line's own words stay out


def test_with_enhanced_auth_set_the_answer_has_no_ticket_and_resume_is_409_at_once(
    make_service: ServiceFactory, fake: FakeDirectLine, audit: AuditLog
) -> None:
    service = make_service(DIRECT_LINE_ENHANCED_AUTH="true")
    answer = payload(service.issue_token(token_request({})))
    assert "conversationTicket" not in answer
    fake.requests.clear()
    response = resume(service, {"userHandle": answer["userHandle"], "conversationTicket": "from-before"})
    assert (response.status, payload(response)["error"]["code"]) == (409, "resume_unavailable")
    assert fake.requests == []
    assert audit.records[-1]["userId"] == answer["userId"]


def test_with_enhanced_auth_set_an_unknown_caller_is_still_401_first(
    make_service: ServiceFactory, fake: FakeDirectLine
) -> None:
    service = make_service(DIRECT_LINE_ENHANCED_AUTH="true")
    response = resume(service, {"userHandle": "forged", "conversationTicket": "from-before"})
    assert (response.status, payload(response)["error"]["code"]) == (401, "unauthorized")


def test_with_resuming_turned_off_no_ticket_is_issued_and_none_is_accepted(make_service: ServiceFactory) -> None:
    on = make_service()
    answer = started(on)
    off = make_service(CONVERSATION_TTL="0")
    assert "conversationTicket" not in payload(off.issue_token(token_request({})))
    response = resume(off, resume_body(answer))
    assert payload(response)["error"]["code"] == "invalid_ticket"
    assert "turned off" in payload(response)["error"]["message"]


def test_a_disallowed_origin_is_403_and_reaches_nothing(
    service: TokenService, fake: FakeDirectLine, audit: AuditLog
) -> None:
    answer = started(service)
    fake.requests.clear()
    audit_before = len(audit.records)
    response = service.resume(token_request(resume_body(answer), origin="https://evil.example"))
    assert payload(response)["error"]["code"] == "origin_not_allowed"
    assert fake.requests == []
    assert audit.records[audit_before]["reason"] == "origin_not_allowed"


def test_the_preflight_of_the_resume_route_allows_the_page(service: TokenService) -> None:
    response = service.preflight(token_request(method="OPTIONS"))
    assert response.status == 204
    assert response.all_headers()["Access-Control-Allow-Methods"] == "POST, OPTIONS"


# -- allowances ------------------------------------------------------------------------------------


def test_a_resume_counts_against_the_callers_token_allowance(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    answer = started(service)
    assert resume(service, resume_body(answer)).status == 200
    refused = resume(service, resume_body(answer))
    assert (refused.status, payload(refused)["error"]["code"]) == (429, "rate_limited")


def test_refreshes_never_eat_the_allowance_for_page_loads(make_service: ServiceFactory) -> None:
    service = make_service(RATE_LIMIT="2/minute")
    answer = started(service)
    bearer = {"Authorization": f"Bearer {answer['token']}"}
    refreshes = [service.refresh_token(token_request(None, headers=bearer)).status for _ in range(2)]
    assert refreshes == [200, 200]
    assert service.issue_token(token_request({})).status == 200


# -- refused origins are visible -------------------------------------------------------------------


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tokens.origins"]


def test_a_refused_preflight_and_a_refused_post_each_log_one_line_naming_the_origin(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    service = make_service()
    service.preflight(token_request(method="OPTIONS", origin="https://evil.example"))
    service.issue_token(token_request({}, origin="https://other.example\r\nINFO forged"))
    lines = refusal_lines(caplog)
    assert len(lines) == 2
    assert '"https://evil.example" on a preflight' in lines[0]
    assert '"https://other.exampleINFO forged" on a POST' in lines[1]  # control characters removed


def test_a_flood_of_refused_origins_writes_at_most_ten_lines_a_minute(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    service = make_service()
    for n in range(200):
        service.preflight(token_request(method="OPTIONS", origin=f"https://evil{n}.example"))
    for _ in range(50):
        service.preflight(token_request(method="OPTIONS", origin="https://evil0.example"))
    assert len(refusal_lines(caplog)) == 10
