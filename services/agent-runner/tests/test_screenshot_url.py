"""The screenshot tool shows pages the sandbox serves, and nothing else a URL could name."""

from __future__ import annotations

import pytest

from cofounder_agent_runner.tools.dispatcher import served_in_the_sandbox


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:3000/",
        "http://127.0.0.1:3000/path?q=1#top",
        "https://localhost/",
        "http://[::1]:8080/",
        "HTTP://LOCALHOST:3000/",
    ],
)
def test_pages_served_in_the_sandbox_are_taken(url: str) -> None:
    assert served_in_the_sandbox(url)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",  # the sandbox's files: read them with the tools, not a browser
        "chrome://version",
        "data:text/html,<h1>hi</h1>",
        "javascript:alert(1)",
        "view-source:http://localhost:3000/",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://10.0.0.1/",
        "http://example.com/",
        "http://localhost.example.com/",
        "http://user:secret@localhost:3000/",
        "http://localhost:99999/",
        "--renderer-cmd-prefix=sh -c id",  # a Chromium flag, not a URL
        "-http://localhost/",
        "http://localhost:3000/ --no-sandbox",
        "http://localhost:3000/\x00",
        "http://localhost:3000/\n",
        "",
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    assert not served_in_the_sandbox(url)
