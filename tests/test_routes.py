"""The route table both adapters serve, and the one service per process behind it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import token_request
from tests.fakes import FakeDirectLine
from tokens import routes
from tokens.http import Request
from tokens.service import MisconfiguredService, TokenService
from tokens.settings import DEFAULT_CONCURRENCY


def _get(method: str = "GET") -> Request:
    return Request.build(method, {})


@pytest.mark.parametrize("service_class", [TokenService, MisconfiguredService])
def test_every_route_names_a_method_of_each_kind_of_service(service_class: type) -> None:
    for methods in routes.ROUTES.values():
        for name in methods.values():
            assert callable(getattr(service_class, name, None)), (service_class, name)


def test_an_unknown_route_is_404_in_the_error_shape(configured: FakeDirectLine) -> None:
    response = routes.answer("directline/nope", _get())
    assert response.status == 404
    assert json.loads(response.body)["error"]["code"] == "not_found"


def test_a_method_the_route_lacks_is_405_with_allow(configured: FakeDirectLine) -> None:
    response = routes.answer("directline/token", _get("GET"))
    assert response.status == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert json.loads(response.body)["error"]["code"] == "method_not_allowed"


def test_a_route_answers_through_the_service(configured: FakeDirectLine) -> None:
    response = routes.answer("directline/token", token_request())
    assert response.status == 200
    assert configured.requests[0].path == "/v3/directline/tokens/generate"


def test_a_crash_answers_500_misconfigured_in_the_error_shape(
    configured: FakeDirectLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: TokenService, request: Request) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TokenService, "health", crash)
    response = routes.answer("health", _get())
    assert response.status == 500
    assert json.loads(response.body)["error"]["code"] == "misconfigured"


def test_the_service_is_built_once_per_process(configured: FakeDirectLine) -> None:
    assert routes.service() is routes.service()


def test_reset_reads_the_settings_again(configured: FakeDirectLine, monkeypatch: pytest.MonkeyPatch) -> None:
    first = routes.service()
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "-1")
    assert routes.service() is first
    routes.reset()
    assert isinstance(routes.service(), MisconfiguredService)


def test_the_direct_line_pool_keeps_a_connection_per_thread(configured: FakeDirectLine) -> None:
    routes.configure(48)
    try:
        service = routes.service()
        assert isinstance(service, TokenService)
        adapter = service.client.session.get_adapter(service.client.endpoint)
        assert adapter._pool_maxsize == 48  # type: ignore[attr-defined]
    finally:
        routes.configure(DEFAULT_CONCURRENCY)
