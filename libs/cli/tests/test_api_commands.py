"""The commands that call the gateway, without one: their help (no type placeholders on flags,
no markup), ``--json`` errors (a JSON problem object on stderr, exit 1), and the shell lines of
``seed demo --export``. (Against a real gateway: services/gateway/tests/test_cli_*.py.)"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import typer
from typer import _click as click  # typer's own click (plugins.py uses it too)
from typer.testing import CliRunner

from cofounder_cli.main import app
from cofounder_cli.seed import export_lines

UNREACHABLE = ["--gateway-url", "http://127.0.0.1:1"]


def _commands(group: typer.core.TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, typer.core.TyperGroup):
            found.extend(_commands(command, (*path, name)))
        else:
            found.append((*path, name))
    return found


def test_no_help_shows_a_type_placeholder_on_a_flag_or_markup() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    commands = _commands(root)
    assert ("builds", "create") in commands
    assert ("seed", "demo") in commands
    for path in commands:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert "<bool>" not in text, path
        assert "`" not in text, (path, text)
        assert "╭" not in text, path  # plain help, no boxes
    builds_help = CliRunner().invoke(app, ["builds", "create", "--help"]).output
    assert "--json " in builds_help
    assert "--token TOKEN" in builds_help


def _params(*path: str) -> list[str | None]:
    command = typer.main.get_command(app)
    for name in path:
        assert isinstance(command, typer.core.TyperGroup)
        found = command.get_command(click.Context(command), name)
        assert found is not None, path
        command = found
    return [param.name for param in command.params]


def test_the_gateway_options_come_from_the_decorators_in_one_order() -> None:
    """``founder_command``: ``--token`` after the command's required parameters, ``--gateway-url``
    and ``--json`` last; ``admin_command``: ``--gateway-url``, ``--admin-token``, ``--json``."""
    assert _params("builds", "create")[:2] == ["project", "token"]
    assert _params("builds", "create")[-2:] == ["gateway_url", "json_"]
    assert _params("builds", "get") == ["build_id", "token", "gateway_url", "json_"]
    assert _params("builds", "logs") == ["build_id", "token", "out", "gateway_url"]
    assert _params("builds", "list")[0] == "token"
    assert _params("seed", "demo") == ["export", "gateway_url", "admin_token", "json_"]
    assert _params("budget", "tier") == ["user", "new_tier", "gateway_url", "admin_token", "json_"]


@pytest.mark.parametrize(
    "args",
    [
        ("builds", "get", "0195a0e2-aaaa-7000-8000-0000000000f0", "--token", "t"),
        ("builds", "list", "--token", "t"),
        ("builds", "cancel", "0195a0e2-aaaa-7000-8000-0000000000f0", "--token", "t"),
        ("builds", "create", "--project", "p", "--token", "t"),
        ("budget", "show", "--token", "t"),
        ("budget", "tier", "u", "pro"),
        ("seed", "demo"),
        ("seed", "user", "--email", "a@b.c"),
    ],
)
def test_with_json_an_error_is_a_problem_object_on_stderr(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*args, "--json", *UNREACHABLE])
    assert result.exit_code == 1
    assert result.stdout == ""
    problem = json.loads(result.stderr)
    assert problem["type"] == "gateway_unreachable"
    assert problem["status"] is None
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert "cannot reach the gateway at http://127.0.0.1:1" in problem["detail"]
    plain = CliRunner().invoke(app, [*args, *UNREACHABLE])
    assert plain.exit_code == 1
    assert plain.stderr.startswith("error: cannot reach the gateway at http://127.0.0.1:1")


def test_a_seed_file_that_is_not_json_is_a_problem_too(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "brief.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["seed", "brief", "p", str(bad), "--json", *UNREACHABLE])
    assert result.exit_code == 1
    assert json.loads(result.stderr)["type"] == "invalid_file"


def test_export_lines_survive_a_shell_whatever_the_values() -> None:
    values = {"TOKEN": "a.b-c_d", "ODD": 'it\'s $HOME `x` "y"; rm -rf /'}
    script = export_lines(values) + '\nprintf "%s\\n%s" "$TOKEN" "$ODD"'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout == f"{values['TOKEN']}\n{values['ODD']}"
    assert export_lines({"A": "b"}) == f"export A={shlex.quote('b')}"


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "0", "-2", "1e-9", "five"])
def test_a_top_up_of_no_amount_is_a_usage_error_not_a_traceback(amount: str) -> None:
    """Refused before any request (the gateway is unreachable here): exit 2, a usage line."""
    result = CliRunner().invoke(app, ["budget", "top-up", *UNREACHABLE, "--", "u", amount])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Invalid value" in result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_an_answer_the_client_cannot_read_is_an_error_not_a_traceback(as_json: bool) -> None:
    """A JSON answer without the fields a build has (another release, or another server at the
    gateway's URL): exit 1 with a line that says so (or a problem object), no traceback."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"id": "not a build"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        args = ["builds", "get", "0195a0e2-aaaa-7000-8000-0000000000f0", "--gateway-url", url]
        result = CliRunner().invoke(app, [*args, "--token", "t", *(["--json"] if as_json else [])])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output + result.stderr
    if as_json:
        assert json.loads(result.stderr)["type"] == "unexpected_answer"
    else:
        assert result.stderr.startswith("error: the gateway's answer is not one this client reads")
