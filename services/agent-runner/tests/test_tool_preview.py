"""What ``agent.tool_called`` shows of a tool call's input (the build page's tool rows)."""

from __future__ import annotations

from cofounder_agent_runner.loop import tool_input_preview


def test_a_long_file_text_does_not_push_the_path_out_of_the_preview() -> None:
    preview = tool_input_preview(
        {"command": "create", "path": "/home/user/project/app.js", "file_text": "x" * 5_000}
    )
    assert preview.startswith('{"command": "create", "path": "/home/user/project/app.js", ')
    assert len(preview) == 200
    assert preview.endswith("…")


def test_the_preview_is_one_line_and_the_same_for_the_same_input() -> None:
    command = {"command": "npm test\n  && npm run build", "timeout": 30}
    assert tool_input_preview(command) == tool_input_preview(dict(reversed(command.items())))
    expected = '{"timeout": 30, "command": "npm test\\n && npm run build"}'
    assert tool_input_preview(command) == expected
    assert tool_input_preview("plain\ntext") == "plain text"
