"""Command line: `python -m tokens serve [--host] [--port] [--workers] [--threads] [--demo
[--public-url URL]]` and `python -m tokens check [--verbose] [--live]`."""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # No cyclic garbage collection while the modules load: importing makes many objects and no
    # garbage, and the collections it set off cost about a tenth of serve's time to its first token.
    # Turned back on once the app is loaded (`main`, and `serve` before it serves).
    gc.disable()

import argparse
import contextlib
import errno
import importlib
import io
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from tokens.localfiles import LocalFiles, read_local_files
from tokens.settings import (
    SETTINGS,
    Settings,
    SettingsError,
    browser_problems,
    ca_bundle_of,
    is_loopback_host,
    load_settings,
    log_loaded,
)

DEMO_BANNER = """
==========================================================================================
  DEMO MODE: tokens come from the embedded Direct Line EMULATOR with an echo bot, not Azure.
  Nothing here talks to the Bot Framework. Open {url} to chat,
  or {url}widget.html for the chat behind a button, as on every page of a site.
==========================================================================================
"""
# Chosen by measurement (docs/hosted-mode.md): a thread waits out each Direct Line call, so a process
# answers at most threads / latency tokens a second; 16 keeps that above what one process's CPU
# can do at Direct Line's latencies, while more threads per process only lengthen the tail (GIL).
# Several processes are the default only when the rate-limit counts are shared: with memory:// each
# process would count on its own. Then one per CPU and one more: a process also waits on its
# sockets and the kernel, and on 2 CPUs three gave 10-20 % more tokens a second than two.
DEFAULT_THREADS = 16
# waitress watches its sockets with select(), which CPython caps at 512 sockets on Windows, its own
# listening and waking sockets included; past the cap a worker dies.
MAX_CONNECTIONS = 500 if sys.platform == "win32" else 100_000
DEFAULT_MAX_CONNECTIONS = min(1000, MAX_CONNECTIONS)

log = logging.getLogger("tokens")


def check(args: argparse.Namespace) -> int:
    local = read_local_files()
    if args.verbose:  # before load_settings applies the files: then everything is in the environment
        for name in SETTINGS:
            print(f"{name:<24} {local.source(name, os.environ) or 'default'}")
    try:
        settings = load_settings(local=local)
    except SettingsError as error:
        problems = list(error.problems)
    else:
        problems = browser_problems(settings)
    for problem in problems:
        print(f"{problem.setting}: {problem.message}", file=sys.stderr)
    if problems:
        return 1
    print("Settings are valid.")
    if not args.live:
        return 0
    from tokens.livecheck import run_live_checks

    outcomes = run_live_checks(settings)
    for outcome in outcomes:
        print(outcome.line, file=sys.stdout if outcome.ok else sys.stderr)
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def _is_unspecified(host: str) -> bool:
    """A bind-to-every-interface address, which the server itself cannot be called at."""
    try:
        return not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _callable_at(host: str) -> str:
    """Where this machine reaches a server bound to `host`: an unspecified address is called at the
    loopback address of its own family (`::` listens on IPv6 only)."""
    if not _is_unspecified(host):
        return host
    return "::1" if ":" in host else "127.0.0.1"


