"""The sandbox's routes, made from the host's: every destination blackholed once, whatever
shape the host's table has (a bare host route for the gateway, as cloud VMs have), and the
batch accepted by the real ``ip`` in a namespace of the test's own."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from typing import Any

import pytest

from cofounder_sandbox.jail import BLACKHOLED, DNS_FORWARD, route_commands

THIS_HOST: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "scope": "link", "prefsrc": "192.0.2.2"},
]
#: GCP's (and systemd-networkd's) shape: the gateway has a host route of its own, written bare.
CLOUD_VM: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "10.128.0.1", "dev": "ens4"},
    {"dst": "10.128.0.1", "dev": "ens4", "scope": "link"},
    {"dst": "10.128.0.0/20", "dev": "ens4", "scope": "link"},
    {"dst": DNS_FORWARD, "dev": "ens4", "scope": "link"},
]


def _blackholed(commands: list[str]) -> list[str]:
    return [c.removeprefix("route add blackhole ") for c in commands if "blackhole" in c]


@pytest.mark.parametrize("routes", [THIS_HOST, CLOUD_VM], ids=["public-subnet", "cloud-vm"])
def test_each_destination_is_blackholed_once(routes: list[dict[str, Any]]) -> None:
    commands = route_commands(routes, egress=True)
    holes = _blackholed(commands)
    assert [d for d, n in Counter(holes).items() if n > 1] == []
    assert set(BLACKHOLED) <= set(holes)
    gateway = routes[0]["gateway"]
    assert f"{gateway}/32" in holes
    for route in routes[1:]:
        dst = route["dst"]
        assert (dst if "/" in dst else f"{dst}/32") in holes
    assert commands[-1].startswith(f"route replace {DNS_FORWARD}/32 via {gateway}")


def test_without_egress_no_route_is_left() -> None:
    commands = route_commands(CLOUD_VM, egress=False)
    assert all(c.startswith("route del ") for c in commands)
    assert len(commands) == len(CLOUD_VM)


def test_the_real_ip_accepts_the_batch_for_a_cloud_vm_s_table() -> None:
    """In a network namespace of the test's own, laid out as the cloud VM's table above."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("no unshare or ip on this machine")
    setup = [  # on the loopback device: a kernel without the dummy module has it too
        "ip link set lo up",
        "ip addr add 10.128.0.5/32 dev lo",
        "ip route add 10.128.0.1 dev lo",
        f"ip route add {DNS_FORWARD} dev lo",
        "ip route add default via 10.128.0.1 dev lo",
    ]
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", " && ".join(setup)], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no network namespace of our own here: {probe.stderr.decode()[-200:]}")
    listed = subprocess.run(
        ["unshare", "-rn", "sh", "-c", " && ".join([*setup, "ip -json -4 route show table main"])],
        capture_output=True,
        text=True,
        check=True,
    )

    routes = json.loads(listed.stdout)
    assert {"dst": "10.128.0.1"}.items() <= next(
        r for r in routes if r["dst"] == "10.128.0.1"
    ).items()
    batch = "".join(f"{c}\n" for c in route_commands(routes, egress=True))
    applied = subprocess.run(
        ["unshare", "-rn", "sh", "-c", " && ".join([*setup, "ip -4 -batch -"])],
        input=batch,
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
