"""Sandboxes behind one interface: E2B in production, a local process sandbox by default.

Both present the project at :data:`PROJECT_DIR` (``/home/user/project``, as in the E2B template),
so a transcript or a model's habits run unchanged on either.
"""

from cofounder_sandbox.base import (
    PROJECT_DIR,
    CommandResult,
    PathOutsideProject,
    Sandbox,
    Sandboxes,
    SandboxGone,
    Shell,
)

__all__ = [
    "PROJECT_DIR",
    "CommandResult",
    "PathOutsideProject",
    "Sandbox",
    "SandboxGone",
    "Sandboxes",
    "Shell",
]
