"""The keep-warm ping: one GET, logged, never raising."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import LoopbackServer, QuietHandler, refused_url
from tokens.warmup import ping


@pytest.fixture
def health_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = LoopbackServer(Handler)
    yield f"http://127.0.0.1:{server.port}/api/health", seen
    server.close()


def test_ping_gets_the_url_and_logs_status(health_server: tuple[str, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    url, seen = health_server
    result = ping(url)
    assert result.status == 200
    assert seen == ["/api/health"]
    assert "answered 200" in caplog.text


def test_ping_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    result = ping(refused_url() + "/health", timeout=1)
    assert result.status is None
    assert result.error == "ConnectionError"
    assert "Warm-up ping failed" in caplog.text


def test_nothing_to_ping_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert ping(None).error == "no url"
    assert "nothing to ping" in caplog.text


def test_past_due_tick_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    ping(None, past_due=True)
    assert any(r.levelname == "WARNING" and "past due" in r.getMessage() for r in caplog.records)
