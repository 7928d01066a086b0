"""Root conftest: every package's tests share the harness in ``cofounder_testing``."""

pytest_plugins = ["cofounder_testing.fixtures"]
