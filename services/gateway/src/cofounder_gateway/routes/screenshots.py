"""A build's screenshots (the agent's ``screenshot`` tool), served from the screenshot store.

The reference an ``agent.screenshot_taken`` event carries for the folder store is this route
(an S3 store's events carry presigned URLs; the route serves those screenshots too). Authorised
like the build: its owner's bearer token, the build page's stream token (``?token=``: an
``<img>`` cannot send headers), or the admin token; anyone else gets 404, as for the build.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from cofounder_gateway import builds
from cofounder_gateway.deps import EngineDep, SettingsDep, bearer_header, stream_token
from cofounder_gateway.inputs import BuildId
from cofounder_gateway.problems import NOT_THIS_BUILD, ApiError, problem_responses
from cofounder_gateway.routes.events import events_reader
from cofounder_snapshots.screenshots import valid_name
from cofounder_snapshots.store import StoreError

__all__ = ["router"]

router = APIRouter(tags=["builds"])

#: A screenshot's file name, as its event names it.
ScreenshotName = Annotated[
    str,
    Path(
        description="The screenshot's name (the `name` of its agent.screenshot_taken event).",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.png$",
        openapi_examples={"example": {"value": "00007-toolu_01S.png"}},
    ),
]


def _is_admin(authorization: str | None, admin_token: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), admin_token.encode()
    )


async def screenshot_reader(
    build_id: BuildId,
    settings: SettingsDep,
    request: Request,
    engine: EngineDep,
    # Security schemes (founderToken or streamToken), so the OpenAPI document says so.
    authorization: Annotated[str | None, Depends(bearer_header)],
    token: Annotated[str | None, Depends(stream_token)],
) -> None:
    """Passes for the admin, the build's owner (bearer), or its page (stream token); 401/403 for
    a bad credential, 404 for someone else's build."""
    if _is_admin(authorization, settings.admin_token.get_secret_value()):
        return
    # The build's reader as for its events: the bearer token's user, or the stream token's.
    user = await events_reader(build_id, settings, request, authorization, token)
    await builds.get_build(engine, user_id=user, build_id=build_id)  # 404 unless theirs


@router.get(
    "/builds/{build_id}/screenshots/{name}",
    name="get_build_screenshot",
    response_class=Response,
    dependencies=[Depends(screenshot_reader)],
    responses={
        200: {
            "description": "The PNG",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(
            401,
            403,
            404,
            422,
            503,
            s403=NOT_THIS_BUILD,
            s404="No such build of yours (type: build_not_found), or no such screenshot of it "
            "(type: screenshot_not_found)",
            s503="The screenshot store did not answer (type: not_ready)",
        ),
    },
)
async def get_build_screenshot(
    build_id: BuildId, name: ScreenshotName, settings: SettingsDep
) -> Response:
    """One screenshot of the build, as its ``agent.screenshot_taken`` event names it.

    Authorised like the build: the owner's bearer token, the admin token, or (for the build
    page's ``<img>``) a stream token of this build in ``?token=``."""
    store = settings.screenshot_store()
    data: bytes | None = None
    if store is not None and valid_name(name):
        try:
            async with store:
                data = await store.get(build_id, name)
        except StoreError as exc:
            raise ApiError(
                503, "not_ready", f"the screenshot store did not answer: {exc}"
            ) from None
    if data is None:
        raise ApiError(
            404, "screenshot_not_found", f"build {build_id} has no screenshot named {name}"
        )
    # Private: it is one founder's (a turn run again after a crash may shoot it again).
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