def _url_host(host: str) -> str:
    """A host as it is written in a URL: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def serve(args: argparse.Namespace) -> int:
    from tokens import trust

    # Parsed while the rest of the start-up runs (the settings then wait for it): the bundle that the
    # environment names; local.settings.json may name another, which the settings then load.
    loading = trust.load_soon(ca_bundle_of(os.environ)[1])
    from tokens import connections, logs, server

    logging.basicConfig(level=logging.INFO, handlers=[logs.stderr_handler()], force=True)
    local = read_local_files()
    misplaced = None if args.demo else _demo_option_given(args)
    if misplaced is not None:
        hint = "; otherwise set ALLOWED_ORIGINS to the page's origin" if misplaced == "--public-url" else ""
        log.error("%s is for --demo%s", misplaced, hint)
        return 1
    with contextlib.ExitStack() as cleanup:
        demo = None
        groups: list[list[socket.socket]] = []
        if args.demo:
            # The demo's settings point at its emulator, which must know the page's port first.
            found = _listen(args, 1, cleanup)
            if found is None:
                return 1
            groups = found
            try:
                demo = _start_demo(args, _page_host(args), groups[0][0].getsockname()[1])
            except ImportError as error:
                log.error("%s", _demo_needs(error))
                return 1
            cleanup.callback(demo.stop)
        # Read once, here; the workers are handed these, and read no environment of their own.
        loaded = _settings(local)
        if isinstance(loaded, SettingsError):
            log_loaded(loaded, peer_known=True)
            return 1
        if demo is None:
            found = _listen(args, args.workers or default_workers(loaded), cleanup)
            if found is None:
                return 1
            groups = found
        log_loaded(loaded, peer_known=True)
        workers = len(groups)
        _warn_about_workers(loaded, workers)
        if demo is not None:
            _announce(demo, args)
        log.info(
            "Serving /api on http://%s:%s with %d worker(s) of %d threads",
            _page_host(args), groups[0][0].getsockname()[1], workers, args.threads,
        )
        # Behind a proxy (more than one trusted hop) every connection comes from the proxy: counting
        # connections per address would throttle everyone at once.
        per_address = args.per_address if loaded.trusted_proxy_hops <= 1 else None
        guard = connections.Guard(
            args.request_timeout, args.max_connections, per_address, loaded.rate_limit_ipv6_prefix
        )
        wrap = None
        if demo is not None:
            wrap = demo.wrap
            groups = [demo.take_port(groups[0])]  # the demo's one port: the stream, and serve behind
        plan = server.Plan(args.threads, args.demo, logs.configure, guard, loaded, wrap)
        loading.join()  # before any worker is forked: a child must not inherit the lock it holds
        # What the first token request needs, loaded now (and shared by forked workers), then the
        # collector on again, with everything loaded so far set aside for good.
        importlib.import_module("tokens.service")
        gc.enable()
        gc.freeze()
        written = server.run(groups, plan)
    # When an audit record could not be written, the log is what failed: the exit status says so.
    return 0 if written else 1


def _settings(local: LocalFiles) -> Settings | SettingsError:
    try:
        return load_settings(local=local)
    except SettingsError as error:
        return error


def _listen(
    args: argparse.Namespace, workers: int, cleanup: contextlib.ExitStack
) -> list[list[socket.socket]] | None:
    """Listening sockets for each worker, closed when serve ends; None (said why) when the port is taken."""
    from tokens import server

    try:
        groups = server.listeners(args.host, args.port, workers)
    except OSError as error:
        log.error("Cannot listen on %s port %s: %s", args.host, args.port, error.strerror or error)
        return None
    for sock in {sock for sockets in groups for sock in sockets}:
        cleanup.callback(sock.close)
    return groups


def _page_host(args: argparse.Namespace) -> str:
    return _url_host(_callable_at(args.host))


def _start_demo(args: argparse.Namespace, page_host: str, port: int) -> Any:
    """The demo's emulator, started, with the settings pointed at it; ImportError when the demo or
    what it needs is missing."""
    from demo import Variant, start_demo

    variant = Variant(args.demo_enhanced_auth, args.demo_wrong_region, args.demo_token_ttl)
    return start_demo(page_host, port, args.public_url, variant)


def _demo_needs(error: ImportError) -> str:
    """What a demo that could not be imported needs, in one line."""
    if error.name in ("wsproto", "h11"):
        return "--demo needs the demo's own packages: pip install -r requirements-demo.txt"
    return "--demo needs the demo/ folder of the repository next to tokens/"


def _announce(demo: Any, args: argparse.Namespace) -> None:
    print(DEMO_BANNER.format(url=demo.page_url), file=sys.stderr, flush=True)
    log.info("%s", demo.bundle_note)
    if not is_loopback_host(args.host) and args.public_url is None:
        log.warning(
            "Demo mode bound to %s: only %s and its localhost twin are allowed origins; to open "
            "the page from another address, give that address with --public-url",
            args.host, demo.page_url,
        )


def default_workers(settings: Settings) -> int:
    """One process per CPU and one more where the rate limits are shared in Redis, one where they
    are not (each process would count on its own)."""
    return (os.cpu_count() or 1) + 1 if settings.rate_limit_storage != "memory://" else 1


def _warn_about_workers(settings: Settings, workers: int) -> None:
    if workers > 1 and settings.rate_limit_storage == "memory://":
        log.warning(
            "%d workers with RATE_LIMIT_STORAGE=memory://: each worker counts on its own, so a caller "
            "may get up to %d times RATE_LIMIT; use a redis:// store to share one count",
            workers, workers,
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _connections(text: str) -> int:
    value = _positive(text)
    if value > MAX_CONNECTIONS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CONNECTIONS} on this system")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0 and at most 3600")
    return value


_DEMO_OPTIONS = ("public_url", "demo_enhanced_auth", "demo_wrong_region", "demo_token_ttl")


def _demo_option_given(args: argparse.Namespace) -> str | None:
    """The first option given that only --demo takes, as written on the command line."""
    given = [name for name in _DEMO_OPTIONS if getattr(args, name) not in (None, False)]
    return "--" + given[0].replace("_", "-") if given else None


def _token_lifetime(text: str) -> int:
    value = _positive(text)
    if value > 86_400:
        raise argparse.ArgumentTypeError("must be at most 86400 seconds")
    return value


def _origin(text: str) -> str:
    """An exact http(s) origin, as a forwarded port's address is: no path, no wildcard."""
    from tokens.origins import parse_pattern

    origin = text.strip().rstrip("/").lower()  # as browsers send it: scheme and host in lower case
    pattern = parse_pattern(origin)
    if pattern is None or "*" in origin:
        raise argparse.ArgumentTypeError(
            "must be the http(s) origin the port is forwarded to, such as https://name-7071.app.github.dev"
        )
    return origin


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the HTTP functions with waitress")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=7071)
    serve_parser.add_argument(
        "--workers",
        type=_positive,
        help="processes (default: one per CPU and one more when RATE_LIMIT_STORAGE is redis, else 1)",
    )
    serve_parser.add_argument(
        "--threads", type=_positive, default=DEFAULT_THREADS, help="threads per process (default %(default)s)"
    )
    serve_parser.add_argument(
        "--request-timeout", type=_seconds, default=10.0,
        help="seconds for a request's headers and body to arrive, from its first byte (default %(default)s)",
    )
    serve_parser.add_argument(
        "--max-connections", type=_connections, default=DEFAULT_MAX_CONNECTIONS,
        help=f"open connections per process, at most {MAX_CONNECTIONS} (default %(default)s)",
    )
    serve_parser.add_argument(
        "--per-address", type=_positive, default=100,
        help="open connections per client address (an IPv6 client's network of RATE_LIMIT_IPV6_PREFIX), "
        "when serve faces the clients (default %(default)s)",
    )
    serve_parser.add_argument(
        "--demo", action="store_true", help="no secret needed: use the embedded Direct Line emulator"
    )
    serve_parser.add_argument(
        "--public-url", type=_origin, metavar="URL",
        help="with --demo: the address that forwards to this port (a dev container's or Codespaces' "
        "forwarded port), where the page will be opened",
    )
    serve_parser.add_argument(
        "--demo-enhanced-auth", action="store_true",
        help="with --demo: the emulator plays a Direct Line site with Enhanced authentication options "
        "on (the secret may not reconnect: resuming answers 409 resume_unavailable)",
    )
    serve_parser.add_argument(
        "--demo-wrong-region", action="store_true",
        help="with --demo: the emulator plays a regional bot asked through another region's host "
        "(403 RegionNotAllowed: every token request fails with upstream_error)",
    )
    serve_parser.add_argument(
        "--demo-token-ttl", type=_token_lifetime, metavar="SECONDS",
        help="with --demo: the emulator's token lifetime: 1800 as Direct Line's (default, or "
        "DEMO_TOKEN_TTL), 3600 as Copilot Studio's, or a few seconds to watch expiry and resuming",
    )
    serve_parser.set_defaults(run=serve)
    check_parser = commands.add_parser("check", help="validate the settings and list every problem")
    check_parser.add_argument(
        "--verbose", action="store_true",
        help="say where each setting comes from: environment, local.settings.json, .env or default",
    )
    check_parser.add_argument(
        "--live", action="store_true",
        help="also mint one real token with the configured secret (this opens one conversation)",
    )
    check_parser.set_defaults(run=check)
    args = parser.parse_args(argv)
    if args.run is not serve:  # serve turns the collector back on once it has loaded what it needs
        gc.enable()
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A path or value that the console's code page lacks (Windows, redirected) must not crash.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        result: int = args.run(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught, not at exit
    except OSError as error:
        # `check --verbose | head`: the reader has had enough; exit quietly, as other tools do.
        # Windows says so with EINVAL rather than EPIPE.
        on_windows = sys.platform == "win32" and error.errno == errno.EINVAL
        if not (isinstance(error, BrokenPipeError) or on_windows):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
