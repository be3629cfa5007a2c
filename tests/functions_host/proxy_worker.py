"""The worker side of the harness: runs under Python 3.13 in `.venv-py313`, where it stands in for
the platform's Python proxy worker and hands the host's messages to Microsoft's library worker,
`azure-functions-runtime`, exactly through the entry points the proxy worker calls.

On Python 3.13 the Functions host talks gRPC to a proxy worker that ships with the platform (never
with the app). The proxy worker imports `azure_functions_runtime` and, for each message from the
host, awaits one of its public coroutines with a request object that has `.name`, `.request` (the
host's `StreamingMessage`) and `.properties` (`{"protos": <the compiled protocol module>, "host":
<address>}` on worker init); it wraps what the coroutine returns in a `StreamingMessage` and sends it
back, and it forwards every log record as an `RpcLog`. This script does the same with these stand-ins:

- the protocol module is `FunctionRpc.proto` beside this file (a subset of the public protocol),
  compiled with grpcio-tools' protoc when the worker starts;
- the gRPC stream is this process's standard input and (original) standard output, one
  `StreamingMessage` a line in protobuf's JSON form; every message crosses the real protobuf wire
  format on the way out, as it would over gRPC. Anything the app itself prints goes to stderr.

The host's side, and what the harness leaves out, are described in `tests/functions_host/host.py`.
Run: `.venv-py313/bin/python tests/functions_host/proxy_worker.py` (the host starts it).
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import importlib.resources
import logging
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PROTO = HERE / "FunctionRpc.proto"

# content of the host's message -> (name the proxy worker gives the request, content of the answer,
# name of the runtime's coroutine)
ROUTES = {
    "worker_init_request": ("WorkerInitRequest", "worker_init_response", "worker_init_request"),
    "functions_metadata_request": (
        "WorkerMetadataRequest", "function_metadata_response", "functions_metadata_request",
    ),
    "function_load_request": ("FunctionLoadRequest", "function_load_response", "function_load_request"),
    "invocation_request": ("FunctionInvocationRequest", "invocation_response", "invocation_request"),
}

# Loggers whose records the proxy worker reports to the host as the system's, not the user's.
SYSTEM_LOGGERS = ("azure.functions", "azure_functions_worker", "azure_functions_runtime")

_invocation: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation", default=None)


@dataclass
class WorkerRequest:
    """What the proxy worker passes to each of the runtime's coroutines."""

    name: str
    request: Any
    properties: dict[str, Any] | None = None


def compile_protocol(out_dir: str) -> ModuleType:
    """protoc (from grpcio-tools) turns FunctionRpc.proto into the module the runtime calls `protos`."""
    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{HERE}", f"-I{well_known}", f"--python_out={out_dir}", str(PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc could not compile {PROTO}")
    sys.path.insert(0, out_dir)
    return importlib.import_module("FunctionRpc_pb2")


class Channel:
    """The worker's end of the stream: StreamingMessages out, one JSON line each, from any thread."""

    def __init__(self, out: IO[str], protos: ModuleType) -> None:
        from google.protobuf import json_format

        self._out = out
        self._protos = protos
        self._to_dict = json_format.MessageToDict
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        # Through the wire format and back, as gRPC would carry it: a message the runtime built
        # that protobuf cannot encode fails here, not silently.
        wire = self._protos.StreamingMessage.FromString(message.SerializeToString())
        line = json_dumps(self._to_dict(wire, always_print_fields_with_no_presence=True))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def json_dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


class RpcLogHandler(logging.Handler):
    """Every log record of the process goes to the host as an RpcLog, as the proxy worker does."""

    def __init__(self, channel: Channel, protos: ModuleType, runtime: ModuleType) -> None:
        super().__init__()
        self._channel = channel
        self._protos = protos
        self._runtime_invocation: contextvars.ContextVar[str | None] = runtime.invocation_id_cv
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        rpc_log = self._protos.RpcLog
        levels = (
            (logging.CRITICAL, rpc_log.Critical), (logging.ERROR, rpc_log.Error),
            (logging.WARNING, rpc_log.Warning), (logging.INFO, rpc_log.Information),
            (logging.DEBUG, rpc_log.Debug),
        )
        level = next((rpc for py, rpc in levels if record.levelno >= py), getattr(rpc_log, "None"))
        system = record.name.startswith(SYSTEM_LOGGERS)
        invocation_id = self._runtime_invocation.get() or _invocation.get() or ""
        log = rpc_log(
            invocation_id=invocation_id,
            category=record.name,
            level=level,
            message=self.format(record),
            log_category=rpc_log.System if system else rpc_log.User,
        )
        self._channel.send(self._protos.StreamingMessage(rpc_log=log))


class ProxyWorker:
    def __init__(self, channel: Channel, protos: ModuleType, runtime: ModuleType) -> None:
        self._channel = channel
        self._protos = protos
        self._runtime = runtime

    async def dispatch(self, message: Any) -> None:
        content = message.WhichOneof("content")
        if content not in ROUTES:
            raise ValueError(f"the harness does not handle {content!r}")
        name, answer, coroutine_name = ROUTES[content]
        properties = None
        if content == "worker_init_request":
            self._prepare_app(message.worker_init_request.function_app_directory)
            properties = {"protos": self._protos, "host": "127.0.0.1"}
        elif content == "invocation_request":
            _invocation.set(message.invocation_request.invocation_id)
        handler: Callable[[WorkerRequest], Awaitable[Any]] = getattr(self._runtime, coroutine_name)
        response = await handler(WorkerRequest(name, message, properties))
        reply = self._protos.StreamingMessage(request_id=message.request_id, **{answer: response})
        self._channel.send(reply)

    def _prepare_app(self, directory: str) -> None:
        # The proxy worker puts the app's directory first on sys.path (its dependency manager) and
        # starts the runtime's thread pool before it forwards the init request.
        os.chdir(directory)
        sys.path.insert(0, directory)
        self._runtime.start_threadpool_executor()

    def stop(self) -> None:
        self._runtime.stop_threadpool_executor()


def _fail(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        traceback.print_exception(exc, file=sys.stderr)
        os._exit(3)  # a broken harness must not look like a slow worker


async def serve(channel_out: IO[str], protos_dir: str) -> None:
    from google.protobuf import json_format

    protos = compile_protocol(protos_dir)
    import azure_functions_runtime as runtime

    channel = Channel(channel_out, protos)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if os.environ.get("PYTHON_ENABLE_DEBUG_LOGGING") else logging.INFO)
    root.addHandler(RpcLogHandler(channel, protos, runtime))
    worker = ProxyWorker(channel, protos, runtime)

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="host-stream", daemon=True).start()
    tasks: set[asyncio.Task[None]] = set()
    while (line := await lines.get()) is not None:
        message = json_format.Parse(line, protos.StreamingMessage())
        # Like the proxy worker: each message is handled in a task of its own.
        task = asyncio.create_task(worker.dispatch(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_fail)
    await asyncio.gather(*tasks)
    worker.stop()


def main() -> None:
    # The stream keeps the real stdout; whatever the app prints goes to stderr instead.
    channel_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    with tempfile.TemporaryDirectory(prefix="functionrpc-") as protos_dir:
        asyncio.run(serve(channel_out, protos_dir))


if __name__ == "__main__":
    main()
