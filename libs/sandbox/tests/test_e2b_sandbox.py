"""The E2B adapter through the real ``e2b`` SDK, against a local HTTP stub of E2B's control plane
(create, timeout, connect, pause, kill) with a fake key; and against a real account when
``E2B_API_KEY`` is set."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cofounder_sandbox.base import SandboxGone
from cofounder_sandbox.e2b import E2BSandboxes

FAKE_KEY = "e2b_" + "0" * 40


@dataclass
class ControlPlane:
    """What the stub was asked, and its sandboxes."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    sandboxes: dict[str, dict[str, Any]] = field(default_factory=dict)


def _sandbox_json(sandbox_id: str, template: str) -> dict[str, Any]:
    return {
        "templateID": template,
        "sandboxID": sandbox_id,
        "clientID": "stub",
        "envdVersion": "0.2.4",
        "envdAccessToken": "stub-token",
        "domain": "stub.e2b.local",
    }


def _app(plane: ControlPlane) -> Starlette:
    async def record(request: Request) -> Any:
        body = await request.json() if await request.body() else None
        plane.calls.append((request.method, request.url.path, body))
        assert request.headers["x-api-key"] == FAKE_KEY
        return body

    async def create(request: Request) -> Response:
        body = await record(request)
        sandbox_id = f"sbx{uuid.uuid4().hex[:10]}"
        plane.sandboxes[sandbox_id] = {
            "template": body["templateID"],
            "state": "running",
            "body": body,
        }
        return JSONResponse(_sandbox_json(sandbox_id, body["templateID"]), status_code=201)

    def _find(request: Request) -> dict[str, Any] | None:
        return plane.sandboxes.get(request.path_params["sandbox_id"])

    async def timeout(request: Request) -> Response:
        await record(request)
        return Response(status_code=204 if _find(request) else 404)

    async def connect(request: Request) -> Response:
        await record(request)
        found = _find(request)
        if found is None or found["state"] == "killed":
            return JSONResponse({"code": 404, "message": "sandbox not found"}, status_code=404)
        was_paused = found["state"] == "paused"
        found["state"] = "running"
        return JSONResponse(
            _sandbox_json(request.path_params["sandbox_id"], found["template"]),
            status_code=201 if was_paused else 200,
        )

    async def pause(request: Request) -> Response:
        await record(request)
        found = _find(request)
        if found is None:
            return Response(status_code=404)
        found["state"] = "paused"
        return Response(status_code=204)

    async def kill(request: Request) -> Response:
        await record(request)
        found = _find(request)
        if found is None:
            return Response(status_code=404)
        found["state"] = "killed"
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/v2/sandboxes", create, methods=["POST"]),
            Route("/sandboxes/{sandbox_id}/timeout", timeout, methods=["POST"]),
            Route("/v2/sandboxes/{sandbox_id}/connect", connect, methods=["POST"]),
            Route("/sandboxes/{sandbox_id}/pause", pause, methods=["POST"]),
            Route("/sandboxes/{sandbox_id}", kill, methods=["DELETE"]),
        ]
    )


@pytest.fixture
async def stub() -> AsyncIterator[tuple[ControlPlane, str]]:
    plane = ControlPlane()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(plane), log_config=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    yield plane, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


async def test_the_adapter_drives_the_control_plane(stub: tuple[ControlPlane, str]) -> None:
    plane, url = stub
    sandboxes = E2BSandboxes(
        api_key=FAKE_KEY,
        template="cofounder-node",
        timeout_s=3600,
        api_url=url,
        domain="stub.e2b.local",
    )
    sandbox = await sandboxes.create(
        build_id="b-1", metadata={"build_id": "b-1", "project_id": "p-1"}
    )
    created = plane.sandboxes[sandbox.id]["body"]
    assert created["templateID"] == "cofounder-node"
    assert created["timeout"] == 3600
    assert created["metadata"] == {"build_id": "b-1", "project_id": "p-1"}
    assert ("POST", f"/sandboxes/{sandbox.id}/timeout", {"timeout": 3600}) in plane.calls
    # preview_url checks a server listens (an envd command, which this stub has not: see
    # libs/e2b-standin's tests); the host it names is the SDK's.
    assert sandbox._sandbox.get_host(3000) == f"3000-{sandbox.id}.stub.e2b.local"
    assert sandbox.internal_url(3000) == "http://localhost:3000"

    await sandbox.pause()
    assert plane.sandboxes[sandbox.id]["state"] == "paused"
    again = await sandboxes.connect(sandbox.id)  # a paused sandbox resumes on connect
    assert again.id == sandbox.id
    assert plane.sandboxes[sandbox.id]["state"] == "running"

    await again.kill()
    assert plane.sandboxes[sandbox.id]["state"] == "killed"
    with pytest.raises(SandboxGone):
        await sandboxes.connect(sandbox.id)
    with pytest.raises(SandboxGone):
        await sandboxes.connect("sbx-never-existed")
    paths = [(method, path) for method, path, _ in plane.calls]
    assert paths[0] == ("POST", "/v2/sandboxes")
