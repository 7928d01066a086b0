"""``python -m cofounder_scripted_model``: serve a transcript over HTTP until interrupted.

Prints ``listening on http://HOST:PORT`` once bound (``--port 0`` picks a free port), so a parent
process can read the address from the first line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys

import uvicorn

from cofounder_scripted_model.server import ModelServer, create_app
from cofounder_scripted_model.transcript import TranscriptError, load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cofounder-scripted-model", description=__doc__)
    parser.add_argument(
        "--transcript", default="demo-webapp", help="a YAML file or a built-in name"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each reply")
    parser.add_argument(
        "--delta-chars",
        type=int,
        default=0,
        help="stream text and tool input in deltas of this many characters (0: one per block)",
    )
    args = parser.parse_args(argv)
    try:
        transcript = load(args.transcript)
    except (TranscriptError, OSError) as exc:
        parser.exit(2, f"cannot load the transcript: {exc}\n")
    state = ModelServer(
        transcript=transcript, latency_s=args.latency_ms / 1000, delta_chars=args.delta_chars
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(state), log_level="warning", access_log=False, timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    print(f"listening on http://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(sockets=[sock]))
    sys.exit(0)


if __name__ == "__main__":
    main()
