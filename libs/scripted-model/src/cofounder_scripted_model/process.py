"""The scripted model server as a child process, with its control surface (for tests and
``cofounder dev``)."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
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


def _announced_url(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The URL in the child's first line ("listening on URL"); RuntimeError, with its exit code
    when it has one, when it exits or stays silent for ``timeout_s`` first."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = bool(selector.select(timeout_s))
        line = process.stdout.readline() if ready else ""
    if line.startswith("listening on "):
        return line.strip().removeprefix("listening on ")
    if ready and not line:  # its output closed: it is exiting (its exit code is wanted)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    exited = process.poll()
    if line:
        said = f"it said {line.strip()!r}"
    else:
        said = "its output ended" if ready else f"it said nothing in {timeout_s:g} s"
    state = "still running" if exited is None else f"exit code {exited}"
    raise RuntimeError(f"the scripted model server did not start ({said}; {state})")


@contextmanager
def start(
    transcript: str = "demo-webapp",
    *,
    latency_ms: float = 0.0,
    extra: Sequence[str] = (),
    startup_timeout_s: float = 120.0,
) -> Iterator[ScriptedModel]:
    """Run the server on a free port until the block ends. It must announce its URL within
    ``startup_timeout_s`` (generous: a loaded machine starts Python slowly); its stderr is the
    caller's, so a failed start's traceback is shown where the caller's output goes."""
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
        url = _announced_url(process, startup_timeout_s)
        yield ScriptedModel(url=url, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
