"""Command line: `python -m tokens serve [--host] [--port] [--demo]` and `python -m tokens check`."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from tokens.settings import SettingsError, load_settings

DEMO_BANNER = """
==========================================================================================
  DEMO MODE: tokens come from the embedded Direct Line EMULATOR with an echo bot, not Azure.
  Nothing here talks to the Bot Framework. Open http://{host}:{port}/ to chat.
==========================================================================================
"""
MAX_REQUEST_BODY = 1024 * 1024  # waitress refuses anything larger before the app sees it


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
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


def _demo_environment(host: str, port: int) -> None:
    """Point the app at the embedded emulator and allow the demo page's own origins."""
    local_host = "127.0.0.1" if _is_unspecified(host) else host
    os.environ["DIRECT_LINE_SECRET"] = "demo-" + secrets.token_urlsafe(24)
    os.environ["DIRECT_LINE_ENDPOINT"] = f"http://{local_host}:{port}/v3/directline"
    page_origins = [f"http://{local_host}:{port}", f"http://localhost:{port}"]
    configured = os.environ.get("ALLOWED_ORIGINS", "").strip()
    os.environ["ALLOWED_ORIGINS"] = ",".join(filter(None, [configured, *page_origins]))


def serve(args: argparse.Namespace) -> int:
    from waitress import serve as waitress_serve

    from tokens.server import OPENAPI_FILE, OPENAPI_PATH, WEB_DIR, HostedApp, WsgiApp

    configure_logging()
    mounts: dict[str, WsgiApp] = {}
    if args.demo:
        from tokens.emulator import DirectLineEmulator

        _demo_environment(args.host, args.port)
        mounts["/v3/directline"] = DirectLineEmulator(os.environ["DIRECT_LINE_SECRET"])
    try:
        load_settings()
    except SettingsError as error:
        for problem in error.problems:
            logging.getLogger("tokens").error("Invalid setting %s", problem)
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    function_app = importlib.import_module("function_app")
    app = HostedApp(
        routes=function_app.http_routes(),
        mounts=mounts,
        static_dir=WEB_DIR if args.demo else None,
        extra_static={OPENAPI_PATH: OPENAPI_FILE},
    )
    if args.demo:
        print(DEMO_BANNER.format(host=args.host, port=args.port), file=sys.stderr, flush=True)
    logging.getLogger("tokens").info("Serving /api on http://%s:%s", args.host, args.port)
    waitress_serve(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_request_body_size=MAX_REQUEST_BODY,
        ident="tokens",
        # Keep X-Forwarded-For: TRUSTED_PROXY_HOPS, not waitress, decides which entries to believe.
        clear_untrusted_proxy_headers=False,
        _quiet=True,
    )
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
