"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="snapshot",
    summary="content-addressed S3 snapshots of the sandbox's project files",
    status="not built yet (issue #6)",
)
