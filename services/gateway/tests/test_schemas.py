"""The hand-serialised POST /builds body is BuildOut's JSON, field for field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cofounder_gateway.schemas import BuildOut, NewBuild, build_json, build_out


def test_build_json_equals_the_documented_build_out() -> None:
    created = datetime(2026, 11, 25, 19, 0, 1, 123456, tzinfo=UTC)
    fresh = NewBuild(
        id="b1", project_id="p1", user_id="u1", goal="Ship it", idempotency_key=None,
        created_at=created,
    )  # fmt: skip
    fresh.tier = "founder"
    finished = NewBuild(
        id="b2", project_id="p1", user_id="u1", goal="é ünïcode \"quoted\"", idempotency_key="k",
        created_at=created.replace(microsecond=0), status="ready", build_version=3,
        preview_url="https://3000-x.e2b.app", iterations=9, tool_calls=12, input_tokens=10_000,
        output_tokens=900, finished_at=created + timedelta(minutes=5),
    )  # fmt: skip
    for build in (fresh, finished):
        ours = json.loads(build_json(build))
        documented = json.loads(build_out(build).model_dump_json())
        assert ours == documented
        assert set(ours) == set(BuildOut.model_fields)
