"""The function app as Azure sees it: registered functions read through `app.get_functions()`, and
the HTTP functions run as plain calls with `func.HttpRequest`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

import function_app
from tests.conftest import ROOT, base_env
from tests.fakes import FakeDirectLine, refused_url
from tokens.settings import is_ncrontab

FUNCTIONS = {function.get_function_name(): function for function in function_app.registered_functions()}


def _binding(name: str) -> dict[str, object]:
    bindings = json.loads(FUNCTIONS[name].get_function_json())["bindings"]
    trigger: dict[str, object] = bindings[0]
    return trigger


def test_the_app_registers_exactly_four_functions() -> None:
    assert set(FUNCTIONS) == {"directline_token", "directline_refresh", "health", "warmup_timer"}


@pytest.mark.parametrize(
    ("name", "route", "methods"),
    [
        ("directline_token", "directline/token", ["POST", "OPTIONS"]),
        ("directline_refresh", "directline/refresh", ["POST", "OPTIONS"]),
        ("health", "health", ["GET"]),
    ],
)
def test_http_function_route_methods_and_anonymous_auth(name: str, route: str, methods: list[str]) -> None:
    binding = _binding(name)
    assert binding["type"] == "httpTrigger"
    assert binding["route"] == route
    assert binding["methods"] == methods
    assert binding["authLevel"] == "ANONYMOUS"


def test_timer_has_a_valid_six_field_schedule() -> None:
    binding = _binding("warmup_timer")
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == "0 */5 * * * *"
    assert is_ncrontab(str(binding["schedule"]))
    assert binding["runOnStartup"] is False


def test_timer_schedule_follows_the_setting() -> None:
    code = "import function_app, json; print(json.loads(function_app.registered_functions()[3].get_function_json())['bindings'][0]['schedule'])"
    env = {"WARMUP_SCHEDULE": "30 */2 * * * *", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "30 */2 * * * *"


def test_host_json_routes_under_api_and_keeps_traces_out_of_sampling() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == "api"
    excluded = host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"]
    assert "Trace" in excluded.split(";")


def test_core_never_imports_azure_functions() -> None:
    for path in (ROOT / "tokens").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.startswith("azure") for name in names), path


@pytest.fixture
def configured(fake: FakeDirectLine, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDirectLine]:
    for key, value in base_env(fake.base_url).items():
        monkeypatch.setenv(key, value)
    function_app.reset_service()
    yield fake
    function_app.reset_service()


def _call(name: str, method: str, body: bytes = b"", headers: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(method=method, url=f"http://localhost/api/{name}", headers=headers or {}, body=body)
    response: func.HttpResponse = FUNCTIONS[name].get_user_function()(request)
    return response


def test_token_function_runs_as_a_plain_call(configured: FakeDirectLine) -> None:
    response = _call(
        "directline_token", "POST", b'{"userName": "Ann"}',
        {"Content-Type": "application/json", "Origin": "https://www.contoso.com"},
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "https://www.contoso.com"
    assert json.loads(response.get_body())["token"].startswith("dl-token-")
    assert configured.requests[0].body["user"]["name"] == "Ann"


def test_token_function_answers_the_preflight(configured: FakeDirectLine) -> None:
    response = _call("directline_token", "OPTIONS", headers={"Origin": "https://www.contoso.com"})
    assert response.status_code == 204
    assert configured.requests == []


def test_health_function_needs_no_direct_line(configured: FakeDirectLine) -> None:
    response = _call("health", "GET")
    assert (response.status_code, json.loads(response.get_body())) == (200, {"status": "ok"})
    assert configured.requests == []


def test_health_names_the_broken_settings_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env to fall back on
    monkeypatch.delenv("DIRECT_LINE_SECRET", raising=False)
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "-3")
    function_app.reset_service()
    try:
        response = _call("health", "GET")
        token = _call("directline_token", "POST")
    finally:
        function_app.reset_service()
    assert response.status_code == 503
    assert json.loads(response.get_body()) == {
        "status": "misconfigured", "problems": ["DIRECT_LINE_SECRET", "UPSTREAM_TIMEOUT"],
    }
    assert token.status_code == 500
    assert json.loads(token.get_body())["error"]["code"] == "misconfigured"


def test_timer_pings_the_warmup_url_and_never_raises(
    configured: FakeDirectLine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WARMUP_URL", refused_url() + "/health")
    function_app.reset_service()
    timer = TimerRequest(past_due=True)
    FUNCTIONS["warmup_timer"].get_user_function()(timer)
    assert "past due" in caplog.text
    assert "Warm-up ping failed" in caplog.text
    assert configured.requests == []  # never Direct Line
