"""What the Functions host passes a function as `context`, for calling the registered functions
in process: the tests and the in-process benchmark use this one stand-in."""

from __future__ import annotations

import threading
from typing import Any

import azure.functions as func

from tests.served import ROOT


class InvocationContext(func.Context):
    """The least the host passes; only the invocation id matters to the app (it is audited)."""

    def __init__(self, invocation_id: str = "host-invocation-1", function_name: str = "test") -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(ROOT)

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None
