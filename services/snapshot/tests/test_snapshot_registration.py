"""The snapshot service is found by the CLI through its entry point."""

from cofounder_runtime.service import discover_services
from cofounder_snapshot.service import SPEC


def test_registered_under_its_name() -> None:
    assert discover_services()["snapshot"] is SPEC
    assert SPEC.name == "snapshot"
