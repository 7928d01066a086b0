"""Root conftest: every package's tests share the harness in ``cofounder_testing``."""

import os

# Services refuse to start without an explicit ENVIRONMENT; the tests run development's rules
# unless a test sets another (the secrets tests run production).
os.environ.setdefault("ENVIRONMENT", "development")

# untouched: the run proves it left the developer's Redis (127.0.0.1:6379) as it found it.
pytest_plugins = ["cofounder_testing.fixtures", "cofounder_testing.untouched"]
