"""The sentinel check that a test run left the developer's Redis alone, exercised on Redis
servers of these tests' own (never the default one: only these get flushed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from cofounder_runtime.localredis import redis_server_binary
from cofounder_testing import servers, untouched
from cofounder_testing.waiting import Watched, wait_started

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server")


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A fresh throwaway Redis for one test (its URL, without a database number)."""
    with servers.own_redis_server() as url:
        yield url.rsplit("/", 1)[0]


def _db(url: str, n: int) -> redis_sync.Redis:
    return redis_sync.Redis.from_url(f"{url}/{n}")


def test_the_plugin_is_loaded_for_every_run(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin("cofounder_testing.untouched")


def test_a_flushed_database_is_found_and_named(own_redis: str) -> None:
    planted = untouched.plant(own_redis)
    assert isinstance(planted, untouched.Planted)
    assert planted.databases == tuple(range(16))  # CONFIG GET databases
    assert untouched.check(planted) == []
    client = _db(own_redis, 5)
    try:
        assert client.ttl(planted.key) > 3600  # it expires, should the run be killed
        client.flushdb()
    finally:
        client.close()
    assert untouched.check(planted) == [5]
    untouched.remove(planted)
    for n in range(16):
        client = _db(own_redis, n)
        try:
            assert client.dbsize() == 0  # nothing of the check is left behind
        finally:
            client.close()


def test_two_runs_plant_keys_of_their_own(own_redis: str) -> None:
    first, second = untouched.plant(own_redis), untouched.plant(own_redis)
    assert isinstance(first, untouched.Planted)
    assert isinstance(second, untouched.Planted)
    assert first.key != second.key
    untouched.remove(first)
    assert untouched.check(second) == []  # one run's end leaves the other's sentinel
    untouched.remove(second)


def test_nothing_to_check_when_no_server_answers_or_it_wants_a_password(
    tmp_path: Path,
) -> None:
    nobody = untouched.plant(f"redis://127.0.0.1:{servers.free_port()}")
    assert isinstance(nobody, untouched.NotPlanted)
    assert "nothing answers" in nobody.reason
    port = servers.free_port()
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--requirepass", "secret", "--dir", str(tmp_path)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_started(
            lambda: servers._reachable(f"redis://127.0.0.1:{port}", port),
            what="a redis-server with a password",
            watch=[Watched("redis-server", proc, log)],
        )
        guarded = untouched.plant(f"redis://127.0.0.1:{port}")
        assert isinstance(guarded, untouched.NotPlanted)
        assert guarded.reason == "it wants a password"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


_INNER = """
import os
import redis


def test_something_that_{verb}(request):
    if {flush}:
        client = redis.Redis.from_url(os.environ["TEST_SENTINEL_REDIS_URL"] + "/3")
        client.flushdb()
        client.close()
"""


def _run_pytest(
    tmp_path: Path, url: str, *, flush: bool, **env_: str
) -> subprocess.CompletedProcess[str]:
    test = tmp_path / f"test_inner_{flush}.py"
    verb = "flushes" if flush else "minds_its_own_business"
    test.write_text(textwrap.dedent(_INNER.format(verb=verb, flush=flush)))
    env = {k: v for k, v in os.environ.items() if k != "TEST_REDIS_URL"}
    env |= {"TEST_SENTINEL_REDIS_URL": url, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **env_}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "cofounder_testing.untouched", "-p",
         "no:cacheprovider", str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_run_that_flushes_the_guarded_redis_fails_though_its_tests_pass(
    own_redis: str, tmp_path: Path
) -> None:
    done = _run_pytest(tmp_path, own_redis, flush=True)
    output = done.stdout + done.stderr
    assert "1 passed" in output
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "untouched: FAILED" in output
    assert "database(s) 3 of" in output


def test_a_run_that_leaves_it_alone_passes_and_cleans_up(own_redis: str, tmp_path: Path) -> None:
    done = _run_pytest(tmp_path, own_redis, flush=False)
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.OK, output
    for n in range(16):
        client = _db(own_redis, n)
        try:
            assert client.dbsize() == 0, n
        finally:
            client.close()


def test_a_server_declared_as_the_tests_own_is_not_checked(own_redis: str, tmp_path: Path) -> None:
    # TEST_REDIS_URL says the tests may flush that server: a lost sentinel there proves nothing.
    declared = own_redis.replace("127.0.0.1", "localhost") + "/0"
    done = _run_pytest(tmp_path, own_redis, flush=True, TEST_REDIS_URL=declared)
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.OK, output
    assert "not checked: TEST_REDIS_URL lets the tests flush it" in output
