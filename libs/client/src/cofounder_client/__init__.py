"""A typed Python client of the gateway's REST API (``/v1``).

::

    from cofounder_client import ApiError, CofounderClient

    with CofounderClient("http://127.0.0.1:8000", token) as client:
        build = client.start_build(project_id, goal="A todo app")
        for event in client.events(build.id):
            print(event.type, event.data)
        try:
            client.cancel_build(build.id)
        except ApiError as error:
            print(error.status, error.type, error.detail)  # 409 build_finished ...

:class:`CofounderClient` covers a founder's routes, :class:`AdminClient` the admin API. Errors
are :class:`ApiError` (the problem's ``type``, ``title``, ``status``, ``detail`` and the rest in
``extra``) and :class:`NetworkError`; both are :class:`CofounderError`, whose ``problem()`` is
the problem object. The method names are the OpenAPI document's ``operationId`` values.
"""

from cofounder_client.client import DEFAULT_GATEWAY_URL, AdminClient, CofounderClient
from cofounder_client.errors import ApiError, CofounderError, NetworkError
from cofounder_client.models import (
    TERMINAL_STATUSES,
    Build,
    BuildLinks,
    BuildPage,
    BuildStatus,
    BuildUsage,
    DayUsage,
    DemoFounder,
    Event,
    ModelUsage,
    TierChanged,
    Today,
    TokenUsage,
    TopUpAccepted,
    Usage,
)

__all__ = [
    "DEFAULT_GATEWAY_URL",
    "TERMINAL_STATUSES",
    "AdminClient",
    "ApiError",
    "Build",
    "BuildLinks",
    "BuildPage",
    "BuildStatus",
    "BuildUsage",
    "CofounderClient",
    "CofounderError",
    "DayUsage",
    "DemoFounder",
    "Event",
    "ModelUsage",
    "NetworkError",
    "TierChanged",
    "Today",
    "TokenUsage",
    "TopUpAccepted",
    "Usage",
]
