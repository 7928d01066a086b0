"""Running the stand-in: in this process (tests) or as a child process (``python -m
cofounder_e2b_standin``, which ``cofounder dev`` supervises and waits for)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
import uvicorn

from cofounder_e2b_standin.app import Standin, create_app, env_for
from cofounder_sandbox.jail import Mode

__all__ = ["DEFAULT_DOMAIN", "RunningStandin", "preview_request", "serve"]

DEFAULT_DOMAIN: Final = "e2b-standin.local"
#: Any key does: the stand-in checks one is sent, as E2B's API requires.
API_KEY: Final = "e2b_" + "5" * 40


@dataclass(frozen=True, slots=True)
class RunningStandin:
    """A serving stand-in: its address, and what points the SDK at it."""

    url: str
    domain: str
    api_key: str
    standin: Standin | None = None  # in this process only

    @property
    def env(self) -> Mapping[str, str]:
        return env_for(self.url, domain=self.domain, api_key=self.api_key)


def preview_request(url: str, standin_url: str) -> tuple[str, dict[str, str]]:
    """The stand-in address and ``Host`` header that reach a preview URL the SDK built."""
    parts = urlsplit(url)
    return standin_url.rstrip("/") + (parts.path or "/"), {"host": parts.netloc}


def _socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


#: How long an idle connection is kept open, as E2B's front end keeps it (minutes, behind its
#: load balancer), not uvicorn's 5 s: the SDK reuses its pooled connections, and one the server
#: closed a moment before a request fails it with "connection reset" (seen as a flaky
#: ``kill()`` after a 6 s wait in a test).
_KEEP_ALIVE_S: Final = 600


@asynccontextmanager
async def serve(
    root: str | Path, *, isolation: Mode = "namespaces", domain: str = DEFAULT_DOMAIN
) -> AsyncIterator[RunningStandin]:
    """The stand-in on a free port of this event loop until the block ends; its sandboxes are
    killed then."""
    standin = Standin(root, domain=domain, isolation=isolation)
    app = create_app(standin)
    sock = _socket()
    port = sock.getsockname()[1]
    # log_config=None: a server inside the caller's process leaves its logging as it is
    # (uvicorn's default config gives its loggers console handlers of their own).
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, lifespan="off", timeout_keep_alive=_KEEP_ALIVE_S)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield RunningStandin(f"http://127.0.0.1:{port}", domain, API_KEY, standin)
    finally:
        server.should_exit = True
        await task
        sock.close()
        await app.client.aclose()
        await standin.local.kill_all()


def main(argv: list[str] | None = None) -> None:
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(prog="cofounder-e2b-standin", description=__doc__)
    parser.add_argument("--root", required=True, help="folder of the sandboxes")
    parser.add_argument("--isolation", default="namespaces", choices=["namespaces", "unsafe-none"])
    parser.add_argument("--domain", default=DEFAULT_DOMAIN)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    standin = Standin(args.root, domain=args.domain, isolation=args.isolation)
    sock = _socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    app = create_app(standin)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=_KEEP_ALIVE_S)
    )
    print(f"listening on http://{host}:{port}", flush=True)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await standin.local.kill_all()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    sys.exit(0)


async def fetch_preview(url: str, standin_url: str) -> httpx.Response:
    """GET a preview URL through the stand-in (see :func:`preview_request`)."""
    target, headers = preview_request(url, standin_url)
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(target, headers=headers)
