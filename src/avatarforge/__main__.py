"""``python -m avatarforge`` is the same as the ``avatarforge`` console script."""

import sys

from avatarforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
