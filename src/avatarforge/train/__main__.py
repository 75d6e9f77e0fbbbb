"""``python -m avatarforge.train ...`` is ``avatarforge train ...`` (also used by torchrun)."""

import sys

from avatarforge.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
