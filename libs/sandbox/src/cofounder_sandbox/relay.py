"""The way into a sandbox that has no network helper: its preview port, relayed.

When the host has no route out (a machine offline, a network namespace with loopback only),
pasta has no interface to give the sandbox and refuses to start. The sandbox then keeps the
network namespace bubblewrap made for it, loopback only, and this relay is the one way in, as
pasta's port forward is otherwise: it holds a socket listening on the host's ``127.0.0.1:PORT``
(made by the runner in the host's namespace and handed over as a descriptor), is itself started
inside the sandbox's network namespace (``nsenter --net``), so every connection it makes goes to
the sandbox's own loopback, and copies bytes both ways. Nothing of the host's network is in the
sandbox's namespace; the sandbox cannot reach the relay's listening socket (it is in the host's).

It runs as a plain script of the standard library (``python -I -S relay.py``). Started by a root
runner, it becomes ``UID:GID`` (nobody) before it serves, which leaves it no capability; started
by an unprivileged runner, it is that user already. It ends when the sandbox's first process ends
(a pidfd of it, handed over, becomes readable then), or when the runner stops the sandbox.

Usage: ``relay.py LISTEN_FD PORT READY_FD INIT_PIDFD UID GID`` (``-1`` for no pidfd, and for no
change of user); once it serves, it writes its pid to ``READY_FD`` and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

_CHUNK = 1 << 16


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _handle(
    port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        inner_r, inner_w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_w.close()  # nothing listens inside: the client sees the connection end
        return
    try:
        await asyncio.gather(_copy(client_r, inner_w), _copy(inner_r, client_w))
    finally:
        for writer in (client_w, inner_w):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve(listen_fd: int, port: int, ready_fd: int, init_pidfd: int) -> None:
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    if init_pidfd >= 0:
        loop.add_reader(init_pidfd, ended.set)
    sock = socket.socket(fileno=listen_fd)
    server = await asyncio.start_server(lambda r, w: _handle(port, r, w), sock=sock, limit=_CHUNK)
    os.write(ready_fd, f"{os.getpid()}\n".encode())
    os.close(ready_fd)
    async with server:
        await ended.wait()


def _become(uid: int, gid: int) -> None:
    """Drop root for good: groups, then gid, then uid (all three ids: no way back, and a
    process whose uids all leave 0 loses every capability)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise SystemExit("relay: could not drop its privileges")


def main(argv: list[str]) -> None:
    listen_fd, port, ready_fd, init_pidfd, uid, gid = (int(a) for a in argv)
    if uid >= 0:
        _become(uid, gid)
    asyncio.run(serve(listen_fd, port, ready_fd, init_pidfd))


if __name__ == "__main__":
    main(sys.argv[1:])
