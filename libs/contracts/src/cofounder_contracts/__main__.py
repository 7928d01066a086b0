"""``python -m cofounder_contracts [DIR]``: export the event catalog (default ``docs/events``)."""

import sys
from pathlib import Path

from cofounder_contracts.schema import export

for written in export(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/events")):
    print(written)
