"""openapi.yaml as schemathesis reads it, and the checks that say a response matches it."""

from __future__ import annotations

from typing import Any

import requests
import schemathesis
from schemathesis import APIOperation, Case
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ROOT

OPENAPI = ROOT / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]
# Every answer is a listed status, with the listed content type, body schema and headers.
CONFORMANCE: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def load_schema() -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_path(OPENAPI)


def operation(schema: schemathesis.BaseSchema, method: str, path: str) -> Operation:
    found: Operation = schema[path][method.upper()]
    return found


def all_operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    paths: dict[str, dict[str, Any]] = schema.raw_schema["paths"]
    return [
        operation(schema, method, path)
        for path, item in paths.items()
        for method in item
        if method in HTTP_METHODS
    ]


def assert_conforms(
    schema: schemathesis.BaseSchema, response: requests.Response, *, method: str, path: str
) -> None:
    """Raise schemathesis' FailureGroup unless `response` is one the description lists, as listed."""
    case: AnyCase = operation(schema, method, path).Case(headers=dict(response.request.headers))
    case.validate_response(response, checks=CONFORMANCE)
