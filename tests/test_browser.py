"""The sample page in a real Chromium with the real Web Chat bundle, against `serve --demo`.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright for Python; Web Chat is the
`botframework-webchat` bundle that `cd web && npm ci` installs, which `serve --demo` serves in place
of the CDN. Nothing leaves the machine: requests that are not for loopback are aborted by the routes
(and recorded, so a test can say that none was made), and the browser's proxy is a closed loopback
port, which only loopback addresses bypass. Web Chat talks to the demo's emulator over its default
transport, Direct Line's WebSocket stream.

Playwright answers CORS preflights itself while any route is active, so the cross-origin tests use
no routes: their copy of the page loads the bundle from its own loopback server, and the preflight
that Chromium sends is checked as it arrived through the DevTools protocol.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from tests.conftest import ARTIFACTS, ROOT, served
from tests.forwarder import PortForwarder
from tests.prerequisites import missing_prerequisite
from tests.served import ServedApp

PLAYWRIGHT_IMPORT_ERROR: ImportError | None = None
try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Error,
        Locator,
        Page,
        Playwright,
        Route,
        expect,
        sync_playwright,
    )
except ImportError as import_error:  # reported by the `browser` fixture: a failure under CI
    PLAYWRIGHT_IMPORT_ERROR = import_error

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
WEB_DIR = ROOT / "web"
BUNDLE = WEB_DIR / "node_modules" / "botframework-webchat" / "dist" / "webchat.js"
CDN_SCRIPT = "https://cdn.botframework.com/botframework-webchat/4.18.1/webchat.js"
SERVICE_URL_SETTING = "var SERVICE_URL = '';"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # generous: other test suites share this machine's two cores
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
STORAGE_KEY = "directline-token:conversation"
HANDLE_KEY = "directline-token:userHandle"
BOT_BUBBLE = ".webchat__bubble:not(.webchat__bubble--from-user) .webchat__bubble__content"
USER_BUBBLE = ".webchat__bubble--from-user .webchat__bubble__content"
WELCOME = "Hello! I am the echo bot of the Direct Line emulator"


# -- prerequisites ---------------------------------------------------------------------------------


def _missing_prerequisite() -> str | None:
    if PLAYWRIGHT_IMPORT_ERROR is not None:
        return f"Playwright for Python is not importable ({PLAYWRIGHT_IMPORT_ERROR}); pip install -r requirements-dev.txt"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM}; apt-get install chromium"
    if not BUNDLE.is_file():
        return f"no Web Chat bundle at {BUNDLE.relative_to(ROOT)}; run `cd web && npm ci`"
    return None


# -- a static site on another loopback port --------------------------------------------------------


class _StaticHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StaticServer

    def setup(self) -> None:
        super().setup()
        # Small answers on a kept-alive connection: no Nagle delay between header and body.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        found = self.server.files.get(urlsplit(self.path).path)
        status, content_type, body = (200, *found) if found else (404, "text/plain", b"not found")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests report what matters."""


class _StaticServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), _StaticHandler)
        self.files = files


@dataclass
class StaticSite:
    """A copy of the sample page served from its own origin, pointed at the service."""

    server: _StaticServer
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="static-site", daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set_service(self, service_url: str) -> None:
        """Serve the pages with their one setting pointing at the service, as a site would copy them."""
        files = {
            "/token-client.js": ("text/javascript", (WEB_DIR / "token-client.js").read_bytes()),
            "/chat.js": ("text/javascript", (WEB_DIR / "chat.js").read_bytes()),
            "/webchat.js": ("text/javascript", BUNDLE.read_bytes()),
        }
        for path, name in (("/", "index.html"), ("/widget.html", "widget.html")):
            html = (WEB_DIR / name).read_text(encoding="utf-8")
            assert html.count(SERVICE_URL_SETTING) == 1, f"{name}'s service URL setting has moved"
            assert html.count(CDN_SCRIPT) == 1, f"{name} no longer loads Web Chat from the CDN"
            html = html.replace(SERVICE_URL_SETTING, f"var SERVICE_URL = '{service_url}';")
            # The site hosts the bundle itself: a route for the CDN would make Playwright fake preflights.
            html = html.replace(CDN_SCRIPT, "webchat.js")
            files[path] = ("text/html; charset=utf-8", html.encode("utf-8"))
        self.server.files.update(files)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@dataclass
