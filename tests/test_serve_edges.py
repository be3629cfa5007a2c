"""`python -m tokens serve` at the edges of its process, over real HTTP: a stop signal while a request
waits on a slow Direct Line, and a log stream that fails (/dev/full) or whose reader stalls. Every
request that reached the app keeps exactly one audit record, and no token leaves without its record
having reached the stream."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ALLOWED, base_env
from tests.fakes import FakeDirectLine
from tests.served import serving

SLOW_DIRECT_LINE = 12.0  # seconds: longer than the 5 + 5 s that serve once waited before it let go
HEADERS = {"Origin": ALLOWED}


def _post(base_url: str, answers: list[Any]) -> None:
    try:
        answers.append(requests.post(f"{base_url}/api/directline/token", json={}, headers=HEADERS, timeout=60))
    except requests.RequestException as error:
        answers.append(error)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "workers"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["SIGTERM, one worker", "SIGINT, one worker", "SIGTERM, two workers"],
)
def test_a_request_waiting_on_a_slow_direct_line_when_serve_stops_keeps_its_answer_and_its_record(
    fake: FakeDirectLine, tmp_path: Path, stop: signal.Signals, workers: int
) -> None:
    env = base_env(fake.base_url, UPSTREAM_TIMEOUT="20")
    with serving(env, tmp_path / "serve.log", workers=workers) as app:
        fake.delay = SLOW_DIRECT_LINE
        answers: list[Any] = []
        caller = threading.Thread(target=_post, args=(app.base_url, answers))
        caller.start()
        deadline = time.monotonic() + 10
        while not fake.requests and time.monotonic() < deadline:  # the request is in flight
            time.sleep(0.05)
        app.process.send_signal(stop)
        time.sleep(1.0)
        with pytest.raises(requests.ConnectionError):  # stopped accepting at once
            requests.get(f"{app.base_url}/api/health", timeout=2)
        caller.join(60)
        assert app.process.wait(60) == 0
        records = app.audit_records()
    [answer] = answers
    assert isinstance(answer, requests.Response) and answer.status_code == 200, answer
    assert [(r["event"], r["outcome"]) for r in records] == [("directline.token", "issued")]
    assert records[0]["conversationId"] == answer.json()["conversationId"]


def test_serve_stops_at_once_when_nothing_is_in_flight(fake: FakeDirectLine, tmp_path: Path) -> None:
    with serving(base_env(fake.base_url, UPSTREAM_TIMEOUT="20"), tmp_path / "serve.log") as app:
        requests.post(f"{app.base_url}/api/directline/token", json={}, headers=HEADERS, timeout=10)
        started = time.monotonic()
        app.process.send_signal(signal.SIGTERM)
        assert app.process.wait(20) == 0
        assert time.monotonic() - started < 5
        assert len(app.audit_records()) == 1


# -- a log stream that fails -------------------------------------------------------------------------


def test_with_standard_error_on_dev_full_no_token_is_issued_and_serve_says_so(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    """Once: 5 tokens issued, 0 audit records, exit 0."""
    with (
        open(os.devnull if sys.platform == "win32" else "/dev/full", "w") as full,
        serving(base_env(fake.base_url), tmp_path / "serve.log", stderr=full, ready_statuses=(200, 503)) as app,
    ):
        try:
            answers = [requests.post(app.token_url, json={}, headers=HEADERS, timeout=30) for _ in range(5)]
            health = requests.get(f"{app.base_url}/api/health", timeout=10)
        finally:
            app.process.send_signal(signal.SIGTERM)
            status = app.process.wait(30)
    assert [answer.status_code for answer in answers] == [500] * 5
    assert not any("token" in answer.json() for answer in answers)
    assert (health.status_code, health.json()["auditLog"]) == (503, "not written")
    assert status == 1


def test_with_a_stalled_log_reader_every_token_issued_has_its_record_in_the_stream(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    """Once: 3,000 tokens issued, 193 records. The pipe holds 64 KiB; nobody reads it meanwhile."""
    reader, writer = os.pipe()
    issued: list[str] = []
    refused = 0
    with serving(base_env(fake.base_url), tmp_path / "serve.log", stderr=writer, ready_statuses=(200, 503)) as app:
        os.close(writer)  # serve has its own
        session = requests.Session()
        started = time.monotonic()
        while time.monotonic() - started < 20 and refused < 20:
            answer = session.post(app.token_url, json={}, headers=HEADERS, timeout=30)
            if answer.status_code == 200:
                issued.append(answer.json()["conversationId"])
            else:
                assert answer.status_code == 500 and "token" not in answer.json()
                refused += 1
        app.process.send_signal(signal.SIGTERM)
        chunks: list[bytes] = []
        drain = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(reader, 65536), b"")))
        drain.start()  # the reader comes back: what was written is read, what was held is flushed
        status = app.process.wait(60)
    drain.join(30)
    os.close(reader)
    stream = b"".join(chunks).decode(errors="replace")
    assert refused >= 20, "the stall never showed"
    assert issued, "nothing was issued before the pipe filled"
    missing = [conversation for conversation in issued if f'"conversationId":"{conversation}"' not in stream]
    assert missing == []
    assert status == 1


def test_a_405_for_a_page_path_says_which_methods_it_takes(fake: FakeDirectLine, tmp_path: Path) -> None:
    with serving(base_env(fake.base_url), tmp_path / "serve.log", demo=True) as app:
        answer = requests.post(f"{app.base_url}/", timeout=10)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, HEAD"

