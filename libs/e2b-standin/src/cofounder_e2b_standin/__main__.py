"""``python -m cofounder_e2b_standin --root DIR``: serve the E2B stand-in until interrupted.

Prints ``listening on http://HOST:PORT`` once bound, so a parent process can read the address
from the first line."""

from cofounder_e2b_standin.process import main

if __name__ == "__main__":
    main()
