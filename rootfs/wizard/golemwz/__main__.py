"""`python3 -m golemwz ...`, e.g. `PYTHONPATH=rootfs/wizard python3 -m golemwz check golemwz.toml`
from a checkout, to check a first-boot file on a laptop before booting the stick."""

import sys

from golemwz.cli import main

sys.exit(main())
