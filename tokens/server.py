"""Hosted mode: the route table (tokens/routes.py) served over WSGI with waitress, by one or more
worker processes of several threads each.

The server counts as one trusted front end: it appends the connection's peer address to
X-Forwarded-For, exactly as Azure's front end does, so `TRUSTED_PROXY_HOPS=1` is right when the
server faces the clients directly; it also passes that address on as the request's peer, which
`TRUSTED_PROXY_HOPS=0` uses.

With `workers > 1` each worker process has its own listening socket on the port (or, where the
kernel cannot spread connections across sockets, they share one), its own service, connection pool
and (with `memory://`) rate-limit counts.

Slow or greedy clients cannot starve the server: tokens/connections.py says how its connections
are kept (a cap per client network, a deadline for each request, idle places given to waiting
clients, headers parsed in linear time); the channel here applies it.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from tokens import routes
from tokens.body import MAX_BODY_BYTES
from tokens.connections import (
    MAX_REQUEST_HEADER,
    OVERDUE_SWEEP_SECONDS,
    AddressCount,
    Guard,
    LinearHeaderParser,
    close_overdue,
    make_room,
)
from tokens.errors import InvalidRequest, MethodNotAllowed, NotFound, PayloadTooLarge, ServiceError
from tokens.http import Request, Response, error_response
from tokens.notices import Notice
from tokens.settings import Settings

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from wsgiref.types import StartResponse, WSGIApplication

log = logging.getLogger("tokens.server")

API_PREFIX = "/api/"
ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/widget.html": "widget.html",
    "/token-client.js": "token-client.js",
    "/chat.js": "chat.js",
}
OPENAPI_PATH = "/api/openapi.yaml"
OPENAPI_FILE = ROOT / "openapi.yaml"
MAX_REQUEST_BODY = 1024 * 1024  # waitress refuses anything larger before the app sees it
BACKLOG = 1024
IDLE_TIMEOUT = 30  # seconds a kept-alive connection may wait, between requests, for the next one
GRACE_MARGIN = 10.0  # seconds, beyond UPSTREAM_TIMEOUT, that a stopping server waits for its requests
STOP_MARGIN = 5.0  # seconds more that the first process waits for its workers to stop
LOOP_SECONDS = 0.2  # one turn of the event loop at most: how soon a stop signal is noticed
ANSWER_SECONDS = 2.0  # after the requests finished, for their answers to go out


class HostedApp:
    """The WSGI application: `/api/<route>` from the route table, the OpenAPI description, and
    in demo mode the sample page's files."""

    def __init__(self, serve_pages: bool = False) -> None:
        self.serve_pages = serve_pages

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "") or "/"
        if path.startswith(API_PREFIX) and path != OPENAPI_PATH:
            response = routes.answer(path[len(API_PREFIX) :], core_request(environ))
            status, headers, body = response.status, list(response.all_headers().items()), response.body
        else:
            status, headers, body = self._file(environ["REQUEST_METHOD"].upper(), path)
        start_response(f"{status} {_REASONS.get(status, 'Unknown')}", headers)
        return [body]

    def _file(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        source = OPENAPI_FILE if path == OPENAPI_PATH else None
        if source is None and self.serve_pages and path in PAGES:
            source = WEB_DIR / PAGES[path]
        if source is None or not source.is_file():
            return _error(NotFound())
        if method not in ("GET", "HEAD"):
            status, headers, body = _error(MethodNotAllowed())
            return status, [*headers, ("Allow", "GET, HEAD")], body
        content_type = _CONTENT_TYPES.get(source.suffix, "application/octet-stream")
        headers = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
        return 200, headers, b"" if method == "HEAD" else source.read_bytes()


def core_request(environ: dict[str, Any]) -> Request:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    peer = environ.get("REMOTE_ADDR") or None
    if peer:
        forwarded = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded}, {peer}" if forwarded else peer
    # Read one byte past the limit at most: enough for the core to answer 413, never a huge body.
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(min(length, MAX_BODY_BYTES + 1)) if length > 0 else b""
    return Request(
        environ["REQUEST_METHOD"].upper(), headers, body, peer=peer, invocation_id=os.urandom(16).hex()
    )


def _error(error: ServiceError) -> tuple[int, list[tuple[str, str]], bytes]:
    response: Response = error_response(error)
    return response.status, list(response.all_headers().items()), response.body


# -- running ----------------------------------------------------------------------------------


def listeners(host: str, port: int, workers: int) -> list[list[socket.socket]]:
    """Listening sockets for each worker; OSError (e.g. the port is in use).

    Where the kernel can spread connections across sockets that share a port (SO_REUSEPORT on
    Linux), each worker gets sockets of its own: a worker then gets its share of the connections
    rather than whatever its `accept` wins, which keeps one worker from queueing while another
    idles. Elsewhere the workers share one set of sockets."""
    share = workers > 1 and sys.platform == "linux"
    first = listen(host, port, share_port=share)
    if not share:
        return [first] * workers
    port = first[0].getsockname()[1]
    return [first] + [listen(host, port, share_port=True) for _ in range(workers - 1)]


