"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_context_assembler.bootstrap import main
from cofounder_context_assembler.settings import AssemblerSettings
from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="context-assembler",
    summary="build.requested -> context.ready: the founder's brief, Q&A and plan",
    main=main,
    settings=AssemblerSettings,
)
