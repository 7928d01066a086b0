"""The OpenAPI document says what the server sends (errors are problem+json, per route), and the
documentation pages work offline: every asset they load comes from the gateway itself."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from cofounder_gateway.app import Gateway, create_app
from cofounder_gateway.settings import GatewaySettings

OPEN = {"/v1/healthz", "/v1/readyz"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The app in process; nothing here reaches the database or Redis."""
    gw = Gateway(
        settings=GatewaySettings(environment="development"),
        engine=cast(Any, None),
        redis=cast(Any, None),
        feed=cast(Any, None),
        relay=cast(Any, SimpleNamespace(poke=lambda: None)),
        pg_pool=cast(Any, None),
    )
    transport = httpx.ASGITransport(app=create_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_every_error_response_is_documented_as_the_problem_body(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in json.dumps(document)  # a body this API never sends
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["required"])
    assert "errors" in schemas["ValidationProblem"]["required"]
    checked = 0
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            model = "ValidationProblem" if status == "422" else "Problem"
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": f"#/components/schemas/{model}"}}
            }, (method, path, status)
            checked += 1
    assert checked > 50


async def test_each_route_documents_the_errors_it_can_answer(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        statuses = {int(s) for s in operation["responses"]}
        what = f"{method} {path}: {sorted(statuses)}"
        if path not in OPEN:
            assert 401 in statuses, what
        if "{" in path or operation.get("requestBody") or operation.get("parameters"):
            assert 422 in statuses, what
        if operation.get("requestBody"):
            assert {400, 413} <= statuses, what
        if re.search(r"\{(build|project|user)_id\}", path) and path not in OPEN:
            assert 404 in statuses, what
    responses = {(m, p): {int(s) for s in o["responses"]} for m, p, o in _operations(document)}
    assert {404, 409, 429, 503} <= responses["POST", "/v1/projects/{project_id}/builds"]
    assert {400, 429} <= responses["GET", "/v1/builds/{build_id}/events"]
    assert 400 in responses["GET", "/v1/builds"]
    assert 409 in responses["POST", "/v1/builds/{build_id}/cancel"]
    assert 503 in responses["GET", "/v1/readyz"]


async def test_ids_are_documented_as_uuids_and_text_as_storable(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["name"].endswith("_id"):
                assert parameter["schema"]["format"] == "uuid", (method, path, parameter)
    goal = document["components"]["schemas"]["StartBuild"]["properties"]["goal"]
    assert goal["pattern"] == r"^[^\x00]*$"


_ATTRIBUTE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)|url: *'([^']+)'""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_documentation_pages_load_only_their_own_assets(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "http:" not in html
    assert "https:" not in html
    urls = {a or b for a, b in _ATTRIBUTE.findall(html)}
    assert "/openapi.json" in urls
    assets = urls - {"/openapi.json"}
    assert any(url.endswith(".js") for url in assets), urls
    for url in assets:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        if url.endswith(".js"):
            assert kind.startswith(("text/javascript", "application/javascript")), url
            assert len(asset.content) > 100_000  # the bundle, not a stub
        elif url.endswith(".css"):
            assert kind.startswith("text/css"), url
        else:
            assert kind.startswith("image/"), url
