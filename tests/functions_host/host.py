"""A stand-in for the Azure Functions host, driving the app under Microsoft's own Python 3.13
library worker (`azure-functions-runtime`), so that indexing `function_app.py` and converting the
host's HTTP and timer messages into `func.HttpRequest` and `func.TimerRequest` are Microsoft's code,
not ours.

How it runs: `FunctionsHost` (this module, in the test process) starts
`.venv-py313/bin/python tests/functions_host/proxy_worker.py` and speaks the language-worker protocol
with it, one `StreamingMessage` a line in protobuf's JSON form over the child's stdin and stdout.
The child stands in for the platform's proxy worker: it turns each line into the protobuf message
(compiled from `FunctionRpc.proto`) and awaits the runtime's entry point for it
(`worker_init_request`, `functions_metadata_request`, `function_load_request`, `invocation_request`),
the way the platform's proxy worker does, and sends back the answer and every log record (`RpcLog`).

What it reproduces of the real host, in the host's order and message shapes:
- WorkerInitRequest with the host version, the worker and function app directories;
- FunctionsMetadataRequest (worker indexing), then one FunctionLoadRequest per indexed function,
  carrying the function id and the metadata the worker returned;
- InvocationRequest with a fresh invocation id, the function id, the trigger as input data under
  the binding name from the metadata, trigger metadata (`sys`; for HTTP `Headers` and `Query`; for
  the timer the TimerInfo JSON), and a W3C trace context;
- HTTP requests as the host converts them for a worker with the capabilities RawHttpBodyBytes and
  RpcHttpBodyOnly (which the runtime announces): an RpcHttp with method, full URL (route prefix `api`),
  header names lower-cased, query without empty values, and the body, only when there is one, as
  TypedData bytes with no rawBody; the answer read back from the InvocationResponse's return value;
- the timer's TimerInfo as TypedData JSON (`Schedule`, `ScheduleStatus`, `IsPastDue`);
- the RpcLog stream, with each record's logger name, level and invocation id;
- many invocations in flight at once, from any number of threads: each answer goes to the
  caller of its request id, whatever order the worker answers in.

What it leaves out: the gRPC channel itself and StartStream; the Functions host's own HTTP pipeline
(routing, auth levels, CORS settings, request size limits, proxies: the harness calls a function by
its name, and checks the route, methods and auth level only as indexed metadata); worker status,
heartbeats, cancellation, terminate, environment reload (placeholder mode), shared-memory transfer,
HTTP streaming (the FastAPI extension), retries, claims identities, cookies and nullable header
dictionaries, and the JSON body's properties that the host adds to the trigger metadata for binding
expressions. Host version and trace context values are plausible, not a real host's.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from tokens.settings import SETTINGS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUNTIME_VENV = ROOT / ".venv-py313"
RUNTIME_PYTHON = RUNTIME_VENV / "bin" / "python"
PROXY_WORKER = HERE / "proxy_worker.py"
HOST_VERSION = "4.1040.300.0"
BASE_URL = "http://localhost:7071"
ROUTE_PREFIX = "api"
START_TIMEOUT = 60.0
REPLY_TIMEOUT = 30.0
LOG_WAIT = 5.0

Message = dict[str, Any]


def typed_json(value: Any) -> Message:
    return {"json": json.dumps(value)}


def typed_bytes(value: bytes) -> Message:
    return {"bytes": base64.b64encode(value).decode("ascii")}


def body_bytes(typed: Message) -> bytes:
    """An RpcHttp body (TypedData in protobuf's JSON form) as bytes; an absent body as b''."""
    if "bytes" in typed:
        return base64.b64decode(typed["bytes"])
    return str(typed.get("string", typed.get("json", ""))).encode()


@dataclass(frozen=True)
class Binding:
    """One binding of an indexed function, from the metadata's raw bindings."""

    name: str
    type: str
    direction: str
    settings: Mapping[str, Any]

    @property
    def is_trigger(self) -> bool:
        return self.direction == "IN" and self.type.endswith("Trigger")


@dataclass(frozen=True)
class IndexedFunction:
    name: str
    function_id: str
    metadata: Message

    @property
    def bindings(self) -> list[Binding]:
        found = []
        for raw in self.metadata["rawBindings"]:
            binding = json.loads(raw)
            found.append(Binding(binding["name"], binding["type"], binding["direction"], binding))
        return found

    @property
    def trigger(self) -> Binding:
        (trigger,) = [binding for binding in self.bindings if binding.is_trigger]
        return trigger


@dataclass(frozen=True)
class Invocation:
    invocation_id: str
    response: Message  # the InvocationResponse
    first_log: int  # where this invocation's RpcLog messages start in the host's log stream

    @property
    def status(self) -> str:
        status: str = self.response["result"]["status"]
        return status

    @property
    def exception(self) -> Message | None:
        exception: Message | None = self.response["result"].get("exception")
        return exception


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP function's answer, read from the InvocationResponse's return value."""

    invocation: Invocation
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Stream:
    """The host's end of the stream: a thread reads the worker's lines as they come and hands each
    answer to the caller waiting for its request id, so that many invocations can be in flight at
    once, as on the real host."""

    stdout: IO[str]
    keep_logs: bool = True
    logs: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _waiting: dict[str, queue.Queue[Message | None]] = field(default_factory=dict)
    _ended: bool = False

    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._read, name="worker-stream", daemon=True)
        self.thread.start()

    def expect(self, request_id: str) -> queue.Queue[Message | None]:
        """Where the answer to `request_id` will arrive (None: the worker exited first). Called
        before the request is sent, so that no answer can come before anyone waits for it."""
        answers: queue.Queue[Message | None] = queue.Queue(maxsize=1)
        with self.lock:
            if self._ended:
                answers.put(None)
            else:
                self._waiting[request_id] = answers
        return answers

    def forget(self, request_id: str) -> None:
        with self.lock:
            self._waiting.pop(request_id, None)

    def close(self) -> None:
        """After the worker exited: the reader has seen the end of the stream."""
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.stdout.close()

    def _read(self) -> None:
        for line in self.stdout:
            message: Message = json.loads(line)
            with self.lock:
                if "rpcLog" in message:
                    if self.keep_logs:
                        self.logs.append(message["rpcLog"])
                    continue
                answers = self._waiting.pop(message.get("requestId", ""), None)
            if answers is not None:  # an answer nobody waits for any more (timed out) is dropped
                answers.put(message)
        with self.lock:  # the worker's stdout closed: it exited
            self._ended = True
            waiting, self._waiting = self._waiting, {}
        for answers in waiting.values():
            answers.put(None)


class WorkerFailed(AssertionError):
    pass


class FunctionsHost:
    """Starts the worker, initializes it, indexes and loads the app, then invokes its functions."""

    def __init__(
        self, app_dir: Path, env: Mapping[str, str], stderr_path: Path, *, keep_logs: bool = True
    ) -> None:
        self.app_dir = app_dir
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self._process = subprocess.Popen(
            [str(RUNTIME_PYTHON), str(PROXY_WORKER)],
            cwd=app_dir,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        assert self._process.stdout is not None
        self._stream = _Stream(self._process.stdout, keep_logs=keep_logs)
        self._stream.start()
        self._write_lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self.init_response: Message = {}
        self.metadata_response: Message = {}
        self.load_responses: dict[str, Message] = {}
        self.functions: dict[str, IndexedFunction] = {}

    @property
    def pid(self) -> int:
        """The worker's process id (the benchmarks read its CPU time from /proc)."""
        return self._process.pid

    # -- the protocol ---------------------------------------------------------------------------

    def exchange(self, content: str, request: Message, answer: str, timeout: float = REPLY_TIMEOUT) -> Message:
        """Send one host message and wait for the worker's answer to it; safe to call from many
        threads at once."""
        request_id = f"host-{next(self._request_ids)}"
        stdin = self._process.stdin
        assert stdin is not None
        answers = self._stream.expect(request_id)
        line = json.dumps({"requestId": request_id, content: request}) + "\n"
        with self._write_lock:  # one whole line at a time, as gRPC sends one whole message
            stdin.write(line)
            stdin.flush()
        try:
            reply = answers.get(timeout=timeout)
        except queue.Empty:
            self._stream.forget(request_id)
            raise WorkerFailed(f"no {answer} within {timeout} s{self._stderr_tail()}") from None
        if reply is None:
            raise WorkerFailed(f"the worker exited before its {answer}{self._stderr_tail()}")
        if answer not in reply:
            raise WorkerFailed(f"the worker answered {request_id} without a {answer}: {sorted(reply)}")
        answered: Message = reply[answer]
        return answered

    def start(self) -> None:
        """Worker init, indexing, and one load per indexed function, as the host starts a worker."""
        self.init_response = self.exchange(
            "workerInitRequest",
            {
                "hostVersion": HOST_VERSION,
                "workerDirectory": str(PROXY_WORKER.parent),
                "functionAppDirectory": str(self.app_dir),
            },
            "workerInitResponse",
            timeout=START_TIMEOUT,
        )
        self._require_success("worker init", self.init_response)
        self.metadata_response = self.exchange(
            "functionsMetadataRequest", {"functionAppDirectory": str(self.app_dir)}, "functionMetadataResponse"
        )
        self._require_success("indexing", self.metadata_response)
        for metadata in self.metadata_response["functionMetadataResults"]:
            function = IndexedFunction(metadata["name"], metadata["functionId"], metadata)
            self.functions[function.name] = function
            self.load_responses[function.name] = self.exchange(
                "functionLoadRequest",
                {"functionId": function.function_id, "metadata": metadata},
                "functionLoadResponse",
            )

    def _require_success(self, step: str, response: Message) -> None:
        if response["result"]["status"] != "Success":
            exception = response["result"].get("exception") or {}
            raise WorkerFailed(
                f"{step} failed: {exception.get('message')}\n{exception.get('stackTrace', '')}{self._stderr_tail()}"
            )

    def invoke(self, name: str, trigger: Message, trigger_metadata: Mapping[str, Message]) -> Invocation:
        function = self.functions[name]
        invocation_id = str(uuid.uuid4())
        with self._stream.lock:
            first_log = len(self._stream.logs)
        response = self.exchange(
            "invocationRequest",
            {
                "invocationId": invocation_id,
                "functionId": function.function_id,
                "inputData": [{"name": function.trigger.name, "data": trigger}],
                "triggerMetadata": {"sys": typed_json(_system_data(name)), **trigger_metadata},
                "traceContext": {"traceParent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"},
            },
            "invocationResponse",
        )
        return Invocation(invocation_id, response, first_log)

    # -- triggers as the host builds them -----------------------------------------------------------

    def invoke_http(
        self,
        name: str,
        method: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        route = self.functions[name].trigger.settings["route"]
        query = {key: value for key, value in (query or {}).items() if value}
        url = f"{BASE_URL}/{ROUTE_PREFIX}/{route}"
        if query:
            url += "?" + urlencode(query)
        all_headers = {"host": BASE_URL.split("://", 1)[1]}
        if body:
            all_headers["content-length"] = str(len(body))
        all_headers.update({key.lower(): value for key, value in (headers or {}).items()})
        http: Message = {"method": method, "url": url, "headers": all_headers, "query": query, "params": {}}
        if body:  # the host sends no body at all for an empty one
            http["body"] = typed_bytes(body)
        invocation = self.invoke(
            name, {"http": http}, {"Headers": typed_json(all_headers), "Query": typed_json(query)}
        )
        if invocation.status != "Success":
            raise WorkerFailed(f"{name} failed in the runtime: {invocation.exception}")
        returned = invocation.response["returnValue"]["http"]
        return HttpAnswer(
            invocation, int(returned["statusCode"]), returned["headers"], body_bytes(returned.get("body", {}))
        )

    def invoke_timer(self, name: str, *, past_due: bool = False) -> Invocation:
        now = datetime.now(UTC)
        timer_info = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {
                "Last": _iso(now - timedelta(minutes=5)),
                "Next": _iso(now + timedelta(minutes=5)),
                "LastUpdated": _iso(now - timedelta(minutes=5)),
            },
            "IsPastDue": past_due,
        }
        trigger = typed_json(timer_info)
        return self.invoke(name, trigger, {self.functions[name].trigger.name: trigger})

    # -- the log stream ---------------------------------------------------------------------------

    def logs(
        self, invocation: Invocation, category: str | None, where: Callable[[str], bool] = lambda _: True
    ) -> list[Message]:
        """The RpcLogs since the invocation started, of one logger (None: any) and with a message that
        `where` accepts. Waits up to LOG_WAIT seconds for the first, as the app may log from another
        thread after it answered."""
        deadline = time.monotonic() + LOG_WAIT
        while True:
            with self._stream.lock:
                since = self._stream.logs[invocation.first_log :]
            found = [
                log for log in since if category in (None, log["category"]) and where(log["message"])
            ]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()  # end of stream: the worker finishes what it has and exits
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stream.close()
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")[-4000:]
        return f"\n--- worker stderr ({self.stderr_path}) ---\n{text}" if text else ""

    @classmethod
    @contextlib.contextmanager
    def started(
        cls, app_dir: Path, env: Mapping[str, str], stderr_path: Path, *, keep_logs: bool = True
    ) -> Iterator[FunctionsHost]:
        host = cls(app_dir, env, stderr_path, keep_logs=keep_logs)
        try:
            host.start()
            yield host
        finally:
            host.close()


def worker_environment(settings: Mapping[str, str], app_dir: Path) -> dict[str, str]:
    """The worker's whole environment: the app settings, what the host sets for a Python worker, and
    the little a process needs; nothing else of this process's (no stray app setting, no PYTHONPATH
    pointing Python 3.13 at this interpreter's packages). Every setting of the SPEC is present, empty
    where the test sets none, so that a developer's own .env in the app directory cannot fill it in."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR", "LANG") if key in os.environ}
    env.update(dict.fromkeys(SETTINGS, ""))
    env.update(
        {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsScriptRoot": str(app_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(settings)
    return env


def _system_data(name: str) -> dict[str, str]:
    """The `sys` binding data the host adds to every invocation."""
    return {"MethodName": name, "UtcNow": _iso(datetime.now(UTC)), "RandGuid": str(uuid.uuid4())}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
