"""The stand-in's one HTTP server: E2B's control plane, envd behind E2B's proxy, and previews.

A request is routed as E2B's edge routes it:

- ``Host: <port>-<sandbox id>.<domain>``: a preview, proxied to the sandbox's preview port
  (3000, the template's convention, and the sandbox's ``$PORT`` both reach it, as in the local
  sandbox); nothing listening is E2B's 502 "port is not open";
- an ``E2b-Sandbox-Id`` header (what the SDK sends with ``E2B_SANDBOX_URL`` set): envd. A sandbox
  that is killed, expired, paused or unknown gets the proxy's 502 "... was not found", which the
  SDK turns into ``SandboxNotRunningException``; a wrong ``X-Access-Token`` a 401;
- anything else: the control plane (``X-API-Key`` required): ``POST /v2/sandboxes``,
  ``GET /v2/sandboxes``, ``GET|DELETE /sandboxes/{id}``, ``POST /sandboxes/{id}/timeout``,
  ``/pause``, ``/resume`` and ``POST /v2/sandboxes/{id}/connect`` (201 when it resumed a paused
  sandbox), with the JSON shapes of the SDK's generated API models.

Sandboxes are local sandboxes (:class:`cofounder_sandbox.local.LocalSandboxes`): their folders
and namespaces, pause as SIGSTOP of every process and resume as SIGCONT (state kept), kill as
the end of every process. A sandbox's timeout is kept: past it, the sandbox is killed at its next
use, as E2B ends it. The stand-in's state is in memory: a restarted stand-in knows no sandboxes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import structlog
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cofounder_e2b_standin.envd import files_routes, rpc_apps
from cofounder_sandbox.jail import Mode
from cofounder_sandbox.local import LocalSandbox, LocalSandboxes

__all__ = ["ENVD_VERSION", "Record", "Standin", "create_app"]

_log = structlog.get_logger("cofounder.e2b_standin")

#: The envd version the stand-in reports: at or above every version the SDK gates a feature on
#: (``e2b.envd.versions``), so the SDK takes its current code paths.
ENVD_VERSION: Final = "0.6.7"
_TEMPLATE_PORT: Final = 3000
_HOP_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)


@dataclass
class Record:
    """One sandbox as the control plane knows it."""

    sandbox_id: str
    template: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    token: str
    local: LocalSandbox
    started_at: datetime
    end_at: float
    state: str = "running"  # running, paused, killed
    processes: dict[int, Any] = field(default_factory=dict)


def _iso(at: float | datetime) -> str:
    moment = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    return moment.isoformat().replace("+00:00", "Z")


class Standin:
    """The stand-in's sandboxes (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        *,
        domain: str = "e2b-standin.local",
        isolation: Mode = "namespaces",
        api_key: str | None = None,
    ) -> None:
        self.domain = domain
        self.api_key = api_key
        self.local = LocalSandboxes(root, isolation=isolation, preview_wait_s=0.0)
        self.records: dict[str, Record] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path) of every control-plane call

    def template_env(self, record: Record) -> dict[str, str]:
        """The environment of the stand-in's template: an E2B base template's, plus ``$PORT``
        (the sandbox's preview port; 3000 reaches it too) and the sandbox's ``envVars``."""
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/home/user",
            "USER": "user",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PORT": str(record.local.port),
            "E2B_SANDBOX": "true",
            "E2B_SANDBOX_ID": record.sandbox_id,
            **record.env_vars,
        }

    async def _expire(self, record: Record) -> None:
        if record.state not in {"killed", "paused"} and time.time() > record.end_at:
            _log.info("e2b_standin_sandbox_expired", sandbox_id=record.sandbox_id)
            await self.kill(record)

    async def kill(self, record: Record) -> None:
        paused = record.state == "paused"
        record.state = "killed"  # first: streams its processes' deaths end see a killed sandbox
        if paused:
            await record.local.resume()  # SIGCONT first: stopped processes take SIGKILL late
        await record.local.kill()

    def envd_record(self, sandbox_id: str) -> Record:
        """The running sandbox an envd call is for (checked again by each call)."""
        record = self.records.get(sandbox_id)
        if record is None or record.state != "running":
            raise ConnectError(Code.UNAVAILABLE, f"The sandbox {sandbox_id} was not found")
        return record

    async def live(self, sandbox_id: str) -> Record | None:
        record = self.records.get(sandbox_id)
        if record is not None:
            await self._expire(record)
        return record if record is not None and record.state != "killed" else None

    def sandbox_json(self, record: Record) -> dict[str, Any]:
        return {
            "templateID": record.template,
            "sandboxID": record.sandbox_id,
            "clientID": "standin",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": record.token,
            "domain": self.domain,
        }

    def detail_json(self, record: Record) -> dict[str, Any]:
        return {
            **self.sandbox_json(record),
            "startedAt": _iso(record.started_at),
            "endAt": _iso(record.end_at),
            "cpuCount": 2,
            "memoryMB": 512,
            "diskSizeMB": 1024,
            "state": record.state,
            "metadata": record.metadata,
        }


