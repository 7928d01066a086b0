"""The scripted model server as a child process, with its control surface (for tests and
``cofounder dev``)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["ScriptedModel", "start"]


@dataclass(frozen=True, slots=True)
class ScriptedModel:
    """A running server: its base URL and the calls that drive it."""

    url: str
    process: subprocess.Popen[str]

    def _call(self, path: str, body: Any | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - our own server
            self.url + path, data=data, method="GET" if data is None else "POST"
        )
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own URL
            return json.loads(response.read())

    def faults(self, *faults: Mapping[str, Any]) -> None:
        """Queue faults for the next requests (see ``server.py``)."""
        self._call("/_control/faults", list(faults))

    def latency(self, ms: float) -> None:
        self._call("/_control/settings", {"latency_ms": ms})

    def log(self) -> list[dict[str, Any]]:
        """Every ``/v1/messages`` request so far."""
        result: list[dict[str, Any]] = self._call("/_control/log")
        return result

    def reset(self) -> None:
        self._call("/_control/reset", {})


@contextmanager
def start(
    transcript: str = "demo-webapp", *, latency_ms: float = 0.0, extra: Sequence[str] = ()
) -> Iterator[ScriptedModel]:
    """Run the server on a free port until the block ends."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cofounder_scripted_model",
            "--transcript",
            transcript,
            "--latency-ms",
            str(latency_ms),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the scripted model server did not start: {line!r}")
        yield ScriptedModel(url=line.removeprefix("listening on "), process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
