"""A local stand-in for E2B that the unmodified ``e2b`` SDK talks to.

It is E2B's control plane (:mod:`cofounder_e2b_standin.app`) and envd, the daemon inside each
sandbox (:mod:`cofounder_e2b_standin.envd`), on one HTTP server. The SDK is pointed at it with
its own settings only: ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` (the stand-in's address),
``E2B_DOMAIN`` (the stand-in's preview domain) and any ``E2B_API_KEY`` (:func:`env_for`). With
``E2B_SANDBOX_URL`` set the SDK sends every envd call to that one address with the sandbox's id
in the ``E2b-Sandbox-Id`` header, as it does through E2B's own sandbox proxy; the stand-in routes
on that header the same way.

Protocol-true: the envd services are the SDK's generated Connect servers, with its JSON codec;
the control plane's JSON is the SDK's API models'; errors are the status codes and messages
E2B's API and proxy answer (so the SDK raises its own ``NotFoundException``,
``SandboxNotRunningException``, ``TimeoutException``...). Commands are real processes in local
sandboxes (:mod:`cofounder_sandbox.local`, isolated by its namespaces).

Not protocol-true (each one shown by a test in ``libs/e2b-standin/tests``):

- preview URLs are ``https://<port>-<id>.<domain>`` as the SDK builds them, but the stand-in
  serves plain HTTP: reach one by sending its host in the ``Host`` header to the stand-in
  (:func:`preview_request`); its sandboxes set ``$PORT`` (their preview port; 3000 reaches it too);
- envd's differences are listed in :mod:`cofounder_e2b_standin.envd`;
- a paused sandbox answers envd calls as a killed one does (502 "was not found"); E2B may
  resume it on traffic when it was made with auto-resume, which the stand-in does not do;
- its state is in memory: a restarted stand-in knows none of its sandboxes.
"""

from cofounder_e2b_standin.app import ENVD_VERSION, Standin, create_app, env_for
from cofounder_e2b_standin.process import RunningStandin, preview_request, serve

__all__ = [
    "ENVD_VERSION",
    "RunningStandin",
    "Standin",
    "create_app",
    "env_for",
    "preview_request",
    "serve",
]
