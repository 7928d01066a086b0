"""A store's folder: the embedded default of the snapshot store, the log archive and the
screenshot store (each the folder twin of an :class:`~cofounder_snapshots.s3.S3Bucket`).

What they share: keys are paths under the folder, refused when one would leave it; writes go
through a temporary file (named uniquely, so writers never collide) and a rename, so a reader
never sees half a file; ``async with`` is accepted and holds nothing.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from cofounder_snapshots.errors import StoreError

__all__ = ["Folder", "write_atomically"]


class Folder:
    """Files under ``root``, by key."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.description = f"folder {self.root}"
        self._normal_root = Path(os.path.normpath(self.root.absolute()))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _path(self, key: str) -> Path:
        """The file of ``key``; refused when it resolves outside the folder (a key is built from
        ids: the events' are validated, and this holds even if one is not)."""
        # Lexically (``..`` and absolute keys), not through symlinks: ids cannot make links, and
        # an operator may link a part of the folder to another disk.
        path = Path(os.path.normpath(self._normal_root / key))
        if self._normal_root not in path.parents:
            raise StoreError(f"refused: {key!r} resolves outside the folder {self.root}")
        return path


def write_atomically(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` through a temporary file (blocking: call it in a thread).

    ``replace``: an existing file is replaced (rename); otherwise the write is refused when one
    exists (a hard link, atomic) and False is returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    if replace:
        tmp.replace(path)
        return True
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
