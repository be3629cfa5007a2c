"""A real Redis server for the tests: `redis-server` on a free loopback port, nothing written to disk.

`.ci/run` installs Debian's `redis-server` package. Without it the Redis tests are skipped with a
visible reason on a developer machine, and fail when `CI=true`, so that CI cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.prerequisites import missing_prerequisite
from tests.served import free_port, stop_process

REDIS_SERVER = "redis-server"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The path of redis-server; skip (or fail under CI) when it is not installed."""
    path = shutil.which(REDIS_SERVER)
    if path is None:
        message = (
            "redis-server is not installed, so the tests against a real Redis cannot run; "
            "install Debian's redis-server package (apt-get install redis-server)"
        )
        missing_prerequisite(message)
    return path


class RedisServer:
    """One redis-server process; it can be stopped, started again on the same port, paused, resumed."""

    def __init__(self, binary: str, log_dir: Path) -> None:
        self.binary = binary
        self.log_dir = log_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def require_sign_in(self) -> redis.Redis:
        """Turn off the password-less default user, as Azure's Redis has none: from now on a new
        connection must sign in as a user of `add_user`. Returns an administrator's client."""
        password = secrets.token_urlsafe(16)
        with self.client() as client:
            add_user(client, "admin", password)
            client.acl_setuser("default", enabled=False)
        return redis.Redis(
            host="127.0.0.1", port=self.port, username="admin", password=password, socket_timeout=2,
            socket_connect_timeout=2,
        )

    def start(self) -> None:
        assert self.process is None, "already running"
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]
        log_path = self.log_dir / f"redis-{self.port}.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        self._wait_for_ping(log_path)

    def stop(self) -> None:
        """Stop the server; connections to its port are refused from now on."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        stop_process(process, STOP_TIMEOUT)

    def pause(self) -> None:
        """Freeze the server: connections are accepted by the kernel but nothing is ever answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def _wait_for_ping(self, log_path: Path) -> None:
        assert self.process is not None
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self.process = None
                    raise RuntimeError(f"redis-server exited early:\n{log_path.read_text(errors='replace')}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING:\n{log_path.read_text(errors='replace')}")


@contextlib.contextmanager
def running_redis(log_dir: Path) -> Iterator[RedisServer]:
    """A started Redis server, stopped on exit whatever happened."""
    binary = redis_server_binary()
    for attempt in range(3):  # another process may take the free port before redis-server binds it
        server = RedisServer(binary, log_dir)
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        server.stop()


def add_user(admin: redis.Redis, name: str, password: str) -> None:
    """A user allowed every command and key, as Azure's default access policy, with this password
    (added to any it has)."""
    admin.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], categories=["+@all"]
    )
