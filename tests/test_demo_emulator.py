"""The demo's Direct Line emulator over real HTTP on loopback: the contract Web Chat and the service
rely on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import requests

from demo.emulator import PATH_PREFIX, DirectLineEmulator, Fault, start_emulator
from tests.fakes import FakeClock

SECRET = "emulator-test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-entirely-0123456789abc"
TTL = 1800
TIMEOUT = 5


class Client:
    """A thin Direct Line client over one requests session, so tests read like the protocol."""

    def __init__(self, base_url: str, session: requests.Session) -> None:
        self.base_url = base_url
        self.session = session

    def call(
        self,
        method: str,
        path: str,
        credential: str | None = None,
        json_body: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        return self.session.request(
            method,
            self.base_url + path,
            headers=headers,
            json=json_body,
            timeout=TIMEOUT,
            **kwargs,
        )

    def generate(self, user_id: str = "dl_ann", name: str | None = "Ann") -> dict[str, Any]:
        user: dict[str, str] = {"id": user_id}
        if name is not None:
            user["name"] = name
        response = self.call("POST", "/tokens/generate", SECRET, {"user": user})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def activities(self, conversation: dict[str, Any], watermark: str = "") -> requests.Response:
        path = f"/conversations/{conversation['conversationId']}/activities?watermark={watermark}"
        return self.call("GET", path, conversation["token"])

    def post(self, conversation: dict[str, Any], activity: dict[str, Any]) -> requests.Response:
        path = f"/conversations/{conversation['conversationId']}/activities"
        return self.call("POST", path, conversation["token"], activity)


StartedEmulator = Callable[..., tuple[DirectLineEmulator, Client]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def start(clock: FakeClock) -> Iterator[StartedEmulator]:
    """Starts emulators (with the test clock) on loopback ports and stops them all afterwards."""
    stops: list[Callable[[], None]] = []
    session = requests.Session()

    def _start(**options: Any) -> tuple[DirectLineEmulator, Client]:
        emulator = DirectLineEmulator(SECRET, token_ttl=TTL, clock=clock, **options)
        running = start_emulator(emulator)
        stops.append(running.stop)
        return emulator, Client(running.endpoint, session)

    yield _start
    session.close()
    for stop in stops:
        stop()


@pytest.fixture
def emulator_and_client(start: StartedEmulator) -> tuple[DirectLineEmulator, Client]:
    return start()


@pytest.fixture
def emulator(emulator_and_client: tuple[DirectLineEmulator, Client]) -> DirectLineEmulator:
    return emulator_and_client[0]


@pytest.fixture
def client(emulator_and_client: tuple[DirectLineEmulator, Client]) -> Client:
    return emulator_and_client[1]


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def assert_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


# ---- the server helper ---------------------------------------------------------------------------


def test_the_endpoint_is_a_loopback_direct_line_base_url(client: Client) -> None:
    assert client.base_url.startswith("http://127.0.0.1:")
    assert client.base_url.endswith(PATH_PREFIX)


def test_stop_closes_the_port() -> None:
    running = start_emulator(DirectLineEmulator(SECRET))
    assert requests.post(running.endpoint + "/tokens/generate", timeout=2).status_code == 403
    running.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(running.endpoint + "/tokens/generate", timeout=2)


# ---- tokens/generate -----------------------------------------------------------------------------


def test_generate_with_the_secret_returns_a_token_bound_to_a_new_conversation(
    client: Client, clock: FakeClock
) -> None:
    body = client.generate("dl_ann", "Ann")
    assert set(body) == {"conversationId", "token", "expires_in"}
    assert body["expires_in"] == TTL
    claims = claims_of(body["token"])
    assert claims["conv"] == body["conversationId"]
    assert claims["user"] == "dl_ann"
    assert claims["iat"] == int(clock.now)
    assert claims["exp"] == int(clock.now) + TTL


def test_generate_records_user_name_and_trusted_origins(emulator: DirectLineEmulator, client: Client) -> None:
    payload = {"user": {"id": "dl_bob", "name": "Bob"}, "trustedOrigins": ["https://a.example"]}
    response = client.call("POST", "/tokens/generate", SECRET, payload)
    info = emulator.conversation(response.json()["conversationId"])
    assert info is not None
    assert (info.user_id, info.user_name) == ("dl_bob", "Bob")
    assert info.trusted_origins == ("https://a.example",)


def test_generate_with_a_wrong_secret_is_403(client: Client) -> None:
    response = client.call("POST", "/tokens/generate", OTHER_SECRET, {"user": {"id": "dl_x"}})
    assert_error(response, 403)


def test_generate_without_authorization_is_403(client: Client) -> None:
    assert_error(client.call("POST", "/tokens/generate", None, {}), 403)


def test_generate_with_a_token_instead_of_the_secret_is_403(client: Client) -> None:
    token = client.generate()["token"]
    assert_error(client.call("POST", "/tokens/generate", token, {}), 403)


def test_generate_with_a_body_that_is_not_an_object_is_400(client: Client) -> None:
    assert_error(client.call("POST", "/tokens/generate", SECRET, ["user"]), 400)


def test_generate_with_a_user_id_of_the_wrong_type_is_400(client: Client) -> None:
    assert_error(client.call("POST", "/tokens/generate", SECRET, {"user": {"id": 7}}), 400)


def test_generate_with_a_body_over_the_limit_is_413(client: Client) -> None:
    big = {"user": {"id": "dl_x", "name": "x" * 70_000}}
    assert_error(client.call("POST", "/tokens/generate", SECRET, big), 413)


# ---- tokens/refresh ------------------------------------------------------------------------------


def test_refresh_returns_a_new_token_for_the_same_conversation_and_user(
    client: Client, clock: FakeClock
) -> None:
    first = client.generate("dl_ann")
    clock.advance(600)
    response = client.call("POST", "/tokens/refresh", first["token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"conversationId", "token", "expires_in"}
    assert body["conversationId"] == first["conversationId"]
    assert body["token"] != first["token"]
    claims = claims_of(body["token"])
    assert (claims["conv"], claims["user"]) == (first["conversationId"], "dl_ann")
    assert claims["exp"] == int(clock.now) + TTL


def test_refresh_of_an_expired_token_is_403(client: Client, clock: FakeClock) -> None:
    token = client.generate()["token"]
    clock.advance(TTL)
    assert_error(client.call("POST", "/tokens/refresh", token), 403)


def test_refresh_with_a_malformed_token_is_403_and_does_not_echo_it(client: Client) -> None:
    response = client.call("POST", "/tokens/refresh", "not.a-token.at-all")
    assert_error(response, 403)
    assert "not.a-token" not in response.text


def test_refresh_with_a_token_signed_for_another_secret_is_403(
    start: StartedEmulator, client: Client
) -> None:
    other = start_emulator(DirectLineEmulator(OTHER_SECRET))
    base_url, stop = other.endpoint, other.stop
    try:
        foreign = requests.post(
            base_url + "/tokens/generate",
            headers={"Authorization": f"Bearer {OTHER_SECRET}"},
            json={},
            timeout=TIMEOUT,
        ).json()["token"]
    finally:
        stop()
    assert_error(client.call("POST", "/tokens/refresh", foreign), 403)


def test_refresh_with_the_secret_is_403(client: Client) -> None:
    assert_error(client.call("POST", "/tokens/refresh", SECRET), 403)


# ---- conversations -------------------------------------------------------------------------------


def test_start_conversation_with_a_token_answers_201_for_its_conversation(client: Client) -> None:
    generated = client.generate()
    response = client.call("POST", "/conversations", generated["token"], {"user": {"id": "evil"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["conversationId"] == generated["conversationId"]
    assert body["expires_in"] == TTL
    assert claims_of(body["token"])["user"] == "dl_ann"


def test_start_conversation_with_the_secret_creates_a_new_one(
    emulator: DirectLineEmulator, client: Client
) -> None:
    response = client.call("POST", "/conversations", SECRET, {"user": {"id": "dl_sam"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert claims_of(body["token"])["conv"] == body["conversationId"]
    info = emulator.conversation(body["conversationId"])
    assert info is not None and info.user_id == "dl_sam"


def test_reconnect_returns_a_fresh_token_for_the_conversation(client: Client, clock: FakeClock) -> None:
    generated = client.generate()
    clock.advance(60)
    path = f"/conversations/{generated['conversationId']}?watermark=0"
    response = client.call("GET", path, generated["token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversationId"] == generated["conversationId"]
    assert claims_of(body["token"])["exp"] == int(clock.now) + TTL


def test_reconnect_with_the_token_of_another_conversation_is_403(client: Client) -> None:
    mine, theirs = client.generate("dl_a"), client.generate("dl_b")
    path = f"/conversations/{theirs['conversationId']}?watermark="
    assert_error(client.call("GET", path, mine["token"]), 403)


def test_reconnect_to_an_unknown_conversation_is_404(client: Client) -> None:
    assert_error(client.call("GET", "/conversations/nosuchconversation?watermark=", SECRET), 404)


# ---- activities ----------------------------------------------------------------------------------


def test_a_new_conversation_starts_with_a_welcome_from_the_bot(client: Client) -> None:
    conversation = client.generate()
    body = client.activities(conversation).json()
    (welcome,) = body["activities"]
    assert welcome["type"] == "message"
    assert welcome["from"]["id"] == "bot"
    assert welcome["id"] == f"{conversation['conversationId']}|0000000"
    assert body["watermark"] == "0"


def test_a_posted_message_is_stored_with_server_fields_and_echoed_by_the_bot(
    client: Client,
) -> None:
    conversation = client.generate("dl_ann", "Ann")
    activity = {
        "type": "message",
        "text": "hello",
        "from": {"id": "dl_ann", "name": "Ann", "role": "user"},
        "channelData": {"clientActivityID": "abc123"},
        "id": "client-chosen",
        "timestamp": "1999-01-01T00:00:00Z",
    }
    response = client.post(conversation, activity)
    assert response.status_code == 200, response.text
    posted_id = response.json()["id"]
    assert posted_id == f"{conversation['conversationId']}|0000001"

    body = client.activities(conversation, watermark="0").json()
    mine, reply = body["activities"]
    assert mine["id"] == posted_id
    assert mine["channelData"] == {"clientActivityID": "abc123"}  # Web Chat matches the echo on it
    assert mine["timestamp"] != "1999-01-01T00:00:00Z"
    assert mine["conversation"] == {"id": conversation["conversationId"]}
    assert reply["type"] == "message"
    assert reply["from"] == {"id": "bot", "name": "Echo bot", "role": "bot"}
    assert reply["text"] == "You said: hello"
    assert reply["replyToId"] == posted_id
    assert body["watermark"] == "2"


def test_the_sender_is_the_user_in_the_token_never_the_one_claimed(client: Client) -> None:
    conversation = client.generate("dl_ann", "Ann")
    forged = {"type": "message", "text": "hi", "from": {"id": "dl_admin", "name": "Admin"}}
    client.post(conversation, forged)
    mine = client.activities(conversation, watermark="0").json()["activities"][0]
    assert mine["from"]["id"] == "dl_ann"
    assert mine["from"]["name"] == "Ann"


def test_polling_with_a_watermark_returns_only_newer_activities(client: Client) -> None:
    conversation = client.generate()
    client.post(conversation, {"type": "message", "text": "one"})
    first = client.activities(conversation).json()
    assert [a.get("text") for a in first["activities"]][1:] == ["one", "You said: one"]
    client.post(conversation, {"type": "message", "text": "two"})
    second = client.activities(conversation, watermark=first["watermark"]).json()
    assert [a["text"] for a in second["activities"]] == ["two", "You said: two"]


def test_an_empty_poll_keeps_the_watermark(client: Client) -> None:
    conversation = client.generate()
    body = client.activities(conversation, watermark="0").json()
    assert body == {"activities": [], "watermark": "0"}


def test_an_invalid_watermark_is_400(client: Client) -> None:
    assert_error(client.activities(client.generate(), watermark="abc"), 400)


def test_a_typing_activity_is_stored_without_an_echo(client: Client) -> None:
    conversation = client.generate()
    client.post(conversation, {"type": "typing"})
    activities = client.activities(conversation, watermark="0").json()["activities"]
    assert [a["type"] for a in activities] == ["typing"]


def test_an_activity_without_a_type_is_400(client: Client) -> None:
    assert_error(client.post(client.generate(), {"text": "no type"}), 400)


def test_a_token_of_one_conversation_cannot_read_another(client: Client) -> None:
    mine, theirs = client.generate("dl_a"), client.generate("dl_b")
    forged = {"conversationId": theirs["conversationId"], "token": mine["token"]}
    assert_error(client.activities(forged), 403)


def test_a_token_of_one_conversation_cannot_post_to_another(client: Client) -> None:
    mine, theirs = client.generate("dl_a"), client.generate("dl_b")
    forged = {"conversationId": theirs["conversationId"], "token": mine["token"]}
    assert_error(client.post(forged, {"type": "message", "text": "hi"}), 403)


def test_the_secret_can_read_any_conversation(client: Client) -> None:
    conversation = client.generate()
    response = client.activities({**conversation, "token": SECRET})
    assert response.status_code == 200


def test_a_token_works_until_its_expiry_and_is_403_from_then_on(client: Client, clock: FakeClock) -> None:
    conversation = client.generate()
    clock.advance(TTL - 1)
    assert client.activities(conversation).status_code == 200
    clock.advance(1)
    error = assert_error(client.activities(conversation), 403)
    assert error["code"] == "TokenExpired"


def test_activities_without_authorization_are_403(client: Client) -> None:
    conversation = client.generate()
    path = f"/conversations/{conversation['conversationId']}/activities"
    assert_error(client.call("GET", path), 403)


# ---- bounds --------------------------------------------------------------------------------------


def test_the_oldest_conversation_is_evicted_beyond_the_cap(start: StartedEmulator) -> None:
    emulator, client = start(max_conversations=2)
    oldest, _, newest = client.generate(), client.generate(), client.generate()
    assert emulator.conversation_count() == 2
    assert emulator.conversation(oldest["conversationId"]) is None
    assert_error(client.activities(oldest), 404)
    assert client.activities(newest).status_code == 200


def test_activities_are_capped_per_conversation_and_watermarks_still_work(
    start: StartedEmulator,
) -> None:
    emulator, client = start(max_activities=3)
    conversation = client.generate()
    for text in ("a", "b"):
        client.post(conversation, {"type": "message", "text": text})
    body = client.activities(conversation).json()
    assert [a["text"] for a in body["activities"]] == ["You said: a", "b", "You said: b"]
    assert body["watermark"] == "4"
    info = emulator.conversation(conversation["conversationId"])
    assert info is not None and info.activity_count == 3


def test_concurrent_posts_get_distinct_ids(start: StartedEmulator) -> None:
    _, client = start(max_activities=1000)
    conversation = client.generate()
    ids: list[str] = []
    lock = threading.Lock()

    def post_many() -> None:
        with requests.Session() as session:
            own = Client(client.base_url, session)
            for n in range(10):
                response = own.post(conversation, {"type": "message", "text": str(n)})
                with lock:
                    ids.append(response.json()["id"])

    threads = [threading.Thread(target=post_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 60
    activities = client.activities(conversation).json()["activities"]
    assert len(activities) == 1 + 2 * 60


# ---- HTTP behaviour ------------------------------------------------------------------------------


def test_a_preflight_allows_the_headers_web_chat_sends(client: Client) -> None:
    response = client.call(
        "OPTIONS",
        "/conversations/abc/activities",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-ms-bot-agent",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for header in ("authorization", "content-type", "x-ms-bot-agent"):
        assert header in allowed


def test_every_answer_carries_the_open_cors_header(client: Client) -> None:
    response = client.call("POST", "/tokens/generate", "wrong", {})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Content-Type"].startswith("application/json")


def test_an_unknown_route_is_404_json(client: Client) -> None:
    assert_error(client.call("GET", "/nope", SECRET), 404)


def test_a_path_outside_the_prefix_is_404(client: Client) -> None:
    outside = client.base_url.removesuffix(PATH_PREFIX) + "/tokens/generate"
    response = client.session.post(outside, timeout=TIMEOUT)
    assert_error(response, 404)


def test_a_wrong_method_is_405_with_allow(client: Client) -> None:
    response = client.call("GET", "/tokens/generate", SECRET)
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_an_injected_fault_answers_once_and_is_counted(emulator: DirectLineEmulator, client: Client) -> None:
    emulator.fail_next("generate", Fault(status=503, retry_after="7"))
    failed = client.call("POST", "/tokens/generate", SECRET, {})
    assert_error(failed, 503)
    assert failed.headers["Retry-After"] == "7"
    assert client.call("POST", "/tokens/generate", SECRET, {}).status_code == 200
    assert emulator.call_count("generate") == 2


# ---- the variants users meet ---------------------------------------------------------------------


def test_the_sites_second_key_mints_and_reconnects_like_the_first(start: StartedEmulator) -> None:
    _, client = start(secondary=OTHER_SECRET)
    minted = client.call("POST", "/tokens/generate", OTHER_SECRET, {"user": {"id": "dl_ann"}})
    assert minted.status_code == 200
    conversation = minted.json()["conversationId"]
    assert client.call("GET", f"/conversations/{conversation}", OTHER_SECRET).status_code == 200


def test_without_a_second_key_another_secret_is_refused(client: Client) -> None:
    assert_error(client.call("POST", "/tokens/generate", OTHER_SECRET, {}), 403)


def test_under_enhanced_authentication_the_secret_may_not_reconnect(start: StartedEmulator) -> None:
    """MicrosoftDocs/bot-docs #412: `400 {"error": {"code": "MissingProperty", "message": "Missing user ID"}}`."""
    _, client = start(enhanced_auth=True)
    conversation = client.generate()
    refused = client.call("GET", f"/conversations/{conversation['conversationId']}", SECRET)
    assert assert_error(refused, 400) == {"code": "MissingProperty", "message": "Missing user ID"}


