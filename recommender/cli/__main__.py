"""``python -m bookrec.recommender.cli``: run ``bookrec``."""

import sys

from bookrec.recommender.cli import main

if __name__ == "__main__":
    sys.exit(main())
