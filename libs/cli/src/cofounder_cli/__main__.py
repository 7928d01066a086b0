"""``python -m cofounder_cli`` is the ``cofounder`` command."""

from cofounder_cli.main import main

main()
