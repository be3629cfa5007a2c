"""The function app as Azure sees it: registered functions read through `app.get_functions()`, and
the functions run as plain calls with `func.HttpRequest`, as the Functions host runs them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.decorators.http import HttpTrigger
from azure.functions.timer import TimerRequest

import function_app
from tests.conftest import ALLOWED, ROOT
from tests.fakes import FakeDirectLine, refused_url
from tests.hostcontext import InvocationContext
from tokens import routes
from tokens.settings import is_ncrontab

# `app.get_functions()` refuses a second call ("not a unique function name"): read it once.
FUNCTIONS = {function.get_function_name(): function for function in function_app.app.get_functions()}


def _binding(name: str) -> dict[str, object]:
    bindings = json.loads(FUNCTIONS[name].get_function_json())["bindings"]
    trigger: dict[str, object] = bindings[0]
    return trigger


def test_the_app_registers_one_function_per_route_and_the_timer() -> None:
    assert set(FUNCTIONS) == {
        "directline_token", "directline_refresh", "directline_resume", "speech_token", "health", "warmup_timer"
    }


def test_the_http_functions_serve_exactly_the_route_table() -> None:
    """Hosted mode dispatches the same table, so it can never drift from what Azure serves."""
    registered = {}
    for function in FUNCTIONS.values():
        trigger = function.get_trigger()
        if isinstance(trigger, HttpTrigger):
            registered[trigger.route] = {str(getattr(m, "value", m)) for m in trigger.methods or ()}
    assert registered == {route: set(methods) for route, methods in routes.ROUTES.items()}


@pytest.mark.parametrize("name", ["directline_token", "directline_refresh", "directline_resume", "speech_token", "health"])
def test_http_functions_are_anonymous(name: str) -> None:
    binding = _binding(name)
    assert binding["type"] == "httpTrigger"
    assert binding["authLevel"] == "ANONYMOUS"


def test_timer_has_a_valid_six_field_schedule() -> None:
    binding = _binding("warmup_timer")
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == "0 */5 * * * *"
    assert is_ncrontab(str(binding["schedule"]))
    assert binding["runOnStartup"] is False


# A fresh interpreter prints the timer's schedule as the host indexes it.
_PRINT_TIMER_SCHEDULE = (
    "import function_app, json\n"
    "timer = [f for f in function_app.app.get_functions() if f.get_function_name() == 'warmup_timer'][0]\n"
    "print(json.loads(timer.get_function_json())['bindings'][0]['schedule'])"
)


def test_timer_schedule_follows_the_setting() -> None:
    env = {"WARMUP_SCHEDULE": "30 */2 * * * *", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _PRINT_TIMER_SCHEDULE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "30 */2 * * * *"


def test_timer_schedule_set_in_dotenv_is_the_timers_too(tmp_path: Path) -> None:
    # Under func start the app applies .env itself; the schedule is read before, at indexing.
    (tmp_path / ".env").write_text("WARMUP_SCHEDULE=15 */3 * * * *\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _PRINT_TIMER_SCHEDULE], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "15 */3 * * * *"


def test_host_json_routes_under_api_and_keeps_traces_out_of_sampling() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == "api"
    excluded = host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"]
    assert "Trace" in excluded.split(";")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_the_core_never_imports_azure_functions_the_adapter_or_the_demo() -> None:
    """The core may use Azure's SDKs (azure-identity mints speech tokens), never the Functions host's."""
    for path in (ROOT / "tokens").glob("*.py"):
        for name in _imports(path):
            assert not name.startswith(("azure.functions", "function_app")), (path, name)
            # The command line's --demo switch is the one door to the demo, opened only on request.
            assert not name.startswith("demo") or path.name == "__main__.py", (path, name)


def test_the_adapter_stays_thin() -> None:
    source = (ROOT / "function_app.py").read_text()
    assert len(source.splitlines()) <= 120
    assert not any(name.startswith("azure.functions._") for name in _imports(ROOT / "function_app.py"))


def _call(name: str, method: str, body: bytes = b"", headers: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest(method=method, url=f"http://localhost/api/{name}", headers=headers or {}, body=body)
    response: func.HttpResponse = FUNCTIONS[name].get_user_function()(request, InvocationContext())
    return response


def test_token_function_runs_as_a_plain_call(configured: FakeDirectLine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    response = _call(
        "directline_token", "POST", b'{"userName": "Ann"}',
        {"Content-Type": "application/json", "Origin": ALLOWED, "X-Forwarded-For": "203.0.113.7:50000"},
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert json.loads(response.get_body())["token"].startswith("dl-token-")
    assert configured.requests[0].body["user"]["name"] == "Ann"
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tokens.audit"]
    assert [(r["invocationId"], r["clientIp"]) for r in audit] == [("host-invocation-1", "203.0.113.0")]


def test_token_function_answers_the_preflight(configured: FakeDirectLine) -> None:
    response = _call("directline_token", "OPTIONS", headers={"Origin": ALLOWED})
    assert response.status_code == 204
    assert configured.requests == []


def test_health_function_needs_no_direct_line(configured: FakeDirectLine) -> None:
    response = _call("health", "GET")
    assert (response.status_code, json.loads(response.get_body())) == (200, {"status": "ok", "directLine": "available"})
    assert configured.requests == []


def test_health_names_the_broken_settings_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env to fall back on
    monkeypatch.delenv("DIRECT_LINE_SECRET", raising=False)
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "-3")
    routes.reset()
    try:
        response = _call("health", "GET")
        token = _call("directline_token", "POST")
    finally:
        routes.reset()
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
    routes.reset()
    FUNCTIONS["warmup_timer"].get_user_function()(TimerRequest(past_due=True))
    assert "past due" in caplog.text
    assert "Warm-up ping failed" in caplog.text
    assert configured.requests == []  # never Direct Line


@pytest.mark.parametrize("schedule", ["0 */5 * * * \u00b2", "every five minutes", "0 99 * * * *"])
def test_an_invalid_schedule_never_stops_the_functions_being_indexed(schedule: str) -> None:
    """A "²" in WARMUP_SCHEDULE used to crash the import, and Azure would load no function at all."""
    env = {"WARMUP_SCHEDULE": schedule, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _PRINT_TIMER_SCHEDULE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0 */5 * * * *"
    assert "Invalid setting WARMUP_SCHEDULE" in out.stderr


def test_an_invalid_schedule_is_reported_by_health(configured: FakeDirectLine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMUP_SCHEDULE", "0 */5 * * * \u00b2")
    routes.reset()
    response = _call("health", "GET")
    assert response.status_code == 503
    assert json.loads(response.get_body())["problems"] == ["WARMUP_SCHEDULE"]


def test_the_settings_are_read_once_for_the_timer_and_the_functions(configured: FakeDirectLine) -> None:
    """The schedule and the service come from one reading of the environment."""
    routes.reset()
    first = routes.settings()
    routes.timer_schedule()
    routes.service()
    assert routes.settings() is first
