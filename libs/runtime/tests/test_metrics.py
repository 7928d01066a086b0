"""The metrics a running consumer process exports, scraped over HTTP like Prometheus does."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names, Workers
from cofounder_testing.probe import probe
from cofounder_testing.servers import free_port
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.e2e


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_consumer_process_exports_handled_failed_retried_dead_lettered_and_latency(
    redis: Redis, names: Names, workers: Workers
) -> None:
    port = free_port()
    workers.start("m", metrics_port=port, max_deliveries=2, janitor_ms=100)
    await workers.started(redis, "m")
    failing = probe(9, fail_until=-1)
    await Publisher(redis).publish_many(
        [(names.stream, probe(i)) for i in range(3)] + [(names.stream, failing)]
    )

    async def settled() -> bool:
        return (
            int(await redis.xlen(names.stream + ".dlq")) == 1
            and int(await redis.hlen(names.key("effects"))) == 3
        )

    await eventually(settled, what="three handled, one dead-lettered")

    labels = frozenset({"stream": names.stream, "group": names.group, "type": "test.probe"}.items())
    group = frozenset({"stream": names.stream, "group": names.group}.items())

    async def scraped_settled_group() -> bool:
        # The janitor samples the group's gauges on its own cadence: a sample taken between the
        # dead letter's XADD and its XACK still counts that entry as pending, so wait for a sample
        # taken after both (it never comes if the entry stays pending: the test fails).
        scraped = await asyncio.to_thread(_scrape, port)
        return (
            scraped.get(("cofounder_group_pending", group)) == 0
            and scraped.get(("cofounder_group_lag", group)) == 0
        )

    await eventually(scraped_settled_group, what="the janitor's gauges to show a settled group")
    metrics = await asyncio.to_thread(_scrape, port)
    assert metrics[("cofounder_events_handled_total", labels)] == 3
    assert metrics[("cofounder_events_failed_total", labels)] == 2
    assert metrics[("cofounder_events_retried_total", labels)] == 1
    assert metrics[("cofounder_events_dead_lettered_total", labels)] == 1
    assert metrics[("cofounder_handler_seconds_count", labels)] == 3
    assert metrics[("cofounder_handler_seconds_bucket", labels | {("le", "+Inf")})] == 3

    # The worker's JSON logs carry the handled event's ids on every line written meanwhile.
    lines = [json.loads(line) for line in workers.logs("m").splitlines() if line.startswith("{")]
    retries = [line for line in lines if line["event"] == "handler failed; will retry"]
    assert retries
    assert {(r["event_id"], r["build_id"], r["event_type"]) for r in retries} == {
        (failing.event_id, failing.build_id, "test.probe")
    }
    assert all(r["stream"] == names.stream and r["level"] == "warning" for r in retries)
