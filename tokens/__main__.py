"""Command line: `python -m tokens serve [--host] [--port] [--demo]` and `python -m tokens check`."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tokens.settings import SettingsError, is_loopback_host, load_settings

DEMO_BANNER = """
==========================================================================================
  DEMO MODE: tokens come from the embedded Direct Line EMULATOR with an echo bot, not Azure.
  Nothing here talks to the Bot Framework. Open {url} to chat.
==========================================================================================
"""
MAX_REQUEST_BODY = 1024 * 1024  # waitress refuses anything larger before the app sees it


class OneLineFormatter(logging.Formatter):
    """Every record on one line, tracebacks included, so that a log reader (or an attacker's
    newline) can never split or forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", " | ")


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # waitress logs every queue warning at WARNING; keep its INFO chatter out of the audit stream.
    logging.getLogger("waitress").setLevel(logging.WARNING)


def check(_: argparse.Namespace) -> int:
    try:
        load_settings()
    except SettingsError as error:
        for problem in error.problems:
            print(f"{problem.setting}: {problem.message}", file=sys.stderr)
        return 1
    print("Settings are valid.")
    return 0


def _is_unspecified(host: str) -> bool:
    """A bind-to-every-interface address, which the server itself cannot be called at."""
    try:
        return not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """A host as it is written in a URL: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def _start_demo(host: str, port: int) -> tuple[str, Callable[[], None]]:
    """Start the Direct Line emulator on its own loopback port (so the service's calls to it never
    wait for the service's own threads), point the app at it, and allow the demo page's origins.
    Returns the address to open and a function that stops the emulator."""
    from tokens.emulator import start_emulator_server

    secret = "demo-" + secrets.token_urlsafe(24)
    endpoint, stop = start_emulator_server(secret, host="127.0.0.1", port=0)
    page_host = _url_host("127.0.0.1" if _is_unspecified(host) else host)
    os.environ["DIRECT_LINE_SECRET"] = secret
    os.environ["DIRECT_LINE_ENDPOINT"] = endpoint
    page_origins = [f"http://{page_host}:{port}", f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    configured = os.environ.get("ALLOWED_ORIGINS", "").strip()
    os.environ["ALLOWED_ORIGINS"] = ",".join(dict.fromkeys(filter(None, [configured, *page_origins])))
    if not is_loopback_host(host):
        logging.getLogger("tokens").warning(
            "Demo mode bound to %s: the page works only when opened on this machine "
            "(http://%s:%s/), since the emulator listens on loopback only",
            host, page_host, port,
        )
    return f"http://{page_host}:{port}/", stop


def serve(args: argparse.Namespace) -> int:
    from tokens.server import OPENAPI_FILE, OPENAPI_PATH, WEB_DIR, HostedApp, run_waitress

    configure_logging()
    stop_demo: Callable[[], None] | None = None
    page_url = ""
    if args.demo:
        page_url, stop_demo = _start_demo(args.host, args.port)
    try:
        load_settings()
    except SettingsError as error:
        for problem in error.problems:
            logging.getLogger("tokens").error("Invalid setting %s", problem)
        if stop_demo is not None:
            stop_demo()
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    function_app = importlib.import_module("function_app")
    app = HostedApp(
        routes=function_app.http_routes(),
        static_dir=WEB_DIR if args.demo else None,
        extra_static={OPENAPI_PATH: OPENAPI_FILE},
    )
    if args.demo:
        print(DEMO_BANNER.format(url=page_url), file=sys.stderr, flush=True)
    logging.getLogger("tokens").info("Serving /api on http://%s:%s", args.host, args.port)
    try:
        run_waitress(app, host=args.host, port=args.port, threads=args.threads, max_body=MAX_REQUEST_BODY)
    finally:
        if stop_demo is not None:
            stop_demo()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the HTTP functions with waitress")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=7071)
    serve_parser.add_argument("--threads", type=int, default=8)
    serve_parser.add_argument(
        "--demo", action="store_true", help="no secret needed: use the embedded Direct Line emulator"
    )
    serve_parser.set_defaults(run=serve)
    check_parser = commands.add_parser("check", help="validate the settings and list every problem")
    check_parser.set_defaults(run=check)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
