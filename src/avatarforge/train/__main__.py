"""``python -m avatarforge.train ...`` is ``avatarforge train ...`` (also used by torchrun),
without in-training metrics: those need :mod:`avatarforge.eval`, which sits above training,
so a config that sets ``log.metrics`` is told to run ``avatarforge train`` instead."""

import sys

from avatarforge.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