def test_under_enhanced_authentication_the_conversations_own_token_still_reconnects(start: StartedEmulator) -> None:
    _, client = start(enhanced_auth=True)
    conversation = client.generate()
    path = f"/conversations/{conversation['conversationId']}"
    assert client.call("GET", path, conversation["token"]).status_code == 200


def test_a_regional_bot_asked_through_another_host_is_403_region_not_allowed(start: StartedEmulator) -> None:
    """CopilotStudioSamples #328, BotFramework-DirectLineJS #434."""
    _, client = start(wrong_region=True)
    error = assert_error(client.call("POST", "/tokens/generate", SECRET, {}), 403)
    assert error["code"] == "RegionNotAllowed"
    assert "belongs to europe" in error["message"]


def test_copilot_studios_tokens_live_an_hour(clock: FakeClock) -> None:
    running = start_emulator(DirectLineEmulator(SECRET, token_ttl=3600, clock=clock))
    try:
        answer = requests.post(
            running.endpoint + "/tokens/generate", headers={"Authorization": f"Bearer {SECRET}"}, timeout=TIMEOUT
        ).json()
    finally:
        running.stop()
    assert answer["expires_in"] == 3600
    assert claims_of(answer["token"])["exp"] - claims_of(answer["token"])["iat"] == 3600