def _not_found(sandbox_id: str) -> JSONResponse:
    return JSONResponse(
        {"code": 404, "message": f"sandbox \"{sandbox_id}\" doesn't exist or you don't have "
         "access to it"}, status_code=404)  # fmt: skip


def _control(standin: Standin) -> Starlette:
    def authorised(request: Request) -> bool:
        standin.calls.append((request.method, request.url.path))
        key = request.headers.get("x-api-key", "")
        return bool(key) and (standin.api_key is None or key == standin.api_key)

    def unauthorised() -> JSONResponse:
        return JSONResponse({"code": 401, "message": "Invalid API key"}, status_code=401)

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        parsed: dict[str, Any] = (await request.json()) if raw else {}
        return parsed

    async def create(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        asked = await body(request)
        metadata = {str(k): str(v) for k, v in (asked.get("metadata") or {}).items()}
        build_id = metadata.get("build_id") or secrets.token_hex(8)
        local = await standin.local.create(build_id=build_id, metadata=metadata)
        record = Record(
            sandbox_id=local.id,
            template=str(asked.get("templateID") or "base"),
            metadata=metadata,
            env_vars={str(k): str(v) for k, v in (asked.get("envVars") or {}).items()},
            token=secrets.token_urlsafe(24),
            local=local,
            started_at=datetime.now(UTC),
            end_at=time.time() + int(asked.get("timeout") or 300),
        )
        standin.records[record.sandbox_id] = record
        _log.info("e2b_standin_sandbox_created", sandbox_id=record.sandbox_id)
        return JSONResponse(standin.sandbox_json(record), status_code=201)

    def for_sandbox(
        handler: Callable[[Request, Record], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A route about one sandbox: the key checked, then 404 unless it is live."""

        async def route(request: Request) -> Response:
            if not authorised(request):
                return unauthorised()
            sandbox_id = request.path_params["sandbox_id"]
            record = await standin.live(sandbox_id)
            if record is None:
                return _not_found(sandbox_id)
            return await handler(request, record)

        return route

    @for_sandbox
    async def timeout(request: Request, record: Record) -> Response:
        record.end_at = time.time() + int((await body(request)).get("timeout") or 0)
        return Response(status_code=204)

    @for_sandbox
    async def connect(request: Request, record: Record) -> Response:
        asked = int((await body(request)).get("timeout") or 0)
        record.end_at = max(record.end_at, time.time() + asked)
        if record.state == "paused":
            await record.local.resume()
            record.state = "running"
            return JSONResponse(standin.sandbox_json(record), status_code=201)
        return JSONResponse(standin.sandbox_json(record), status_code=200)

    @for_sandbox
    async def pause(request: Request, record: Record) -> Response:
        if record.state == "paused":
            return JSONResponse(
                {"code": 409, "message": f"sandbox {record.sandbox_id} is already paused"},
                status_code=409,
            )
        await record.local.pause()
        record.state = "paused"
        return Response(status_code=204)

    @for_sandbox
    async def kill(request: Request, record: Record) -> Response:
        await standin.kill(record)
        _log.info("e2b_standin_sandbox_killed", sandbox_id=record.sandbox_id)
        return Response(status_code=204)

    @for_sandbox
    async def detail(request: Request, record: Record) -> Response:
        return JSONResponse(standin.detail_json(record))

    async def listing(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        states = set(request.query_params.getlist("state") or ["running", "paused"])
        states = {s for part in states for s in part.split(",")}
        found = [await standin.live(sandbox_id) for sandbox_id in list(standin.records)]
        return JSONResponse(
            [standin.detail_json(r) for r in found if r is not None and r.state in states]
        )

    return Starlette(
        routes=[
            Route("/v2/sandboxes", create, methods=["POST"]),
            Route("/sandboxes", create, methods=["POST"]),
            Route("/v2/sandboxes", listing, methods=["GET"]),
            Route("/sandboxes/{sandbox_id}", detail, methods=["GET"]),
            Route("/sandboxes/{sandbox_id}", kill, methods=["DELETE"]),
            Route("/sandboxes/{sandbox_id}/timeout", timeout, methods=["POST"]),
            Route("/sandboxes/{sandbox_id}/pause", pause, methods=["POST"]),
            Route("/sandboxes/{sandbox_id}/resume", connect, methods=["POST"]),
            Route("/v2/sandboxes/{sandbox_id}/connect", connect, methods=["POST"]),
        ]
    )


def _proxy_answer(sandbox_id: str, message: str, **extra: Any) -> JSONResponse:
    """What E2B's proxy answers for a sandbox it cannot reach."""
    return JSONResponse(
        {"sandboxId": sandbox_id, "message": message, "code": 502, **extra}, status_code=502
    )


class _App:
    """The ASGI entry point: routes by ``Host`` and ``E2b-Sandbox-Id`` (see the module doc)."""

    def __init__(self, standin: Standin) -> None:
        self.standin = standin
        self.control = _control(standin)
        self.rpc = rpc_apps(standin)
        self.files = Starlette(
            routes=[Route("/files", files_routes(standin), methods=["GET", "POST"])]
        )
        self.client = httpx.AsyncClient(timeout=60)

    async def __call__(  # noqa: PLR0911 - one answer per route
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] == "lifespan":
            await self.control(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        host = headers.get("host", "").rsplit(":", 1)[0]
        label, _, domain = host.partition(".")
        if domain == self.standin.domain and "-" in label:
            port, _, sandbox_id = label.partition("-")
            await self._preview(scope, receive, send, port, sandbox_id)
            return
        sandbox_id = headers.get("e2b-sandbox-id")
        if sandbox_id is None:
            await self.control(scope, receive, send)
            return
        record = await self.standin.live(sandbox_id)
        if record is None or record.state != "running":
            response: Response = _proxy_answer(
                sandbox_id, f"The sandbox {sandbox_id} was not found"
            )
            await response(scope, receive, send)
            return
        if headers.get("x-access-token") != record.token:
            await JSONResponse({"code": 401, "message": "invalid access token"}, status_code=401)(
                scope, receive, send
            )
            return
        path: str = scope["path"]
        if path == "/health":
            await Response(status_code=204)(scope, receive, send)
            return
        if path == "/files":
            await self.files(scope, receive, send)
            return
        for prefix, app in self.rpc.items():
            if path.startswith(prefix + "/"):
                await app(scope, receive, send)
                return
        await Response(status_code=404)(scope, receive, send)

    async def _preview(
        self, scope: Scope, receive: Receive, send: Send, port: str, sandbox_id: str
    ) -> None:
        record = await self.standin.live(sandbox_id)
        if record is None or record.state != "running":
            await _proxy_answer(sandbox_id, f"The sandbox {sandbox_id} was not found")(
                scope, receive, send
            )
            return
        target = record.local.port
        if port not in (str(_TEMPLATE_PORT), str(target)):
            await _proxy_answer(
                sandbox_id, "The sandbox is running but port is not open", port=int(port or 0)
            )(scope, receive, send)
            return
        request = Request(scope, receive)
        url = f"http://127.0.0.1:{target}{scope['path']}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode()
        try:
            answer = await self.client.request(
                request.method,
                url,
                content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k not in _HOP_HEADERS},
            )
        except httpx.TransportError:
            await _proxy_answer(
                sandbox_id, "The sandbox is running but port is not open", port=int(port)
            )(scope, receive, send)
            return
        await Response(
            answer.content,
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS},
        )(scope, receive, send)


def create_app(standin: Standin) -> _App:
    return _App(standin)


def env_for(url: str, *, domain: str, api_key: str) -> Mapping[str, str]:
    """The environment that points the unmodified SDK at a stand-in serving at ``url``."""
    return {
        "E2B_API_KEY": api_key,
        "E2B_API_URL": url,
        "E2B_SANDBOX_URL": url,
        "E2B_DOMAIN": domain,
    }
