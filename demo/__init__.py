"""The demo: a Direct Line emulator with an echo bot, so that `python -m tokens serve --demo` runs
end to end with no Azure account. Never deployed (see .funcignore); nothing under tokens/ imports it
except the `--demo` switch of the command line."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from demo.emulator import DirectLineEmulator, RunningEmulator, start_emulator


@dataclass
class Demo:
    page_url: str
    emulator: RunningEmulator

    def stop(self) -> None:
        self.emulator.stop()


def start_demo(page_host: str, port: int) -> Demo:
    """Start the emulator on a loopback port of its own (so that the service's calls to it never
    wait for the service's own threads), point the settings at it with a fresh secret, and allow the
    sample page's origins. `page_host` is where the page will be opened."""
    secret = "demo-" + secrets.token_urlsafe(24)
    emulator = start_emulator(DirectLineEmulator(secret, token_ttl=_token_ttl()))
    os.environ["DIRECT_LINE_SECRET"] = secret
    os.environ["DIRECT_LINE_ENDPOINT"] = emulator.endpoint
    page_origins = [f"http://{page_host}:{port}", f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    configured = os.environ.get("ALLOWED_ORIGINS", "").strip()
    os.environ["ALLOWED_ORIGINS"] = ",".join(dict.fromkeys(filter(None, [configured, *page_origins])))
    return Demo(f"http://{page_host}:{port}/", emulator)


def _token_ttl() -> int:
    """DEMO_TOKEN_TTL: the emulator's token lifetime in seconds (Direct Line's 1800 by default), so
    that expiry and resuming can be watched in seconds rather than half an hour."""
    text = os.environ.get("DEMO_TOKEN_TTL", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1800
