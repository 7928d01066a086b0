"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec
from cofounder_snapshot.bootstrap import main
from cofounder_snapshot.settings import SnapshotSettings

SPEC = ServiceSpec(
    name="snapshot",
    summary="snapshot.requested -> content-addressed snapshots of project files (S3 or folder)",
    main=main,
    settings=SnapshotSettings,
)
