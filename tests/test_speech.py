"""POST /api/speech/token: credentials for Web Chat's speech, against a fake Azure AI Speech token
service (key mode) and a fake App Service managed-identity endpoint (identity mode, the protocol
azure-identity speaks there: IDENTITY_ENDPOINT and IDENTITY_HEADER), both over real HTTP on loopback."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ALLOWED, AuditLog, ServiceFactory, payload, token_request
from tests.fakes import SPEECH_KEY, FakeClock, FakeSpeech
from tests.identity_endpoint import ManagedIdentityEndpoint, installed
from tokens.http import Response
from tokens.service import TokenService
from tokens.speech import REFRESH_BEFORE, Minted, SpeechTokens

RESOURCE_ID = (
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-bot/providers/"
    "Microsoft.CognitiveServices/accounts/speech-contoso"
)
CLIENT_ID = "5c3f2a1b-0000-4000-8000-00000000c1d5"


@pytest.fixture
def speech() -> Iterator[FakeSpeech]:
    fake = FakeSpeech()
    yield fake
    fake.close()


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[ManagedIdentityEndpoint]:
    with installed(monkeypatch, lifetimes=(7200.0,)) as endpoint:
        yield endpoint


def key_mode(make_service: ServiceFactory, speech: FakeSpeech, **overrides: str) -> TokenService:
    return make_service(SPEECH_REGION="westeurope", SPEECH_KEY=SPEECH_KEY, SPEECH_ENDPOINT=speech.endpoint, **overrides)


def identity_mode(make_service: ServiceFactory, **overrides: str) -> TokenService:
    return make_service(SPEECH_REGION="westeurope", SPEECH_RESOURCE_ID=RESOURCE_ID, AZURE_CLIENT_ID=CLIENT_ID, **overrides)


def ask(service: TokenService, **headers: str) -> Response:
    return service.speech_token(token_request({}, headers=headers))


def error_of(response: Response) -> tuple[int, str]:
    return response.status, payload(response)["error"]["code"]


# -- key mode --------------------------------------------------------------------------------------


def test_key_mode_exchanges_the_key_at_issue_token_and_answers_token_region_and_lifetime(
    make_service: ServiceFactory, speech: FakeSpeech, audit: AuditLog
) -> None:
    answer = payload(ask(key_mode(make_service, speech)))
    assert set(answer) == {"authorizationToken", "region", "expires_in"}
    assert answer["region"] == "westeurope"
    assert answer["authorizationToken"].count(".") == 2
    assert 590 <= answer["expires_in"] <= 600
    [call] = speech.requests
    assert (call.path, call.headers["Ocp-Apim-Subscription-Key"]) == ("/sts/v1.0/issueToken", SPEECH_KEY)
    record = audit.only()
    assert (record["event"], record["outcome"], record["status"]) == ("speech.token", "issued", 200)


def test_many_callers_share_one_token_until_a_minute_before_it_expires(
    make_service: ServiceFactory, speech: FakeSpeech
) -> None:
    service = key_mode(make_service, speech)
    tokens = {payload(ask(service))["authorizationToken"] for _ in range(20)}
    assert len(tokens) == 1
    assert len(speech.requests) == 1


def test_the_cached_token_is_refreshed_once_a_minute_before_its_end_and_expires_in_counts_down() -> None:
    clock = FakeClock(0.0)
    minted: list[int] = []

    def mint() -> Minted:
        minted.append(1)
        return Minted(f"token-{len(minted)}", clock() + 600)

    tokens = SpeechTokens("westeurope", mint, clock=clock)
    assert tokens.current() == ("token-1", 600)
    clock.advance(300)
    assert tokens.current() == ("token-1", 300)
    clock.advance(600 - 300 - REFRESH_BEFORE)
    assert tokens.current() == ("token-2", 600)
    assert len(minted) == 2


def test_one_caller_refreshes_while_the_others_keep_the_cached_token() -> None:
    clock = FakeClock(0.0)
    release, started = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_mint() -> Minted:
        calls.append(1)
        if len(calls) > 1:  # the refresh: hold it, while others ask
            started.set()
            release.wait(10)
        return Minted(f"token-{len(calls)}", clock() + 600)

    tokens = SpeechTokens("westeurope", slow_mint, clock=clock)
    tokens.current()
    clock.advance(550)  # inside the last minute: due for a refresh, still valid
    refresher = threading.Thread(target=tokens.current)
    refresher.start()
    started.wait(10)
    others = [tokens.current()[0] for _ in range(10)]  # none waits for the refresh
    release.set()
    refresher.join(10)
    assert others == ["token-1"] * 10
    assert len(calls) == 2
    assert tokens.current()[0] == "token-2"


def test_without_a_usable_token_concurrent_callers_wait_for_one_mint(
    make_service: ServiceFactory, speech: FakeSpeech
) -> None:
    service = key_mode(make_service, speech)
    speech.delay = 0.3
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(ask(service).status)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [200] * 8
    assert len(speech.requests) == 1


# -- identity mode ---------------------------------------------------------------------------------


def test_identity_mode_answers_the_entra_token_in_the_speech_sdks_form(
    make_service: ServiceFactory, identity: ManagedIdentityEndpoint, audit: AuditLog
) -> None:
    answer = payload(ask(identity_mode(make_service)))
    prefix, resource, token = answer["authorizationToken"].split("#")
    assert (prefix, resource, token) == ("aad", RESOURCE_ID, identity.issued[0])
    assert 7190 <= answer["expires_in"] <= 7200  # the Entra token's own remaining life
    [request] = identity.requests
    assert request["resource"] == "https://cognitiveservices.azure.com"
    assert request["client_id"] == CLIENT_ID
    assert audit.only()["outcome"] == "issued"


def test_identity_mode_asks_the_identity_once_for_many_callers(
    make_service: ServiceFactory, identity: ManagedIdentityEndpoint
) -> None:
    service = identity_mode(make_service)
    assert {payload(ask(service))["authorizationToken"] for _ in range(10)} == {f"aad#{RESOURCE_ID}#{identity.issued[0]}"}
    assert len(identity.requests) == 1


def test_a_refused_identity_is_502_and_the_log_says_what_to_check_without_the_endpoints_words(
    make_service: ServiceFactory, identity: ManagedIdentityEndpoint, audit: AuditLog
) -> None:
    identity.refuse = True
    response = ask(identity_mode(make_service))
    assert error_of(response) == (502, "upstream_error")
    assert "AZURE_CLIENT_ID" in audit.all_text and "SPEECH_RESOURCE_ID" in audit.all_text
    assert "secret-detail-of-the-endpoint" not in audit.all_text + response.body.decode()


def test_a_silent_identity_endpoint_ends_within_the_upstream_timeout(
    make_service: ServiceFactory, identity: ManagedIdentityEndpoint
) -> None:
    identity.hang = True
    response = ask(identity_mode(make_service, UPSTREAM_TIMEOUT="0.5"))
    assert response.status in (503, 504)


# -- refusals before any call, and failures mapped ---------------------------------------------------


def test_not_configured_is_404_speech_not_configured_and_audited(
    make_service: ServiceFactory, audit: AuditLog
) -> None:
    response = ask(make_service())
    assert error_of(response) == (404, "speech_not_configured")
    record = audit.only()
    assert (record["event"], record["outcome"], record["reason"]) == ("speech.token", "denied", "speech_not_configured")


def test_a_disallowed_origin_is_refused_before_the_speech_service_hears_of_it(
    make_service: ServiceFactory, speech: FakeSpeech
) -> None:
    service = key_mode(make_service, speech)
    response = service.speech_token(token_request({}, origin="https://evil.example"))
    assert error_of(response) == (403, "origin_not_allowed")
    assert speech.requests == []


def test_an_unknown_caller_is_refused_before_the_speech_service_hears_of_it(
    make_service: ServiceFactory, speech: FakeSpeech
) -> None:
    service = key_mode(make_service, speech)
    response = service.speech_token(token_request({"userHandle": "forged"}))
    assert error_of(response) == (401, "unauthorized")
    assert speech.requests == []


def test_speech_has_its_own_allowance_apart_from_new_conversations(
    make_service: ServiceFactory, speech: FakeSpeech
) -> None:
    service = key_mode(make_service, speech, RATE_LIMIT="2/minute")
    assert [ask(service).status for _ in range(3)] == [200, 200, 429]
    assert service.issue_token(token_request({})).status == 200


@pytest.mark.parametrize(
    ("script", "expected", "retry_after"),
    [
        (lambda fake: fake.then_status(401), (502, "upstream_error"), None),
        (lambda fake: fake.then_status(403), (502, "upstream_error"), None),
        (lambda fake: fake.then_status(429, Retry_After="9"), (503, "upstream_unavailable"), "9"),
        (lambda fake: fake.then_status(503), (503, "upstream_unavailable"), None),
        (lambda fake: fake.then_status(500), (502, "upstream_error"), None),
        (lambda fake: fake.then_body(b"<html>not a token</html>"), (502, "upstream_error"), None),
        (lambda fake: fake.then_hang(5), (504, "upstream_timeout"), None),
    ],
    ids=["401", "403", "429", "503", "500", "not a token", "silent"],
)
def test_speech_service_failures_are_mapped_like_direct_lines_never_with_its_words(
    make_service: ServiceFactory, speech: FakeSpeech, audit: AuditLog, script: Any, expected: tuple[int, str],
    retry_after: str | None,
) -> None:
    script(speech)
    response = ask(key_mode(make_service, speech, UPSTREAM_TIMEOUT="0.5"))
    assert error_of(response) == expected
    assert response.all_headers().get("Retry-After") == retry_after
    assert "detail-of-speech" not in response.body.decode() + audit.all_text
    assert audit.only()["reason"] == expected[1]


def test_an_unreachable_speech_service_is_503(make_service: ServiceFactory) -> None:
    from tests.fakes import refused_url

    endpoint = refused_url().removesuffix("/v3/directline")
    response = make_service(SPEECH_REGION="westeurope", SPEECH_KEY=SPEECH_KEY, SPEECH_ENDPOINT=endpoint).speech_token(
        token_request({})
    )
    assert error_of(response) == (503, "upstream_unavailable")


def test_a_failed_refresh_hands_out_the_current_token_while_it_lasts() -> None:
    from tokens.errors import UpstreamUnavailable

    clock = FakeClock(0.0)
    results: list[Minted | Exception] = [Minted("token-1", 600.0), UpstreamUnavailable()]

    def mint() -> Minted:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    tokens = SpeechTokens("westeurope", mint, clock=clock)
    tokens.current()
    clock.advance(570)
    assert tokens.current() == ("token-1", 30)


def test_neither_the_key_nor_the_entra_token_reaches_a_log(
    make_service: ServiceFactory, speech: FakeSpeech, identity: ManagedIdentityEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ask(key_mode(make_service, speech))
    ask(identity_mode(make_service))
    assert SPEECH_KEY not in caplog.text
    assert identity.issued and identity.issued[0] not in caplog.text


def test_the_preflight_of_the_speech_route_allows_the_page(make_service: ServiceFactory) -> None:
    response = make_service().preflight(token_request(method="OPTIONS"))
    assert response.status == 204
    assert response.all_headers()["Access-Control-Allow-Origin"] == ALLOWED


def test_the_token_routes_cold_start_does_not_import_azure_identity() -> None:
    """azure-identity costs about 220 ms to import: only a speech request in identity mode pays it."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = "import sys, tokens.service, function_app; print(sorted(m for m in sys.modules if m.startswith('azure.identity') or m.startswith('azure.core')))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