class Demo:
    app: ServedApp
    allowed_site: StaticSite  # its origin is in ALLOWED_ORIGINS
    denied_site: StaticSite  # its origin is not


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _missing_prerequisite()
    if reason is not None:
        missing_prerequisite(f"browser tests cannot run: {reason}")
    # Everything not on loopback goes to a proxy that refuses connections: no route can forget a
    # request, and Chromium itself bypasses proxies for loopback addresses.
    with socket.socket() as closed_port, sync_playwright() as playwright:
        closed_port.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        proxy = f"--proxy-server=http://127.0.0.1:{closed_port.getsockname()[1]}"
        launched = _launch(playwright, [*LAUNCH_ARGS, proxy])
        expect.set_options(timeout=WAIT_MS)
        try:
            yield launched
        finally:
            launched.close()


def _launch(playwright: Playwright, args: list[str]) -> Browser:
    try:
        return playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
    except Error as error:
        pytest.fail(f"Chromium at {CHROMIUM} did not start: {error.message}", pytrace=False)


@pytest.fixture(scope="module")
def demo(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One `serve --demo` for the module, and two copies of the page on other origins."""
    with contextlib.ExitStack() as stack:
        allowed = StaticSite(_StaticServer({}))
        stack.callback(allowed.close)
        denied = StaticSite(_StaticServer({}))
        stack.callback(denied.close)
        env = {
            "ALLOWED_ORIGINS": allowed.origin,
            "RATE_LIMIT": "1000/minute",
            "GLOBAL_RATE_LIMIT": "100000/minute",
        }
        app = stack.enter_context(served(env, tmp_path_factory.mktemp("browser"), demo=True))
        allowed.set_service(app.base_url)
        denied.set_service(app.base_url)
        yield Demo(app, allowed, denied)


@pytest.fixture(scope="module")
def plain_demo(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """`serve --demo` with the default rate limits (RATE_LIMIT=10/minute)."""
    with served({}, tmp_path_factory.mktemp("plain"), demo=True) as app:
        yield app


SHORT_TTL = 12  # seconds: long enough to chat, short enough to wait for


@pytest.fixture(scope="module")
def short_demo(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """`serve --demo` whose emulator's tokens expire after SHORT_TTL seconds."""
    env = {"DEMO_TOKEN_TTL": str(SHORT_TTL), "RATE_LIMIT": "1000/minute"}
    with served(env, tmp_path_factory.mktemp("short"), demo=True) as app:
        yield app


@pytest.fixture(scope="module")
def enhanced_demo(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """`serve --demo --demo-enhanced-auth`: the Direct Line site refuses the secret a reconnect, and
    the setting does not say so (DIRECT_LINE_ENHANCED_AUTH is false): every resume is 409."""
    env = {"DEMO_TOKEN_TTL": str(SHORT_TTL), "RATE_LIMIT": "1000/minute"}
    with served(env, tmp_path_factory.mktemp("enhanced"), demo=True, args=["--demo-enhanced-auth"]) as app:
        yield app


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile per test: empty storage, no cookies."""
    created = browser.new_context(viewport={"width": 1024, "height": 720})
    created.set_default_timeout(WAIT_MS)
    yield created
    created.close()


@dataclass
class Traffic:
    """What a page asked for: its HTTP requests (method, URL) and the WebSockets it opened."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)

    @classmethod
    def watch(cls, page: Page) -> Traffic:
        traffic = cls()
        page.on("request", lambda request: traffic.requests.append((request.method, request.url)))
        page.on("websocket", lambda socket: traffic.websockets.append(socket.url))
        return traffic

    def polls(self) -> list[str]:
        """Polling of a conversation's activities (what Web Chat does without its WebSocket)."""
        return [url for method, url in self.requests if method == "GET" and re.search(r"/activities(\?|$)", url)]

    def streams(self) -> list[str]:
        return [url for url in self.websockets if re.search(r"/v3/directline/conversations/[^/]+/stream\?", url)]

    def scripts(self, name: str) -> list[str]:
        return [url for _, url in self.requests if urlsplit(url).path.endswith("/" + name)]


@dataclass
class Routed:
    page: Page
    blocked: list[str]
    traffic: Traffic


@pytest.fixture
def routed(context: BrowserContext) -> Routed:
    """A page on which every request not for loopback is aborted, Web Chat's CDN included: the demo
    serves the npm bundle itself."""
    blocked: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if _is_local(url):
            route.continue_()
        else:
            blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", handle)
    page = context.new_page()
    return Routed(page, blocked, Traffic.watch(page))


def beyond_speech(urls: list[str]) -> list[str]:
    """URLs other than Azure AI Speech's own: with speech configured (the demo's emulator hands out
    speech tokens), Web Chat's speech ponyfill asks Azure for its voices; the chat needs none of it."""
    return [url for url in urls if not (urlsplit(url).hostname or "").endswith(".speech.microsoft.com")]


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("blob", "data") or (parts.hostname or "") in LOOPBACK_HOSTS


# -- what the page shows and keeps -----------------------------------------------------------------


def bot_says(page: Page, text: str) -> Locator:
    """The bot's reply bubble with exactly this text (not the screen-reader text of the user's own)."""
    return page.locator(BOT_BUBBLE).filter(has_text=_exactly(text))


def user_says(page: Page, text: str) -> Locator:
    return page.locator(USER_BUBBLE).filter(has_text=_exactly(text))


def _exactly(text: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message input box")
    box.fill(text)
    box.press("Enter")


def wait_connected(page: Page, *, resumed: bool = False) -> None:
    expected = "Connected (conversation resumed)." if resumed else "Connected."
    expect(page.locator("#status")).to_have_text(expected)
    expect(page.locator("#error")).to_be_hidden()


def chat(page: Page, text: str) -> None:
    """Type a message and wait until the echo bot's reply bubble shows it."""
    send(page, text)
    expect(user_says(page, text)).to_be_visible()
    expect(bot_says(page, f"You said: {text}")).to_be_visible()


def stored_conversation(page: Page) -> dict[str, Any]:
    stored = page.evaluate("key => JSON.parse(sessionStorage.getItem(key) || 'null')", STORAGE_KEY)
    assert isinstance(stored, dict), f"no conversation in sessionStorage: {stored!r}"
    return stored


def token_user(token: str) -> str:
    """The user id Direct Line bound into a token (its `user` claim); only read, not verified."""
    claims = jwt.decode(token, options={"verify_signature": False})
    user = claims["user"]
    assert isinstance(user, str)
    return user


def wait_until(page: Page, condition: Callable[[], bool], what: str) -> None:
    """Let Playwright deliver events until `condition` holds; fail after WAIT_MS."""
    for _ in range(WAIT_MS // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Preflights:
    """CORS preflights as Chromium sent them and as the server answered, from the DevTools protocol."""

    responses: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def watch(cls, context: BrowserContext, page: Page) -> Preflights:
        watched = cls()
        session = context.new_cdp_session(page)
        session.on("Network.responseReceived", watched._on_response)
        session.send("Network.enable")
        return watched

    def _on_response(self, event: dict[str, Any]) -> None:
        if event.get("type") == "Preflight":
            self.responses.append(event["response"])

    def to(self, url: str) -> list[dict[str, Any]]:
        return [response for response in self.responses if response["url"] == url]


def _headers(response: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in response["headers"].items()}


# -- the tests -------------------------------------------------------------------------------------


def test_page_gets_a_token_and_the_echo_bot_answers_a_typed_message(demo: Demo, routed: Routed) -> None:
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    expect(page.locator(BOT_BUBBLE).filter(has_text=WELCOME)).to_be_visible()

    chat(page, "hello from Chromium")

    conversation = stored_conversation(page)
    issued = [
        record
        for record in demo.app.audit_records()
        if record["event"] == "directline.token" and record["conversationId"] == conversation["conversationId"]
    ]
    assert [(record["outcome"], record["origin"]) for record in issued] == [("issued", demo.app.base_url)]
    assert token_user(conversation["token"]) == issued[0]["userId"]
    # The emulator's browser routes, on the service's own port (tests/test_demo_public_url.py).
    assert conversation["domain"] == f"{demo.app.base_url}/v3/directline"


def test_the_sample_page_chats_over_the_websocket_stream_and_never_polls(demo: Demo, routed: Routed) -> None:
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    chat(page, "pushed, not polled")
    chat(page, "and again")
    conversation = stored_conversation(page)["conversationId"]
    assert [urlsplit(url).path for url in routed.traffic.streams()] == [
        f"/v3/directline/conversations/{conversation}/stream"
    ]
    assert routed.traffic.polls() == []


def test_the_demo_chats_with_every_request_beyond_this_machine_refused(demo: Demo, routed: Routed) -> None:
    """No CDN: the demo serves Web Chat from web/node_modules, at the page's own origin."""
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    chat(page, "offline")
    assert beyond_speech(routed.blocked) == []
    assert routed.traffic.scripts("webchat.js") == [f"{demo.app.base_url}/webchat/webchat.js"]


def test_reload_keeps_the_same_conversation_as_the_same_user_with_its_history_and_no_call(
    demo: Demo, routed: Routed
) -> None:
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    chat(page, "remember this")
    before = stored_conversation(page)
    handle = page.evaluate("key => localStorage.getItem(key)", HANDLE_KEY)

    page.reload()
    wait_connected(page, resumed=True)
    expect(user_says(page, "remember this")).to_be_visible()  # shown as the user's own: same user id
    expect(bot_says(page, "You said: remember this")).to_be_visible()
    chat(page, "and this too")  # the stored token works, and all history has arrived before it

    after = stored_conversation(page)
    assert after["conversationId"] == before["conversationId"]
    assert token_user(after["token"]) == token_user(before["token"])
    assert page.evaluate("key => localStorage.getItem(key)", HANDLE_KEY) == handle
    expect(bot_says(page, "You said: remember this")).to_have_count(1)  # replayed once, not twice
    expect(page.locator(BOT_BUBBLE).filter(has_text=WELCOME)).to_have_count(1)
    records = [r for r in demo.app.audit_records() if r["conversationId"] == before["conversationId"]]
    assert [(r["event"], r["outcome"]) for r in records] == [("directline.token", "issued")]


def test_page_on_an_allowed_other_origin_passes_the_real_preflight_and_chats(
    demo: Demo, context: BrowserContext
) -> None:
    page = context.new_page()
    preflights = Preflights.watch(context, page)
    site = demo.allowed_site

    page.goto(f"{site.origin}/")
    wait_connected(page)
    chat(page, "hello across origins")

    token_url = f"{demo.app.base_url}/api/directline/token"
    wait_until(page, lambda: bool(preflights.to(token_url)), "the preflight of the token request")
    [preflight] = preflights.to(token_url)
    headers = _headers(preflight)
    assert preflight["status"] == 204
    assert headers["access-control-allow-origin"] == site.origin
    assert headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert headers["access-control-allow-headers"] == "Authorization, Content-Type"
    assert "access-control-allow-credentials" not in headers  # what a preflight faked by Playwright has
    conversation = stored_conversation(page)
    origins = [r["origin"] for r in demo.app.audit_records() if r["conversationId"] == conversation["conversationId"]]
    assert origins == [site.origin]


def test_page_on_an_origin_not_allowed_gets_no_token_and_shows_the_error(
    demo: Demo, context: BrowserContext
) -> None:
    page = context.new_page()
    preflights = Preflights.watch(context, page)
    site = demo.denied_site

    page.goto(f"{site.origin}/")

    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-code")).to_have_text("network_error")
    expect(page.locator("#error-message")).to_contain_text(f"does not accept requests from {site.origin}")
    expect(page.locator("#error-message")).to_contain_text("ALLOWED_ORIGINS")
    expect(page.locator("#webchat")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Chat unavailable.")
    token_url = f"{demo.app.base_url}/api/directline/token"
    wait_until(page, lambda: bool(preflights.to(token_url)), "the preflight of the token request")
    assert [(p["status"], "access-control-allow-origin" in _headers(p)) for p in preflights.to(token_url)] == [
        (403, False)
    ]
    # The refused preflight stopped the POST: the service saw no token request from this origin.
    assert not [r for r in demo.app.audit_records() if r["origin"] == site.origin]
    assert page.evaluate("key => sessionStorage.getItem(key)", STORAGE_KEY) is None


def test_screenshot_of_the_working_chat_is_kept_with_the_artifacts(demo: Demo, routed: Routed) -> None:
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    chat(page, "Hello, Web Chat!")

    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "webchat.png"
    target.unlink(missing_ok=True)
    page.screenshot(path=target)
    png = target.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1024, 720)


# -- ordinary browsing: reloads, expiry, tabs, the widget -------------------------------------------


def calls_for(app: ServedApp, conversation_id: str) -> list[tuple[str, str]]:
    """(event, outcome) of every audit record of one conversation, in order."""
    return [(r["event"], r["outcome"]) for r in app.audit_records() if r["conversationId"] == conversation_id]


def test_thirty_loads_with_the_default_limits_all_chat_and_cost_one_token(
    plain_demo: ServedApp, routed: Routed
) -> None:
    """A visitor clicking through thirty pages that carry the chat: RATE_LIMIT is 10/minute."""
    page = routed.page
    page.goto(f"{plain_demo.base_url}/")
    wait_connected(page)
    conversation = stored_conversation(page)["conversationId"]
    for _ in range(29):
        page.reload()
        wait_connected(page, resumed=True)
        expect(page.get_by_role("textbox", name="Message input box")).to_be_enabled()
    chat(page, "still here after thirty pages")
    assert stored_conversation(page)["conversationId"] == conversation
    assert calls_for(plain_demo, conversation) == [("directline.token", "issued")]
    assert not [r for r in plain_demo.audit_records() if r["outcome"] != "issued"]


def test_an_expired_token_is_resumed_after_a_reload_with_the_earlier_messages(
    short_demo: ServedApp, routed: Routed
) -> None:
    page = routed.page
    page.goto(f"{short_demo.base_url}/")
    wait_connected(page)
    chat(page, "before the laptop slept")
    before = stored_conversation(page)

    page.goto("about:blank")  # the tab away: nothing polls, nothing renews the token
    page.wait_for_timeout((SHORT_TTL + 1) * 1000)
    page.goto(f"{short_demo.base_url}/")

    wait_connected(page, resumed=True)
    expect(user_says(page, "before the laptop slept")).to_be_visible()
    expect(bot_says(page, "You said: before the laptop slept")).to_be_visible()
    chat(page, "after waking up")
    after = stored_conversation(page)
    assert after["conversationId"] == before["conversationId"]
    assert token_user(after["token"]) == token_user(before["token"])
    assert calls_for(short_demo, before["conversationId"]) == [
        ("directline.token", "issued"),
        ("directline.resume", "issued"),
    ]
    assert len(routed.traffic.streams()) == 2  # one stream before, one after: over the WebSocket
    assert routed.traffic.polls() == []


def test_under_enhanced_authentication_an_expired_token_starts_a_new_conversation_for_the_same_user(
    enhanced_demo: ServedApp, routed: Routed
) -> None:
    page = routed.page
    page.goto(f"{enhanced_demo.base_url}/")
    wait_connected(page)
    chat(page, "before the laptop slept")
    before = stored_conversation(page)

    page.goto("about:blank")
    page.wait_for_timeout((SHORT_TTL + 1) * 1000)
    page.goto(f"{enhanced_demo.base_url}/")

    wait_connected(page)  # a new conversation, not an error box
    chat(page, "after waking up")
    after = stored_conversation(page)
    assert after["conversationId"] != before["conversationId"]
    assert token_user(after["token"]) == token_user(before["token"])
    assert calls_for(enhanced_demo, before["conversationId"]) == [
        ("directline.token", "issued"),
        ("directline.resume", "denied"),
    ]
    assert [r["reason"] for r in enhanced_demo.audit_records() if r["event"] == "directline.resume"] == [
        "resume_unavailable"
    ]


def test_a_token_that_expires_while_the_page_is_open_is_resumed_in_place(
    short_demo: ServedApp, routed: Routed
) -> None:
    page = routed.page
    page.goto(f"{short_demo.base_url}/")
    wait_connected(page)
    chat(page, "before expiry")
    conversation = stored_conversation(page)["conversationId"]
    expect(page.locator("#status")).to_have_text(
        "Connected (conversation resumed).", timeout=(SHORT_TTL + 30) * 1000
    )
    chat(page, "after expiry")
    expect(bot_says(page, "You said: before expiry")).to_have_count(1)
    assert stored_conversation(page)["conversationId"] == conversation
    assert ("directline.resume", "issued") in calls_for(short_demo, conversation)
    assert routed.traffic.polls() == []  # the stream ended, was found expired, and resumed


def test_a_reload_late_in_the_tokens_life_refreshes_it(short_demo: ServedApp, routed: Routed) -> None:
    page = routed.page
    page.goto(f"{short_demo.base_url}/")
    wait_connected(page)
    before = stored_conversation(page)
    page.goto("about:blank")
    page.wait_for_timeout(SHORT_TTL * 1000 * 6 // 10)  # past half of its life, before its end
    page.goto(f"{short_demo.base_url}/")
    wait_connected(page, resumed=True)
    after = stored_conversation(page)
    assert after["conversationId"] == before["conversationId"]
    assert after["token"] != before["token"]
    assert calls_for(short_demo, before["conversationId"]) == [
        ("directline.token", "issued"),
        ("directline.refresh", "issued"),
    ]


def test_a_duplicated_tab_starts_a_conversation_of_its_own(demo: Demo, routed: Routed) -> None:
    """Direct Line closes all but one WebSocket of a conversation: two tabs must not share one. A
    duplicated tab starts with a copy of the first tab's session storage."""
    first = routed.page
    first.goto(f"{demo.app.base_url}/")
    wait_connected(first)
    copied = first.evaluate("key => sessionStorage.getItem(key)", STORAGE_KEY)

    second = first.context.new_page()
    second.add_init_script(f"sessionStorage.setItem({json.dumps(STORAGE_KEY)}, {json.dumps(copied)})")
    second.goto(f"{demo.app.base_url}/")
    wait_connected(second)  # "Connected.": a new conversation

    assert stored_conversation(second)["conversationId"] != stored_conversation(first)["conversationId"]
    chat(first, "the first tab still chats")
    chat(second, "and so does the second")


def test_the_widget_asks_nothing_until_opened_and_reopens_the_same_conversation(
    demo: Demo, routed: Routed
) -> None:
    page = routed.page
    toggle = page.get_by_role("button", name="Chat with us")
    page.goto(f"{demo.app.base_url}/widget.html")
    page.wait_for_function("() => !!window.DirectLineChat && !!window.DirectLineTokenClient")
    page.wait_for_timeout(500)
    asked = [url for _, url in routed.traffic.requests]
    assert [url for url in asked if "/api/directline/" in url] == [], "the closed widget called the token service"
    assert routed.traffic.scripts("webchat.js") == [], "the closed widget downloaded Web Chat"
    assert page.evaluate("() => typeof window.WebChat") == "undefined"
    expect(toggle).to_have_attribute("aria-expanded", "false")

    toggle.focus()
    page.keyboard.press("Enter")  # a real button: the keyboard opens it
    panel = page.get_by_role("dialog", name="Chat with the bot")
    expect(panel).to_be_visible()
    assert routed.traffic.scripts("webchat.js") == [f"{demo.app.base_url}/webchat/webchat.js"]
    expect(page.get_by_role("button", name="Close chat")).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#chat-status")).to_have_text("Connected.")
    chat(page, "hello from the widget")
    conversation = stored_conversation(page)["conversationId"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "widget.png")

    page.reload()  # the next page of the site: the chat that was open opens again by itself
    expect(panel).to_be_visible()
    expect(page.locator("#chat-status")).to_have_text("Connected (conversation resumed).")
    expect(user_says(page, "hello from the widget")).to_be_visible()

    panel.focus()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(toggle).to_be_focused()
    page.reload()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(page.locator("#chat-status")).to_have_text("Connected (conversation resumed).")
    assert stored_conversation(page)["conversationId"] == conversation
    assert calls_for(demo.app, conversation) == [("directline.token", "issued")]


def test_the_widget_says_so_when_web_chat_cannot_be_loaded_and_tries_again_on_the_next_open(
    demo: Demo, context: BrowserContext
) -> None:
    failing = {"on": True}

    def bundle(route: Route) -> None:
        if failing["on"]:
            route.abort("connectionrefused")
        else:
            route.continue_()

    context.route("**/webchat/webchat.js", bundle)
    page = context.new_page()
    page.goto(f"{demo.app.base_url}/widget.html")
    toggle = page.get_by_role("button", name="Chat with us")
    toggle.click()
    expect(page.locator("#chat-error-code")).to_have_text("webchat_unavailable")
    expect(page.locator("#chat-status")).to_have_text("Chat unavailable.")

    failing["on"] = False
    page.get_by_role("button", name="Close chat").click()
    toggle.click()
    expect(page.locator("#chat-status")).to_have_text("Connected.")
    expect(page.locator("#chat-error")).to_be_hidden()


def test_the_widget_shows_that_it_is_loading_until_web_chat_has_arrived(demo: Demo, context: BrowserContext) -> None:
    held: list[Route] = []

    def hold(route: Route) -> None:  # held back until the test lets it go
        held.append(route)

    context.route("**/webchat/webchat.js", hold)
    page = context.new_page()
    page.goto(f"{demo.app.base_url}/widget.html")
    page.get_by_role("button", name="Chat with us").click()
    expect(page.locator("#chat-status")).to_have_text("Loading the chat…")
    wait_until(page, lambda: bool(held), "the request for Web Chat")
    held[0].continue_()
    expect(page.locator("#chat-status")).to_have_text("Connected.")


# -- the README's own snippet ------------------------------------------------------------------------

README_SNIPPET_FENCE = re.compile(r"## Using it from a page\n\n```js\n(?P<code>.*?)\n```", re.S)
README_SERVICE = "https://<app>.azurewebsites.net"


def readme_page(service_url: str) -> bytes:
    """The README's page snippet exactly as printed, on a page with Web Chat and an element."""
    match = README_SNIPPET_FENCE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match is not None, "the README's page snippet has moved"
    code = match["code"]
    assert code.count(README_SERVICE) == 1
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>README snippet</title></head>
<body><div id="webchat" style="height: 30rem"></div>
<script src="webchat.js"></script>
<script type="module">
const element = document.getElementById('webchat');
{code.replace(README_SERVICE, service_url)}
</script></body></html>"""
    return html.encode("utf-8")


def test_the_readmes_snippet_on_its_default_transport_chats_with_the_demo(demo: Demo, context: BrowserContext) -> None:
    site = demo.allowed_site
    site.server.files["/readme.html"] = ("text/html; charset=utf-8", readme_page(demo.app.base_url))
    page = context.new_page()
    traffic = Traffic.watch(page)
    page.goto(f"{site.origin}/readme.html")
    expect(page.locator(BOT_BUBBLE).filter(has_text=WELCOME)).to_be_visible()
    chat(page, "hello from the README")
    assert len(traffic.streams()) == 1
    assert traffic.polls() == []
    handle = page.evaluate("() => localStorage.getItem('directline-token:userHandle')")
    assert isinstance(handle, str) and handle


def test_the_demo_chats_through_one_forwarded_port_given_as_public_url(
    routed: Routed, tmp_path: Path
) -> None:
    """A dev container or Codespaces forwards one port: the page, its token and Web Chat's Direct
    Line traffic all go through it."""
    forwarder = PortForwarder()
    try:
        public = f"http://localhost:{forwarder.port}"
        with served({}, tmp_path, demo=True, args=["--public-url", public]) as app:
            forwarder.target_port = urlsplit(app.base_url).port
            page = routed.page
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url))
            page.goto(f"{public}/")
            wait_connected(page)
            chat(page, "through the forwarded port")
            assert stored_conversation(page)["domain"] == f"{public}/v3/directline"
            assert beyond_speech([url for url in asked if not url.startswith(f"{public}/")]) == []
            assert any(url.startswith(f"{public}/v3/directline/conversations/") for url in asked)
            # The WebSocket stream comes through the same forwarded port.
            assert [url for url in routed.traffic.streams() if not url.startswith(f"ws://localhost:{forwarder.port}/")] == []
            assert routed.traffic.streams()
    finally:
        forwarder.close()


# -- speech: the microphone ------------------------------------------------------------------------

MICROPHONE = ".webchat__microphone-button"


def test_the_page_shows_a_microphone_when_the_service_has_speech(demo: Demo, routed: Routed) -> None:
    """The demo's emulator answers issueToken, so speech is configured (recognition needs Azure)."""
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    expect(page.locator(MICROPHONE)).to_be_visible()
    assert [r["event"] for r in demo.app.audit_records() if r["event"] == "speech.token"]
    assert page.evaluate("() => JSON.parse(sessionStorage.getItem('directline-token:speech')).region") == "westeurope"


def test_the_page_shows_no_microphone_when_the_service_has_no_speech(demo: Demo, routed: Routed) -> None:
    def not_configured(route: Route) -> None:
        body = {"error": {"code": "speech_not_configured", "message": "Speech is not configured."}}
        route.fulfill(status=404, body=json.dumps(body), content_type="application/json")

    routed.page.route("**/api/speech/token", not_configured)
    page = routed.page
    page.goto(f"{demo.app.base_url}/")
    wait_connected(page)
    chat(page, "typed, not spoken")
    expect(page.locator(MICROPHONE)).to_have_count(0)


def test_the_widget_shows_the_microphone_once_opened(demo: Demo, routed: Routed) -> None:
    page = routed.page
    page.goto(f"{demo.app.base_url}/widget.html")
    page.get_by_role("button", name="Chat with us").click()
    expect(page.locator("#chat-status")).to_have_text("Connected.")
    expect(page.locator(MICROPHONE)).to_be_visible()
