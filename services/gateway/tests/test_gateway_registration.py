"""The gateway service is found by the CLI through its entry point."""

from cofounder_gateway.service import SPEC
from cofounder_runtime.service import discover_services


def test_registered_under_its_name() -> None:
    assert discover_services()["gateway"] is SPEC
    assert SPEC.name == "gateway"
