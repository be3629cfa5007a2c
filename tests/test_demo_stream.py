"""The emulator's WebSocket stream (demo/stream.py) through the demo's one port (demo/front.py), with a
real WebSocket client: what Web Chat's default transport meets, as Direct Line documents it (see the
notes in demo/emulator.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from demo.emulator import DirectLineEmulator, RunningEmulator, start_emulator
from demo.front import Front
from demo.stream import serve_stream
from tests.fakes import FakeClock

SECRET = "stream-test-secret-0123456789abcdef"
KEEPALIVE = 0.3
TIMEOUT = 5


@dataclass
class Port:
    """An emulator behind the demo's front: `base` is the Direct Line URL a browser uses."""

    emulator: DirectLineEmulator
    base: str
    clock: FakeClock

    def call(self, method: str, path: str, credential: str, body: Any = None) -> dict[str, Any]:
        response = requests.request(
            method, self.base + path, headers={"Authorization": f"Bearer {credential}"}, json=body, timeout=TIMEOUT
        )
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    def start(self) -> dict[str, Any]:
        token = self.call("POST", "/tokens/generate", SECRET, {"user": {"id": "dl_ann"}})["token"]
        return self.call("POST", "/conversations", token)

    def say(self, conversation: dict[str, Any], text: str) -> None:
        path = f"/conversations/{conversation['conversationId']}/activities"
        self.call("POST", path, conversation["token"], {"type": "message", "text": text})

    def reconnect(self, conversation: dict[str, Any], watermark: str = "") -> dict[str, Any]:
        path = f"/conversations/{conversation['conversationId']}?watermark={watermark}"
        return self.call("GET", path, conversation["token"])


OpenPort = Callable[..., Port]


@pytest.fixture
def open_port() -> Iterator[OpenPort]:
    """`open_port(**emulator options)`: an emulator behind its own demo front, stopped afterwards."""
    stops: list[Callable[[], None]] = []

    def open_(**options: Any) -> Port:
        clock = FakeClock(time.time())
        emulator = DirectLineEmulator(SECRET, clock=clock, **{"max_conversations": 5, **options})
        running: RunningEmulator = start_emulator(emulator)
        listener = socket.create_server(("127.0.0.1", 0))
        host, number = running.server.server_address[:2]

        def on_stream(connection: socket.socket, head: bytes) -> None:
            serve_stream(connection, head, emulator, keepalive=KEEPALIVE)

        front = Front([listener], (str(host), int(number)), on_stream)
        front.start()
        stops.extend([front.stop, running.stop])
        return Port(emulator, f"http://127.0.0.1:{listener.getsockname()[1]}/v3/directline", clock)

    yield open_
    for stop in stops:
        stop()


@pytest.fixture
def port(open_port: OpenPort) -> Port:
    return open_port()