def listen(host: str, port: int, *, share_port: bool = False) -> list[socket.socket]:
    """Bound, listening sockets for every address of `host`; OSError (e.g. the port is in use).
    `share_port`: SO_REUSEPORT, so that other workers' sockets may listen on the same port."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if sys.platform == "win32":
                # Windows lets a socket on one address share a port that another process holds on
                # every address, with no option set: `func start` on 7071 would lose its loopback
                # traffic. Exclusive use makes a busy port the one clear error it is elsewhere.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:  # on Windows SO_REUSEADDR would let another process take the port over
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share_port and sys.platform == "linux":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            if port == 0:  # every address of the host on the one port the first was given
                port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Plan(NamedTuple):
    """How each serving process serves."""

    threads: int
    serve_pages: bool  # the demo's sample pages at /
    # Runs first in every serving process (it configures logging) and returns what to run when that
    # process stops: it flushes the logs and says whether every audit record was written.
    setup_process: Callable[[], Callable[[], bool]]
    guard: Guard
    settings: Settings  # read once, by the first process; the workers read no environment
    # The demo puts its emulator's browser routes in front of the application (one process only:
    # the demo is not pickled for other processes).
    wrap: Callable[[WSGIApplication], WSGIApplication] | None = None


def run(groups: list[list[socket.socket]], plan: Plan) -> bool:
    """Serve until SIGINT or SIGTERM (Ctrl+C or Ctrl+Break on Windows), with one worker process per
    group of sockets (from `listeners`); then stop accepting, let the requests in flight finish
    within the grace period, and flush the log. True when every audit record was written."""
    _allow_open_files(plan.guard.max_connections * len(groups) + 256)
    if len(groups) == 1:
        return _serve(groups[0], plan)
    new_process, forks = _process_kind()
    every = {sock for sockets in groups for sock in sockets}
    # A forked worker inherits every socket: it closes the others', so that a worker that stops
    # accepting stops its socket taking connections (nobody else holds it open).
    processes = [
        new_process(
            target=_worker,
            args=(sockets, [sock for sock in every if forks and sock not in sockets], plan, os.getpid()),
            name=f"tokens-worker-{number}",
        )
        for number, sockets in enumerate(groups, start=1)
    ]
    with _stop_on_signals(_raise_stop):
        try:
            for process in processes:
                process.start()
            for sock in every:  # the workers hold them now; this process accepts nothing
                sock.close()
            while all(process.is_alive() for process in processes):
                time.sleep(0.2)
            log.error("A worker process exited; stopping the others")
        except _Stop:
            pass
        finally:
            _stop_workers(processes, grace(plan.settings))
            for sock in every:
                sock.close()
    return all(process.exitcode == 0 for process in processes)


def grace(settings: Settings) -> float:
    """How long a stopping server waits for its requests in flight: one request's longest time
    (Direct Line's deadline, and the identity provider's, Redis's and the audit write's) and a margin."""
    return settings.upstream_timeout + GRACE_MARGIN


def _stop_workers(processes: list[BaseProcess], seconds: float) -> None:
    """Ask each worker to stop as a signal would, wait for them to finish their requests, and end
    the ones that do not in time."""
    if sys.platform != "win32":
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker stops as serve does (_serve)
    # On Windows terminate() is TerminateProcess (no finally, no log flush); Ctrl+C reached every
    # process of the console already, and they stop by themselves.
    deadline = time.monotonic() + seconds + STOP_MARGIN
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            log.error("Worker %s did not stop in time; ending it", process.name)
            process.kill()
            process.join(5)


def _process_kind() -> tuple[Callable[..., BaseProcess], bool]:
    """fork where there is one (True): it shares the sockets and the imported modules; elsewhere
    (Windows) spawn, which passes each worker its own sockets through multiprocessing."""
    import multiprocessing  # only here: one process needs none of it (and starts faster)

    if sys.platform != "win32" and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork").Process, True
    return multiprocessing.get_context("spawn").Process, False


def _worker(sockets: list[socket.socket], others: list[socket.socket], plan: Plan, parent: int) -> None:
    for sock in others:
        sock.close()
    # A worker must not outlive a parent that was killed outright (and so could not stop it).
    def watch_parent() -> None:
        if sys.platform == "win32":  # getppid() goes on answering a dead parent's id there
            import multiprocessing

            parent_process = multiprocessing.parent_process()
            if parent_process is not None:
                parent_process.join()
        else:
            while os.getppid() == parent:
                time.sleep(1.0)
        # As Ctrl-C would: the main thread stops serving and flushes the logs, on every platform
        # (os.kill with SIGTERM is an outright kill on Windows).
        _thread.interrupt_main(signal.SIGINT)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    if not _serve(sockets, plan):
        sys.exit(1)


def _serve(sockets: list[socket.socket], plan: Plan) -> bool:
    """Serve on `sockets` in this process until a stop signal; then drain. True when every audit
    record was written."""
    finish = plan.setup_process()
    routes.configure(plan.threads, plan.settings)
    try:
        stopping = threading.Event()
        with _stop_on_signals(lambda signum, frame: stopping.set()):
            app: WSGIApplication = HostedApp(plan.serve_pages)
            if plan.wrap is not None:
                app = plan.wrap(app)
            loop = _waitress(app, sockets, plan.threads, plan.guard)
            socket_map = loop.map
            listening = [listener.socket for listener in _listeners(socket_map)]
            next_sweep = 0.0
            while not stopping.is_set():
                make_room(socket_map, plan.guard.max_connections, listening)
                loop.turn()
                now = time.time()
                if now >= next_sweep:
                    for channel in close_overdue(socket_map, now):
                        loop.touch(channel)
                    _say_if_busy(loop.server.task_dispatcher, plan.threads)
                    next_sweep = now + OVERDUE_SWEEP_SECONDS
            _drain(loop, grace(plan.settings))
    finally:
        written = finish()
    return written


_all_busy = Notice(log, logging.WARNING)


def _say_if_busy(dispatcher: Any, threads: int) -> None:
    waiting = len(dispatcher.queue)  # a deque: its length is read safely without the lock
    if waiting:
        _all_busy.write(
            "All %d threads are busy and %d requests wait for one: consider more --threads or --workers",
            threads,
            waiting,
        )


class _Loop(NamedTuple):
    """waitress's server and the event loop that runs it: the Watcher on Linux, else waitress's own."""

    server: Any
    map: dict[int, Any]
    watcher: Any  # tokens.eventloop.Watcher (Linux), or None

    def turn(self, seconds: float = LOOP_SECONDS) -> None:
        """One turn of the event loop: a signal is noticed within `seconds`."""
        if self.watcher is not None:
            self.watcher.turn(seconds)
        else:
            from waitress import wasyncore

            wasyncore.loop(timeout=seconds, map=self.map, use_poll=self.server.adj.asyncore_use_poll, count=1)

    def touch(self, channel: Any) -> None:
        if self.watcher is not None:
            self.watcher.touch(channel)


def _listeners(socket_map: dict[int, Any]) -> list[Any]:
    from waitress.server import BaseWSGIServer

    return [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]


def _drain(loop: _Loop, seconds: float) -> None:
    """Stop accepting; let the requests already taken finish and their answers go out, for
    `seconds` at most; then stop the threads. Every request that reached the app writes its audit
    record before it answers, so none is lost unless it outlives the grace period."""
    from waitress import wasyncore

    for listener in _listeners(loop.map):
        listener.accepting = False
        # The listening socket only: its trigger still wakes the loop when an answer is ready.
        wasyncore.dispatcher.close(listener)
    dispatcher = loop.server.task_dispatcher
    deadline = time.monotonic() + seconds
    if _busy(dispatcher):
        log.info("Stopping: waiting up to %g s for the requests in flight", seconds)
    while _busy(dispatcher) and time.monotonic() < deadline:
        loop.turn(0.1)
    sending = time.monotonic() + ANSWER_SECONDS  # the answers just made: out to their clients
    while _answers_pending(loop.map) and time.monotonic() < min(sending, deadline + ANSWER_SECONDS):
        loop.turn(0.05)
    if _busy(dispatcher):
        log.error("Stopping with requests still in flight after %g s", seconds)
    dispatcher.shutdown(cancel_pending=True, timeout=1)
    if loop.watcher is not None:
        loop.watcher.close()


def _busy(dispatcher: Any) -> bool:
    with dispatcher.lock:
        return bool(dispatcher.queue) or dispatcher.active_count > 0


def _answers_pending(socket_map: dict[int, Any]) -> bool:
    return any(getattr(channel, "total_outbufs_len", 0) for channel in list(socket_map.values()))


class _Stop(SystemExit):
    """Raised in the first process of several by SIGTERM/SIGINT, so that it stops waiting on its
    workers and stops them."""


@contextlib.contextmanager
def _stop_on_signals(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _allow_open_files(wanted: int) -> None:
    """Raise this process's limit of open files towards `wanted` (each connection is one), as far as
    the hard limit allows: the usual soft limit of 1024 is below what `max_connections` promises.
    Windows has no such limit."""
    if sys.platform != "win32":
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, ceiling), hard))


def _waitress(app: WSGIApplication, sockets: list[socket.socket], threads: int, guard: Guard) -> _Loop:
    """A waitress server on these sockets, guarded against slow and greedy clients (`Guard`), whose
    own error answers (a bad Content-Length, a body over MAX_REQUEST_BODY, oversized headers, given
    before the app sees the request) come in the service's JSON error shape, so that every client
    meets one shape.

    The guard lives in the connection's channel, on waitress's one event-loop thread: `received`
    starts a request's clock at its first byte (`close_overdue`, between turns of the loop, closes the
    connection when it runs out), and the channel's creation and removal count the connections of
    each client network."""
    from waitress.channel import HTTPChannel
    from waitress.server import create_server
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            # waitress' own message can quote the request; a fixed one echoes nothing.
            parsed: Any = self.request  # the stubs type it as the error; it is the parsed request
            error: ServiceError = InvalidRequest("The HTTP request is malformed.")
            if parsed.error.code == 413:
                error = PayloadTooLarge()
            elif parsed.error.code == 431:
                error = InvalidRequest(f"The request's headers are larger than {MAX_REQUEST_HEADER} bytes.")
            status, headers, body = _error(error)
            self.status = f"{status} {_REASONS[status]}"
            self.response_headers = [*self.response_headers, *headers]
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    count = AddressCount(guard)
    socket_map: dict[int, Any] = {}
    watcher: Any = None  # waitress's own loop, except on Linux (tokens/eventloop.py)
    if sys.platform == "linux":
        from tokens.eventloop import Watcher

        watcher = Watcher()
        socket_map = watcher.map

    class GuardedChannel(HTTPChannel):
        error_task_class = JsonErrorTask
        parser_class = LinearHeaderParser

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
            super().__init__(server, sock, addr, adj, map)
            # The first request must arrive in time too: a connection that sends nothing is a place held.
            self.request_started: float = self.creation_time
            self.request_due: float | None = self.creation_time + guard.request_timeout
            self.counted_network: str | None = None
            if count.counting:
                self.counted_network = count.network(str(addr[0] if isinstance(addr, tuple) else addr))
                if not count.add(self.counted_network):
                    self.will_close = True  # closed on the loop's next turn, before reading a byte

        def received(self, data: bytes) -> bool:
            if self.request_due is None and self.request is None and data:
                self.request_started = time.time()  # a new request begins
                self.request_due = self.request_started + guard.request_timeout
            result: bool = super().received(data)
            if self.request is None:  # nothing half-received: until the next request, no clock
                self.request_due = None
            return result

        def service(self) -> None:
            if watcher is None:
                super().service()
            else:
                with watcher.serving(self):  # the loop is woken about this connection when it is done
                    super().service()
            # requests_lock (not in waitress's stubs) is held by the loop while it reads a request.
            with cast(Any, self).requests_lock:
                if self.request is not None:
                    # The start of the next request came with this one, and waitress did not read
                    # the rest while serving: its clock starts now, not when the server stopped reading.
                    self.request_started = time.time()
                    self.request_due = self.request_started + guard.request_timeout

        def del_channel(self, map: Any = None) -> None:
            # Every way a channel is closed ends here (waitress's handle_close skips close()).
            if self.counted_network is not None:
                count.remove(self.counted_network)
                self.counted_network = None
            super().del_channel(map)

    server: Any = create_server(
        app,
        map=socket_map,
        sockets=sockets,
        threads=threads,
        max_request_body_size=MAX_REQUEST_BODY,
        max_request_header_size=MAX_REQUEST_HEADER,
        ident="tokens",
        # Keep X-Forwarded-For: TRUSTED_PROXY_HOPS, not waitress, decides which entries to believe.
        clear_untrusted_proxy_headers=False,
        connection_limit=guard.max_connections,
        channel_timeout=IDLE_TIMEOUT,
        cleanup_interval=5,
        # poll(): select() cannot watch descriptors numbered above 1023 (not on Windows: no poll()).
        asyncore_use_poll=os.name != "nt",
    )
    # One listening server, or several (a host name with IPv4 and IPv6 addresses) in one map.
    for listener in _listeners(socket_map):
        listener.channel_class = GuardedChannel
        if watcher is not None:
            listener.pull_trigger = watcher.waking(listener.pull_trigger)
            watcher.always(listener, listener.trigger)
    return _Loop(server, socket_map, watcher)


_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".yaml": "application/yaml; charset=utf-8",
}

_REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 413: "Payload Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}

if sys.platform == "win32":  # pragma: no cover - no SIGTERM to catch there
    # Ctrl-C, and Ctrl-Break: the one console event another program can send to stop serve.
    _STOP_SIGNALS = (signal.SIGINT, signal.SIGBREAK)
