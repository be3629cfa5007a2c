"""The demo: a Direct Line emulator with an echo bot, so that `python -m tokens serve --demo` runs
end to end with no Azure account. Never deployed (see .funcignore); nothing under tokens/ imports it
except the `--demo` switch of the command line."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from wsgiref.types import WSGIApplication

from demo.bundle import LocalBundle, find_local_bundle
from demo.emulator import PATH_PREFIX, DirectLineEmulator, RunningEmulator, start_emulator
from demo.front import Front
from demo.gateway import BrowserGateway
from demo.stream import serve_stream


@dataclass(frozen=True)
class Variant:
    """How the emulator behaves, as the Direct Line variants users meet (`serve --demo-*` options):
    Enhanced authentication on, a regional bot asked through the wrong host, a token lifetime
    (3600 s as Copilot Studio's, or a few seconds to watch expiry and resuming)."""

    enhanced_auth: bool = False
    wrong_region: bool = False
    token_ttl: int | None = None  # None: DEMO_TOKEN_TTL, else Direct Line's 1800


@dataclass
class Demo:
    page_url: str  # where the page is opened: on this machine, or the forwarded --public-url
    emulator: RunningEmulator
    bundle: LocalBundle | None = None  # Web Chat from web/node_modules, when npm installed it
    front: Front | None = None

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        """The service's application, with the emulator's browser routes on the same port."""
        browser_endpoint = self.page_url.rstrip("/") + PATH_PREFIX
        emulator = self.emulator
        return BrowserGateway(app, emulator.emulator, emulator.endpoint, browser_endpoint, self.bundle)

    @property
    def bundle_note(self) -> str:
        """Where the pages' Web Chat comes from, in a line for the console."""
        if self.bundle is not None:
            version = self.bundle.version
            return f"Web Chat {version} is served from web/node_modules: the demo needs no internet"
        return (
            "Web Chat is not installed in web/node_modules, so the pages load it from its CDN (the "
            "browser needs the internet); run `cd web && npm ci` for a demo that needs none"
        )

    def take_port(self, listeners: list[socket.socket]) -> list[socket.socket]:
        """Answer on serve's listening sockets (demo/front.py: the emulator's WebSocket stream there,
        everything else relayed); returns the private loopback listener that serve answers on now."""
        backend = socket.create_server(("127.0.0.1", 0), backlog=1024)
        emulator = self.emulator.emulator

        def on_stream(connection: socket.socket, head: bytes) -> None:
            serve_stream(connection, head, emulator)

        self.front = Front(listeners, backend.getsockname()[:2], on_stream)
        self.front.start()
        return [backend]

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.emulator.stop()


def start_demo(
    page_host: str, port: int, public_origin: str | None = None, variant: Variant = Variant()
) -> Demo:
    """Start the emulator on a loopback port of its own (so that the service's calls to it never
    wait for the service's own threads), point the settings at it with a fresh secret, and allow the
    sample page's origins. `page_host` is where the page will be opened on this machine;
    `public_origin` is the origin that forwards to `port` (a dev container's or Codespaces' forwarded
    port), when the page is opened there instead."""
    secret = "demo-" + secrets.token_urlsafe(24)
    speech_key = secrets.token_hex(16)
    page_url = f"{public_origin or f'http://{page_host}:{port}'}/"
    emulator = start_emulator(
        DirectLineEmulator(
            secret,
            enhanced_auth=variant.enhanced_auth,
            wrong_region=variant.wrong_region,
            # Behind a forwarded port the Host a request arrives with may be the forwarder's own:
            # stream URLs then name the public address. Otherwise the page's own Host is right.
            public_endpoint=page_url + PATH_PREFIX.lstrip("/") if public_origin else None,
            speech_key=speech_key,
            token_ttl=variant.token_ttl or _token_ttl(),
        )
    )
    os.environ["DIRECT_LINE_SECRET"] = secret
    os.environ["DIRECT_LINE_ENDPOINT"] = emulator.endpoint
    if not any(os.environ.get(name, "").strip() for name in ("SPEECH_RESOURCE_ID", "SPEECH_KEY")):
        # Speech through the emulator's issueToken: the page shows its microphone (recognition itself
        # needs Azure: set SPEECH_REGION and SPEECH_KEY of a real resource to hear the bot listen).
        os.environ["SPEECH_REGION"] = "westeurope"
        os.environ["SPEECH_KEY"] = speech_key
        os.environ["SPEECH_ENDPOINT"] = emulator.endpoint.removesuffix(PATH_PREFIX)
    page_origins = [f"http://{page_host}:{port}", f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    if public_origin is not None:
        page_origins.insert(0, public_origin)
    configured = os.environ.get("ALLOWED_ORIGINS", "").strip()
    os.environ["ALLOWED_ORIGINS"] = ",".join(dict.fromkeys(filter(None, [configured, *page_origins])))
    return Demo(page_url, emulator, find_local_bundle())


def _token_ttl() -> int:
    """DEMO_TOKEN_TTL: the emulator's token lifetime in seconds (Direct Line's 1800 by default), so
    that expiry and resuming can be watched in seconds rather than half an hour."""
    text = os.environ.get("DEMO_TOKEN_TTL", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1800
