"""Whatever a client sends, the service answers a documented status, never a crash, and leaves exactly
one audit record (hypothesis, through a service on the fake Direct Line)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ALLOWED, AuditLog, payload
from tokens.http import Request
from tokens.service import TokenService

HOSTILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DOCUMENTED = {
    (200, None), (400, "invalid_request"), (401, "unauthorized"), (401, "token_expired"),
    (403, "origin_not_allowed"), (413, "payload_too_large"), (415, "unsupported_media_type"),
    (502, "upstream_error"),
}  # fmt: skip

# What an HTTP/1.1 field value can carry (tab, visible ASCII, space, obs-text), as the app sees it:
# Latin-1 text, which is how waitress decodes header bytes.
header_text = st.text(
    st.sampled_from("\t") | st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    | st.characters(min_codepoint=0x80, max_codepoint=0xFF),
    max_size=60,
)
hostile_text = st.text(
    st.characters() | st.sampled_from("\x00\n\x1b\u202e\u200b\ufeff\ud800\udfff"), max_size=40
)
origins = st.sampled_from([ALLOWED, "https://a.contoso.com", "HTTPS://WWW.CONTOSO.COM"]) | header_text
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]) | header_text
authorizations = st.sampled_from(["", "Bearer ", "Bearer dl-token-1", "Basic x"]) | header_text.map(
    lambda text: "Bearer " + text
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["userName", "userHandle"]) | hostile_text, children, max_size=3),
    max_leaves=8,
)
bodies = (
    st.builds(lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"),
              json_values, st.booleans())
    | st.binary(max_size=200)
)  # fmt: skip


def _headers(origin: str | None, content_type: str, authorization: str) -> dict[str, str]:
    headers = {"Content-Type": content_type, "Authorization": authorization, "X-Forwarded-For": "203.0.113.7"}
    if origin is not None:
        headers["Origin"] = origin
    return headers


@pytest.mark.parametrize("route", ["issue_token", "refresh_token"])
@HOSTILE
@given(st.none() | origins, content_types, authorizations, bodies)
def test_any_post_gets_a_documented_answer_and_one_audit_record(
    service: TokenService,
    audit: AuditLog,
    route: str,
    origin: str | None,
    content_type: str,
    authorization: str,
    body: bytes,
) -> None:
    before = len(audit.records)
    handle = getattr(service, route)
    response = handle(Request.build("POST", _headers(origin, content_type, authorization), body))
    code = payload(response).get("error", {}).get("code")
    assert (response.status, code) in DOCUMENTED
    assert len(audit.records) == before + 1
    assert audit.records[-1]["status"] == response.status


@pytest.mark.parametrize("credential", ["t\u0100ken", "t\r\nken"], ids=["non-latin-1", "crlf"])
def test_refresh_with_a_credential_http_cannot_carry_is_401(service: TokenService, credential: str) -> None:
    response = service.refresh_token(Request.build("POST", {"Authorization": f"Bearer {credential}"}))
    assert response.status == 401
