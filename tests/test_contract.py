"""openapi.yaml against the running server, both ways.

schemathesis generates requests for every operation (bodies and headers, valid and invalid) and sends
them to `python -m tokens serve --demo` (the Direct Line emulator behind it, rate limits out of the
way): every answer must be a status the description lists, with its content type, schema and headers,
and never a server error. The other way, every route the app serves is described with its methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.conftest import ALLOWED, served
from tests.contract import CONFORMANCE, HTTP_METHODS, OPENAPI, AnyCase, Operation, all_operations, load_schema
from tests.served import ServedApp
from tokens import routes
from tokens.server import OPENAPI_PATH

# Per operation and generation mode: a few seconds in all. FUZZ_EXAMPLES=2000 searches harder.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ_ENV = {
    "ALLOWED_ORIGINS": f"{ALLOWED},https://*.contoso.com",
    "RATE_LIMIT": "1000000/minute",
    "GLOBAL_RATE_LIMIT": "1000000/minute",
}
CHECKS: list[CheckFunction] = [not_a_server_error, *CONFORMANCE]
# Besides what schemathesis generates for `Origin`: none, allowed exactly, allowed by the wildcard.
ORIGINS: list[str | None] = ["generated", None, ALLOWED, "https://chat.contoso.com"]

schema = load_schema()
OPERATIONS = all_operations(schema)

boundaries = load_schema()
boundaries.config.phases.update(phases=["examples", "coverage"])
boundaries.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True, database="none"
)


def _fuzz_cases() -> list[Any]:
    cases = []
    for operation in OPERATIONS:
        cases.append(pytest.param(operation, GenerationMode.POSITIVE, id=f"{operation.label} positive"))
        if operation.method.upper() == "POST":  # nothing else has a parameter that can be made invalid
            cases.append(pytest.param(operation, GenerationMode.NEGATIVE, id=f"{operation.label} negative"))
    return cases


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with served(FUZZ_ENV, tmp_path_factory.mktemp("contract"), demo=True, name="contract") as app:
        yield app


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(scope="module")
def direct_line_token(demo_app: ServedApp, session: requests.Session) -> str:
    """A real token from the emulator, so that fuzzed refreshes reach the 200 answer too."""
    response = session.post(f"{demo_app.base_url}/api/directline/token", json={}, timeout=10)
    token: str = response.json()["token"]
    return token


def _send(case: AnyCase, app: ServedApp, http: requests.Session) -> schemathesis.Response:
    return case.call(base_url=app.base_url, session=http, timeout=10, allow_redirects=False)


@pytest.mark.parametrize(("operation", "mode"), _fuzz_cases())
def test_fuzzed_requests_get_only_described_answers(
    operation: Operation,
    mode: GenerationMode,
    demo_app: ServedApp,
    session: requests.Session,
    direct_line_token: str,
) -> None:
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
        origin = data.draw(st.sampled_from(ORIGINS), label="origin")
        if origin is None:
            case.headers.pop("Origin", None)
        elif origin != "generated":
            case.headers["Origin"] = origin
        refresh = operation.path == "/api/directline/refresh" and "Authorization" in case.headers
        if refresh and data.draw(st.booleans(), label="real token"):
            case.headers["Authorization"] = f"Bearer {direct_line_token}"
        case.validate_response(_send(case, demo_app, session), checks=checks)

    fuzz()


@boundaries.parametrize()
def test_boundary_requests_get_only_described_answers(
    case: AnyCase, demo_app: ServedApp, session: requests.Session
) -> None:
    """schemathesis' coverage phase: each limit just inside and just outside, each required part missing."""
    response = _send(case, demo_app, session)
    case.validate_response(response, checks=[*CHECKS, negative_data_rejection])


def test_fuzzing_left_no_server_error_in_the_log(demo_app: ServedApp) -> None:
    """Runs after the fuzzing above: no request crashed a handler, even where the answer looked right."""
    log = demo_app.log_text()
    assert " ERROR " not in log
    assert "Traceback" not in log


# -- the other direction: what the app serves is what the description lists --------------------


def _described() -> dict[str, Any]:
    paths = schema.raw_schema["paths"]
    assert isinstance(paths, dict)
    return paths


def _described_methods() -> dict[str, set[str]]:
    return {
        path: {method.upper() for method in item if method in HTTP_METHODS}
        for path, item in _described().items()
    }


def test_every_route_the_app_serves_is_described_with_its_methods() -> None:
    served_routes = {f"/api/{route}": set(methods) for route, methods in routes.ROUTES.items()}
    described = _described_methods()
    for path, methods in served_routes.items():
        assert described.get(path) == methods, path


def test_every_described_path_is_served() -> None:
    served_paths = {f"/api/{route}" for route in routes.ROUTES} | {OPENAPI_PATH}
    assert set(_described()) == served_paths


def test_the_served_description_is_the_file(demo_app: ServedApp, session: requests.Session) -> None:
    response = session.get(f"{demo_app.base_url}{OPENAPI_PATH}", timeout=10)
    assert response.status_code == 200
    assert response.content == OPENAPI.read_bytes()
