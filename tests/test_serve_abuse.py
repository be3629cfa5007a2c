"""Availability under abuse and outages, over real HTTP against `python -m tokens serve`: a hanging
Direct Line, slow clients, and the memory the rate limiter keeps."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import ALLOWED, base_env, served
from tests.fakes import Behaviour, FakeDirectLine
from tests.served import ServedApp

TOKEN_PATH = "/api/directline/token"


# -- a hanging Direct Line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_while_direct_line_hangs_callers_get_a_fast_503_and_tokens_flow_again_once_it_is_back(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    fake.fail_where(lambda recorded: Behaviour("hang", seconds=30))
    with served(base_env(fake.base_url, UPSTREAM_TIMEOUT="1"), tmp_path) as app:

        def caller(_: int) -> list[tuple[int, float, str | None]]:
            answers = []
            for _ in range(8):
                started = time.monotonic()
                response = requests.post(app.base_url + TOKEN_PATH, json={}, headers={"Origin": ALLOWED}, timeout=10)
                answers.append((response.status_code, time.monotonic() - started, response.headers.get("Retry-After")))
            return answers

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = [answer for answers in pool.map(caller, range(8)) for answer in answers]
        timed_out = [a for a in answers if a[0] == 504]
        fast = [a for a in answers if a[0] == 503 and a[1] < 0.5 and a[2] is not None]
        # The first wave of eight waits out UPSTREAM_TIMEOUT; the breaker opens after five of them.
        assert len(timed_out) <= 8 + 4
        assert len(fast) >= len(answers) - len(timed_out) - 2
        assert len(fast) >= 0.8 * len(answers)
        assert "Direct Line circuit open" in app.log_text()

        fake.fail_where(lambda recorded: None)  # Direct Line is back
        recovered_after = _seconds_until_a_token(app, limit=70)
    assert recovered_after < 60


def _seconds_until_a_token(app: ServedApp, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if requests.post(app.base_url + TOKEN_PATH, json={}, timeout=10).status_code == 200:
            return time.monotonic() - started
        time.sleep(0.5)
    pytest.fail(f"no token within {limit} s of Direct Line coming back")


# -- slow clients -------------------------------------------------------------------------------------

TRICKLERS = 300


def _trickle_open(port: int, count: int) -> list[socket.socket]:
    """`count` connections from 127.0.0.1 that start a request and never finish it."""
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /api/directline/token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        opened.append(sock)
    return opened


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        received: bytes = sock.recv(1)
        return received == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.slow
def test_hundreds_of_trickling_connections_do_not_keep_another_client_out(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    """Slowloris from one address: its connections beyond the per-address cap are closed at once,
    the rest when their request is overdue, and meanwhile a client from another address gets its
    token."""
    args = ["--request-timeout", "3", "--per-address", "100"]
    with served(base_env(fake.base_url), tmp_path, args=args) as app:
        tricklers = _trickle_open(app.port, TRICKLERS)
        stop = threading.Event()

        def trickle() -> None:  # one more byte of the header, now and then: never idle, never done
            while not stop.wait(0.5):
                for sock in tricklers:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")

        trickling = threading.Thread(target=trickle, daemon=True)
        trickling.start()
        try:
            time.sleep(0.5)
            started = time.monotonic()
            client = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5, source_address=("127.0.0.2", 0))
            client.request("POST", TOKEN_PATH, body=b"{}", headers={"Content-Type": "application/json"})
            answer = client.getresponse()
            waited = time.monotonic() - started
            body = answer.read()
            client.close()
            assert answer.status == 200 and "token" in json.loads(body)
            assert waited < 2.0, f"the client waited {waited:.1f} s behind the slow connections"
            refused_at_once = sum(_closed_by_server(sock) for sock in tricklers)
            assert refused_at_once >= TRICKLERS - 100
            time.sleep(3 + 2)  # past the request deadline, and a turn of the server's loop
            assert all(_closed_by_server(sock) for sock in tricklers), "an overdue request was left open"
        finally:
            stop.set()
            trickling.join(5)
            for sock in tricklers:
                sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_request_deadline(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    with (
        served(base_env(fake.base_url), tmp_path, args=["--request-timeout", "1"]) as app,
        socket.create_connection(("127.0.0.1", app.port), timeout=5) as silent,
    ):
        time.sleep(2.5)
        assert _closed_by_server(silent)


def test_behind_a_proxy_connections_are_not_capped_per_address(fake: FakeDirectLine, tmp_path: Path) -> None:
    """With two trusted hops every connection comes from the proxy: a cap would throttle everyone."""
    env = base_env(fake.base_url, TRUSTED_PROXY_HOPS="2")
    with served(env, tmp_path, args=["--per-address", "5"]) as app:
        held = _trickle_open(app.port, 20)
        try:
            time.sleep(0.3)
            assert not any(_closed_by_server(sock) for sock in held)
        finally:
            for sock in held:
                sock.close()


# -- what the rate limiter keeps ----------------------------------------------------------------------

CALLERS = 20_000


def _from_distinct_callers(app: ServedApp, first: int, count: int) -> list[int]:
    """One token request from each of `count` callers, each from an IPv6 /64 of its own (the entry
    a trusted front end wrote into X-Forwarded-For), over eight kept-alive connections."""
    statuses: list[int] = []
    lock = threading.Lock()

    def send(start: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
        mine = []
        try:
            for n in range(first + start, first + count, 8):
                address = f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}::1"
                connection.request("POST", TOKEN_PATH, body=b"{}", headers={
                    "Content-Type": "application/json", "X-Forwarded-For": address,
                })
                response = connection.getresponse()
                response.read()
                mine.append(response.status)
        finally:
            connection.close()
        with lock:
            statuses.extend(mine)

    workers = [threading.Thread(target=send, args=(start,)) for start in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "global_limit", "status", "most_mib"),
    [("refused by the global limit", "1/hour", 429, 4), ("allowed", "1000000/hour", 200, 20)],
)
def test_the_rate_limiter_keeps_little_per_caller_and_nothing_for_globally_refused_ones(
    fake: FakeDirectLine, tmp_path: Path, kind: str, global_limit: str, status: int, most_mib: int
) -> None:
    """Resident memory of serve after 20,000 distinct callers: a caller the global limit refuses
    leaves no state at all, an allowed one two small counters per limit."""
    env = base_env(fake.base_url, TRUSTED_PROXY_HOPS="2", RATE_LIMIT="10/minute;300/day", GLOBAL_RATE_LIMIT=global_limit)
    with served(env, tmp_path) as app:
        _from_distinct_callers(app, 0, 1000)  # warm-up: pools, caches, the allocator's first arenas
        before = app.rss_kib()
        statuses = _from_distinct_callers(app, 1000, CALLERS)
        time.sleep(0.5)
        grown_mib = (app.rss_kib() - before) / 1024
    assert statuses.count(status) == CALLERS, kind
    assert grown_mib <= most_mib, f"{kind}: VmRSS grew {grown_mib:.1f} MiB for {CALLERS:,} callers"


def test_closed_connections_give_their_place_back(fake: FakeDirectLine, tmp_path: Path) -> None:
    with served(base_env(fake.base_url), tmp_path, args=["--per-address", "3"]) as app:
        statuses = [requests.post(app.base_url + TOKEN_PATH, json={}, timeout=5).status_code for _ in range(20)]
    assert statuses == [200] * 20


def test_when_every_thread_is_busy_the_log_says_so_once_a_minute_not_once_a_request(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    fake.fail_where(lambda recorded: Behaviour("hang", seconds=0.5))
    env = base_env(fake.base_url, UPSTREAM_TIMEOUT="5")
    with served(env, tmp_path, args=["--threads", "1"]) as app:

        def ask(_: int) -> int:
            return requests.post(app.base_url + TOKEN_PATH, json={}, timeout=20).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(ask, range(6)))
        time.sleep(0.5)
        log = app.log_text()
    assert log.count("All 1 threads are busy") == 1
    assert "Task queue depth" not in log