def next_set(stream: ClientConnection) -> dict[str, Any]:
    """The next ActivitySet, past any keep-alive."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        message = stream.recv(timeout=TIMEOUT)
        if message:
            activity_set: dict[str, Any] = json.loads(message)
            return activity_set
    raise AssertionError("no ActivitySet arrived")


def texts(activity_set: dict[str, Any]) -> list[str]:
    return [activity.get("text", "") for activity in activity_set["activities"]]


def closed_with(stream: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            stream.recv(timeout=TIMEOUT)
    received = closed.value.rcvd
    return (received.code, received.reason) if received else (None, None)


# -- the stream URL ------------------------------------------------------------------------------


def test_starting_a_conversation_returns_a_stream_url_on_the_same_port(port: Port) -> None:
    conversation = port.start()
    host = port.base.removeprefix("http://").removesuffix("/v3/directline")
    assert conversation["streamUrl"].startswith(f"ws://{host}/v3/directline/conversations/{conversation['conversationId']}/stream?")
    assert "watermark=-&t=" in conversation["streamUrl"]


def test_a_reconnect_returns_a_stream_url_that_replays_from_its_watermark(port: Port) -> None:
    assert "watermark=4&t=" in port.reconnect(port.start(), "4")["streamUrl"]


# -- what the stream sends ---------------------------------------------------------------------------


def test_the_first_stream_replays_what_came_before_it_opened_with_its_watermark(port: Port) -> None:
    conversation = port.start()
    with connect(conversation["streamUrl"], open_timeout=TIMEOUT) as stream:
        welcome = next_set(stream)
    assert welcome["watermark"] == "0"
    assert texts(welcome)[0].startswith("Hello! I am the echo bot")


def test_each_batch_comes_as_one_activity_set_the_users_own_activity_included(port: Port) -> None:
    conversation = port.start()
    with connect(conversation["streamUrl"], open_timeout=TIMEOUT) as stream:
        next_set(stream)
        port.say(conversation, "hello")
        batch = next_set(stream)
    assert texts(batch) == ["hello", "You said: hello"]
    assert batch["watermark"] == "2"
    assert [activity["from"]["role"] for activity in batch["activities"]] == ["user", "bot"]


def test_empty_keep_alive_messages_come_while_nothing_happens(port: Port) -> None:
    conversation = port.start()
    with connect(conversation["streamUrl"], open_timeout=TIMEOUT) as stream:
        next_set(stream)
        assert [stream.recv(timeout=TIMEOUT) for _ in range(2)] == ["", ""]


def test_the_clients_own_messages_are_ignored_and_pings_answered(port: Port) -> None:
    conversation = port.start()
    with connect(conversation["streamUrl"], open_timeout=TIMEOUT) as stream:
        next_set(stream)
        stream.send("")  # as Web Chat does every 20 s
        stream.send('{"type": "message", "text": "not through here"}')
        stream.ping().wait(TIMEOUT)
        port.say(conversation, "after")
        assert texts(next_set(stream)) == ["after", "You said: after"]


def test_a_reconnect_with_a_watermark_replays_only_what_came_after_it(port: Port) -> None:
    conversation = port.start()
    port.say(conversation, "one")  # sequence 1 and 2
    port.say(conversation, "two")  # sequence 3 and 4
    with connect(port.reconnect(conversation, "2")["streamUrl"], open_timeout=TIMEOUT) as stream:
        assert texts(next_set(stream)) == ["two", "You said: two"]


def test_a_reconnect_without_a_watermark_replays_the_whole_conversation(port: Port) -> None:
    """As Direct Line has done since 2021 (BotFramework-Services #289 and #319)."""
    conversation = port.start()
    port.say(conversation, "one")
    with connect(port.reconnect(conversation)["streamUrl"], open_timeout=TIMEOUT) as stream:
        assert len(next_set(stream)["activities"]) == 3


# -- when a stream ends or is refused ----------------------------------------------------------------


def test_a_second_stream_of_the_conversation_closes_the_first_with_collision(port: Port) -> None:
    conversation = port.start()
    with connect(conversation["streamUrl"], open_timeout=TIMEOUT) as first:
        next_set(first)
        with connect(port.reconnect(conversation)["streamUrl"], open_timeout=TIMEOUT) as second:
            next_set(second)
            assert closed_with(first) == (1000, "collision")


def test_a_stream_ends_when_a_token_minted_with_its_url_would_expire(open_port: OpenPort) -> None:
    port = open_port(token_ttl=1)
    with connect(port.start()["streamUrl"], open_timeout=TIMEOUT) as stream:
        next_set(stream)
        code, reason = closed_with(stream)
    assert code == 1000
    assert reason is not None and "reconnect" in reason


def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=TIMEOUT)
    return refused.value.response.status_code


def test_a_stream_url_is_refused_after_its_60_seconds_to_connect(port: Port) -> None:
    url = port.start()["streamUrl"]
    port.clock.advance(61)
    assert refused_status(url) == 403


def test_a_forged_or_borrowed_stream_credential_is_refused(port: Port) -> None:
    mine, theirs = port.start(), port.start()
    forged = mine["streamUrl"].rsplit("t=", 1)[0] + "t=eyJhbGciOiJIUzI1NiJ9.e30.forged"
    borrowed = mine["streamUrl"].split("?")[0] + "?" + theirs["streamUrl"].split("?")[1]
    assert refused_status(forged) == 403
    assert refused_status(borrowed) == 403


def test_a_stream_of_a_conversation_that_is_gone_closes(port: Port) -> None:
    conversation = port.start()
    with connect(conversation["streamUrl"], open_timeout=TIMEOUT) as stream:
        next_set(stream)
        for _ in range(5):  # the emulator keeps five conversations here: the oldest goes
            port.start()
        assert closed_with(stream) == (1000, "The conversation has ended.")


# -- the one port: everything else is relayed ------------------------------------------------------


def test_plain_http_on_the_demos_port_is_relayed_to_serve(port: Port) -> None:
    conversation = port.start()
    answer = requests.get(
        f"{port.base}/conversations/{conversation['conversationId']}/activities",
        headers={"Authorization": f"Bearer {conversation['token']}"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200
    assert answer.json()["watermark"] == "0"


def test_a_slow_request_head_is_dropped_after_its_deadline(port: Port, monkeypatch: pytest.MonkeyPatch) -> None:
    import demo.front

    monkeypatch.setattr(demo.front, "HEAD_SECONDS", 0.3)
    host, number = port.base.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(number)), timeout=TIMEOUT) as slow:
        slow.sendall(b"GET /v3/directline/conv")
        assert slow.recv(100) == b""  # closed, no answer

