"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_agent_runner.bootstrap import main
from cofounder_agent_runner.settings import RunnerSettings
from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="agent-runner",
    summary="context.ready -> the TAOR agent loop in a sandbox, checkpoints and crash resume",
    main=main,
    settings=RunnerSettings,
)
