"""With ``json=True`` every line a process writes is one JSON object: structlog's, the standard
library's loggers' (uvicorn, httpx, asyncio, alembic; one given a console handler of its own
before included), and Python's own reports (a warning, an exception that ends a thread, an
"Exception ignored in …", an uncaught exception). In a fresh interpreter: the hooks are
process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import asyncio, gc, logging, sys, threading, warnings

    # A library that set up its own console output before the service configured logging
    # (alembic.ini's fileConfig does this).
    own = logging.getLogger("alembic.runtime.migration")
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("INFO  [%(name)s] %(message)s"))
    own.addHandler(plain)
    own.propagate = False

    import structlog
    from cofounder_runtime.logs import configure_logging

    configure_logging(level="INFO", json=True, secrets=["s3cret-value-123"])
    structlog.get_logger("cofounder.test").info("native", n=1)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
    logging.getLogger("httpx").info('HTTP Request: GET http://x "HTTP/1.1 200 OK"')
    own.info("Running upgrade 0001 -> 0002")
    logging.getLogger("asyncio").error("Task was destroyed but it is pending!")
    warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)

    def fail():
        raise ValueError("in a thread, with s3cret-value-123")

    t = threading.Thread(target=fail, name="worker")
    t.start()
    t.join()

    class Broken:
        def __del__(self):
            raise RuntimeError("in __del__")

    Broken()
    gc.collect()
    raise SystemError("the end")
    """
)


def test_every_line_of_a_process_is_json() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", PROGRAM],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON: {line!r}\n{done.stdout}") from None
    assert all({"event", "level", "timestamp"} <= set(r) for r in records), records
    by_event = {r["event"]: r for r in records}
    assert by_event["native"]["n"] == 1
    assert by_event["Started server process [1]"]["logger"] == "uvicorn.error"
    assert by_event['HTTP Request: GET http://x "HTTP/1.1 200 OK"']["logger"] == "httpx"
    assert by_event["Running upgrade 0001 -> 0002"]["logger"] == "alembic.runtime.migration"
    assert by_event["Task was destroyed but it is pending!"]["level"] == "error"
    warned = next(r for r in records if r.get("logger") == "py.warnings")
    assert "something is deprecated" in warned["event"]
    thread = by_event["exception in thread worker"]
    assert thread["exception"][0]["exc_type"] == "ValueError"
    assert "s3cret-value-123" not in done.stdout  # the scrubber saw Python's reports too
    ignored = next(r for r in records if "Broken" in r["event"])
    assert ignored["exception"][0]["exc_type"] == "RuntimeError"
    last = by_event["uncaught exception"]
    assert (last["level"], last["exception"][0]["exc_type"]) == ("critical", "SystemError")
