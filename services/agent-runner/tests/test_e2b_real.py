"""The agent's tools on a real E2B sandbox: runs only when ``E2B_API_KEY`` is set."""

from __future__ import annotations

import os
import uuid

import pytest

from cofounder_agent_runner.tools.dispatcher import ToolDispatcher
from cofounder_sandbox.e2b import E2BSandboxes


@pytest.mark.skipif(
    not os.environ.get("E2B_API_KEY"),
    reason="E2B_API_KEY is not set: no real E2B account to test against",
)
async def test_a_real_e2b_sandbox_runs_the_tools() -> None:  # pragma: no cover - needs an account
    sandboxes = E2BSandboxes(
        api_key=os.environ["E2B_API_KEY"],
        template=os.environ.get("E2B_TEMPLATE", "base"),
        timeout_s=300,
    )
    sandbox = await sandboxes.create(build_id=str(uuid.uuid4()), metadata={"test": "cofounder"})
    try:
        tools = ToolDispatcher(sandbox, bash_timeout_s=30)
        assert (
            await tools.run(
                "bash",
                {"command": "mkdir -p /home/user/project && cd /home/user/project && export A=1"},
            )
        ).is_error is False
        outcome = await tools.run("bash", {"command": "echo $A $(pwd)"})
        assert outcome.content == "1 /home/user/project"
        created = await tools.run(
            "str_replace_based_edit_tool",
            {"command": "create", "path": "/home/user/project/a.txt", "file_text": "x\ny\n"},
        )
        assert not created.is_error
        found = await tools.run("grep", {"pattern": "y"})
        assert found.content == "/home/user/project/a.txt:2:y"
    finally:
        await sandbox.kill()
