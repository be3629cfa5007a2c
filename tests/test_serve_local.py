"""`serve` on a developer's machine: the settings of local.settings.json, the demo behind a
forwarded port (`--public-url`), and what it says when it cannot start."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ALLOWED, ROOT, served
from tests.fakes import SECRET, FakeDirectLine
from tests.served import ServedApp, child_environment, stop_process

PUBLIC = "https://octo-space-7071.app.github.dev"


@pytest.fixture(scope="module")
def public_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    # Written as a person might paste it: upper case, a trailing slash; browsers send it lower case.
    public_url = PUBLIC.replace("octo-space", "Octo-Space").replace("https", "HTTPS") + "/"
    with served({}, tmp_path_factory.mktemp("public"), demo=True, args=["--public-url", public_url]) as app:
        yield app


def _token(base_url: str, origin: str) -> requests.Response:
    return requests.post(f"{base_url}/api/directline/token", json={}, headers={"Origin": origin}, timeout=10)


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """serve that is expected to stop by itself: it could not start."""
    return subprocess.run(
        [sys.executable, "-m", "tokens", "serve", *args], cwd=tmp_path,
        env=child_environment(env or {"DIRECT_LINE_SECRET": SECRET}),
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_serve_takes_a_secret_only_in_local_settings_json(fake_upstream: FakeDirectLine, tmp_path: Path) -> None:
    values = {"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": fake_upstream.base_url, "ALLOWED_ORIGINS": ALLOWED}
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    with served({}, tmp_path, cwd=tmp_path) as app:
        response = _token(app.base_url, ALLOWED)
    assert response.status_code == 200
    assert response.json()["domain"] == fake_upstream.base_url


def test_serve_warns_at_start_that_no_browser_can_get_a_token_without_origins(
    fake_upstream: FakeDirectLine, tmp_path: Path
) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": fake_upstream.base_url}
    with served(env, tmp_path) as app:
        log = app.log_text()
    assert "WARNING" in log
    assert "ALLOWED_ORIGINS: is empty, so every browser page is refused" in log


def test_the_public_url_is_an_allowed_origin_of_the_demo(public_demo: ServedApp) -> None:
    assert _token(public_demo.base_url, PUBLIC).status_code == 200


def test_other_origins_stay_refused_by_the_demo(public_demo: ServedApp) -> None:
    response = _token(public_demo.base_url, "https://other-7071.app.github.dev")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"


def test_the_demos_tokens_name_the_public_url_as_their_direct_line(public_demo: ServedApp) -> None:
    assert _token(public_demo.base_url, PUBLIC).json()["domain"] == f"{PUBLIC}/v3/directline"


def test_the_emulators_browser_routes_answer_on_the_services_port(public_demo: ServedApp) -> None:
    answer = _token(public_demo.base_url, PUBLIC).json()
    url = f"{public_demo.base_url}/v3/directline/conversations/{answer['conversationId']}/activities"
    response = requests.get(url, headers={"Authorization": f"Bearer {answer['token']}"}, timeout=10)
    assert response.status_code == 200
    assert "activities" in response.json()


def test_the_demos_stream_urls_name_the_public_url_over_tls_when_it_is_https(public_demo: ServedApp) -> None:
    answer = _token(public_demo.base_url, PUBLIC).json()
    url = f"{public_demo.base_url}/v3/directline/conversations"
    started = requests.post(url, headers={"Authorization": f"Bearer {answer['token']}"}, timeout=10).json()
    assert started["streamUrl"].startswith(f"wss://octo-space-7071.app.github.dev/v3/directline/conversations/{started['conversationId']}/stream?")


def test_the_demos_stream_answers_on_the_services_port(public_demo: ServedApp) -> None:
    from websockets.sync.client import connect

    answer = _token(public_demo.base_url, PUBLIC).json()
    url = f"{public_demo.base_url}/v3/directline/conversations"
    started = requests.post(url, headers={"Authorization": f"Bearer {answer['token']}"}, timeout=10).json()
    local = started["streamUrl"].replace("wss://octo-space-7071.app.github.dev", public_demo.base_url.replace("http", "ws"))
    with connect(local, open_timeout=10) as stream:
        assert "Hello! I am the echo bot" in stream.recv(timeout=10)


def test_the_demo_says_where_its_web_chat_comes_from(public_demo: ServedApp) -> None:
    from demo.bundle import find_local_bundle

    installed = find_local_bundle() is not None
    expected = "the demo needs no internet" if installed else "the pages load it from its CDN"
    assert expected in public_demo.log_text()


def test_minting_with_the_secret_is_not_reachable_on_the_services_port(public_demo: ServedApp) -> None:
    response = requests.post(f"{public_demo.base_url}/v3/directline/tokens/generate", json={}, timeout=10)
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"


def test_public_url_without_demo_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--port", "0", "--public-url", PUBLIC)
    assert done.returncode == 1
    assert "ALLOWED_ORIGINS" in done.stderr


@pytest.mark.parametrize(
    "url", ["ftp://host.example", "https://*.app.github.dev", "https://host.example/path", "not a url"]
)
def test_a_public_url_that_is_not_an_origin_is_a_usage_error(tmp_path: Path, url: str) -> None:
    done = _serve(tmp_path, "--demo", "--public-url", url)
    assert done.returncode == 2
    assert "--public-url" in done.stderr


@pytest.mark.parametrize("demo", [[], ["--demo"]], ids=["service", "demo"])
def test_a_port_in_use_is_one_clear_line_and_exit_1(tmp_path: Path, demo: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, "--port", str(port), *demo)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"Cannot listen on 127.0.0.1 port {port}" in done.stderr


def test_invalid_settings_end_serve_with_exit_1_every_time(tmp_path: Path) -> None:
    # The first mistake of many: the example file copied, its placeholder secret left in. The trust
    # store's thread was once a daemon that this quick exit could catch inside OpenSSL: a segfault
    # in about one run of three. Ten runs in a row must all end cleanly.
    shutil.copy(ROOT / "local.settings.json.example", tmp_path / "local.settings.json")
    endings = [_serve(tmp_path, "--port", "0", env={"LANG": "C.UTF-8"}) for _ in range(10)]
    assert [done.returncode for done in endings] == [1] * 10
    assert all("Invalid setting DIRECT_LINE_SECRET" in done.stderr for done in endings)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_serve_on_every_ipv6_address_names_an_address_it_answers_on(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    env = child_environment({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ALLOWED})
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokens", "serve", "--host", "::", "--port", "0"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Serving /api on" not in log_path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.05)
        [url] = re.findall(r"Serving /api on (\S+)", log_path.read_text())
        assert re.fullmatch(r"http://\[::1\]:\d+", url)
        assert requests.get(f"{url}/api/health", timeout=10).status_code == 200
    finally:
        stop_process(process)


# -- the settings, read once ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unreadable_ca_bundle_is_one_named_problem_however_many_workers(tmp_path: Path, workers: str) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "REQUESTS_CA_BUNDLE": str(tmp_path / "gone.pem"), "ALLOWED_ORIGINS": ALLOWED}
    done = _serve(tmp_path, "--port", "0", "--workers", workers, env=env)
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if "Invalid setting" in line]
    assert len(problems) == 1
    assert "REQUESTS_CA_BUNDLE: it cannot be used to verify TLS: there is no file at that path" in problems[0]
    assert "Traceback" not in done.stderr


def test_two_workers_warn_once_of_what_the_settings_say(fake_upstream: FakeDirectLine, tmp_path: Path) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": fake_upstream.base_url, "TRUSTED_PROXY_HOPS": "0"}
    with served(env, tmp_path, workers=2) as app:
        for _ in range(4):  # the requests reach both workers
            requests.get(f"{app.base_url}/api/health", timeout=10)
        log = app.log_text()
    assert log.count("ALLOWED_ORIGINS: is empty") == 1
    # serve knows each connection's address: TRUSTED_PROXY_HOPS=0 is fine here, and not warned of.
    assert "TRUSTED_PROXY_HOPS" not in log


# -- the demo's variants, for trying the page's behaviour by hand -------------------------------------


def _resume(base_url: str, started: dict[str, str]) -> requests.Response:
    body = {"userHandle": started["userHandle"], "conversationTicket": started["conversationTicket"]}
    return requests.post(f"{base_url}/api/directline/resume", json=body, headers={"Origin": base_url}, timeout=10)


def test_the_demo_plays_enhanced_authentication_resume_is_409(tmp_path: Path) -> None:
    with served({}, tmp_path, demo=True, args=["--demo-enhanced-auth"]) as app:
        started = _token(app.base_url, app.base_url).json()
        resumed = _resume(app.base_url, started)
        log = app.log_text()
    assert (resumed.status_code, resumed.json()["error"]["code"]) == (409, "resume_unavailable")
    assert "DIRECT_LINE_ENHANCED_AUTH=true" in log


def test_the_demo_plays_a_regional_bot_asked_through_the_wrong_host(tmp_path: Path) -> None:
    with served({}, tmp_path, demo=True, args=["--demo-wrong-region"]) as app:
        refused = _token(app.base_url, app.base_url)
        log = app.log_text()
    assert (refused.status_code, refused.json()["error"]["code"]) == (502, "upstream_error")
    assert "RegionNotAllowed" in log and "europe.directline.botframework.com" in log


def test_the_demo_plays_copilot_studios_hour_long_tokens(tmp_path: Path) -> None:
    with served({}, tmp_path, demo=True, args=["--demo-token-ttl", "3600"]) as app:
        answer = _token(app.base_url, app.base_url).json()
    assert answer["expires_in"] == 3600


@pytest.mark.parametrize("option", [["--demo-enhanced-auth"], ["--demo-wrong-region"], ["--demo-token-ttl", "60"]])
def test_a_demo_option_without_demo_is_refused(tmp_path: Path, option: list[str]) -> None:
    done = _serve(tmp_path, "--port", "0", *option)
    assert done.returncode == 1
    assert f"{option[0]} is for --demo" in done.stderr


# -- speech through the demo and serve ---------------------------------------------------------------


def test_the_demo_hands_out_speech_credentials_from_its_emulator(tmp_path: Path) -> None:
    with served({}, tmp_path, demo=True) as app:
        answer = requests.post(
            f"{app.base_url}/api/speech/token", json={}, headers={"Origin": app.base_url}, timeout=10
        )
        records = app.audit_records()
    assert answer.status_code == 200
    assert answer.json()["region"] == "westeurope"
    assert answer.json()["authorizationToken"].count(".") == 2
    assert [r["event"] for r in records] == ["speech.token"]


def test_serve_answers_speech_not_configured_with_404(fake_upstream: FakeDirectLine, tmp_path: Path) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": fake_upstream.base_url, "ALLOWED_ORIGINS": ALLOWED}
    with served(env, tmp_path) as app:
        answer = requests.post(f"{app.base_url}/api/speech/token", json={}, headers={"Origin": ALLOWED}, timeout=10)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "speech_not_configured")
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
