"""``python -m bookrec.cpu_server``: run the CPU embedding server."""

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
