"""Command line: `python -m tokens serve [--host] [--port] [--workers] [--threads] [--demo]` and
`python -m tokens check`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence

from tokens.settings import SettingsError, is_loopback_host, load_settings

DEMO_BANNER = """
==========================================================================================
  DEMO MODE: tokens come from the embedded Direct Line EMULATOR with an echo bot, not Azure.
  Nothing here talks to the Bot Framework. Open {url} to chat,
  or {url}widget.html for the chat behind a button, as on every page of a site.
==========================================================================================
"""
# Chosen by measurement (benchmarks/RESULTS.md): on 2 CPUs, 2 processes of 12 threads gave the best
# throughput at 64 concurrent callers with a p99 under 1.5 times the p50; more threads per process
# spend their CPU on the GIL, and the tail grows. One process per CPU is the default only when the
# rate-limit counts are shared: with memory:// each process would count on its own.
DEFAULT_THREADS = 12

log = logging.getLogger("tokens")


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


def serve(args: argparse.Namespace) -> int:
    import threading

    from tokens import logs, server, trust


    logging.basicConfig(level=logging.INFO, handlers=[logs.stderr_handler()], force=True)
    if args.demo:
        args.workers = 1  # the emulator runs in this process
    elif args.workers is None:
        shared = os.environ.get("RATE_LIMIT_STORAGE", "").strip().startswith(("redis://", "rediss://"))
        args.workers = (os.cpu_count() or 1) if shared else 1
    try:
        groups = server.listeners(args.host, args.port, args.workers)
    except OSError as error:
        log.error("Cannot listen on %s port %s: %s", args.host, args.port, error.strerror or error)
        return 1
    port = groups[0][0].getsockname()[1]
    # The trust store takes a while to parse, and the first request needs it: start now, on a thread
    # of its own; or before the workers fork, so that each starts with it (a fork must not copy a
    # thread's half-done work).
    if args.workers == 1:
        threading.Thread(target=trust.context, name="trust-store", daemon=True).start()
    else:
        trust.context()
    page_host = _url_host("127.0.0.1" if _is_unspecified(args.host) else args.host)
    demo = None
    if args.demo:
        try:
            from demo import start_demo
        except ImportError:
            log.error("--demo needs the demo/ folder of the repository next to tokens/")
            return 1
        demo = start_demo(page_host, port)
    try:
        settings = load_settings()
    except SettingsError as error:
        for problem in error.problems:
            log.error("Invalid setting %s", problem)
        if demo is not None:
            demo.stop()
        for sockets in groups:
            for sock in sockets:
                sock.close()
        return 1
    if args.workers > 1 and settings.rate_limit_storage == "memory://":
        log.warning(
            "%d workers with RATE_LIMIT_STORAGE=memory://: each worker counts on its own, so a caller "
            "may get up to %d times RATE_LIMIT; use a redis:// store to share one count",
            args.workers, args.workers,
        )
    if demo is not None:
        print(DEMO_BANNER.format(url=demo.page_url), file=sys.stderr, flush=True)
        if not is_loopback_host(args.host):
            log.warning(
                "Demo mode bound to %s: the page works only when opened on this machine "
                "(%s), since the emulator listens on loopback only", args.host, demo.page_url,
            )
    log.info(
        "Serving /api on http://%s:%s with %d worker(s) of %d threads",
        page_host, port, args.workers, args.threads,
    )
    try:
        # Behind a proxy (more than one trusted hop) every connection comes from the proxy: counting
        # connections per address would throttle everyone at once.
        per_address = args.per_address if settings.trusted_proxy_hops <= 1 else None
        guard = server.Guard(args.request_timeout, args.max_connections, per_address)
        server.run(groups, server.Plan(args.threads, args.demo, logs.configure, guard))
    finally:
        if demo is not None:
            demo.stop()
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most 3600")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the HTTP functions with waitress")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=7071)
    serve_parser.add_argument(
        "--workers",
        type=_positive,
        help="processes (default: one per CPU when RATE_LIMIT_STORAGE is redis, else 1)",
    )
    serve_parser.add_argument(
        "--threads", type=_positive, default=DEFAULT_THREADS, help="threads per process (default %(default)s)"
    )
    serve_parser.add_argument(
        "--request-timeout", type=_seconds, default=10.0,
        help="seconds for a request's headers and body to arrive, from its first byte (default %(default)s)",
    )
    serve_parser.add_argument(
        "--max-connections", type=_positive, default=1000,
        help="open connections per process (default %(default)s)",
    )
    serve_parser.add_argument(
        "--per-address", type=_positive, default=100,
        help="open connections per client address, when serve faces the clients (default %(default)s)",
    )
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
