"""The context-assembler service is found by the CLI through its entry point."""

from cofounder_context_assembler.service import SPEC
from cofounder_runtime.service import discover_services


def test_registered_under_its_name() -> None:
    assert discover_services()["context-assembler"] is SPEC
    assert SPEC.name == "context-assembler"
