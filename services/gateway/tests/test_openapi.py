"""The OpenAPI document says what the server sends (errors are problem+json, per route), declares
its credentials as security schemes, has stable operation ids, tags and examples that are valid
against their schemas; the documentation pages work offline: every asset they load comes from
the gateway itself. (What the running server sends against this document: ``test_fuzz.py``.)"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import pytest

OPEN = {"/v1/healthz", "/v1/readyz"}
#: Routes whose credential is in the body (a login code), not a security scheme.
UNSECURED = OPEN | {"/v1/login-codes/redeem"}


@pytest.fixture
async def client(app_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return app_client


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
            assert list(response["content"]) == ["application/problem+json"], (method, path)
            content = response["content"]["application/problem+json"]
            assert content["schema"] == {"$ref": f"#/components/schemas/{model}"}, (method, path)
            for example in content.get("examples", {}).values():
                assert example["value"]["status"] == int(status), (method, path, example)
            if status == "401" and path not in UNSECURED:
                assert response["headers"]["WWW-Authenticate"]["required"], (method, path)
            if status == "429":
                assert response["headers"]["Retry-After"]["required"], (method, path)
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


async def test_credentials_are_security_schemes_not_header_parameters(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["founderToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["founderToken"]["description"],
    }
    assert schemes["adminToken"]["type"] == "http"
    assert schemes["adminToken"]["scheme"] == "bearer"
    for method, path, operation in _operations(document):
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert "authorization" not in names, (method, path)
        security = operation.get("security")
        if path in UNSECURED:
            assert security is None, (method, path)
        elif path.startswith("/v1/admin/"):
            assert security == [{"adminToken": []}], (method, path)
        elif path in (
            "/v1/builds/{build_id}/events",
            # The build page's <img> sends the stream token; the admin token passes too.
            "/v1/builds/{build_id}/screenshots/{name}",
        ):
            assert security == [{"founderToken": []}, {"streamToken": []}]
        else:
            assert security == [{"founderToken": []}], (method, path)


async def test_operation_ids_are_stable_names_and_every_operation_is_tagged(
    document: dict[str, Any],
) -> None:
    ids = {(m, p): o["operationId"] for m, p, o in _operations(document)}
    assert len(set(ids.values())) == len(ids)
    for (method, path), operation_id in ids.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", operation_id), (method, path, operation_id)
    # The client (cofounder_client) and generated clients call these names: changing one is a
    # breaking change.
    assert {
        ("POST", "/v1/projects/{project_id}/builds"): "start_build",
        ("GET", "/v1/builds/{build_id}"): "get_build",
        ("GET", "/v1/builds"): "list_builds",
        ("POST", "/v1/builds/{build_id}/cancel"): "cancel_build",
        ("GET", "/v1/builds/{build_id}/events"): "get_build_events",
        ("GET", "/v1/builds/{build_id}/log"): "get_build_log",
        ("GET", "/v1/builds/{build_id}/screenshots/{name}"): "get_build_screenshot",
        ("GET", "/v1/usage"): "get_usage",
        ("GET", "/v1/builds/{build_id}/usage"): "get_build_usage",
        ("GET", "/v1/healthz"): "get_health",
        ("GET", "/v1/readyz"): "get_readiness",
        ("POST", "/v1/admin/users"): "admin_create_user",
        ("POST", "/v1/admin/projects"): "admin_create_project",
        ("PUT", "/v1/admin/projects/{project_id}/idea-brief"): "admin_put_idea_brief",
        (
            "POST",
            "/v1/admin/projects/{project_id}/understanding-sessions",
        ): "admin_create_interview",
        ("POST", "/v1/admin/demo"): "admin_seed_demo",
        ("GET", "/v1/admin/users/{user_id}/usage"): "admin_get_user_usage",
        (
            "GET",
            "/v1/admin/users/{user_id}/builds/{build_id}/usage",
        ): "admin_get_user_build_usage",
        ("POST", "/v1/admin/users/{user_id}/top-ups"): "admin_top_up",
        ("PUT", "/v1/admin/users/{user_id}/tier"): "admin_change_tier",
    }.items() <= ids.items()
    declared = [tag["name"] for tag in document["tags"]]
    assert declared[:4] == ["builds", "usage", "admin", "health"]
    for method, path, operation in _operations(document):
        assert operation.get("tags"), (method, path)


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A JSON Schema 2020-12 validator of ``schema`` whose ``#/components/...`` references
    resolve in ``document``."""
    root = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def _examples(content: dict[str, Any]) -> list[Any]:
    found = [e["value"] for e in content.get("examples", {}).values()]
    return found + ([content["example"]] if "example" in content else [])


async def test_every_example_is_valid_against_its_schema(document: dict[str, Any]) -> None:
    """Request bodies and responses have examples (the ones /docs shows and schemathesis
    sends), and each is valid against the schema it illustrates."""
    checked: set[str] = set()
    for name, schema in document["components"]["schemas"].items():
        for example in schema.get("examples", []):
            _validator(document, schema).validate(example)
            checked.add(name)
    for method, path, operation in _operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and "browser" not in operation["tags"]:  # the build page's own
            ref = body["schema"].get("$ref", "")
            schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else {}
            assert schema.get("examples") or _examples(body), (method, path)
        for status, response in operation["responses"].items():
            for media_type, content in response.get("content", {}).items():
                for example in _examples(content):
                    if "json" in media_type:
                        _validator(document, content["schema"]).validate(example)
                    checked.add(f"{method} {path} {status}")
    assert {"StartBuild", "BuildOut", "BuildList", "NewUser", "TopUp", "UserUsage"} <= checked
    assert "POST /v1/projects/{project_id}/builds 429" in checked
    assert "GET /v1/builds/{build_id}/events 200" in checked


async def test_a_body_that_is_not_json_is_400_as_documented(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/admin/users",
        content=b'{"email": ',
        headers={"Content-Type": "application/json", "Authorization": "Bearer dev-admin-token"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "invalid_json"
    assert problem["detail"].startswith("the request body is not valid JSON: ")
